"""The status model and the rules that `decide` and the CLI share."""

from __future__ import annotations

from typing import Any

import pytest

from datamigration.core import rules
from datamigration.core.status import Phase, PhaseRecord, State, Status


def test_phase_record_round_trip_keeps_only_set_keys() -> None:
    raw = {
        "state": "Failed",
        "attempts": 2,
        "job": "j",
        "reason": "VerifyFailed",
        "steps": {"a": "1"},
    }
    assert PhaseRecord.from_dict(raw).to_dict() == raw


def test_the_rollback_record_is_read_when_present_with_what_it_undid() -> None:
    raw = {"state": "Succeeded", "attempts": 1, "undone": ["undo-b", "undo-a"]}
    status = Status.from_dict({"phase": "Aborted", "phases": {"rollback": raw}})
    assert status.record("rollback").undone == ("undo-b", "undo-a")
    assert status.record("rollback").to_dict() == raw
    assert "rollback" not in Status.from_dict({"phase": "Aborted"}).phases


@pytest.mark.parametrize(
    "raw",
    [None, "x", {"phase": "Nonsense", "phases": {"expand": {"state": 3, "attempts": "2"}}}],
    ids=["none", "not-a-mapping", "malformed"],
)
def test_malformed_status_reads_as_pending(raw: Any) -> None:
    status = Status.from_dict(raw)
    assert status.phase == Phase.PENDING
    assert status.record("expand") == PhaseRecord()


@pytest.mark.parametrize(
    ("status", "terminal", "abort_refused", "retry"),
    [
        ({}, False, None, None),
        ({"phase": "Succeeded"}, True, "already Succeeded", None),
        ({"phase": "Aborted"}, True, None, None),
        (
            {"phase": "Contracting", "phases": {"contract": {"state": "Running", "job": "c-1"}}},
            False,
            "state Running, Job c-1",
            None,
        ),
        ({"phase": "Failed", "phases": {"backfill": {"state": "Failed"}}}, False, None, "backfill"),
        ({"phase": "RollingBack", "phases": {"rollback": {"state": "Running"}}}, False, None, None),
        (
            {
                "phase": "Failed",
                "phases": {"backfill": {"state": "Failed"}, "rollback": {"state": "Failed"}},
            },
            False,
            None,
            "rollback",
        ),
    ],
    ids=[
        "fresh",
        "succeeded",
        "aborted",
        "contracting",
        "failed-backfill",
        "rolling-back",
        "failed-rollback",
    ],
)
def test_rules(
    status: dict[str, Any], terminal: bool, abort_refused: str | None, retry: str | None
) -> None:
    assert rules.is_terminal(status) is terminal
    why = rules.why_not_abort(status)
    assert (why is None) if abort_refused is None else (why is not None and abort_refused in why)
    assert rules.failed_phase(status) == retry


def test_terminal_and_settled_follow_the_enum() -> None:
    assert set(rules.TERMINAL) == {"Succeeded", "Aborted"}
    assert set(rules.SETTLED) == {"Succeeded", "Aborted", "Failed", "Invalid"}
    assert State("Skipped") is State.SKIPPED
