"""Backfill and verify text that cannot break out (issue 10, item 4), on PostgreSQL and SQLite.

PostgreSQL checks the parse tree and runs the printed expression; SQLite checks the tokens (its
syntax is not always PostgreSQL's) and runs the text inside the runner's parentheses.

Each breakout from the issue is refused before the database is touched (exit 2, the field named),
and for what is accepted, no row outside the predicate and no column outside `set` changes. On
PostgreSQL a verify query runs in a READ ONLY transaction even if it got past the static check.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from runner_support import MIGRATION, Database, Runner, make_plan
from sqlalchemy import text

from datamigration.core.steps import VerifyStep, parse_steps
from datamigration.lint import lint_steps
from datamigration.runner.context import StepContext
from datamigration.runner.engine import make_engine
from datamigration.runner.errors import StepFailed
from datamigration.runner.execute import run_verify_step
from datamigration.runner.ledger import ensure_ledger
from datamigration.runner.plan import parse_plan
from datamigration.runner.progress import LogOnlyReporter


def make_accounts(db: Database) -> None:
    db.script(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, note TEXT, amount INTEGER NOT NULL)",
        "INSERT INTO accounts VALUES (1, NULL, 10), (2, 'kept', 20), (3, NULL, 30), "
        "(4, 'kept', 40)",
    )


def snapshot(db: Database) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text("SELECT * FROM accounts ORDER BY id"))]


def backfill(**body: Any) -> dict[str, Any]:
    return {"name": "fill", "backfill": {"table": "accounts", **body}}


@pytest.mark.parametrize(
    ("step", "field", "why"),
    [
        pytest.param(
            backfill(set={"note": "'x'"}, where="note IS NULL) OR (true"),
            "plan.steps[0].backfill.where",
            "is not one SQL expression|closes a parenthesis it did not open",
            id="where-closes-its-parenthesis",
        ),
        pytest.param(
            backfill(set={"note": "'x'), amount = (amount * 100"}),
            "plan.steps[0].backfill.set.note",
            "is not one SQL expression|closes a parenthesis it did not open",
            id="set-adds-an-assignment",
        ),
        pytest.param(
            backfill(set={"note": "'x'"}, where="note IS NULL --"),
            "plan.steps[0].backfill.where",
            "comments are not allowed",
            id="where-comments-out-the-batch-range",
        ),
        pytest.param(
            backfill(set={"note": "'x'"}, where="note IS NULL; DELETE FROM accounts"),
            "plan.steps[0].backfill.where",
            "exactly one SQL expression",
            id="where-adds-a-statement",
        ),
        pytest.param(
            backfill(set={"note": "(WITH d AS (DELETE FROM accounts RETURNING 1) SELECT 'x')"}),
            "plan.steps[0].backfill.set.note",
            "writes|contains DELETE",
            id="set-hides-a-delete",
        ),
        pytest.param(
            backfill(set={"amount": "nextval('s')"}),
            "plan.steps[0].backfill.set.amount",
            r"calls nextval\(\), a function with side effects",
            id="set-calls-nextval",
        ),
        pytest.param(
            backfill(set={"note": "'x'"}, where="pg_sleep(1) IS NULL"),
            "plan.steps[0].backfill.where",
            r"calls pg_sleep\(\)",
            id="where-calls-pg-sleep",
        ),
        pytest.param(
            backfill(set={"note": "my_schema.mask(note)"}),
            "plan.steps[0].backfill.set.note",
            r"calls (my_schema\.)?mask\(\), which is not on the allow-list",
            id="unknown-function",
        ),
        pytest.param(
            {"name": "check", "verify": {"query": "SELECT setval('s', 42)", "expect": 42}},
            "plan.steps[0].verify.query",
            r"calls setval\(\), a function with side effects",
            id="verify-calls-setval",
        ),
        pytest.param(
            {
                "name": "check",
                "verify": {
                    "query": "WITH d AS (DELETE FROM accounts RETURNING 1) SELECT count(*) FROM d",
                    "expect": 0,
                },
            },
            "plan.steps[0].verify.query",
            "writes",
            id="verify-data-modifying-cte",
        ),
    ],
)
def test_breakouts_are_refused_and_change_nothing(
    db: Database, db_url: str, run: Runner, *, step: dict[str, Any], field: str, why: str
) -> None:
    make_accounts(db)
    if db_url.startswith("postgresql"):
        db.script("CREATE SEQUENCE s")
    before = snapshot(db)
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 2, outcome.out
    assert f"invalid plan: {field}: " in outcome.last_line
    assert re.search(why, outcome.last_line), outcome.last_line  # PostgreSQL or SQLite wording
    assert snapshot(db) == before
    if db_url.startswith("postgresql"):
        assert db.scalar("SELECT last_value FROM s") == 1  # not advanced, not set
        assert db.scalar("SELECT is_called FROM s") is False


def test_accepted_expressions_change_only_the_predicate_rows_and_the_set_columns(
    db: Database, db_url: str, run: Runner
) -> None:
    make_accounts(db)
    # Parentheses, a comparison with OR, a string with ')' and '--': all inside the expression.
    step = backfill(
        set={"note": "'done) -- ' || CAST(amount AS TEXT)"},
        where="(note IS NULL) OR (amount > 35 AND note = 'never')",
        batchSize=1,
    )
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 0, outcome.out
    assert snapshot(db) == [
        (1, "done) -- 10", 10),
        (2, "kept", 20),
        (3, "done) -- 30", 30),
        (4, "kept", 40),
    ]


def test_sqlite_syntax_runs_as_written_inside_the_wrapper(sqlite_url: str, run: Runner) -> None:
    """`IS NOT` between values is SQLite, not PostgreSQL: token-checked, then sent as written."""
    sqlite = Database(sqlite_url)
    try:
        make_accounts(sqlite)
        step = backfill(set={"note": "ifnull(note, 'none') || '!'"}, where="note IS NOT 'kept'")
        outcome = run(sqlite_url, make_plan(step))
        assert outcome.code == 0, outcome.out
        assert snapshot(sqlite) == [
            (1, "none!", 10),
            (2, "kept", 20),
            (3, "none!", 30),
            (4, "kept", 40),
        ]
    finally:
        sqlite.close()


def test_lint_names_the_field_of_an_unsafe_expression() -> None:
    steps = parse_steps(
        [
            backfill(set={"note": "'x'), amount = (amount * 100"}),
            {"name": "check", "verify": {"query": "SELECT setval('s', 1)", "expect": 1}},
        ],
        "spec.backfill.steps",
    )
    findings = lint_steps("backfill", steps)
    by_field = {finding.field: finding for finding in findings}
    unsafe = by_field["spec.backfill.steps[0].backfill.set.note"]
    assert unsafe.rule == "invalid-expression"
    assert "is not one SQL expression" in unsafe.message
    assert by_field["spec.backfill.steps[1].verify.query"].rule in {
        "side-effect-in-check",
        "sequence-reset",
    }
    assert all(finding.severity.value == "error" for finding in findings)


@pytest.mark.pg
def test_verify_runs_in_a_read_only_transaction(pg_url: str) -> None:
    """Even a query that got past the static check (built here without the plan) cannot write."""
    db = Database(pg_url)
    engine = make_engine(pg_url)
    try:
        db.script("CREATE SEQUENCE s")
        ensure_ledger(engine)
        step = VerifyStep(name="check", query="SELECT setval('s', 42)", expect="42")
        plan = parse_plan(make_plan())
        ctx = StepContext(engine, plan, step, 1, str, LogOnlyReporter())
        with pytest.raises(StepFailed, match="read-only transaction"):
            run_verify_step(ctx, step, None)
        assert db.scalar("SELECT last_value FROM s") == 1
        assert db.ledger(MIGRATION)["check"]["state"] == "failed"
    finally:
        engine.dispose()
        db.close()
