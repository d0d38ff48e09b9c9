"""Which migrations a workload's event can concern: the wake-up rules, in one place.

The handlers (controller/handlers.py) index each migration's interest in its workloads and wake
only the concerned ones; the reconciler (controller/reconciler.py) needs the same interest to
know when the echo of its own status write must still wake the migration: when the write changed
the interest (it began or stopped waiting on the workload), an event of the workload may have
been let through, or filtered out, by the index as it was before the write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Phases after which nothing more happens.
DONE = ("Succeeded", "Aborted", "Invalid", "Failed")
#: The phases in which a workload's pods and ReplicaSets can change a decision: the rollout is
#: awaited or proven, or the contract runs (a regression withdraws it).
ROLLOUT_PHASES = ("RollingOut", "AwaitingApproval", "Contracting")
#: Ready reasons of a migration waiting on its workload in any phase (stable before a database
#: phase, or a regressed rollout): its pods and status can change its decision too.
WORKLOAD_WAITS = ("WaitingForWorkload", "RolloutRegressed")


def workload_interest(name: str, status: Mapping[str, Any]) -> tuple[str, bool, bool, bool]:
    """What a migration's index entry says about it, for the wake-up rules below: (name, still
    cares (not finished), waits on the workload's pods and status, paused)."""
    phase = status.get("phase")
    reasons = {c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"}
    waits = phase in ROLLOUT_PHASES or bool(reasons & set(WORKLOAD_WAITS))
    return (name, phase not in DONE, waits, phase == "Paused")


def concerned(entry: tuple[str, bool, bool, bool], change: str) -> bool:
    """Whether a change of a workload can change this migration's decision: a change of its
    spec (or its appearance, its deletion), any that still cares; a change of its status or
    metadata, the unpaused ones that still care (the expand phase waits for a stable workload);
    a pod or a ReplicaSet, only those waiting on the workload. With one Deployment shared by a
    thousand paused migrations, its annotation or its pods' churn wakes none of them."""
    _name, active, waits, paused = entry
    if change == "spec":
        return active
    if change == "status":
        return active and (waits or not paused)
    return active and waits
