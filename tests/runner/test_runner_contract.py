"""Contract: verify and the destructive steps in one transaction, gated by `before_destructive`
(issue 9, item 1, the runner's part), on PostgreSQL and SQLite.

The hook stands in for the rollout gate (`runner/gate.py`, wired in `main`): it is called inside
the contract transaction right before each contract step. When it raises `RolloutRegressed`,
nothing destructive happened and the ledger shows no applied contract step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from runner_support import Database, make_plan
from sqlalchemy import inspect

from datamigration.runner.engine import make_engine
from datamigration.runner.errors import ExitCode, RolloutRegressed, StepFailed, VerifyFailed
from datamigration.runner.ledger import ensure_ledger
from datamigration.runner.phase import PhaseResult, run_phase
from datamigration.runner.plan import parse_plan
from datamigration.runner.progress import LogOnlyReporter

VERIFY = {
    "name": "all-copied",
    "verify": {"query": "SELECT count(*) FROM items WHERE new_col IS NULL", "expect": 0},
}
DROP_OLD = {"name": "drop-old", "sql": "ALTER TABLE items DROP COLUMN old_col"}
REGRESSED = "deployment shop/web: pod web-7c9-abcde runs the old image app:1"


def columns(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {column["name"] for column in inspect(conn).get_columns("items")}


def contract(db_url: str, *steps: dict[str, Any], hook: Callable[[], None] | None) -> PhaseResult:
    plan = parse_plan(make_plan(*steps, phase="contract"))
    engine = make_engine(db_url)
    try:
        ensure_ledger(engine)
        return run_phase(engine, plan, LogOnlyReporter(), scrub=str, before_destructive=hook)
    finally:
        engine.dispose()


@pytest.fixture
def copied(db: Database) -> Database:
    db.make_items(5)
    db.execute("UPDATE items SET new_col = old_col")
    return db


def regress() -> None:
    raise RolloutRegressed(REGRESSED)


def test_a_raising_hook_leaves_the_column_and_no_applied_contract_step(
    copied: Database, db_url: str
) -> None:
    with pytest.raises(RolloutRegressed) as raised:
        contract(db_url, VERIFY, DROP_OLD, hook=regress)
    assert raised.value.exit_code == ExitCode.ROLLOUT_REGRESSED == 8
    assert "old_col" in columns(copied)
    ledger = copied.ledger()
    assert ledger["drop-old"]["state"] == "failed"
    assert REGRESSED in ledger["drop-old"]["error"]
    assert "all-copied" not in ledger  # its ledger row was in the rolled-back transaction


def test_the_hook_runs_before_each_contract_step_after_verify(
    copied: Database, db_url: str
) -> None:
    seen: list[set[str]] = []

    def gate() -> None:
        # From another connection, before the first DROP (later the DROP's ACCESS EXCLUSIVE lock,
        # held until the contract transaction commits, would make this wait).
        seen.append(columns(copied) if not seen else set())

    drop_new = {"name": "drop-new", "sql": "ALTER TABLE items DROP COLUMN hits"}
    result = contract(db_url, VERIFY, DROP_OLD, drop_new, hook=gate)
    assert (result.verified, result.applied) == (1, 2)
    assert len(seen) == 2  # once per contract step, never for verify
    assert {"old_col", "hits"} <= seen[0]  # verify ran, nothing destructive yet
    assert {"old_col", "hits"}.isdisjoint(columns(copied))
    assert {row["state"] for row in copied.ledger().values()} == {"applied"}

    again = contract(db_url, VERIFY, DROP_OLD, drop_new, hook=regress)  # all applied: no gate
    assert (again.verified, again.skipped) == (1, 2)


def test_a_failing_verify_never_reaches_the_hook(db: Database, db_url: str) -> None:
    db.make_items(5)  # new_col is NULL everywhere
    called: list[bool] = []
    with pytest.raises(VerifyFailed, match="expected '0', got '5'"):
        contract(db_url, VERIFY, DROP_OLD, hook=lambda: called.append(True))
    assert called == []
    assert "old_col" in columns(db)


def test_verify_and_contract_steps_commit_together(copied: Database, db_url: str) -> None:
    """A later contract step failing rolls the earlier DROP back: one transaction, not several."""
    broken = {"name": "broken", "sql": "ALTER TABLE missing_table ADD COLUMN x int"}
    with pytest.raises(StepFailed, match='step "broken" failed'):
        contract(db_url, VERIFY, DROP_OLD, broken, hook=None)
    assert "old_col" in columns(copied)
    ledger = copied.ledger()
    assert "drop-old" not in ledger
    assert ledger["broken"]["state"] == "failed"


def test_the_hook_also_gates_a_non_transactional_contract_step(
    copied: Database, db_url: str
) -> None:
    copied.script("CREATE TABLE legacy (a int)")
    drop_legacy = {"name": "drop-legacy", "sql": "DROP TABLE legacy", "transactional": False}
    with pytest.raises(RolloutRegressed):
        contract(db_url, VERIFY, drop_legacy, hook=regress)
    assert copied.has_table("legacy")
    assert copied.ledger()["drop-legacy"]["state"] == "failed"
