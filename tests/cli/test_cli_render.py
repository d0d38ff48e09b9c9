"""`cli.render`: what a person reads, from plain API objects and a fixed `now`.

Each case names a status document and the lines (or fragments) the screen must show, and those
it must not. No cluster, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cli_docs as d
import pytest

from datamigration.cli import render


# -- small formatters ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (42 * 60, "42m"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (20 * 3600, "20h"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400 + 2 * 86400, "3y2d"),
        (9 * 365 * 86400, "9y"),
    ],
    ids=lambda v: str(v),
)
def test_human_duration_is_kubectls(seconds: float, expected: str) -> None:
    assert render.human_duration(seconds) == expected


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (0, "[------------------------------]   0%"),
        (50, "[###############---------------]  50%"),
        (100, "[##############################] 100%"),
        (140, "[##############################] 100%"),
        (-3, "[------------------------------]   0%"),
    ],
    ids=["empty", "half", "full", "clamped-high", "clamped-low"],
)
def test_progress_bar(percent: int, expected: str) -> None:
    assert render.progress_bar(percent) == expected


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    text = render.table(["name", "phase"], [["a", "Pending"], ["longer-name", ""]])
    assert text.splitlines() == [
        "NAME          PHASE",
        "a             Pending",
        "longer-name",
    ]


def test_age_of_missing_or_garbage_timestamps() -> None:
    assert render.age(None, d.NOW) == "-"
    assert render.age("yesterday", d.NOW) == "-"
    assert render.age(d.ago(30), d.NOW) == "30s"
    assert render.age("2026-03-01T11:59:00.123456Z", d.NOW) == "59s"


# -- status -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusCase:
    status: dict[str, Any] | None
    shows: list[str]
    hides: list[str] = field(default_factory=list)
    spec_args: dict[str, Any] = field(default_factory=dict)
    paused: bool = False


STATUS_CASES = {
    "running backfill with progress": StatusCase(
        d.BACKFILLING,
        shows=[
            "Phase:      Backfilling",
            "Message:    backfill running (Job rename-email-backfill-1-0f1e2)",
            "Workload:   Deployment/shop-api, container api, image registry.example/shop-api:2.0 "
            "(rollout Apply, timeout 10m)",
            "Age:        60m",
            "  expand        Succeeded   1          rename-email-expand-1-0f1e2     12s",
            "  backfill      Running     1          rename-email-backfill-1-0f1e2   9m40s",
            "  contract      Pending     0          -                               -",
            "Progress:   backfill step 1/1 copy-email (updated 3s ago)",
            "  [######################--------]  72%   720,000/1,000,000 rows   12,000 rows/s   "
            "~23s left   batch 5,000",
            "  Ready         False    PhaseRunning   10m   backfill running",
        ],
        hides=["Next:", "Rollout:"],
    ),
    "awaiting approval": StatusCase(
        d.AWAITING,
        shows=[
            "Phase:      AwaitingApproval",
            "Next:       kubectl datamigration approve rename-email -n shop",
            "Contract:   1 step(s), 1 verify query, approval Manual: not approved",
            "  codeRollout   Succeeded   1          -                               90s",
            "Progress:   contract: awaiting approval",
            "Rollout:    revision 2, image registry.example/shop-api:2.0, verified",
            "  3 replicas: 3 updated, 3 available, 0 old pods, 0 terminating",
            "  AwaitingApproval   True     ApprovalRequired   4m50s   contract awaits approval",
            "  RolloutVerified    True     RolloutProven      5m      all 3 pods run",
        ],
        hides=["[#"],  # no bar: there is no row count to show
    ),
    "failed with message": StatusCase(
        d.FAILED,
        shows=[
            "Phase:      Failed",
            f"Message:    backfill: {d.FAILED_MESSAGE}",
            "Next:       fix the cause above, then: kubectl datamigration retry rename-email -n shop",
            "  backfill      Failed      1          rename-email-backfill-1-0f1e2   20s",
            f"  backfill: {d.FAILED_MESSAGE}",
            "  Stalled       True     JobFailed   14m",
        ],
        hides=["Progress:"],
    ),
    "succeeded": StatusCase(
        d.SUCCEEDED,
        shows=[
            "Phase:      Succeeded",
            "  contract      Succeeded   1          rename-email-contract-1-0f1e2   5s",
            "  backfill      Succeeded   1          rename-email-backfill-1-0f1e2   16m",
            "Rollout:    revision 2, image registry.example/shop-api:2.0, verified",
            "  Ready         True     Succeeded   16m   all phases succeeded",
        ],
        hides=["Next:"],
    ),
    "aborted and rolled back": StatusCase(
        {
            **d.BACKFILLING,
            "phase": "Aborted",
            "message": "aborted by spec.abort and rolled back",
            "phases": {
                **d.BACKFILLING["phases"],
                "rollback": {
                    "state": "Succeeded",
                    "attempts": 1,
                    "job": "rename-email-rollback-1-0f1e2",
                    "message": "undid 1 step(s): undo-rename-users-email",
                    "undone": ["undo-rename-users-email"],
                },
            },
        },
        shows=[
            "Phase:      Aborted",
            "  rollback      Succeeded   1          rename-email-rollback-1-0f1e2",
            "  rollback: undid 1 step(s): undo-rename-users-email",
        ],
    ),
    "no status yet": StatusCase(
        None,
        shows=[
            "Phase:      Pending",
            "Message:    -",
            "            (no status yet: is the operator running in this cluster?)",
            "  expand        Pending   0          -     -",
        ],
        hides=["Conditions:", "Progress:"],
    ),
    "paused, automatic approval": StatusCase(
        {**d.BACKFILLING, "phase": "Paused", "message": "paused before codeRollout"},
        paused=True,
        spec_args={"approval": "Automatic"},
        shows=[
            "Phase:      Paused\n",
            "Next:       kubectl datamigration resume rename-email -n shop",
            "Contract:   1 step(s), 1 verify query, approval Automatic",
        ],
    ),
}


@pytest.mark.parametrize("case", STATUS_CASES.values(), ids=STATUS_CASES.keys())
def test_status_screen(case: StatusCase) -> None:
    obj = d.served(case.status, paused=case.paused, **case.spec_args)
    text = render.render_status(obj, [], d.NOW)
    lines = [line + "\n" for line in text.splitlines()]
    assert lines[0] == "Name:       rename-email\n"
    assert lines[1] == "Namespace:  shop\n"
    for expected in case.shows:
        assert any(line.startswith(expected) for line in lines), f"missing: {expected}\n{text}"
    for unexpected in case.hides:
        assert unexpected not in text, f"unexpected: {unexpected}\n{text}"
    assert "Events:     <none>\n" in lines


def test_status_events_are_this_objects_newest_last_and_at_most_ten() -> None:
    events = [d.event(f"Reason{i}", f"message {i}", seconds_ago=1000 - i * 10) for i in range(14)]
    stranger = d.event("FromPredecessor", "old object of the same name", seconds_ago=1)
    stranger["involvedObject"]["uid"] = "some-other-uid"
    repeated = d.event("PhaseStarted", "phase backfill started", seconds_ago=5, count=3)
    text = render.render_status(d.served(d.BACKFILLING), [repeated, *events, stranger], d.NOW)
    section = text.split("Events:\n", 1)[1].splitlines()
    assert section[0].split() == ["AGE", "TYPE", "REASON", "MESSAGE"]
    rows = section[1:]
    assert len(rows) == render.MAX_EVENTS
    assert "Reason5" in rows[0]  # the four oldest are cut
    assert rows[-1].split()[:4] == ["5s", "(x3)", "Normal", "PhaseStarted"]
    assert "FromPredecessor" not in text


def test_status_says_when_the_operator_lags_behind_the_spec() -> None:
    obj = d.served(d.BACKFILLING)
    obj["metadata"]["generation"] = 3
    text = render.render_status(obj, [], d.NOW)
    assert "(status describes generation 1; the spec is at 3" in text


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (
            {"phase": "expand", "step": "add-col", "stepIndex": 2, "stepCount": 3, "percent": 0},
            ["Progress:   expand step 2/3 add-col"],
        ),
        (
            {"phase": "backfill", "rowsDone": 10, "rowsEstimated": 40, "summary": "backfill"},
            [
                "Progress:   backfill: backfill",
                "  [########----------------------]  25%   10/40 rows",
            ],
        ),
        (
            {"phase": "codeRollout", "summary": "rollout 1/3 updated, 1 available, 2 old pods"},
            ["Progress:   codeRollout: rollout 1/3 updated, 1 available, 2 old pods"],
        ),
    ],
    ids=["sql step without rows", "rows without percent", "operator summary"],
)
def test_progress_block(progress: dict[str, Any], expected: list[str]) -> None:
    assert render.render_progress(progress, d.NOW) == expected


# -- list ---------------------------------------------------------------------------------------
def test_list_table_in_one_namespace() -> None:
    items = [d.served(d.FAILED, name="b-failed"), d.served(d.BACKFILLING), d.served(None, name="a")]
    assert render.render_list(items, d.NOW).splitlines() == [
        "NAME           PHASE         PROGRESS                           WORKLOAD   REASON"
        "         AGE",
        "a              Pending       -                                  shop-api   -"
        "              60m",
        "b-failed       Failed        -                                  shop-api   JobFailed"
        "      60m",
        "rename-email   Backfilling   backfill 72% 720000/1000000 rows   shop-api   PhaseRunning"
        "   60m",
    ]


def test_list_table_across_namespaces_sorts_by_namespace() -> None:
    items = [d.served(d.SUCCEEDED, namespace="zeta"), d.served(d.AWAITING, namespace="alpha")]
    lines = render.render_list(items, d.NOW, all_namespaces=True).splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "PROGRESS",
        "WORKLOAD",
        "REASON",
        "AGE",
    ]
    assert lines[1].split()[:3] == ["alpha", "rename-email", "AwaitingApproval"]
    assert lines[2].split()[:3] == ["zeta", "rename-email", "Succeeded"]


def test_status_lists_every_workload_and_names_the_unproven_one() -> None:
    obj = d.served(d.BACKFILLING)
    spec = obj["spec"]
    del spec["workload"]
    spec["workloads"] = [
        {"kind": "Deployment", "name": "web", "container": "app", "image": "app:2.0"},
        {"kind": "Deployment", "name": "worker", "container": "app", "image": "app:2.0"},
    ]
    obj["status"]["rollout"] = {
        "verified": False,
        "message": "Deployment worker: Deployment worker template runs app:1.0, not app:2.0",
        "workloads": [
            {"kind": "Deployment", "name": "web", "verified": True, "replicas": 2,
             "updatedReplicas": 2, "oldPods": 0, "message": "all 2 pods run ReplicaSet 5d9"},
            {"kind": "Deployment", "name": "worker", "verified": False, "replicas": 1,
             "updatedReplicas": 1, "oldPods": 0,
             "message": "Deployment worker template runs app:1.0, not app:2.0"},
        ],
    }  # fmt: skip
    text = render.render_status(obj, [], d.NOW)
    assert "2 workloads, in order: Deployment/web app:2.0 (Apply); Deployment/worker" in text
    worker = next(
        line for line in text.splitlines() if "Deployment/worker" in line and "NOT" in line
    )
    assert "runs app:1.0, not app:2.0" in worker
    assert any("Deployment/web" in ln and " verified" in ln for ln in text.splitlines())
