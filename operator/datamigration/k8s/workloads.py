"""Read one workload of any kind with everything its rollout gate needs, for the operator
(`controller/observe.py`) and the contract Job's re-check (`runner/gate.py`) alike, so both prove
the same thing from the same reads.

Reads only (get and list): the workload object; what it owns that its gate looks at (ReplicaSets
of a Deployment or Rollout, ControllerRevisions of a DaemonSet, Jobs of a CronJob); and its pods
(by its selector, terminating ones included; for a CronJob, the namespace's Job pods).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, Protocol

from datamigration.core.observed import Workload
from datamigration.k8s.cluster import ApiNotServed, label_selector

JSON = dict[str, Any]


class WorkloadReader(Protocol):
    """The reads (datamigration.k8s.cluster.ClusterApi has them)."""

    def get_deployment(self, namespace: str, name: str) -> JSON | None: ...

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None: ...

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]: ...

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]: ...

    def list_jobs(self, namespace: str, selector: str) -> list[JSON]: ...

    def list_pods(self, namespace: str, selector: str) -> list[JSON]: ...


def read_workload(
    api: WorkloadReader,
    namespace: str,
    kind: str,
    name: str,
    selector: str = "",
    *,
    parallel: Executor | None = None,
    expected_selector: str | None = None,
) -> Workload | None:
    """The workload (None: it does not exist; `unreadable` set: the cluster does not serve its
    kind). For kind Pods, `selector` (query-string form) picks the pods.

    The workload is read first; what it owns and its pods after it, both by its selector, side
    by side with `parallel`. Their order does not matter to the proof: a newer rollout that
    begins between the reads leaves pods of a ReplicaSet that is not the one matching the
    template read, which the gate counts as old (never as proof).

    `expected_selector` (the selector of the workload as last seen, from the watch cache) lets
    the owned objects and the pods be read side by side with the workload itself, not after it:
    the selector of these kinds cannot change, so when the workload read shows the same one,
    the reads are the very ones that would have followed it; otherwise (the workload was
    re-created with another) they are made again with the selector read. One round trip less
    between a rollout's proof and the contract Job."""
    if kind == "Pods":
        return Workload({}, (), api.list_pods(namespace, selector), kind="Pods")
    early = None
    if parallel is not None and expected_selector and kind in IMMUTABLE_SELECTOR_KINDS:
        early = (
            expected_selector,
            parallel.submit(_read_owned, api, namespace, kind, expected_selector),
            parallel.submit(api.list_pods, namespace, expected_selector),
        )
    if kind == "Deployment":
        obj = api.get_deployment(namespace, name)
    else:
        try:
            obj = api.get_workload(namespace, kind, name)
        except ApiNotServed as exc:
            return Workload({}, kind=kind, unreadable=str(exc))
    if obj is None:
        return None
    if kind == "CronJob":
        uid = obj.get("metadata", {}).get("uid")
        jobs = [
            j
            for j in api.list_jobs(namespace, "")
            if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])
        ]
        # Every Job pod: the gate keeps those of the CronJob's Jobs, including a pod still
        # terminating after its Job was deleted.
        return Workload(obj, jobs, api.list_pods(namespace, "job-name"), kind="CronJob")
    pod_selector = label_selector(obj.get("spec", {}).get("selector", {}))
    if early is not None and early[0] == pod_selector:
        return Workload(obj, early[1].result(), early[2].result(), kind=kind)
    if parallel is not None:
        pending = parallel.submit(_read_owned, api, namespace, kind, pod_selector)
        pods = api.list_pods(namespace, pod_selector)
        return Workload(obj, pending.result(), pods, kind=kind)
    owned = _read_owned(api, namespace, kind, pod_selector)
    return Workload(obj, owned, api.list_pods(namespace, pod_selector), kind=kind)


#: The kinds whose `spec.selector` the API server refuses to change (apps/v1).
IMMUTABLE_SELECTOR_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def _read_owned(api: WorkloadReader, namespace: str, kind: str, pod_selector: str) -> list[JSON]:
    """What the workload owns that its gate looks at, by its selector."""
    if kind in ("Deployment", "Rollout"):
        return api.list_replicasets(namespace, pod_selector)
    if kind == "DaemonSet":
        return api.list_controller_revisions(namespace, pod_selector)
    return []
