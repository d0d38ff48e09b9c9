"""Pure logic of the runner, no database: batch-size adaptation, exit codes, plan parsing,
statement splitting and how verify results become text."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from datamigration.runner.batching import BatchSizer
from datamigration.runner.errors import (
    ChecksumMismatch,
    DatabaseUnreachable,
    ExitCode,
    InvalidInput,
    LedgerConflict,
    LockTimeout,
    OldSessionsConnected,
    Paused,
    RolloutRegressed,
    StepFailed,
    VerifyFailed,
    exit_code_for,
)
from datamigration.runner.execute import scalar_text
from datamigration.runner.plan import ReportTarget, parse_plan
from datamigration.runner.sqltext import split_statements


def test_exit_codes_are_the_documented_contract() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "UNEXPECTED": 1,
        "INVALID_INPUT": 2,
        "LOCK_TIMEOUT": 3,
        "VERIFY_FAILED": 4,
        "CHECKSUM_MISMATCH": 5,
        "DATABASE_UNREACHABLE": 6,
        "STEP_FAILED": 7,
        "ROLLOUT_REGRESSED": 8,
        "OLD_SESSIONS": 9,
        "PAUSED": 75,
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("x"), 2),
        (LockTimeout("x"), 3),
        (VerifyFailed("x"), 4),
        (ChecksumMismatch("x"), 5),
        (DatabaseUnreachable("x"), 6),
        (StepFailed("x"), 7),
        (RolloutRegressed("x"), 8),
        (OldSessionsConnected("x"), 9),
        (Paused("x"), 75),
        (LedgerConflict("x"), 1),
        (RuntimeError("x"), 1),
        (KeyError("x"), 1),
    ],
)
def test_exit_code_mapping(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_batch_size_grows_at_most_half_again_per_batch() -> None:
    sizer = BatchSizer(size=1000, target_seconds=0.030)
    assert sizer.observe(1000, 0.001) == 1500
    assert sizer.observe(1500, 0.001) == 2250


def test_batch_size_shrinks_at_most_by_half_per_batch() -> None:
    sizer = BatchSizer(size=10_000, target_seconds=0.030)
    assert sizer.observe(10_000, 3.0) == 5000
    assert sizer.observe(5000, 3.0) == 2500


def test_batch_size_converges_on_the_target_duration() -> None:
    seconds_per_row = 3e-6  # this table: 10k rows take 30 ms
    sizer = BatchSizer(size=500, target_seconds=0.030)
    for _ in range(30):
        sizer.observe(sizer.size, sizer.size * seconds_per_row)
    assert 9_500 <= sizer.size <= 10_500


def test_batch_size_stays_within_bounds() -> None:
    sizer = BatchSizer(size=900_000, target_seconds=10.0)
    for _ in range(5):
        sizer.observe(sizer.size, 0.001)
    assert sizer.size == 1_000_000
    slow = BatchSizer(size=150, target_seconds=0.001)
    for _ in range(5):
        slow.observe(slow.size, 1.0)
    assert slow.size == 100  # the default floor
    tiny = BatchSizer(size=10, target_seconds=0.001)  # a smaller batchSize lowers the floor
    tiny.observe(10, 1.0)
    assert tiny.size == 10


def test_back_off_halves_the_batch() -> None:
    sizer = BatchSizer(size=8000, target_seconds=0.030)
    assert sizer.back_off() == 4000
    assert sizer.back_off() == 2000


def test_batch_size_ignores_empty_observations() -> None:
    sizer = BatchSizer(size=5000, target_seconds=0.030)
    assert sizer.observe(0, 1.0) == 5000


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (42, "42"),
        (0.5, "0.5"),
        (Decimal("1.50"), "1.50"),
        ("ok", "ok"),
        (b"\x01\xff", "01ff"),
    ],
)
def test_scalar_text(value: Any, text: str) -> None:
    assert scalar_text(value) == text


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("INSERT INTO t VALUES ('a;b'); SELECT 2", ["INSERT INTO t VALUES ('a;b')", "SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$; SELECT f()",
            ["CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$", "SELECT f()"],
        ),
        # SQLite-only syntax the PostgreSQL parser rejects is split by the scanner instead.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT); INSERT INTO t DEFAULT VALUES",
            [
                "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)",
                "INSERT INTO t DEFAULT VALUES",
            ],
        ),
        ("-- only a comment\n", []),
    ],
)
def test_split_statements(sql: str, statements: list[str]) -> None:
    assert split_statements(sql) == statements


def test_plan_parses_report_and_flags() -> None:
    plan = parse_plan(
        {
            "migration": "shop/rename-email",
            "phase": "backfill",
            "steps": [{"name": "a", "sql": "SELECT 1"}],
            "allowChecksumChange": True,
            "report": {"namespace": "shop", "name": "rename-email"},
        }
    )
    assert plan.migration == "shop/rename-email"
    assert plan.phase == "backfill"
    assert [step.name for step in plan.steps] == ["a"]
    assert plan.allow_checksum_change is True
    assert plan.report == ReportTarget("shop", "rename-email")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "plan"),
        ({"migration": "no-namespace", "phase": "expand"}, "plan.migration"),
        ({"migration": "Shop/x", "phase": "expand"}, "plan.migration"),
        ({"migration": "shop/x", "phase": "code-rollout"}, "plan.phase"),
        (
            {"migration": "shop/x", "phase": "expand", "allowChecksumChange": "yes"},
            "plan.allowChecksumChange",
        ),
        (
            {"migration": "shop/x", "phase": "expand", "report": {"name": "x"}},
            "plan.report.namespace",
        ),
        (
            {"migration": "shop/x", "phase": "expand", "report": {"namespace": "x"}},
            "plan.report.name",
        ),
        ({"migration": "shop/x", "phase": "expand", "steps": {}}, "plan.steps"),
    ],
)
def test_plan_rejections_name_the_field(document: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_plan(document)
    assert caught.value.message.startswith(f"invalid plan: {field}: ")
