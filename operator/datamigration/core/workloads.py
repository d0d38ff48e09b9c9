"""Rollout gates for every workload kind besides the Deployment (`core/rollout.py` has that one).

Why: an application's database is used by more than one Deployment: StatefulSets, DaemonSet
agents, CronJobs, Argo Rollouts, and pods no controller owns. "No pod of the old code is left"
must hold for all of them, so each kind gets a gate that proves it the way that kind's controller
records a finished rollout, and then, independently of the controller's counters, by looking at
every pod (terminating ones included: they still hold database connections).

Every gate returns the same `RolloutVerdict` as `evaluate_rollout` (state, a message naming what
is not yet proven, the counts), so `decide`, status and the CLI treat every kind alike.
`evaluate_workload` picks the gate by kind. Pure: the caller lists the objects.

- StatefulSet: the controller observed the generation; a `partition` above 0 while
  `currentRevision != updateRevision` is a rollout deliberately stopped short (pods below the
  partition keep the old revision), so not complete; every replica updated and ready;
  `currentRevision == updateRevision` (RollingUpdate; with OnDelete the controller never moves
  currentRevision until every pod was deleted, so the pod check below is what proves it); every
  pod carries
  `controller-revision-hash == updateRevision`; the template and every pod run the image.
- DaemonSet: observed generation; `updatedNumberScheduled == desiredNumberScheduled`;
  `numberUnavailable == 0`; every pod on the newest ControllerRevision the DaemonSet owns
  (highest `revision`); the image.
- CronJob: its jobTemplate runs the image, and no pod of its Jobs that has not finished
  (terminating included) runs another image.
- Argo Rollouts `Rollout`: observed generation, not paused or aborted, `phase: Healthy`,
  `stableRS == currentPodHash`, no other owned ReplicaSet (canary, preview) still scaled above
  0, every pod on the stable `rollouts-pod-template-hash`; the image.
- Pods (a label selector): every matching pod that has not finished, terminating included, runs
  the image (required for this kind: there is no template to take it from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datamigration.core.rollout import Obj, RolloutState, RolloutVerdict, evaluate_rollout

REVISION_HASH = "controller-revision-hash"
ROLLOUTS_HASH = "rollouts-pod-template-hash"
#: At most this many pod names in a message (the count is always given).
NAMED = 3

KINDS: tuple[str, ...] = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Rollout", "Pods")


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _labels(obj: Obj) -> Mapping[str, Any]:
    labels: Mapping[str, Any] = _meta(obj).get("labels") or {}
    return labels


def _image(pod_spec: Obj, container: str) -> str | None:
    for c in pod_spec.get("containers", []) or []:
        if c.get("name") == container:
            return str(c.get("image", ""))
    return None


def _spec_at(obj: Obj, *path: str) -> Obj:
    node: Any = obj
    for key in path:
        node = (node or {}).get(key) or {}
    result: Obj = node
    return result


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences", []) or [])


def _terminating(pod: Obj) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def finished(pod: Obj) -> bool:
    """A pod whose containers have all ended (Succeeded/Failed) runs no code any more."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _names(pods: Sequence[Obj]) -> str:
    names = sorted(str(_meta(p).get("name")) for p in pods)
    return ", ".join(names[:NAMED]) + (" ..." if len(names) > NAMED else "")


def _generation_unobserved(obj: Obj) -> bool:
    status = obj.get("status") or {}
    try:
        observed = int(status.get("observedGeneration") or 0)
    except (TypeError, ValueError):
        return True
    return int(_meta(obj).get("generation", 0)) > observed


class _Builder:
    """Carries the counts every verdict of one evaluation shares."""

    def __init__(self, image: str, revision: str = "", pod_hash: str = "") -> None:
        self.image = image
        self.revision = revision
        self.pod_hash = pod_hash
        self.replicas = 0
        self.updated = 0
        self.available = 0
        self.old: list[Obj] = []

    def __call__(self, state: RolloutState, message: str) -> RolloutVerdict:
        return RolloutVerdict(
            state=state,
            message=message,
            revision=self.revision,
            pod_template_hash=self.pod_hash,
            image=self.image,
            replicas=self.replicas,
            updated_replicas=self.updated,
            available_replicas=self.available,
            old_pods=len(self.old),
            terminating_pods=sum(1 for p in self.old if _terminating(p)),
        )


def _image_checks(
    v: _Builder,
    what: str,
    pods: Sequence[Obj],
    container: str,
    expected_image: str | None,
) -> RolloutVerdict | None:
    """The template runs the image, and every pod runs it (None: proven)."""
    if expected_image is None:
        return None
    if v.image != expected_image:
        return v("InProgress", f"{what} template runs {v.image or 'nothing'}, not {expected_image}")
    stale = [p for p in pods if _image(p.get("spec") or {}, container) != expected_image]
    if stale:
        return v(
            "InProgress",
            f"{len(stale)} pod(s) of {what} do not run {expected_image}: {_names(stale)}",
        )
    return None


def _pods_on(
    v: _Builder, what: str, pods: Sequence[Obj], label: str, wanted: str
) -> RolloutVerdict | None:
    """Every pod, terminating included, carries `label == wanted` (None: proven)."""
    v.old = [p for p in pods if not wanted or _labels(p).get(label) != wanted]
    if v.old:
        terminating = sum(1 for p in v.old if _terminating(p))
        return v(
            "InProgress",
            f"{len(v.old)} pod(s) of {what} are not on revision {wanted or '(unknown)'} "
            f"({terminating} terminating): {_names(v.old)}",
        )
    return None


def evaluate_statefulset(
    sts: Obj, pods: Sequence[Obj], *, container: str, expected_image: str | None
) -> RolloutVerdict:
    """The StatefulSet gate (see the module docstring); `pods` match its selector."""
    meta, spec, status = _meta(sts), sts.get("spec") or {}, sts.get("status") or {}
    what = f"StatefulSet {meta.get('name', '')}"
    update = str(status.get("updateRevision") or "")
    current = str(status.get("currentRevision") or "")
    v = _Builder(_image(_spec_at(sts, "spec", "template", "spec"), container) or "", update, update)
    v.replicas = int(spec.get("replicas", 1))
    v.updated = int(status.get("updatedReplicas") or 0)
    v.available = int(status.get("availableReplicas", status.get("readyReplicas")) or 0)
    v.old = [p for p in pods if not update or _labels(p).get(REVISION_HASH) != update]
    strategy = spec.get("updateStrategy") or {}
    on_delete = strategy.get("type") == "OnDelete"
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)

    if _generation_unobserved(sts):
        return v("InProgress", f"waiting for {what} spec update to be observed")
    if not on_delete and partition > 0 and current != update:
        return v(
            "InProgress",
            f"{what} has updateStrategy.rollingUpdate.partition {partition}: pods with an "
            f"ordinal below {partition} keep the old revision, so the rollout is not complete",
        )
    if v.updated < v.replicas:
        return v("InProgress", f"{v.updated} of {v.replicas} {what} replicas are updated")
    ready = int(status.get("readyReplicas") or 0)
    if ready < v.replicas:
        return v("InProgress", f"{ready} of {v.replicas} {what} replicas are ready")
    if not on_delete and current != update:
        return v(
            "InProgress",
            f"{what} currentRevision {current or '(none)'} is not updateRevision "
            f"{update or '(none)'}",
        )
    blocked = _pods_on(v, what, pods, REVISION_HASH, update) or _image_checks(
        v, what, pods, container, expected_image
    )
    if blocked:
        return blocked
    return v("Complete", f"all {len(pods)} pods of {what} run revision {update} ({v.image})")


def newest_controller_revision(owner: Obj, revisions: Sequence[Obj]) -> Obj | None:
    """The owned ControllerRevision with the highest `revision` (the DaemonSet's current one)."""
    uid = _meta(owner).get("uid", "")
    owned = [r for r in revisions if _owned_by(r, uid)]
    if not owned:
        return None
    return max(owned, key=lambda r: int(r.get("revision") or 0))


def evaluate_daemonset(
    ds: Obj,
    revisions: Sequence[Obj],
    pods: Sequence[Obj],
    *,
    container: str,
    expected_image: str | None,
) -> RolloutVerdict:
    """The DaemonSet gate (see the module docstring); `pods` match its selector."""
    meta, status = _meta(ds), ds.get("status") or {}
    what = f"DaemonSet {meta.get('name', '')}"
    newest = newest_controller_revision(ds, revisions)
    wanted = str(_labels(newest).get(REVISION_HASH, "")) if newest is not None else ""
    revision = str(newest.get("revision", "")) if newest is not None else ""
    v = _Builder(
        _image(_spec_at(ds, "spec", "template", "spec"), container) or "", revision, wanted
    )
    desired = int(status.get("desiredNumberScheduled") or 0)
    v.replicas = desired
    v.updated = int(status.get("updatedNumberScheduled") or 0)
    v.available = int(status.get("numberAvailable") or 0)
    v.old = [p for p in pods if not wanted or _labels(p).get(REVISION_HASH) != wanted]
    unavailable = int(status.get("numberUnavailable") or 0)

    if _generation_unobserved(ds):
        return v("InProgress", f"waiting for {what} spec update to be observed")
    if v.updated < desired:
        return v("InProgress", f"{v.updated} of {desired} {what} pods are updated")
    if unavailable > 0 or v.available < desired:
        return v(
            "InProgress",
            f"{what}: {v.available} of {desired} pods available ({unavailable} unavailable)",
        )
    if newest is None:
        return v("InProgress", f"waiting for the ControllerRevision of {what}")
    blocked = _pods_on(v, what, pods, REVISION_HASH, wanted) or _image_checks(
        v, what, pods, container, expected_image
    )
    if blocked:
        return blocked
    return v("Complete", f"all {len(pods)} pods of {what} run revision {wanted} ({v.image})")


def _job_finished(job: Obj) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions", []) or []
    )


def evaluate_cronjob(
    cronjob: Obj,
    jobs: Sequence[Obj],
    pods: Sequence[Obj],
    *,
    container: str,
    expected_image: str | None,
) -> RolloutVerdict:
    """The CronJob gate (see the module docstring). `jobs` are the namespace's Jobs (those the
    CronJob owns are used); `pods` are Job pods, of which those of an owned Job count, and those
    whose `job-name` starts with `<cronjob>-` (the CronJob's naming), so a pod still
    terminating after its Job was deleted is not missed."""
    meta = _meta(cronjob)
    what = f"CronJob {meta.get('name', '')}"
    template = _spec_at(cronjob, "spec", "jobTemplate", "spec", "template", "spec")
    v = _Builder(_image(template, container) or "")
    want = expected_image if expected_image is not None else v.image
    uid = meta.get("uid", "")
    owned = [j for j in jobs if _owned_by(j, uid)]
    job_names = {str(_meta(j).get("name")) for j in owned}
    job_uids = {str(_meta(j).get("uid")) for j in owned}
    prefix = f"{meta.get('name', '')}-"
    mine = [
        p
        for p in pods
        if _labels(p).get("job-name") in job_names
        or str(_labels(p).get("job-name", "")).startswith(prefix)
        or any(ref.get("uid") in job_uids for ref in _meta(p).get("ownerReferences", []) or [])
    ]
    live = [p for p in mine if not finished(p)]
    v.replicas = len(live)
    v.old = [p for p in live if _image(p.get("spec") or {}, container) != want]
    v.updated = v.available = len(live) - len(v.old)

    if expected_image is not None and v.image != expected_image:
        return v("InProgress", f"{what} jobTemplate runs {v.image or 'nothing'}, not {want}")
    if v.old:
        return v(
            "InProgress",
            f"{len(v.old)} running pod(s) of {what}'s Jobs do not run {want}: {_names(v.old)}",
        )
    old_jobs = [
        j
        for j in owned
        if not _job_finished(j)
        and _image(_spec_at(j, "spec", "template", "spec"), container) != want
    ]
    if old_jobs:
        names = ", ".join(sorted(str(_meta(j).get("name")) for j in old_jobs)[:NAMED])
        return v(
            "InProgress",
            f"{len(old_jobs)} unfinished Job(s) of {what} run an older template: {names}",
        )
    return v("Complete", f"{what} runs {want}; no Job of an older template is running")


def evaluate_argo_rollout(
    rollout: Obj,
    replicasets: Sequence[Obj],
    pods: Sequence[Obj],
    *,
    container: str,
    expected_image: str | None,
) -> RolloutVerdict:
    """The Argo Rollouts `Rollout` gate (see the module docstring); `pods` match its selector."""
    meta, spec, status = _meta(rollout), rollout.get("spec") or {}, rollout.get("status") or {}
    what = f"Rollout {meta.get('name', '')}"
    stable = str(status.get("stableRS") or "")
    current = str(status.get("currentPodHash") or "")
    v = _Builder(
        _image(_spec_at(rollout, "spec", "template", "spec"), container) or "", current, stable
    )
    v.replicas = int(spec.get("replicas", 1))
    v.updated = int(status.get("updatedReplicas") or 0)
    v.available = int(status.get("availableReplicas") or 0)
    v.old = [p for p in pods if not stable or _labels(p).get(ROLLOUTS_HASH) != stable]
    phase = str(status.get("phase") or "")

    if _generation_unobserved(rollout):
        return v("InProgress", f"waiting for {what} spec update to be observed")
    if status.get("abort"):
        return v("Failed", f"{what} was aborted: {status.get('message') or 'status.abort'}")
    if phase == "Degraded":
        return v("Failed", f"{what} is Degraded: {status.get('message') or 'no message'}")
    if spec.get("paused") or status.get("pauseConditions"):
        return v("InProgress", f"{what} is paused")
    if phase != "Healthy":
        return v("InProgress", f"{what} is {phase or 'not yet Healthy'}")
    if not stable or stable != current:
        return v(
            "InProgress",
            f"{what} stableRS {stable or '(none)'} is not currentPodHash {current or '(none)'}",
        )
    uid = meta.get("uid", "")
    for rs in replicasets:
        if not _owned_by(rs, uid) or _labels(rs).get(ROLLOUTS_HASH) == stable:
            continue
        wanted = int((rs.get("spec") or {}).get("replicas") or 0)
        if wanted > 0:
            return v(
                "InProgress",
                f"ReplicaSet {_meta(rs).get('name')} of {what} (canary or preview) is still "
                f"scaled to {wanted}",
            )
    blocked = _pods_on(v, what, pods, ROLLOUTS_HASH, stable) or _image_checks(
        v, what, pods, container, expected_image
    )
    if blocked:
        return blocked
    return v("Complete", f"all {len(pods)} pods of {what} run stable ReplicaSet {stable}")


def evaluate_pods(
    selector: str, pods: Sequence[Obj], *, container: str, expected_image: str
) -> RolloutVerdict:
    """The `Pods` gate: every matching pod that has not finished (terminating included) runs
    `expected_image` in `container` (a pod without that container does not run it either)."""
    what = f"pods {selector}"
    live = [p for p in pods if not finished(p)]
    v = _Builder(expected_image)
    v.replicas = len(live)
    v.old = [p for p in live if _image(p.get("spec") or {}, container) != expected_image]
    v.updated = v.available = len(live) - len(v.old)
    if v.old:
        terminating = sum(1 for p in v.old if _terminating(p))
        return v(
            "InProgress",
            f"{len(v.old)} of {len(live)} {what} do not run {expected_image} in container "
            f"{container} ({terminating} terminating): {_names(v.old)}",
        )
    return v("Complete", f"all {len(live)} {what} run {expected_image}")


def evaluate_workload(
    kind: str,
    obj: Obj,
    owned: Sequence[Obj],
    pods: Sequence[Obj],
    *,
    container: str,
    expected_image: str | None,
    selector: str = "",
) -> RolloutVerdict:
    """The gate for `kind`. `owned`: ReplicaSets (Deployment, Rollout), ControllerRevisions
    (DaemonSet), Jobs (CronJob); ignored otherwise. For Pods, `obj` is unused."""
    if kind == "Deployment":
        return evaluate_rollout(
            obj, owned, pods, container=container, expected_image=expected_image
        )
    if kind == "StatefulSet":
        return evaluate_statefulset(obj, pods, container=container, expected_image=expected_image)
    if kind == "DaemonSet":
        return evaluate_daemonset(
            obj, owned, pods, container=container, expected_image=expected_image
        )
    if kind == "CronJob":
        return evaluate_cronjob(
            obj, owned, pods, container=container, expected_image=expected_image
        )
    if kind == "Rollout":
        return evaluate_argo_rollout(
            obj, owned, pods, container=container, expected_image=expected_image
        )
    if kind == "Pods":
        if expected_image is None:
            return RolloutVerdict("InProgress", f"pods {selector}: no expected image is known")
        return evaluate_pods(selector, pods, container=container, expected_image=expected_image)
    raise ValueError(f"unknown workload kind {kind}")


_TEMPLATE_SPEC: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def template_image(kind: str, obj: Obj, container: str) -> str | None:
    """The image the workload's pod template gives `container` (None: no such container, or a
    kind without a template)."""
    path = _TEMPLATE_SPEC.get(kind)
    return None if path is None else _image(_spec_at(obj, *path), container)


def template_containers(kind: str, obj: Obj) -> list[str]:
    """The container names of the workload's pod template ([] for Pods)."""
    path = _TEMPLATE_SPEC.get(kind)
    if path is None:
        return []
    return [str(c.get("name")) for c in _spec_at(obj, *path).get("containers", []) or []]


def template_path(kind: str) -> str:
    """Where Apply mode sets the image (JSON path of the containers list), for messages."""
    if kind == "CronJob":
        return "spec.jobTemplate.spec.template.spec.containers"
    return "spec.template.spec.containers"
