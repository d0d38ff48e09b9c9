"""`make bench-operator`: how fast the operator reacts, and what it costs in memory.

reaction: from the moment a Deployment's rollout is complete and proven (the kubectl
rollout-status conditions hold AND the last pod of the old ReplicaSet is gone) to the moment the
contract Job exists. Both moments are taken by this process's own watches on the API server, on
one clock. `trials` migrations, each with its own 3-replica Deployment whose image is changed
(codeRollout: Observe, as under GitOps).

memory: the operator's resident set with 200 DataMigrations present (all reconciled), and, as the
baseline measured in the same run, the same process with none.

Also measured as a baseline: the API server's own watch latency here (create an object, see it
on a watch), which bounds any reaction from below.

Prints human lines, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))  # an entry point: find the local-cluster harness

from datamigration.k8s.client import KubeClient, migration_path  # noqa: E402
from localcluster import chart  # noqa: E402
from localcluster import cluster as local_cluster  # noqa: E402
from localcluster.operatorproc import OperatorProcess  # noqa: E402
from localcluster.waiting import wait_for  # noqa: E402

NS = "bench-operator"


def deployment(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "api", "image": image}]},
            },
        },
    }


def migration(name: str, app: str, *, paused: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "database": {"urlFrom": {"secretKeyRef": {"name": "bench-db", "key": "url"}}},
            "workload": {"name": app, "container": "api", "image": f"bench/{app}:2"},
            "codeRollout": {"mode": "Observe", "timeoutSeconds": 600},
            "contract": {
                "approval": "Automatic",
                "verify": [{"name": "ok", "query": "SELECT 1", "expect": 1}],
                "steps": [{"name": "noop", "sql": "SELECT 1"}],
            },
            "paused": paused,
        },
    }


class Watcher(threading.Thread):
    """Timestamps (time.monotonic on arrival) of watch events, into a queue."""

    def __init__(self, api_call: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.api_call, self.kwargs = api_call, kwargs
        self.events: queue.Queue[tuple[float, str, dict[str, Any]]] = queue.Queue()

    def run(self) -> None:
        w = watch.Watch()
        for event in w.stream(self.api_call, namespace=NS, _request_timeout=3600, **self.kwargs):
            obj = event["object"]
            body = (
                obj if isinstance(obj, dict) else client.ApiClient().sanitize_for_serialization(obj)
            )
            self.events.put((time.monotonic(), event["type"], body))


def rollout_proven(dep: dict[str, Any], pods: dict[str, dict[str, Any]], image: str) -> bool:
    spec, st, meta = dep["spec"], dep.get("status", {}), dep["metadata"]
    if spec["template"]["spec"]["containers"][0]["image"] != image:
        return False
    if st.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    n = spec.get("replicas", 1)
    if not (st.get("updatedReplicas") == n == st.get("availableReplicas") == st.get("replicas")):
        return False
    return bool(pods) and all(p["spec"]["containers"][0]["image"] == image for p in pods.values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--migrations", type=int, default=200)
    args = parser.parse_args()

    handle = local_cluster.ensure_up()
    config.load_kube_config(str(handle.kubeconfig))
    kube = KubeClient(client.ApiClient())
    apps, batch, core = client.AppsV1Api(), client.BatchV1Api(), client.CoreV1Api()
    chart.install_prerequisites(kube, Path(handle.bin_dir), field_manager="bench")
    try:
        core.delete_namespace(NS)
        wait_for("the old bench namespace to go", lambda: not _exists(core, NS), timeout=120)
    except client.ApiException:
        pass
    kube.server_side_apply(
        f"/api/v1/namespaces/{NS}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        field_manager="bench",
    )
    kube.server_side_apply(
        f"/api/v1/namespaces/{NS}/secrets/bench-db",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-db", "namespace": NS},
            "stringData": {"url": "sqlite:////tmp/datamigration-bench.db"},
        },
        field_manager="bench",
    )

    # Baseline: the API server's own create-to-watch latency.
    cm_watch = Watcher(core.list_namespaced_config_map)
    cm_watch.start()
    time.sleep(0.5)  # let the watch connect before the first create (a measurement warm-up)
    api_latency = []
    for i in range(args.trials):
        t0 = time.monotonic()
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"probe-{i}"}})
        while True:
            t, kind, obj = cm_watch.events.get(timeout=30)
            if kind == "ADDED" and obj["metadata"]["name"] == f"probe-{i}":
                api_latency.append((t - t0) * 1000)
                break

    log = Path(handle.logs_dir) / "operator-bench.log"
    operator = OperatorProcess(handle.kubeconfig, log, env={"DATAMIGRATION_NAMESPACES": NS}).start()
    try:
        time.sleep(2)  # idle baseline after start-up settles (a measurement, not synchronisation)
        rss_0 = operator.rss_mb()
        print(f"operator RSS with no DataMigration: {rss_0:.1f} MB")

        kube.server_side_apply(
            f"/apis/apps/v1/namespaces/{NS}/deployments/idle-app",
            deployment("idle-app", "bench/idle-app:1"),
            field_manager="bench",
        )
        for i in range(args.migrations):
            doc = migration(f"idle-{i:03d}", "idle-app", paused=True)
            kube.server_side_apply(
                migration_path(NS, doc["metadata"]["name"]), doc, field_manager="bench"
            )

        def all_reconciled() -> bool:
            items = kube.list_items(migration_path(NS))
            return (
                sum(1 for m in items if m.get("status", {}).get("observedGeneration"))
                >= args.migrations
            )

        wait_for(f"{args.migrations} migrations reconciled", all_reconciled, timeout=600)
        rss_200 = operator.rss_mb()
        print(f"operator RSS with {args.migrations} DataMigrations: {rss_200:.1f} MB")

        dep_watch = Watcher(apps.list_namespaced_deployment)
        pod_watch = Watcher(core.list_namespaced_pod)
        job_watch = Watcher(batch.list_namespaced_job)
        for w in (dep_watch, pod_watch, job_watch):
            w.start()
        reactions: list[float] = []
        for i in range(args.trials):
            app = f"app-{i:02d}"
            kube.server_side_apply(
                f"/apis/apps/v1/namespaces/{NS}/deployments/{app}",
                deployment(app, f"bench/{app}:1"),
                field_manager="bench",
            )
            wait_for(
                f"{app} available",
                lambda: (
                    (apps.read_namespaced_deployment(app, NS).status.available_replicas or 0) == 3  # noqa: B023 - called at once
                ),
                timeout=60,
            )
            doc = migration(f"trial-{i:02d}", app)
            kube.server_side_apply(
                migration_path(NS, doc["metadata"]["name"]), doc, field_manager="bench"
            )
            wait_for(
                "trial waiting for the rollout",
                lambda: (
                    kube.get(migration_path(NS, doc["metadata"]["name"]))  # noqa: B023 - called at once
                    .get("status", {})
                    .get("phase")
                    == "RollingOut"
                ),
                timeout=60,
            )
            image = f"bench/{app}:2"
            apps.patch_namespaced_deployment(
                app,
                NS,
                {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}},
            )

            dep: dict[str, Any] = {}
            pods: dict[str, dict[str, Any]] = {}
            proven_at: float | None = None
            job_at: float | None = None
            deadline = time.monotonic() + 120
            while job_at is None and time.monotonic() < deadline:
                drained = False
                for w, kind in ((dep_watch, "dep"), (pod_watch, "pod"), (job_watch, "job")):
                    try:
                        t, etype, obj = w.events.get_nowait()
                    except queue.Empty:
                        continue
                    drained = True
                    name = obj["metadata"]["name"]
                    if kind == "dep" and name == app:
                        dep = obj
                    elif kind == "pod" and obj["metadata"].get("labels", {}).get("app") == app:
                        if etype == "DELETED":
                            pods.pop(name, None)
                        else:
                            pods[name] = obj
                    elif (
                        kind == "job"
                        and etype == "ADDED"
                        and name.startswith(f"trial-{i:02d}-contract")
                    ):
                        job_at = t
                    if dep and proven_at is None and rollout_proven(dep, pods, image):
                        proven_at = t
                if not drained:
                    time.sleep(0.001)
            if proven_at is None or job_at is None:
                print(f"trial {i}: no reaction observed (proven={proven_at}, job={job_at})")
                continue
            reactions.append((job_at - proven_at) * 1000)
            print(
                f"trial {i:2d}: contract Job {reactions[-1]:7.1f} ms after the rollout was proven"
            )
    finally:
        operator.stop()

    result = {
        "trials": len(reactions),
        "reaction_p50_ms": round(statistics.median(reactions), 1) if reactions else None,
        "reaction_p99_ms": round(percentile(reactions, 0.99), 1) if reactions else None,
        "reaction_max_ms": round(max(reactions), 1) if reactions else None,
        "api_watch_latency_p50_ms": round(statistics.median(api_latency), 1),
        "rss_mb_0": round(rss_0, 1),
        "rss_mb_200": round(rss_200, 1),
        "migrations": args.migrations,
    }
    print(json.dumps(result))
    ok = reactions and len(reactions) >= 20 and result["reaction_p50_ms"] <= 1000 and rss_200 <= 150
    return 0 if ok else 1


def _exists(core: Any, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
