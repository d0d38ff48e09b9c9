"""`make bench-ha`: leader failover under repeated SIGKILLs, and whether anything happened twice.

Three operator processes (localcluster.operatorproc) elect a leader on one Lease and serve
`--namespaces` namespaces, each with its own shop (PostgreSQL database, Secret, 3-replica
Deployment) and one rename migration (expand, backfill, codeRollout Apply, contract); the first
namespace's backfill is large and paced, so it spans the kills. Every 5 to 20 s (random, seeded)
the current leader is SIGKILLed and restarted at once as a standby, until every migration has
Succeeded and at least `--min-seconds` have passed.

failover: at each kill, a probe DataMigration is created that needs an action at once (its
Secret is missing: the operator must write `Stalled: SecretNotFound`); failover is from the
SIGKILL to that status write, as this process sees it on the API (the new leader's first action
on a migration that needs one). Duplicates, at the end: Jobs per (migration, phase, attempt)
beyond one, and "created Job" lines naming one Job in two logs; ledger steps applied more than
once; Events with one (object, reason, message) seen more than once or with count > 1.

Prints human lines, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))  # an entry point: find the local-cluster harness
sys.path.insert(0, str(REPO / "tests" / "e2e"))  # the e2e shop: one way to set one up

import sqlalchemy as sa  # noqa: E402
from fixtures import rename_migration, setup_shop  # noqa: E402
from support import Kube  # noqa: E402

from datamigration.k8s.client import KubeError  # noqa: E402
from localcluster import chart  # noqa: E402
from localcluster import cluster as local_cluster  # noqa: E402
from localcluster.operatorproc import OperatorProcess  # noqa: E402
from localcluster.postgres import PostgresServer  # noqa: E402
from localcluster.waiting import wait_for  # noqa: E402

PREFIX = "bench-ha"


def probe(namespace: str, name: str) -> dict[str, Any]:
    doc = rename_migration(namespace)
    doc["metadata"]["name"] = name
    doc["spec"]["database"]["urlFrom"]["secretKeyRef"]["name"] = "no-such-secret"
    doc["spec"]["workload"]["name"] = f"{name}-app"  # no conflict with the real migration
    return doc


def stalled_on(kube: Kube, namespace: str, name: str) -> bool:
    try:
        obj = kube.migration(namespace, name)
    except KubeError:
        return False
    return any(
        c.get("type") == "Stalled" and c.get("reason") == "SecretNotFound"
        for c in obj.get("status", {}).get("conditions", [])
    )


def leader(procs: list[OperatorProcess]) -> OperatorProcess | None:
    leading = [p for p in procs if p.is_leader()]
    if len(leading) > 1:
        raise AssertionError(f"two leaders at once: {[p.pod_name for p in leading]}")
    return leading[0] if leading else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--rows", type=int, default=60_000, help="rows of the large backfill")
    parser.add_argument("--min-seconds", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    handle = local_cluster.ensure_up()
    kube = Kube(Path(handle.kubeconfig))
    chart.install_prerequisites(kube.client, Path(handle.bin_dir), field_manager="bench")
    namespaces = [f"{PREFIX}-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        kube.delete_namespace(ns)
    for ns in namespaces:
        wait_for(f"old namespace {ns} to go", lambda ns=ns: not kube.namespace_has(ns), timeout=120)
        kube.create_namespace(ns)
        wait_for(
            f"{ns}'s default ServiceAccount",
            lambda ns=ns: kube.namespace_has(ns, "/serviceaccounts/default"),
            timeout=30,
        )

    logs = Path(handle.logs_dir)
    env = {"DATAMIGRATION_NAMESPACES": ",".join(namespaces)}
    procs = [
        OperatorProcess(Path(handle.kubeconfig), logs / f"operator-bench-ha-{i}.log", env=env)
        for i in range(3)
    ]
    for p in procs:
        p.log_path.unlink(missing_ok=True)
        p.start()
    kills: list[float] = []
    with PostgresServer.start() as server:
        engines: list[sa.Engine] = []
        try:
            wait_for("a leader", lambda: leader(procs) is not None, timeout=60)
            for i, ns in enumerate(namespaces):
                rows = args.rows if i == 0 else 500
                shop = setup_shop(kube, ns, server.create_database(f"bench_ha_{i}"), rows=rows)
                engines.append(shop.engine)
                # The large backfill is paced so that it spans several kills.
                kube.apply(rename_migration(ns, batch_size=200, pause_ms=50 if i == 0 else 0))
            started = time.monotonic()

            def all_succeeded() -> bool:
                return all(
                    kube.migration(ns, "rename-email").get("status", {}).get("phase") == "Succeeded"
                    for ns in namespaces
                )

            while time.monotonic() - started < args.min_seconds or not all_succeeded():
                if time.monotonic() - started > 900:
                    raise AssertionError("migrations not all Succeeded after 15 minutes")
                wait = rng.uniform(5, 20)
                deadline = time.monotonic() + wait
                wait_for(
                    "the next kill (or a failed migration)",
                    lambda d=deadline: time.monotonic() >= d or _failed(kube, namespaces),
                    timeout=wait + 5,
                    interval=0.5,
                )
                if _failed(kube, namespaces):
                    raise AssertionError(f"a migration Failed: {_failed(kube, namespaces)}")
                current = leader(procs)
                if current is None:
                    wait_for("a leader", lambda: leader(procs) is not None, timeout=60)
                    current = leader(procs)
                assert current is not None
                current.kill()
                killed = time.monotonic()
                name = f"probe-{len(kills)}"
                kube.apply(probe(namespaces[-1], name))
                wait_for(
                    f"{name} Stalled by the new leader",
                    lambda n=name: stalled_on(kube, namespaces[-1], n),
                    timeout=60,
                    interval=0.1,
                )
                kills.append(time.monotonic() - killed)
                print(f"kill {len(kills)}: {current.pod_name}; failover {kills[-1]:.1f} s")
                current.start()  # back as a standby: always three
            wall = time.monotonic() - started
        finally:
            for p in procs:
                p.stop()
        dup_jobs, dup_steps, dup_events = _duplicates(kube, namespaces, engines, procs)
        for engine in engines:
            engine.dispose()
    ordered = sorted(kills)
    result = {
        "kills": len(kills),
        "failover_p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "failover_max_s": round(max(ordered), 2) if ordered else None,
        "duplicate_jobs": dup_jobs,
        "duplicate_steps": dup_steps,
        "duplicate_events": dup_events,
        "migrations": len(namespaces),
        "backfill_rows": args.rows,
        "wall_s": round(wall, 1),
    }
    print(
        f"{len(kills)} kills in {wall:.0f} s; failover p50 {result['failover_p50_s']} s, "
        f"max {result['failover_max_s']} s; duplicates: jobs {dup_jobs}, steps {dup_steps}, "
        f"events {dup_events}"
    )
    print(json.dumps(result))
    return 0


def _failed(kube: Kube, namespaces: list[str]) -> list[str]:
    return [
        ns
        for ns in namespaces
        if kube.migration(ns, "rename-email").get("status", {}).get("phase") == "Failed"
    ]


def _duplicates(
    kube: Kube, namespaces: list[str], engines: list[sa.Engine], procs: list[OperatorProcess]
) -> tuple[int, int, int]:
    jobs = Counter(
        (
            ns,
            j["metadata"]["labels"].get("datamigration.dev/migration"),
            j["metadata"]["labels"].get("datamigration.dev/phase"),
            j["metadata"]["labels"].get("datamigration.dev/attempt"),
        )
        for ns in namespaces
        for j in kube.jobs(ns)
    )
    created = Counter(
        m for p in procs for m in re.findall(r"created Job (\S+)", p.log_path.read_text())
    )
    dup_jobs = sum(n - 1 for n in jobs.values()) + sum(n - 1 for n in created.values())
    dup_steps = 0
    for engine in engines:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT attempts FROM datamigration_ledger")).all()
        dup_steps += sum(int(a) - 1 for (a,) in rows if int(a) > 1)
    events = [
        e
        for ns in namespaces
        for e in kube.client.list_items(
            f"/api/v1/namespaces/{ns}/events", fieldSelector="involvedObject.kind=DataMigration"
        )
    ]
    seen = Counter(
        (
            e["involvedObject"]["namespace"],
            e["involvedObject"]["name"],
            e["reason"],
            e["message"],
        )
        for e in events
    )
    dup_events = sum(n - 1 for n in seen.values()) + sum(
        int(e.get("count") or 1) - 1 for e in events
    )
    return dup_jobs, dup_steps, dup_events


if __name__ == "__main__":
    sys.exit(main())
