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
    LockRetriesExhausted,
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
        "LOCK_RETRIES_EXHAUSTED": 9,
        "OLD_SESSIONS": 10,
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
        (LockRetriesExhausted("x"), 9),
        (OldSessionsConnected("x"), 10),
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


def test_statement_limits_come_from_the_step_then_the_spec_then_the_kind() -> None:
    from datamigration.core.steps import parse_steps
    from datamigration.runner.limits import Defaults, limits_for, parse_defaults

    steps = parse_steps(
        [
            {"name": "ddl", "sql": "ALTER TABLE t ADD COLUMN c int"},
            {"name": "own", "sql": "SELECT 1", "lockTimeoutMilliseconds": 50, "lockRetries": 0},
            {"name": "cic", "sql": "CREATE INDEX CONCURRENTLY i ON t (c)", "transactional": False},
            {"name": "fill", "backfill": {"table": "t", "set": {"c": "1"}}},
            {"name": "slow", "backfill": {"table": "t", "set": {"c": "1"}}, "lockRetries": 3},
        ],
        "plan.steps",
    )
    spec_wide = parse_defaults(
        {"lockTimeoutMilliseconds": 700, "statementTimeoutMilliseconds": 9000, "lockRetries": 4}
    )
    got = {step.name: limits_for(step, spec_wide) for step in steps}
    assert (got["ddl"].lock_timeout_ms, got["ddl"].statement_timeout_ms) == (700, 9000)
    assert (got["own"].lock_timeout_ms, got["own"].lock_retries) == (50, 0)
    assert got["cic"].statement_timeout_ms == 0  # never for CONCURRENTLY unless the step sets one
    assert got["fill"].statement_timeout_ms == 60_000  # backfill batches: their own bound
    assert (got["slow"].lock_retries, got["fill"].lock_retries) == (3, 4)
    builtin = limits_for(steps[0], Defaults())
    assert (builtin.lock_timeout_ms, builtin.statement_timeout_ms, builtin.lock_retries) == (
        2000,
        300_000,
        10,
    )


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"lockTimeoutMilliseconds": 0}, "plan.limits.lockTimeoutMilliseconds"),
        ({"lockRetries": -1}, "plan.limits.lockRetries"),
        ({"statementTimeoutMilliseconds": "1s"}, "plan.limits.statementTimeoutMilliseconds"),
    ],
)
def test_bad_plan_limits_name_the_field(limits: dict[str, Any], field: str) -> None:
    plan = {"migration": "shop/users", "phase": "expand", "steps": [], "limits": limits}
    with pytest.raises(InvalidInput, match=f"invalid plan: {field}: must be an integer"):
        parse_plan(plan)


def test_step_limits_are_tuning_knobs_not_part_of_the_checksum() -> None:
    from datamigration.core.errors import SpecError
    from datamigration.core.steps import parse_steps

    plain, tuned = (
        parse_steps([{"name": "a", "sql": "SELECT 1"}, {"name": "b", "sql": "SELECT 1"}], "s")[0],
        parse_steps([{"name": "a", "sql": "SELECT 1", "lockRetries": 7}], "s")[0],
    )
    assert plain.checksum == tuned.checksum
    with pytest.raises(SpecError, match=r"s\[0\].lockRetries: only applies to sql, backfill"):
        parse_steps(
            [{"name": "a", "command": {"image": "x", "command": ["y"]}, "lockRetries": 1}], "s"
        )
    with pytest.raises(SpecError, match=r"s\[0\].lockTimeoutMilliseconds: must be an integer"):
        parse_steps([{"name": "a", "sql": "SELECT 1", "lockTimeoutMilliseconds": 0}], "s")


def test_backoff_doubles_is_capped_and_jittered() -> None:
    from datamigration.runner.limits import BACKOFF_CAP_SECONDS, backoff

    upper = [backoff(n, rand=lambda low, high: high) for n in range(1, 10)]
    lower = [backoff(n, rand=lambda low, high: low) for n in range(1, 10)]
    assert upper[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(upper) == BACKOFF_CAP_SECONDS
    assert all(low == high / 2 for low, high in zip(lower, upper, strict=True))


def test_the_operators_plan_carries_spec_runner_limits_to_the_runner() -> None:
    from datamigration.core.jobs import Owner, runner_plan
    from datamigration.core.spec import parse_spec

    raw_spec: dict[str, Any] = {
        "database": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        "workload": {"name": "web", "container": "app", "image": "app:2"},
        "runner": {"lockTimeoutSeconds": 30, "lockTimeoutMilliseconds": 750, "lockRetries": 2},
        "expand": {"steps": [{"name": "add", "sql": "ALTER TABLE t ADD COLUMN c int"}]},
    }
    owner = Owner(namespace="shop", name="users", uid="u")
    plan = parse_plan(runner_plan(owner, parse_spec(raw_spec), "expand"))
    assert (plan.limits.lock_timeout_ms, plan.limits.lock_retries) == (750, 2)
    assert plan.limits.statement_timeout_ms is None  # the runner's per-kind default applies
    default = parse_plan(runner_plan(owner, parse_spec({**raw_spec, "runner": {}}), "expand"))
    assert (default.limits.lock_timeout_ms, default.limits.lock_retries) == (2000, 10)
