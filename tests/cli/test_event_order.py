"""`kubectl datamigration status` lists Events in causal order, even within one second."""

from __future__ import annotations

from typing import Any

from datamigration.cli.render import recent_events


def event(name: str, reason: str, when: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version},
        "involvedObject": {"uid": "u1"},
        "reason": reason,
        "firstTimestamp": when,
        "lastTimestamp": when,
    }


def test_events_of_the_same_second_keep_the_order_they_were_posted() -> None:
    # As the API lists them: by name, whose suffixes are random.
    listed = [
        event("rename-email.a1", "RolloutProven", "2026-03-01T12:00:05Z", "1046"),
        event("rename-email.b7", "PhaseStarted", "2026-03-01T12:00:03Z", "1030"),
        event("rename-email.c3", "PhaseSucceeded", "2026-03-01T12:00:03Z", "1029"),
        event("rename-email.d9", "RolloutStarted", "2026-03-01T12:00:05Z", "1041"),
    ]
    reasons = [e["reason"] for e in recent_events(listed, "u1")]
    assert reasons == ["PhaseSucceeded", "PhaseStarted", "RolloutStarted", "RolloutProven"]
