"""Why a phase Job's pod cannot start, read from the pod as the kubelet and scheduler report it.

Why: a Job whose pod waits in `CreateContainerConfigError` (a Secret key missing), an image pull
error or `Unschedulable` never fails by itself; without this, the migration would say "running"
for as long as anyone waits. The operator reads the Job's pods while the Job runs and stalls the
migration with the pod's own reason and message.

Guarantees: pure; image and config errors are reported at once (they do not heal without a
change); `Unschedulable` only after `UNSCHEDULABLE_SECONDS`, since a cluster autoscaler may
still bring a node. Messages are scrubbed before they leave this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from datamigration.core.redact import scrub

#: Waiting reasons of a container that will not start without a change to the spec or cluster.
CANNOT_START = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
)
#: How long a pod may stay unschedulable before the migration says so.
UNSCHEDULABLE_SECONDS = 60.0
MAX_MESSAGE = 400


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str
    message: str
    #: Seconds until an Unschedulable pod would count as a problem (0: it already does).
    recheck_after: float = 0.0


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def start_problem(pods: Sequence[Mapping[str, Any]], now: datetime) -> PodProblem | None:
    """The first reason a (non-terminating) pod of the Job cannot start, if any.

    An Unschedulable pod younger than the bound comes back with `recheck_after` > 0 so the caller
    can look again then; it is not a problem yet.
    """
    pending: PodProblem | None = None
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name", ""))
        status = pod.get("status", {}) or {}
        statuses = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason", ""))
            if reason in CANNOT_START:
                text = scrub(str(waiting.get("message", "")).strip())[:MAX_MESSAGE]
                detail = f": {text}" if text else ""
                return PodProblem(
                    name, reason, f"pod {name} container {cs.get('name')}: {reason}{detail}"
                )
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                since = _parse(cond.get("lastTransitionTime")) or now
                waited = (now - since).total_seconds()
                text = scrub(str(cond.get("message", "")).strip())[:MAX_MESSAGE]
                problem = PodProblem(
                    name,
                    "Unschedulable",
                    f"pod {name} unschedulable for {int(waited)}s: {text}",
                    recheck_after=max(0.0, UNSCHEDULABLE_SECONDS - waited),
                )
                if problem.recheck_after == 0.0:
                    return problem
                pending = pending or problem
    return pending


def started(pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any container of the Job's pods has started running (or already ran)."""
    for pod in pods:
        status = pod.get("status", {}) or {}
        if status.get("phase") in ("Running", "Succeeded", "Failed"):
            return True
        for cs in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            state = cs.get("state") or {}
            if state.get("running") or state.get("terminated"):
                return True
    return False


def not_ended(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods that have not ended: neither Succeeded nor Failed, terminating ones included
    (a deleted pod's process may still run, and commit, until the pod object is gone)."""
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
