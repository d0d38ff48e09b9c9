"""`make bench-scale`: the operator carrying many migrations: start-up, memory, idle API traffic,
the cost of a fan-out, reaction under that fan-out, and every migration run to Succeeded.

Each migration is small and real: expand (create a table of 100 rows in its own SQLite file, add
a column), backfill (copy one column into the new one), codeRollout Observe of the namespace's
shared Deployment `shop-api` (as services share a web tier; every migration of a namespace wants
the same image, so none waits on another), contract (verify, drop the old column). Phase Jobs
run as local processes (localcluster executor), so the database work is one tiny SQLite file per
migration, named by a key of the namespace's Secret.

Three stages, each with its own operator process (localcluster.operatorproc, leader election on,
without --verbose, as the chart runs it), so that one stage's traffic never counts in another's
figures. Stages 1 and 3 serve the whole cluster, as the chart does by default (every namespace an
earlier run of this bench left is deleted first; any other DataMigration in the cluster is served
too, and a line says so); stage 2 serves its own namespace (stage 1's migrations still exist):

1. `--migrations` across `--namespaces` exist before the operator starts; the even-numbered ones
   are paused (their Secret exists), the odd-numbered ones name a Secret that does not exist.
   - startup_s: from the operator process's start to the moment this process's own watch of
     DataMigrations has seen `status.observedGeneration` = `metadata.generation` written on
     every one of them (the first reconcile of every existing migration).
   - api_requests_per_min_idle: once every migration is reconciled (and every one naming the
     missing Secret shows `Stalled: SecretNotFound`), the operator's own counter
     `datamigration_api_requests_total` (controller/metrics.py: every request that passes
     `k8s.client.KubeClient.request`, i.e. every request of the operator except kopf's own
     list/watch streams) is scraped, `--idle-seconds` pass, and it is scraped again; the
     difference, per minute. Its share by verb is printed (PUT is the Lease renewal alone).
     As a cross-check the API server's `apiserver_request_total` over the same window is
     printed for the resources only the operator reads while idle.
2. `--fanout` paused migrations in one namespace, all naming ONE Deployment, plus `--probes`
   unpaused migrations naming another Deployment (`probe-api`), run through expand and backfill
   until they wait in RollingOut for `probe-api:2`.
   - fanout_api_requests: the operator's counter (as above, Lease PUTs excluded) from just
     before one annotation of the shared Deployment (a metadata-only change) until the operator
     is quiet again (queue depth 0 and the counter unchanged for 3 s); by verb too.
   - reaction_p99_ms_under_fanout: the shared Deployment is annotated again and, at once,
     `probe-api`'s image is changed; for each probe, from the moment its rollout is proven (the
     rollout-status conditions hold AND no pod of the old image is left, as bench-operator
     defines it, seen on this process's watches) to the moment its contract Job exists (same
     watches, one clock). `proven_during_fanout` says whether the proof came before that
     fan-out was processed (window end: the operator quiet again), the case the figure is for.
   - fanout_reconciles (printed, not a target): reconciles that annotation caused; those
     decided on the caches cost no request, so the request count alone would not show them.
3. Every stage-1 migration is let go to Succeeded: the missing Secret is created without keys,
   every Deployment rolls out `shop-api:2`, then migrations are released (unpaused, or their key
   added to the Secret) keeping at most `--concurrency` unfinished at once (each Job is a local
   runner process: unbounded, 1,000 at once would exhaust the machine's memory).
   - succeeded: migrations in phase Succeeded at the end; wall_s: first release to the last
     migration finished (or to `--final-timeout`).

rss_mb_peak: the largest resident set (/proc VmRSS, sampled every 0.2 s) of any of the operator
processes above, over the whole bench.

Prints human lines, the targets and whether each is met, then one JSON line last.
`--stages 1` (or `1,2`, `1,3`) runs fewer stages, for a quick look at start-up and idle traffic:
`make bench-scale BENCH_SCALE_ARGS="--stages 1"`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))  # an entry point: find the local-cluster harness
sys.path.insert(0, str(REPO / "tests" / "e2e"))  # the e2e shop: one way to set one up

from fixtures import shop_deployment  # noqa: E402
from support import Kube  # noqa: E402

from datamigration.k8s.client import KubeError, migration_path  # noqa: E402
from localcluster import chart  # noqa: E402
from localcluster import cluster as local_cluster  # noqa: E402
from localcluster.operatorproc import OperatorProcess  # noqa: E402
from localcluster.waiting import wait_for  # noqa: E402
from operator_reaction import percentile, rollout_proven  # noqa: E402

JSON = dict[str, Any]
PREFIX = "bench-scale"
FANOUT_NS = f"{PREFIX}-fanout"
#: The Secrets holding each migration's database URL under its name; the late one is created
#: only in the last stage.
DB_SECRET, LATE_SECRET = "shop-db", "shop-db-late"
TERMINAL = ("Succeeded", "Failed", "Aborted", "Invalid")
IMAGE_1, IMAGE_2 = "registry.example/shop-api:1.0", "registry.example/shop-api:2.0"
PROBE_IMAGE_1, PROBE_IMAGE_2 = "registry.example/probe-api:1.0", "registry.example/probe-api:2.0"
TARGETS = {
    "succeeded": "every migration",
    "startup_s": 10,
    "rss_mb_peak": 120,
    "api_requests_per_min_idle": 60,
    "fanout_api_requests": 100,
    "reaction_p99_ms_under_fanout": 300,
}


# --- objects -----------------------------------------------------------------------------------


def small_migration(
    namespace: str, name: str, *, secret_name: str, workload: str, image: str, paused: bool
) -> JSON:
    """Expand, backfill, codeRollout Observe, contract on a 100-row table of its own database."""
    return {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "database": {"urlFrom": {"secretKeyRef": {"name": secret_name, "key": name}}},
            "workload": {
                "kind": "Deployment",
                "name": workload,
                "container": "api",
                "image": image,
            },
            "expand": {
                "steps": [
                    {
                        "name": "create-items",
                        "sql": "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)",
                    },
                    {
                        "name": "fill-items",
                        "sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                        "WHERE i < 100) INSERT INTO items (id, name) SELECT i, 'item' || i FROM n",
                    },
                    {"name": "add-label", "sql": "ALTER TABLE items ADD COLUMN label text"},
                ]
            },
            "backfill": {
                "steps": [
                    {
                        "name": "copy-name",
                        "backfill": {
                            "table": "items",
                            "key": "id",
                            "set": {"label": "name"},
                            "where": "label IS NULL",
                            "batchSize": 50,
                        },
                    }
                ]
            },
            "codeRollout": {"mode": "Observe", "timeoutSeconds": 7200},
            "contract": {
                "approval": "Automatic",
                "verify": [
                    {
                        "name": "all-copied",
                        "expect": 0,
                        "query": "SELECT count(*) FROM items WHERE label IS NULL",
                    }
                ],
                "steps": [{"name": "drop-name", "sql": "ALTER TABLE items DROP COLUMN name"}],
            },
            "paused": paused,
        },
    }


def named_deployment(namespace: str, name: str, image: str, replicas: int) -> JSON:
    """The e2e shop's Deployment under another name (its selector and labels follow)."""
    doc = shop_deployment(namespace, image, replicas=replicas)
    doc["metadata"]["name"] = name
    doc["spec"]["selector"]["matchLabels"]["app"] = name
    doc["spec"]["template"]["metadata"]["labels"]["app"] = name
    return doc


def secret(namespace: str, name: str, data: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


# --- watching and measuring ---------------------------------------------------------------------


class Mirror(threading.Thread):
    """This process's own watch of one collection: the current objects, and `on_event(arrival
    time.monotonic(), type, object)` for each change, on one clock with every other figure."""

    def __init__(
        self, kube: Kube, path: str, on_event: Callable[[float, str, JSON], None] | None = None
    ) -> None:
        super().__init__(daemon=True, name=f"mirror {path}")
        self.kube, self.path, self.on_event = kube, path, on_event
        self.objects: dict[tuple[str, str], JSON] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()

    def run(self) -> None:
        version = ""
        while True:
            try:
                if not version:
                    listing = self.kube.client.request("GET", self.path)
                    with self.lock:
                        self.objects = {_key(o): o for o in listing.get("items", [])}
                    version = listing["metadata"]["resourceVersion"]
                    self.synced.set()
                for kind, obj in self._watch(version):
                    version = obj.get("metadata", {}).get("resourceVersion") or version
                    if kind == "BOOKMARK":
                        continue
                    arrived = time.monotonic()
                    with self.lock:
                        if kind == "DELETED":
                            self.objects.pop(_key(obj), None)
                        else:
                            self.objects[_key(obj)] = obj
                    if self.on_event is not None:
                        self.on_event(arrived, kind, obj)
            except KubeError as exc:
                if exc.status == 410:
                    version = ""  # too old: list again
                else:
                    time.sleep(1)  # a transient API error: retry (not synchronisation)
            except Exception:  # a dropped connection: resume from `version`
                time.sleep(1)

    def _watch(self, version: str) -> Iterator[tuple[str, JSON]]:
        return self.kube.client.watch(self.path, resource_version=version, timeout_seconds=240)

    def snapshot(self) -> list[JSON]:
        with self.lock:
            return list(self.objects.values())


def _key(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class RssSampler(threading.Thread):
    """The peak resident set of each operator process, from /proc, every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss sampler")
        self.procs: dict[str, OperatorProcess] = {}
        self.peaks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for label, proc in list(self.procs.items()):
                try:
                    rss = proc.rss_mb()
                except (OSError, RuntimeError, AssertionError):
                    continue  # not started yet, or just exited
                self.peaks[label] = max(self.peaks.get(label, 0.0), rss)


_METRIC_LINE = re.compile(r"^datamigration_api_requests_total\{([^}]*)\} (\S+)$")


def api_requests(proc: OperatorProcess) -> Counter[str]:
    """The operator's `datamigration_api_requests_total`, summed over codes, by verb."""
    counts: Counter[str] = Counter()
    for line in proc.metrics().splitlines():
        m = _METRIC_LINE.match(line)
        if m:
            verb = re.search(r'verb="([^"]*)"', m.group(1))
            counts[verb.group(1) if verb else "?"] += int(float(m.group(2)))
    return counts


def queue_depth(proc: OperatorProcess) -> float:
    m = re.search(r"^datamigration_queue_depth (\S+)$", proc.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def reconciles(proc: OperatorProcess) -> int:
    """How many reconciles the operator has run (its reconcile-duration histogram's count):
    those decided on the caches alone cost no request, but they are work an event caused."""
    m = re.search(r"^datamigration_reconcile_duration_seconds_count (\S+)$", proc.metrics(), re.M)
    return int(float(m.group(1))) if m else 0


def without_lease(counts: Counter[str]) -> int:
    """Requests other than the Lease renewals (PUT is the Lease's alone: k8s/cluster.py)."""
    return sum(n for verb, n in counts.items() if verb != "PUT")


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {v: after[v] - before[v] for v in sorted(after) if after[v] - before[v]}


def wait_quiet(proc: OperatorProcess, *, quiet_s: float = 3.0, timeout: float = 900.0) -> float:
    """Until the operator's queue is empty and its counter (Lease aside) has not moved for
    `quiet_s`; returns when it last moved (time.monotonic)."""
    last, moved = without_lease(api_requests(proc)), time.monotonic()
    deadline = moved + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)  # the sampling period of a measurement
        now_count = without_lease(api_requests(proc))
        if now_count != last:
            last, moved = now_count, time.monotonic()
        elif time.monotonic() - moved >= quiet_s and queue_depth(proc) == 0:
            return moved
    raise TimeoutError(f"the operator was not quiet within {timeout:.0f} s")


def apiserver_requests(kube: Kube, resources: set[str]) -> int:
    """The API server's own count of non-watch requests on `resources` (all clients)."""
    api = kube.client.api_client
    method, url, headers, payload, post = api.param_serialize(
        method="GET",
        resource_path="/metrics",
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
    )
    text = api.call_api(method, url, header_params=headers, body=payload, post_params=post)
    raw = text.read()
    total = 0
    for line in raw.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("resource") in resources and labels.get("verb") not in ("WATCH",):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# --- stages --------------------------------------------------------------------------------------


def fresh_namespace(kube: Kube, namespace: str) -> None:
    kube.create_namespace(namespace)
    wait_for(
        f"{namespace}'s default ServiceAccount",
        lambda: kube.namespace_has(namespace, "/serviceaccounts/default"),
        timeout=60,
    )


def available(kube: Kube, namespace: str, name: str, replicas: int) -> bool:
    dep = kube.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return bool(dep.get("status", {}).get("availableReplicas") == replicas)


def stalled_reason(obj: JSON) -> str | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return str(c.get("reason"))
    return None


def reconciled(obj: JSON) -> bool:
    generation = obj.get("metadata", {}).get("generation", 0)
    return int(obj.get("status", {}).get("observedGeneration") or 0) >= int(generation)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--fanout", type=int, default=None, help="default: --migrations")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--final-timeout", type=float, default=3600.0)
    parser.add_argument(
        "--stages",
        choices=("1", "1,2", "1,3", "1,2,3"),
        default="1,2,3",
        help="stage 1 always runs (the others need its migrations); a stage left out reports "
        "null figures, and its targets count as not met",
    )
    args = parser.parse_args()
    fanout = args.migrations if args.fanout is None else args.fanout
    bench_started = time.monotonic()

    handle = local_cluster.ensure_up()
    kube = Kube(Path(handle.kubeconfig))
    chart.install_prerequisites(kube.client, Path(handle.bin_dir), field_manager="bench")
    namespaces = [f"{PREFIX}-{i:02d}" for i in range(args.namespaces)]
    # Every namespace an earlier run left (it may have used more of them): the operator of
    # stages 1 and 3 serves the whole cluster.
    leftovers = [
        str(n["metadata"]["name"])
        for n in kube.client.list_items("/api/v1/namespaces")
        if str(n["metadata"]["name"]).startswith(f"{PREFIX}-")
    ]
    for ns in {*namespaces, FANOUT_NS, *leftovers}:
        kube.delete_namespace(ns)
    for ns in {*namespaces, FANOUT_NS, *leftovers}:
        wait_for(f"old namespace {ns} to go", lambda ns=ns: not kube.namespace_has(ns), timeout=600)
    others = [
        f"{o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in kube.client.list_items("/apis/datamigration.dev/v1alpha1/datamigrations")
    ]
    if others:
        print(
            f"note: {len(others)} other DataMigration(s) in the cluster are served too, e.g. "
            f"{others[0]}"
        )
    databases = Path(handle.state_dir) / PREFIX
    shutil.rmtree(databases, ignore_errors=True)

    def url(ns: str, name: str) -> str:
        """The migration's own database: an empty SQLite file (the runner opens, never creates)."""
        path = databases / ns / f"{name}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return f"sqlite:///{path}"

    # Stage 1's objects, before its operator starts.
    print(f"setting up {args.migrations} migrations in {args.namespaces} namespaces")
    members: dict[str, list[str]] = {ns: [] for ns in namespaces}
    for i in range(args.migrations):
        members[namespaces[i % args.namespaces]].append(f"m-{i:04d}")
    for ns in namespaces:
        fresh_namespace(kube, ns)
        kube.apply(named_deployment(ns, "shop-api", IMAGE_1, replicas=2))
        paused = [m for m in members[ns] if int(m[2:]) % 2 == 0]
        kube.apply(secret(ns, DB_SECRET, {m: url(ns, m) for m in paused}))
        for m in members[ns]:
            kube.apply(
                small_migration(
                    ns,
                    m,
                    secret_name=DB_SECRET if m in paused else LATE_SECRET,
                    workload="shop-api",
                    image=IMAGE_2,
                    paused=m in paused,
                )
            )

    first_reconcile: dict[tuple[str, str], float] = {}

    def on_migration(t: float, kind: str, obj: JSON) -> None:
        if kind != "DELETED" and reconciled(obj) and obj.get("status"):
            first_reconcile.setdefault(_key(obj), t)

    migrations = Mirror(kube, "/apis/datamigration.dev/v1alpha1/datamigrations", on_migration)
    migrations.start()
    migrations.synced.wait(60)
    stage1 = [(ns, m) for ns in namespaces for m in members[ns]]

    logs = Path(handle.logs_dir)
    # Stages 1 and 3 serve the whole cluster, as the chart does by default (`watchNamespaces:
    # []`): one watch per kind. Serving a list of namespaces costs one watch per kind per
    # namespace, each with its own connection (docs/install.md has the figure).
    env1: dict[str, str] = {}
    rss = RssSampler()
    rss.start()
    op1 = OperatorProcess(
        Path(handle.kubeconfig), logs / "operator-bench-scale-1.log", env=env1, verbose=False
    )
    op1.log_path.unlink(missing_ok=True)
    rss.procs["stage1"] = op1
    results: JSON = {}
    try:
        # --- 1. start-up and idle ----------------------------------------------------------------
        started = time.monotonic()
        op1.start(timeout=120)
        wait_for(
            f"the first reconcile of all {len(stage1)} migrations",
            lambda: all(k in first_reconcile for k in stage1),
            timeout=1800,
            interval=0.2,
            still_possible=lambda: op1.running,
        )
        startup_s = max(first_reconcile[k] for k in stage1) - started
        startup_requests = api_requests(op1)
        print(
            f"start-up: every migration reconciled {startup_s:.1f} s after the operator started; "
            f"its API requests by then, by verb: {dict(startup_requests)} (list and watch "
            "requests of the watches are kopf's, not counted)"
        )

        waiting = {(ns, m) for ns, m in stage1 if int(m[2:]) % 2 == 1}

        def settled() -> bool:
            objs = {_key(o): o for o in migrations.snapshot()}
            return all(stalled_reason(objs[k]) == "SecretNotFound" for k in waiting)

        wait_for("the waiting half Stalled on SecretNotFound", settled, timeout=600)
        wait_quiet(op1)  # the last status writes and their echoes are done
        # What the operator reads while idle and, while nothing changes, no other client asks for.
        server_side = {"datamigrations", "secrets", "deployments", "replicasets", "jobs", "pods"}
        before, server_before = api_requests(op1), apiserver_requests(kube, server_side)
        idle_start = time.monotonic()
        time.sleep(args.idle_seconds)  # the measured idle window (a measurement, not a wait)
        after, server_after = api_requests(op1), apiserver_requests(kube, server_side)
        idle_minutes = (time.monotonic() - idle_start) / 60
        idle = delta(after, before)
        idle_per_min = sum(idle.values()) / idle_minutes
        print(
            f"idle ({len(stage1)} present: {len(waiting)} on a missing Secret, "
            f"{len(stage1) - len(waiting)} paused): {idle_per_min:.0f} API requests/min by the "
            f"operator's metric, by verb over {idle_minutes * 60:.0f} s: {idle} (PUT: the Lease); "
            f"API server's count on {sorted(server_side)} by every client: "
            f"{(server_after - server_before) / idle_minutes:.0f}/min "
            f"(the operator's own, Lease aside: "
            f"{without_lease(Counter(idle)) / idle_minutes:.0f}/min)"
        )
        results.update(
            startup_s=round(startup_s, 1),
            startup_requests_by_verb=dict(startup_requests),
            api_requests_per_min_idle=round(idle_per_min, 1),
            idle_requests_by_verb=idle,
            idle_apiserver_requests_per_min=round((server_after - server_before) / idle_minutes),
        )
        op1.stop()

        # --- 2. fan-out and reaction under it ---------------------------------------------------
        if "2" in args.stages:
            results.update(
                fanout_stage(
                    kube, handle=handle, rss=rss, fanout=fanout, probes=args.probes, url=url
                )
            )

        # --- 3. everything to Succeeded --------------------------------------------------------
        if "3" in args.stages:
            for ns in namespaces:
                kube.apply(secret(ns, LATE_SECRET, {}))
                kube.client.merge_patch(
                    f"/apis/apps/v1/namespaces/{ns}/deployments/shop-api",
                    {
                        "spec": {
                            "template": {
                                "spec": {"containers": [{"name": "api", "image": IMAGE_2}]}
                            }
                        }
                    },
                )
            # Stage 2's namespace goes first: the stage-3 operator serves the whole cluster.
            kube.delete_namespace(FANOUT_NS)
            wait_for(
                f"namespace {FANOUT_NS} to go",
                lambda: not kube.namespace_has(FANOUT_NS),
                timeout=600,
            )
            op1b = OperatorProcess(
                Path(handle.kubeconfig),
                logs / "operator-bench-scale-3.log",
                env=env1,
                verbose=False,
            )
            op1b.log_path.unlink(missing_ok=True)
            rss.procs["stage3"] = op1b
            op1b.start(timeout=120)
            try:
                results.update(
                    final_stage(
                        kube,
                        migrations=migrations,
                        stage1=stage1,
                        waiting=waiting,
                        args=args,
                        url=url,
                        operator=op1b,
                    )
                )
            finally:
                op1b.stop()
    finally:
        op1.stop()
        rss.stop.set()

    peaks = {label: round(v, 1) for label, v in rss.peaks.items()}
    result: JSON = {
        "migrations": len(stage1),
        "namespaces": args.namespaces,
        "succeeded": results.get("succeeded"),
        "wall_s": results.get("wall_s"),
        "startup_s": results.get("startup_s"),
        "rss_mb_peak": max(peaks.values()) if peaks else None,
        "api_requests_per_min_idle": results.get("api_requests_per_min_idle"),
        "fanout_api_requests": results.get("fanout_api_requests"),
        "reaction_p99_ms_under_fanout": results.get("reaction_p99_ms_under_fanout"),
        **{k: v for k, v in results.items() if k not in ("succeeded", "wall_s")},
        "rss_mb_peak_by_stage": peaks,
        "fanout_migrations": fanout,
        "bench_s": round(time.monotonic() - bench_started),
        "stages": args.stages,
    }
    met = {
        "succeeded": result["succeeded"] == len(stage1),
        **{
            k: result[k] is not None and result[k] <= limit
            for k, limit in TARGETS.items()
            if k != "succeeded" and isinstance(limit, int)
        },
    }
    print("targets:")
    for k, limit in TARGETS.items():
        print(f"  {k}: {result[k]} (target: {limit}{'' if k == 'succeeded' else ' at most'}) "
              f"{'met' if met[k] else 'NOT MET'}")  # fmt: skip
    result["targets_met"] = met
    print(json.dumps(result))
    return 0


def fanout_stage(
    kube: Kube,
    *,
    handle: Any,
    rss: RssSampler,
    fanout: int,
    probes: int,
    url: Callable[[str, str], str],
) -> JSON:
    ns = FANOUT_NS
    print(f"fan-out: {fanout} paused migrations naming one Deployment, {probes} probes")
    fresh_namespace(kube, ns)
    kube.apply(named_deployment(ns, "shop-api", IMAGE_1, replicas=2))
    kube.apply(named_deployment(ns, "probe-api", PROBE_IMAGE_1, replicas=2))
    idle_names = [f"idle-{i:04d}" for i in range(fanout)]
    probe_names = [f"probe-{i:02d}" for i in range(probes)]
    kube.apply(secret(ns, DB_SECRET, {n: url(ns, n) for n in idle_names + probe_names}))
    for n in idle_names:
        kube.apply(
            small_migration(
                ns, n, secret_name=DB_SECRET, workload="shop-api", image=IMAGE_2, paused=True
            )
        )
    wait_for("probe-api available", lambda: available(kube, ns, "probe-api", 2), timeout=120)
    for n in probe_names:
        kube.apply(
            small_migration(
                ns,
                n,
                secret_name=DB_SECRET,
                workload="probe-api",
                image=PROBE_IMAGE_2,
                paused=False,
            )
        )

    proven: dict[str, float] = {}
    contract_job: dict[str, float] = {}
    pods: dict[str, JSON] = {}
    state: JSON = {"dep": None, "armed": False}
    lock = threading.Lock()

    def check_proven(t: float) -> None:
        dep = state["dep"]
        if (
            state["armed"]
            and dep
            and "at" not in proven
            and rollout_proven(dep, pods, PROBE_IMAGE_2)
        ):
            proven["at"] = t

    def on_deployment(t: float, kind: str, obj: JSON) -> None:
        if obj["metadata"]["name"] == "probe-api":
            with lock:
                state["dep"] = obj
                check_proven(t)

    def on_pod(t: float, kind: str, obj: JSON) -> None:
        if obj["metadata"].get("labels", {}).get("app") == "probe-api":
            with lock:
                if kind == "DELETED":
                    pods.pop(obj["metadata"]["name"], None)
                else:
                    pods[obj["metadata"]["name"]] = obj
                check_proven(t)

    def on_job(t: float, kind: str, obj: JSON) -> None:
        labels = obj["metadata"].get("labels", {})
        if kind == "ADDED" and labels.get("datamigration.dev/phase") == "contract":
            contract_job.setdefault(str(labels.get("datamigration.dev/migration")), t)

    watches = [
        Mirror(kube, f"/apis/apps/v1/namespaces/{ns}/deployments", on_deployment),
        Mirror(kube, f"/api/v1/namespaces/{ns}/pods", on_pod),
        Mirror(kube, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job),
    ]
    for w in watches:
        w.start()
        w.synced.wait(60)
    with lock:
        for obj in watches[1].snapshot():
            if obj["metadata"].get("labels", {}).get("app") == "probe-api":
                pods[obj["metadata"]["name"]] = obj
        state["dep"] = next(
            (o for o in watches[0].snapshot() if o["metadata"]["name"] == "probe-api"), None
        )

    op = OperatorProcess(
        Path(handle.kubeconfig),
        Path(handle.logs_dir) / "operator-bench-scale-2.log",
        # Its own namespace only: stage 1's migrations are still there, and this stage measures
        # one namespace's fan-out (one namespace costs no more watches than the whole cluster).
        env={"DATAMIGRATION_NAMESPACES": ns},
        verbose=bool(os.environ.get("BENCH_VERBOSE")),
    )
    op.log_path.unlink(missing_ok=True)
    rss.procs["stage2"] = op
    op.start(timeout=120)
    try:

        def ready() -> bool:
            objs = {o["metadata"]["name"]: o for o in kube.client.list_items(migration_path(ns))}
            return all(n in objs and reconciled(objs[n]) for n in idle_names) and all(
                objs.get(n, {}).get("status", {}).get("phase") == "RollingOut" for n in probe_names
            )

        def probes_alive() -> bool:
            objs = {o["metadata"]["name"]: o for o in kube.client.list_items(migration_path(ns))}
            return not any(
                objs.get(n, {}).get("status", {}).get("phase") in TERMINAL for n in probe_names
            )

        wait_for(
            "paused reconciled, probes waiting in RollingOut",
            ready,
            timeout=1800,
            interval=1,
            still_possible=probes_alive,
            diagnostics=lambda: f"see {op.log_path}",
        )
        wait_quiet(op)
        dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/shop-api"

        before, reconciles_before = api_requests(op), reconciles(op)
        kube.client.merge_patch(dep_path, {"metadata": {"annotations": {"bench/touch": "1"}}})
        touched = time.monotonic()
        processing_s = wait_quiet(op) - touched
        after, woken = api_requests(op), reconciles(op) - reconciles_before
        caused = delta(after, before)
        count = without_lease(after) - without_lease(before)
        print(
            f"fan-out: one annotation of the Deployment {fanout} paused migrations name cost "
            f"{count} API requests (Lease aside) and {woken} reconciles, processed in "
            f"{processing_s:.1f} s: {caused}"
        )

        # Reaction under a fan-out: annotate again and roll probe-api out at once. This
        # process's garbage collector is off while it times the reaction: a full collection
        # of its own (it has listed a thousand migrations) stopped its watch threads for a few
        # hundred ms, which showed as the operator's latency.
        gc.collect()
        gc.disable()
        with lock:
            state["armed"] = True
        kube.client.merge_patch(dep_path, {"metadata": {"annotations": {"bench/touch": "2"}}})
        touched = time.monotonic()
        kube.client.merge_patch(
            f"/apis/apps/v1/namespaces/{ns}/deployments/probe-api",
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": "api", "image": PROBE_IMAGE_2}]}}
                }
            },
        )
        wait_for(
            "every probe's contract Job",
            lambda: all(n in contract_job for n in probe_names),
            timeout=600,
        )
    finally:
        gc.enable()
        op.stop()
    assert "at" in proven, "the probe rollout was never proven"
    reactions = [(contract_job[n] - proven["at"]) * 1000 for n in probe_names]
    # The second fan-out is processed alongside the probes' work, so its end is not seen apart:
    # the first one's processing time (measured alone) stands for it.
    during = proven["at"] - touched <= processing_s
    print(
        f"reaction under fan-out: rollout proven {proven['at'] - touched:.1f} s after the "
        f"annotation, a fan-out takes {processing_s:.1f} s "
        f"(so {'during' if during else 'AFTER'} it); contract Jobs "
        f"p50 {statistics.median(reactions):.0f} ms, max {max(reactions):.0f} ms after the proof"
    )
    if os.environ.get("BENCH_VERBOSE"):  # to read beside the operator's log (its clock)
        offset = time.time() - time.monotonic()
        print(f"  proof at {_clock(proven['at'] + offset)}; contract Jobs seen at:")
        for n in sorted(probe_names, key=contract_job.__getitem__):
            print(f"    {n} {_clock(contract_job[n] + offset)}")
    return {
        "fanout_api_requests": count,
        "fanout_requests_by_verb": caused,
        "fanout_reconciles": woken,
        "fanout_processing_s": round(processing_s, 1),
        "reaction_p99_ms_under_fanout": round(percentile(reactions, 0.99), 1),
        "reaction_p50_ms_under_fanout": round(statistics.median(reactions), 1),
        "reaction_samples": len(reactions),
        "proven_during_fanout": during,
    }


def _clock(wall: float) -> str:
    """A wall-clock time as the operator's log prints it (local time, milliseconds)."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f",{int(wall % 1 * 1000):03d}"


def final_stage(
    kube: Kube,
    *,
    migrations: Mirror,
    stage1: list[tuple[str, str]],
    waiting: set[tuple[str, str]],
    args: argparse.Namespace,
    url: Callable[[str, str], str],
    operator: OperatorProcess,
) -> JSON:
    """`operator` is started again if it exits, as its Deployment would restart it (a leader
    that cannot renew its Lease exits by design); the restarts are counted."""
    print(f"running all {len(stage1)} to Succeeded, at most {args.concurrency} at once")
    restarts = 0
    pending = list(stage1)
    released: set[tuple[str, str]] = set()
    started = time.monotonic()
    last_report = started

    def phases() -> dict[tuple[str, str], str]:
        return {_key(o): str(o.get("status", {}).get("phase", "")) for o in migrations.snapshot()}

    while True:
        now = phases()
        done = {k for k in stage1 if now.get(k) in TERMINAL}
        if len(done) == len(stage1) or time.monotonic() - started > args.final_timeout:
            break
        if not operator.running:
            restarts += 1
            print(f"  the operator exited ({operator.log_path}): started again, as a pod would be")
            operator.start(timeout=120)
        in_flight = len(released - done)
        while pending and in_flight < args.concurrency:
            ns, name = pending.pop(0)
            if (ns, name) in waiting:
                kube.client.merge_patch(
                    f"/api/v1/namespaces/{ns}/secrets/{LATE_SECRET}",
                    {"stringData": {name: url(ns, name)}},
                )
            else:
                kube.client.merge_patch(migration_path(ns, name), {"spec": {"paused": False}})
            released.add((ns, name))
            in_flight += 1
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            print(
                f"  {time.monotonic() - started:.0f} s: {len(done)} finished, {in_flight} running"
            )
        time.sleep(0.5)  # the release loop's period (it reads this process's watch)
    wall = time.monotonic() - started
    counts = Counter(phases().get(k, "") for k in stage1)
    failed = [k for k in stage1 if phases().get(k) in ("Failed", "Invalid", "Aborted")]
    if failed:
        ns, name = failed[0]
        print(f"  e.g. {ns}/{name}: {kube.migration(ns, name).get('status', {}).get('message')}")
    print(f"final: {dict(counts)} after {wall:.0f} s")
    return {
        "succeeded": counts.get("Succeeded", 0),
        "wall_s": round(wall, 1),
        "operator_restarts": restarts,
    }


if __name__ == "__main__":
    sys.exit(main())
