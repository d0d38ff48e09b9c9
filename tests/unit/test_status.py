"""The status model and the rules that `decide` and the CLI share."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from datamigration.core import rules
from datamigration.core.status import Phase, PhaseRecord, State, Status, progress_only


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


ROLLING: dict[str, Any] = {
    "phase": "RollingOut",
    "message": "code rollout: 1 of 3 pods updated",
    "observedGeneration": 1,
    "phases": {"codeRollout": {"state": "Running", "message": "1 of 3"}},
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "RolloutInProgress",
            "message": "1 of 3 pods updated",
            "lastTransitionTime": "2026-12-01T10:00:00Z",
        }
    ],
    "progress": {"phase": "codeRollout", "summary": "rollout 1/3 updated"},
    "rollout": {
        "revision": "2",
        "podTemplateHash": "bbb",
        "verified": False,
        "updatedReplicas": 1,
        "oldPods": 2,
        "message": "1 of 3",
        "workloads": [{"name": "web", "verified": False, "updatedReplicas": 1, "oldPods": 2}],
    },
}


def edited(**changes: Any) -> dict[str, Any]:
    """ROLLING with paths replaced (`rollout__workloads__0__oldPods`)."""
    result = copy.deepcopy(ROLLING)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return result


@pytest.mark.parametrize(
    ("name", "after", "expected"),
    [
        ("nothing changed", edited(), True),
        ("the summary message", edited(message="code rollout: 2 of 3 pods updated"), True),
        (
            "a rollout's counts and messages",
            edited(
                rollout__updatedReplicas=2,
                rollout__oldPods=1,
                rollout__message="2 of 3",
                rollout__workloads__0__oldPods=1,
                progress__summary="rollout 2/3 updated",
                conditions__0__message="2 of 3 pods updated",
                phases__codeRollout__message="2 of 3",
            ),
            True,
        ),
        ("the phase", edited(phase="Contracting"), False),
        ("a phase record's state", edited(phases__codeRollout__state="Succeeded"), False),
        ("a condition's status", edited(conditions__0__status="True"), False),
        ("a condition's reason", edited(conditions__0__reason="RolloutRegressed"), False),
        ("the rollout's verdict", edited(rollout__verified=True), False),
        ("a workload's verdict", edited(rollout__workloads__0__verified=True), False),
        ("a new revision", edited(rollout__revision="3"), False),
        ("the observed generation", edited(observedGeneration=2), False),
        ("a new key", {**ROLLING, "contract": {"approved": True}}, False),
    ],
)
def test_a_status_change_is_progress_only_when_nothing_but_messages_and_counts_change(
    name: str, after: dict[str, Any], expected: bool
) -> None:
    assert progress_only(ROLLING, after) is expected, name
