"""Kubernetes-style conditions (`metav1.Condition` shape) with honest transition times.

`lastTransitionTime` moves only when a condition's status flips, as `kubectl wait` users and
kstatus expect; a new reason or message on the same status keeps the old time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def set_conditions(
    existing: list[dict[str, Any]],
    desired: list[Condition],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The condition list after applying `desired`, keeping the ones not mentioned.

    Order is stable (existing first, then new types) so an unchanged status patches nothing.
    """
    by_type = {c.get("type"): dict(c) for c in existing}
    order = [c.get("type") for c in existing]
    for cond in desired:
        old = by_type.get(cond.type)
        transition = now
        if old is not None and old.get("status") == cond.status:
            transition = old.get("lastTransitionTime") or now
        by_type[cond.type] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }
        if cond.type not in order:
            order.append(cond.type)
    return [by_type[t] for t in order]


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """The condition of this type, if present."""
    return next((c for c in conditions if c.get("type") == type_), None)
