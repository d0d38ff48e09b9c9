"""Each step kind against a real SQLite file and a real PostgreSQL: applied once, skipped on the
next run (verify runs every time), refused when changed, failing cleanly and atomically."""

from __future__ import annotations

from typing import Any

import pytest
from runner_support import MIGRATION, Database, Runner, backfill_step, make_plan

from datamigration.runner.engine import make_engine
from datamigration.runner.ledger import ensure_ledger
from datamigration.runner.phase import run_phase
from datamigration.runner.plan import parse_plan
from datamigration.runner.progress import Progress

ADD_COLUMN = {"name": "add-new-col", "sql": "ALTER TABLE items ADD COLUMN extra text"}
VERIFY = {
    "name": "copied",
    "verify": {
        "query": "SELECT count(*) FROM items WHERE new_col IS DISTINCT FROM upper(old_col)",
        "expect": 0,
    },
}


def test_each_kind_applies_once_and_verify_runs_every_time(
    db: Database, db_url: str, run: Runner
) -> None:
    db.make_items(1000)
    plan = make_plan(ADD_COLUMN, backfill_step(batchSize=64), VERIFY)

    first = run(db_url, plan)
    assert first.code == 0, first.out
    assert first.last_line.endswith("done: expand of shop/users: 2 applied, 0 skipped, 1 verified")
    assert db.scalar("SELECT count(*) FROM items WHERE new_col = upper(old_col)") == 1000
    assert db.scalar("SELECT sum(hits) FROM items") == 1000
    ledger = db.ledger()
    assert {step: row["state"] for step, row in ledger.items()} == {
        "add-new-col": "applied",
        "copy": "applied",
        "copied": "applied",
    }
    assert ledger["copy"]["rows_done"] == 1000
    assert ledger["copy"]["checkpoint"]["mode"] == "integer"

    second = run(db_url, plan)
    assert second.code == 0, second.out
    assert "add-new-col: skipped, applied earlier" in second.out
    assert "copy: skipped, applied earlier" in second.out
    assert "copied: verified" in second.out
    assert second.last_line.endswith("0 applied, 2 skipped, 1 verified")
    assert db.scalar("SELECT sum(hits) FROM items") == 1000  # the backfill did not run again
    again = db.ledger()
    assert again["add-new-col"]["attempts"] == 1
    assert again["copy"]["attempts"] == 1
    assert again["copied"]["attempts"] == 2  # verify re-ran


def test_verify_mismatch_fails_with_expected_and_actual(
    db: Database, db_url: str, run: Runner
) -> None:
    db.make_items(10)
    outcome = run(db_url, make_plan(VERIFY))
    assert outcome.code == 4
    assert "FAILED exit=4" in outcome.last_line
    assert "copied" in outcome.last_line
    assert "expected '0', got '10'" in outcome.last_line
    assert db.ledger()["copied"]["state"] == "failed"


@pytest.mark.parametrize(
    ("query", "expect", "code", "detail"),
    [
        pytest.param("SELECT NULL", "null", 0, "verified ('null')", id="null"),
        pytest.param("SELECT 'ok'", "ok", 0, "verified ('ok')", id="text"),
        pytest.param("SELECT 1 WHERE 1 = 0", "0", 4, "got 0 row(s)", id="no-row"),
        pytest.param("SELECT 1, 2", "1", 4, "got 2 columns", id="two-columns"),
    ],
)
def test_verify_result_as_text(
    db_url: str, run: Runner, *, query: str, expect: str, code: int, detail: str
) -> None:
    step = {"name": "check", "verify": {"query": query, "expect": expect}}
    outcome = run(db_url, make_plan(step))
    assert outcome.code == code, outcome.out
    assert detail in outcome.out


def test_verify_booleans_compare_as_the_database_returns_them(db_url: str, run: Runner) -> None:
    # PostgreSQL returns a bool ("true"); SQLite has no booleans and returns 1.
    expect = "true" if db_url.startswith("postgresql") else "1"
    step = {"name": "check", "verify": {"query": "SELECT 1 = 1", "expect": expect}}
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 0, outcome.out


def test_changed_applied_step_is_refused_unless_allowed(
    db: Database, db_url: str, run: Runner
) -> None:
    db.make_items(1)
    assert run(db_url, make_plan(ADD_COLUMN)).code == 0
    old = db.ledger()["add-new-col"]["checksum"]
    edited = {**ADD_COLUMN, "sql": "ALTER TABLE items ADD COLUMN extra varchar(10)"}

    refused = run(db_url, make_plan(edited, {"name": "later", "sql": "CREATE TABLE later (a int)"}))
    assert refused.code == 5
    assert "FAILED exit=5" in refused.last_line
    assert f'step "add-new-col" of migration {MIGRATION} phase expand' in refused.last_line
    assert old in refused.last_line
    new = [word for word in refused.last_line.split() if len(word.strip(";")) == 64]
    assert len(new) == 2 and new[0] != new[1].strip(";")
    assert not db.has_table("later")  # refused before running anything

    allowed = run(db_url, make_plan(edited, allowChecksumChange=True))
    assert allowed.code == 0, allowed.out
    assert "checksum changed" in allowed.out
    row = db.ledger()["add-new-col"]
    assert row["checksum"] != old
    assert row["attempts"] == 1  # accepted, not re-run
    assert run(db_url, make_plan(edited)).code == 0  # the new checksum is now the recorded one


def test_tuning_a_backfill_is_not_a_changed_step(db: Database, db_url: str, run: Runner) -> None:
    db.make_items(50)
    assert run(db_url, make_plan(backfill_step())).code == 0
    tuned = backfill_step(batchSize=7, targetBatchMilliseconds=5, pauseMilliseconds=1)
    outcome = run(db_url, make_plan(tuned))
    assert outcome.code == 0, outcome.out
    assert "copy: skipped" in outcome.out


def test_bad_sql_fails_the_step_and_applies_nothing(db: Database, db_url: str, run: Runner) -> None:
    step = {
        "name": "half-good",
        "sql": "CREATE TABLE made_it (a int); INSERT INTO missing_table VALUES (1)",
    }
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 7
    assert "FAILED exit=7" in outcome.last_line
    assert 'step "half-good" failed at statement 2 of 2' in outcome.last_line
    assert "missing_table" in outcome.last_line
    assert not db.has_table("made_it")  # the whole step rolled back, DDL included
    row = db.ledger()["half-good"]
    assert row["state"] == "failed"
    assert "missing_table" in row["error"]
    assert row["attempts"] == 1

    fixed = {**step, "sql": "CREATE TABLE made_it (a int)"}
    retried = run(db_url, make_plan(fixed))
    assert retried.code == 0, retried.out
    assert db.ledger()["half-good"]["state"] == "applied"
    assert db.ledger()["half-good"]["attempts"] == 2


def test_sql_reaches_the_database_as_written(db: Database, db_url: str, run: Runner) -> None:
    # '%' and ':name' must not be taken for parameters; ';' inside a string is not a separator.
    step = {
        "name": "literal",
        "sql": "CREATE TABLE notes (body text); "
        "INSERT INTO notes VALUES ('50% off; :promo at 10:30')",
    }
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 0, outcome.out
    assert db.scalar("SELECT body FROM notes") == "50% off; :promo at 10:30"


def test_backfill_expression_with_colon_and_percent(db: Database, db_url: str, run: Runner) -> None:
    db.make_items(3)
    step = backfill_step(set={"new_col": "old_col || ' :x 5%'"}, where="old_col LIKE 'v%'")
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 0, outcome.out
    assert db.scalar("SELECT new_col FROM items WHERE id = 1") == "v1 :x 5%"


def test_backfill_with_text_keys_iterates_by_keyset(db: Database, db_url: str, run: Runner) -> None:
    db.make_items(777, key="text")
    outcome = run(db_url, make_plan(backfill_step(batchSize=100), VERIFY))
    assert outcome.code == 0, outcome.out
    assert "keyset key id" in outcome.out
    assert db.scalar("SELECT sum(hits) FROM items") == 777
    assert db.scalar("SELECT count(*) FROM items WHERE hits <> 1") == 0
    assert db.ledger()["copy"]["rows_done"] == 777


def test_backfill_with_sparse_integer_keys_uses_keyset(
    db: Database, db_url: str, run: Runner
) -> None:
    db.make_items(5)
    db.execute("UPDATE items SET id = id * 1000000 WHERE id > 3")
    outcome = run(db_url, make_plan(backfill_step(batchSize=2)))
    assert outcome.code == 0, outcome.out
    assert "keyset key id" in outcome.out
    assert db.scalar("SELECT sum(hits) FROM items") == 5


def test_backfill_where_limits_rows_and_empty_table_is_fine(
    db: Database, db_url: str, run: Runner
) -> None:
    db.make_items(100)
    step = backfill_step(where="id % 2 = 0", batchSize=10)
    outcome = run(db_url, make_plan(step))
    assert outcome.code == 0, outcome.out
    assert db.scalar("SELECT sum(hits) FROM items") == 50
    assert db.ledger()["copy"]["rows_done"] == 50
    db.execute("DELETE FROM items")
    other = run(db_url, make_plan(backfill_step(name="copy-again")))
    assert other.code == 0, other.out
    assert db.ledger()["copy-again"]["rows_done"] == 0


class AppendingReporter:
    """Stands in for the application: after the first batch, it appends rows past max(id)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.appended = False

    def report(self, progress: Progress, *, force: bool = False) -> bool:
        if not self.appended and progress.step == "copy" and not force:
            self.db.execute("INSERT INTO items (id, old_col) VALUES (11, 'v11'), (12, 'v12')")
            self.appended = True
        return False

    def close(self) -> None:
        pass


def test_backfill_picks_up_rows_appended_beyond_the_initial_maximum(
    db: Database, db_url: str
) -> None:
    db.make_items(10)
    plan = parse_plan(make_plan(backfill_step(batchSize=3)))
    engine = make_engine(db_url)
    reporter = AppendingReporter(db)
    try:
        ensure_ledger(engine)
        result = run_phase(engine, plan, reporter, scrub=str)
    finally:
        engine.dispose()
    assert reporter.appended
    assert result.applied == 1
    assert db.scalar("SELECT count(*) FROM items WHERE new_col IS NULL") == 0
    assert db.scalar("SELECT sum(hits) FROM items") == 12


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        pytest.param({"phase": "expand", "steps": []}, "plan.migration", id="no-migration"),
        pytest.param({"migration": "shop/users", "phase": "rollout"}, "plan.phase", id="phase"),
        pytest.param(
            make_plan({"name": "c", "backfill": {"table": "t", "set": {"a": "b"}, "batchSize": 0}}),
            "plan.steps[0].backfill.batchSize",
            id="step-field",
        ),
        pytest.param(
            make_plan({"name": "job", "command": {"image": "app", "command": ["migrate"]}}),
            "plan.steps[0].command",
            id="command-step",
        ),
    ],
)
def test_invalid_plan_is_exit_2_naming_the_field(
    sqlite_url: str, run: Runner, plan: dict[str, Any], field: str
) -> None:
    outcome = run(sqlite_url, plan)
    assert outcome.code == 2
    assert "FAILED exit=2" in outcome.last_line
    assert field in outcome.last_line


def test_missing_database_url_is_exit_2(
    run: Runner, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    outcome = run(sqlite_url, make_plan(ADD_COLUMN), "--database-url-env", "APP_DB_URL")
    assert outcome.code == 2
    assert "$APP_DB_URL is empty or unset" in outcome.last_line
    monkeypatch.setenv("APP_DB_URL", sqlite_url)
    assert run(sqlite_url, make_plan(), "run", "--database-url-env", "APP_DB_URL").code == 0


def test_plan_from_a_yaml_file(tmp_path: Any, sqlite_url: str, run: Runner) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "migration: shop/users\nphase: contract\nsteps:\n"
        "  - name: make-table\n    sql: CREATE TABLE t (a int)\n",
        encoding="utf-8",
    )
    outcome = run(sqlite_url, {"not": "used"}, "--plan", str(plan_file))
    assert outcome.code == 0, outcome.out
    assert Database(sqlite_url).ledger()["make-table"]["phase"] == "contract"


@pytest.mark.pg
def test_non_transactional_concurrent_index(pg_url: str, run: Runner) -> None:
    db = Database(pg_url)
    db.make_items(10)
    step = {
        "name": "index-new-col",
        "sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_new_col ON items (new_col)",
        "transactional": False,
    }
    outcome = run(pg_url, make_plan(step))
    assert outcome.code == 0, outcome.out
    assert db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_new_col'") == 1
    db.close()


@pytest.mark.pg
def test_runner_logs_lint_findings_on_postgresql(pg_url: str, run: Runner) -> None:
    Database(pg_url).make_items(1)
    outcome = run(
        pg_url,
        # In contract a blocking index build is a warning (in expand the operator refuses it).
        make_plan(
            {"name": "blocking", "sql": "CREATE INDEX i ON items (old_col)"}, phase="contract"
        ),
    )
    assert outcome.code == 0, outcome.out
    assert 'lint warning create-index-not-concurrently in step "blocking"' in outcome.out


@pytest.mark.pg
def test_backfill_session_settings_do_not_leak_into_later_steps(pg_url: str, run: Runner) -> None:
    # Later steps see their own limits (SET LOCAL per transaction), not the backfill's session.
    Database(pg_url).make_items(10)
    checks = [
        {
            "name": name.replace("_", "-"),
            "verify": {"query": f"SELECT current_setting('{name}')", "expect": value},
            "lockTimeoutMilliseconds": 1234,
            "statementTimeoutMilliseconds": 4321,
        }
        for name, value in [
            ("statement_timeout", "4321ms"),
            ("lock_timeout", "1234ms"),
            ("synchronous_commit", "on"),
        ]
    ]
    outcome = run(pg_url, make_plan(backfill_step(), *checks))
    assert outcome.code == 0, outcome.out
