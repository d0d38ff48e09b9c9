"""The rollout gate: has the workload finished rolling out, and does every pod run the new code?

Two checks, both required:

1. `kubectl rollout status`'s algorithm, step for step (kubectl's
   `DeploymentStatusViewer.Status`): the controller has observed the latest generation, the
   progress deadline has not been exceeded, every replica is updated, no old replica is pending
   termination, and every updated replica is available.
2. A pod-level proof that (1) cannot give: `status.replicas` does not count pods that are
   terminating, yet those pods still serve requests and hold database connections. So every pod
   the Deployment selects, terminating ones included, must carry the newest ReplicaSet's
   `pod-template-hash`; no older ReplicaSet may still want replicas; and where an image is named,
   the template and every pod run it.

Pure: the caller lists the Deployment, its ReplicaSets and the pods matching its selector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"

RolloutState = Literal["Complete", "InProgress", "Failed"]
Obj = Mapping[str, Any]


@dataclass(frozen=True)
class RolloutVerdict:
    """What the gate concluded, with the counts behind it (shown in status.rollout)."""

    state: RolloutState
    message: str
    revision: str = ""
    pod_template_hash: str = ""
    image: str = ""
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    old_pods: int = 0
    terminating_pods: int = 0

    @property
    def complete(self) -> bool:
        return self.state == "Complete"


def _container_image(pod_spec: Obj, container: str) -> str | None:
    """The image a pod spec gives `container`, or None if it has no such container."""
    for c in pod_spec.get("containers", []):
        if c.get("name") == container:
            image: str = c.get("image", "")
            return image
    return None


def template_container_image(deployment: Obj, container: str) -> str | None:
    """The image the Deployment's pod template gives `container`, or None if no such container."""
    template = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return _container_image(template, container)


def container_names(deployment: Obj) -> list[str]:
    spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return [str(c.get("name")) for c in spec.get("containers", [])]


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def _without_hash(template: Obj) -> dict[str, Any]:
    """A pod template minus the `pod-template-hash` label the ReplicaSet controller adds (and
    minus a `labels`/`metadata` left empty by that)."""
    result = dict(template)
    meta = dict(result.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != POD_TEMPLATE_HASH}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    if meta:
        result["metadata"] = meta
    else:
        result.pop("metadata", None)
    return result


def newest_replicaset(deployment: Obj, replicasets: Sequence[Obj]) -> Obj | None:
    """The Deployment's ReplicaSet for its current pod template, or None before the controller
    created it.

    As the Deployment controller finds it: the owned ReplicaSet whose template equals the
    Deployment's, ignoring `pod-template-hash`. That holds at every stage, including before the
    controller observed a template change (the revision annotation still names the previous
    ReplicaSet then). Failing a template match, the one carrying the Deployment's revision.
    """
    meta = deployment.get("metadata", {})
    uid = meta.get("uid", "")
    owned = [rs for rs in replicasets if _owned_by(rs, uid)]
    template = _without_hash(deployment.get("spec", {}).get("template", {}) or {})
    for rs in owned:
        if _without_hash(rs.get("spec", {}).get("template", {}) or {}) == template:
            return rs
    revision = str(meta.get("annotations", {}).get(REVISION_ANNOTATION, ""))
    if int(meta.get("generation", 0)) > int(
        deployment.get("status", {}).get("observedGeneration", 0)
    ):
        return None  # the revision annotation still names the previous template's ReplicaSet
    for rs in owned:
        if str(rs.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION)) == revision:
            return rs
    return None


def _hash_of(rs: Obj | None) -> str:
    if rs is None:
        return ""
    return str(rs.get("metadata", {}).get("labels", {}).get(POD_TEMPLATE_HASH, ""))


def evaluate_rollout(
    deployment: Obj,
    replicasets: Sequence[Obj],
    pods: Sequence[Obj],
    *,
    container: str,
    expected_image: str | None,
) -> RolloutVerdict:
    """Decide whether the rollout is complete and proven, still in progress, or failed.

    Every verdict, at every stage, carries the same pod counts: `old_pods` are the pods the
    Deployment selects that do not carry the newest ReplicaSet's hash (all of them while that
    ReplicaSet does not exist yet), terminating ones included; `terminating_pods` is how many of
    those are terminating.
    """
    meta, spec, status = (deployment.get(k, {}) for k in ("metadata", "spec", "status"))
    name = meta.get("name", "")
    revision = str(meta.get("annotations", {}).get(REVISION_ANNOTATION, ""))
    image = template_container_image(deployment, container) or ""
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    current = int(status.get("replicas", 0))
    newest = newest_replicaset(deployment, replicasets)
    new_hash = _hash_of(newest)
    old = [
        p
        for p in pods
        if not new_hash
        or p.get("metadata", {}).get("labels", {}).get(POD_TEMPLATE_HASH) != new_hash
    ]
    terminating = [p for p in old if p.get("metadata", {}).get("deletionTimestamp")]

    def verdict(state: RolloutState, message: str) -> RolloutVerdict:
        return RolloutVerdict(
            state=state,
            message=message,
            revision=revision,
            pod_template_hash=new_hash,
            image=image,
            replicas=want,
            updated_replicas=updated,
            available_replicas=available,
            old_pods=len(old),
            terminating_pods=len(terminating),
        )

    # 1. kubectl rollout status, in kubectl's order.
    if int(meta.get("generation", 0)) > int(status.get("observedGeneration", 0)):
        return verdict("InProgress", f"waiting for Deployment {name} spec update to be observed")
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return verdict("Failed", f"Deployment {name} exceeded its progress deadline")
    if spec.get("paused"):
        return verdict("InProgress", f"Deployment {name} is paused")
    if updated < want:
        return verdict("InProgress", f"{updated} of {want} new replicas have been updated")
    if current > updated:
        return verdict("InProgress", f"{current - updated} old replicas are pending termination")
    if available < updated:
        return verdict("InProgress", f"{available} of {updated} updated replicas are available")

    # 2. The pod-level proof.
    if expected_image is not None and image != expected_image:
        return verdict(
            "InProgress",
            f"Deployment {name} template runs {image or 'nothing'}, not {expected_image}",
        )
    if newest is None:
        return verdict("InProgress", f"waiting for the ReplicaSet of revision {revision}")
    uid = meta.get("uid", "")
    for rs in replicasets:
        rs_meta = rs.get("metadata", {})
        if not _owned_by(rs, uid) or rs_meta.get("labels", {}).get(POD_TEMPLATE_HASH) == new_hash:
            continue
        wanted = int(rs.get("spec", {}).get("replicas", 0))
        if wanted > 0:
            return verdict(
                "InProgress", f"old ReplicaSet {rs_meta.get('name')} is still scaled to {wanted}"
            )
    if old:
        names = ", ".join(sorted(str(p["metadata"].get("name")) for p in old)[:3])
        return verdict(
            "InProgress",
            f"{len(old)} pod(s) of an older ReplicaSet still exist ({len(terminating)} "
            f"terminating): {names}",
        )
    if expected_image is not None:
        stale = [
            p for p in pods if _container_image(p.get("spec", {}), container) != expected_image
        ]
        if stale:
            return verdict("InProgress", f"{len(stale)} pod(s) do not run {expected_image}")
    return verdict(
        "Complete",
        f"all {len(pods)} pods run ReplicaSet {new_hash}" + (f" ({image})" if image else ""),
    )


def owning_deployment(pod: Obj) -> str | None:
    """The Deployment a pod belongs to, from its ReplicaSet owner's name alone.

    A Deployment's ReplicaSet is named `<deployment>-<pod-template-hash>`, so the pod names its
    Deployment without another API call.
    """
    meta = pod.get("metadata", {})
    template_hash = meta.get("labels", {}).get(POD_TEMPLATE_HASH)
    for ref in meta.get("ownerReferences", []) or []:
        rs_name = str(ref.get("name", ""))
        if (
            ref.get("kind") == "ReplicaSet"
            and template_hash
            and rs_name.endswith(f"-{template_hash}")
        ):
            return rs_name[: -len(template_hash) - 1]
    return None
