"""Atomic steps (issue 10, item 3): a step is applied entirely or not at all, on PostgreSQL and
SQLite, and a retry after any failure starts from the state before the step.

The issue's report: a failed step left a table created, and its retry failed with "already
exists". Two ways got there: a `COMMIT` inside a step's SQL (it ended the runner's transaction
half-way) and a multi-statement `transactional: false` step (each statement committed on its own).
Both are refused before the database is touched; a failed `CREATE INDEX CONCURRENTLY` leaves an
INVALID index, which the runner drops before the retry.
"""

from __future__ import annotations

import pytest
from runner_support import Database, Runner, make_plan


def test_failed_multi_statement_step_leaves_nothing_and_its_retry_succeeds(
    db: Database, db_url: str, run: Runner
) -> None:
    step = {
        "name": "make-and-fill",
        "sql": "CREATE TABLE made (a int); INSERT INTO made VALUES (1); "
        "INSERT INTO needed VALUES (1)",
    }
    failed = run(db_url, make_plan(step))
    assert failed.code == 7, failed.out
    assert "at statement 3 of 3" in failed.last_line
    assert not db.has_table("made")  # statements 1 and 2 rolled back with 3
    assert db.ledger()["make-and-fill"]["state"] == "failed"

    db.script("CREATE TABLE needed (a int)")  # the operator fixes the cause; the step is unchanged
    retried = run(db_url, make_plan(step))
    assert retried.code == 0, retried.out  # no "already exists": the retry started clean
    assert db.scalar("SELECT count(*) FROM made") == 1
    assert db.ledger()["make-and-fill"]["state"] == "applied"


@pytest.mark.parametrize("control", ["COMMIT", "END", "BEGIN", "ROLLBACK", "commit /* c */"])
def test_transaction_control_inside_a_step_is_refused_before_anything_runs(
    db: Database, db_url: str, run: Runner, control: str
) -> None:
    step = {"name": "sneaky", "sql": f"CREATE TABLE t3 (a int); {control}; CREATE TABLE t3 (a int)"}
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 2, outcome.out
    assert "plan.steps[0].sql: statement 2" in outcome.last_line
    assert "controls the transaction" in outcome.last_line
    assert not db.has_table("t3")
    assert db.ledger() == {}


def test_non_transactional_step_with_two_statements_is_refused(
    db: Database, db_url: str, run: Runner
) -> None:
    step = {
        "name": "outside",
        "sql": "CREATE TABLE first_one (a int); CREATE TABLE first_one (a int)",
        "transactional": False,
    }
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 2, outcome.out
    assert "plan.steps[0].transactional: false allows exactly one statement" in outcome.last_line
    assert not db.has_table("first_one")
    assert db.ledger() == {}


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("CREATE INDEX CONCURRENTLY items_a ON items (a)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS items_a", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY items_a", "REINDEX CONCURRENTLY"),
        ("VACUUM items", "VACUUM"),
    ],
)
def test_statement_that_cannot_run_in_a_transaction_needs_its_own_step(
    db: Database, db_url: str, run: Runner, sql: str, reason: str
) -> None:
    step = {"name": "mixed", "sql": f"CREATE TABLE early (a int); {sql}"}
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 2, outcome.out
    assert (
        f"plan.steps[0].transactional: statement 2 ({reason}) cannot run inside a transaction"
        in (outcome.last_line)
    )
    assert not db.has_table("early")


def test_failed_non_transactional_step_is_recorded_failed_and_retried(
    db: Database, db_url: str, run: Runner
) -> None:
    step = {"name": "outside", "sql": "INSERT INTO later VALUES (1)", "transactional": False}
    failed = run(db_url, make_plan(step))
    assert failed.code == 7, failed.out
    assert db.ledger()["outside"]["state"] == "failed"
    db.script("CREATE TABLE later (a int)")
    retried = run(db_url, make_plan(step))
    assert retried.code == 0, retried.out
    assert db.scalar("SELECT count(*) FROM later") == 1
    assert db.ledger()["outside"]["attempts"] == 2


@pytest.mark.pg
def test_invalid_index_of_a_failed_concurrent_build_is_dropped_before_the_retry(
    pg_url: str, run: Runner
) -> None:
    db = Database(pg_url)
    try:
        db.script(
            "CREATE TABLE items (id int PRIMARY KEY, code text)",
            "INSERT INTO items VALUES (1, 'a'), (2, 'a'), (3, 'b')",
        )
        step = {
            "name": "unique-code",
            "sql": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_code ON items (code)",
            "transactional": False,
        }
        failed = run(pg_url, make_plan(step))
        assert failed.code == 7, failed.out
        assert "could not create unique index" in failed.last_line
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_code')"
        assert db.scalar(valid) is False  # what a failed concurrent build leaves behind

        db.script("UPDATE items SET code = 'c' WHERE id = 2")  # the cause, fixed
        retried = run(pg_url, make_plan(step))
        assert retried.code == 0, retried.out
        assert "index items_code is INVALID" in retried.out
        assert db.scalar(valid) is True  # rebuilt, not kept INVALID by IF NOT EXISTS
        assert db.ledger()["unique-code"]["state"] == "applied"

        # A valid index is never dropped: with the step applied, a forced re-run is a no-op.
        again = run(pg_url, make_plan(step))
        assert again.code == 0 and "skipped, applied earlier" in again.out
    finally:
        db.close()
