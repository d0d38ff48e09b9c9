"""High availability, end to end (issue 13): several operator processes against the local cluster
elect one leader on a Lease, only it acts, and a takeover neither loses nor repeats anything.

(a) Three processes: exactly one leads; SIGKILL it during the backfill: another leads within
    the lease duration, the migration Succeeds, no Job was created twice (deterministic names:
    one per phase, each attempt 1), no step applied twice (ledger), no Event duplicated, and
    every "created Job" line in the three logs names a different Job.
(b) SIGSTOP the leader past its lease; a new leader takes over and acts on a migration created
    meanwhile; SIGCONT the old one: it writes nothing (its log after resuming shows no action,
    and no Event names it as reportingInstance) and exits with status 1.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fixtures import rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

from localcluster.operatorproc import lease_name_for

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
NAME = "rename-email"
LEASE_DURATION = 15.0
RETRY = 2.0
ACTION = re.compile(r": (created Job \S+|deleted Job \S+|set \S+ image to \S+)")


def start(cluster: Any, namespace: str, count: int, tag: str) -> list[OperatorProcess]:
    procs = [
        OperatorProcess(
            Path(cluster.kubeconfig),
            Path(cluster.logs_dir) / f"operator-{namespace}-{tag}{i}.log",
            env={"DATAMIGRATION_NAMESPACES": namespace, "POD_NAME": f"{tag}{i}"},
        )
        for i in range(count)
    ]
    for proc in procs:
        proc.log_path.unlink(missing_ok=True)  # judge this run's logs only
        proc.start()
    return procs


def the_leader(procs: list[OperatorProcess]) -> OperatorProcess | None:
    leading = [p for p in procs if p.is_leader()]
    assert len(leading) <= 1, f"two leaders at once: {[p.pod_name for p in leading]}"
    return leading[0] if leading else None


def status(kube: Kube, ns: str) -> dict[str, Any]:
    return dict(kube.migration(ns, NAME).get("status", {}))


def assert_nothing_twice(kube: Kube, ns: str, engine: sa.Engine, logs: list[Path]) -> None:
    done = status(kube, ns)
    jobs = kube.jobs(ns)
    phases = sorted(j["metadata"]["labels"]["datamigration.dev/phase"] for j in jobs)
    assert phases == ["backfill", "contract", "expand"], "a Job created twice"
    assert all(done["phases"][p]["attempts"] == 1 for p in ("expand", "backfill", "contract"))
    with engine.connect() as c:
        attempts = c.execute(sa.text("SELECT step, attempts FROM datamigration_ledger")).all()
    assert attempts and all(a == 1 for _, a in attempts), attempts
    events = kube.api.list_events(ns, NAME)
    seen = [(e["reason"], e["message"]) for e in events]
    assert len(seen) == len(set(seen)), sorted(seen)
    assert all(int(e.get("count") or 1) == 1 for e in events)
    created = [m for log in logs for m in re.findall(r"created Job (\S+)", log.read_text())]
    assert len(created) == len(set(created)), f"a Job created by two processes: {created}"


def test_three_replicas_one_acts_and_a_killed_leader_is_replaced_without_repeats(
    cluster: Any, kube: Kube, namespace: str, pg_url: str
) -> None:
    procs = start(cluster, namespace, 3, "ha-a")
    try:
        leader = eventually(lambda: the_leader(procs), timeout=30, what="one leader")
        shop = setup_shop(kube, namespace, pg_url, rows=3000)
        kube.apply(rename_migration(namespace, batch_size=50, pause_ms=40))

        def backfilling() -> bool:
            st = status(kube, namespace)
            assert the_leader(procs) is leader
            progress = st.get("progress", {})
            return st.get("phase") == "Backfilling" and int(progress.get("rowsDone", 0)) > 0

        eventually(backfilling, timeout=120, what="backfill under way")
        standbys = [p for p in procs if p is not leader]
        for proc in standbys:
            assert not ACTION.search(proc.log_path.read_text()), "a standby acted"
        leader.kill()
        killed = time.monotonic()
        successor = eventually(lambda: the_leader(standbys), timeout=40, what="a new leader")
        took = time.monotonic() - killed
        assert took <= LEASE_DURATION + 2 * RETRY + 2, f"takeover took {took:.1f}s"

        def finished() -> bool:
            assert the_leader(standbys) in (successor, None)
            return status(kube, namespace).get("phase") == "Succeeded"

        eventually(finished, timeout=240, what="Succeeded after the takeover")
        assert "email" not in shop.columns()
        assert_nothing_twice(kube, namespace, shop.engine, [p.log_path for p in procs])
        text = successor.metrics()
        assert "datamigration_leader 1.0" in text
        assert 'datamigration_migrations{phase="Succeeded"} 1.0' in text
        assert "datamigration_api_requests_total{" in text
        assert "datamigration_reconcile_duration_seconds_count" in text
        elected = [
            e
            for e in kube.client.list_items(
                "/api/v1/namespaces/default/events", fieldSelector="involvedObject.kind=Lease"
            )
            if e["reason"] == "LeaderElected"
            and e["involvedObject"]["name"] == lease_name_for(namespace)
        ]
        assert {e["reportingInstance"] for e in elected} >= {leader.pod_name, successor.pod_name}
    finally:
        for proc in procs:
            proc.stop()


def test_a_leader_paused_past_its_lease_acts_on_nothing_after_resuming_and_exits(
    cluster: Any, kube: Kube, namespace: str, pg_url: str
) -> None:
    procs = start(cluster, namespace, 2, "ha-b")
    try:
        old = eventually(lambda: the_leader(procs), timeout=30, what="one leader")
        (other,) = [p for p in procs if p is not old]
        shop = setup_shop(kube, namespace, pg_url, rows=200)
        old.pause()
        kube.apply(rename_migration(namespace))  # created while the old leader is frozen
        eventually(other.is_leader, timeout=40, what="the standby taking over")
        eventually(
            lambda: status(kube, namespace).get("phases", {}).get("expand", {}).get("job"),
            timeout=60,
            what="the new leader acting",
        )
        offset = old.log_path.stat().st_size
        old.resume()
        eventually(lambda: not old.running, timeout=LEASE_DURATION, what="the old leader exiting")
        assert old.process is not None and old.process.returncode == 1
        after = old.log_path.read_text()[offset:]
        assert "lost the lease" in after
        assert not ACTION.search(after), f"acted after resuming: {ACTION.findall(after)}"
        eventually(
            lambda: status(kube, namespace).get("phase") == "Succeeded",
            timeout=240,
            what="Succeeded under the new leader",
        )
        events = kube.api.list_events(namespace, NAME)
        assert events and all(e.get("reportingInstance") == other.pod_name for e in events), [
            (e["reason"], e.get("reportingInstance")) for e in events
        ]
        assert_nothing_twice(kube, namespace, shop.engine, [p.log_path for p in procs])
    finally:
        for proc in procs:
            proc.stop()
