"""The rollback an abort runs (phase `rollback`: `spec.rollback_steps()`), through the runner on a
real PostgreSQL: examples 05 and 06 expanded and backfilled with an old-code writer, then rolled
back. The table, its triggers, functions, indexes and constraints are exactly as before expand,
and every write of the old code is still there. A second run of the rollback (a retry) skips
the undo steps its ledger (phase `rollback`) records as applied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from runner_support import Database, Runner, make_plan

from catalog_support import table_shape
from datamigration.core.jobs import Owner, runner_plan
from datamigration.core.spec import parse_spec
from datamigration.runner.errors import InvalidInput
from datamigration.runner.plan import parse_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = {
    "05-rename-with-sync": (
        "users",
        "INSERT INTO users (email) VALUES ('late' || :n || '@example.com')",
        "UPDATE users SET email = 'changed' || id WHERE id = :n",
        "SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM users",
    ),
    "06-change-column-type": (
        "orders",
        "INSERT INTO orders (id, total) VALUES (100000 + :n, 2.5)",
        "UPDATE orders SET total = id + 0.5 WHERE id = :n",
        "SELECT string_agg(id || '=' || total, ',' ORDER BY id) FROM orders",
    ),
}


@pytest.mark.pg
@pytest.mark.parametrize("example", sorted(CASES))
def test_rollback_after_backfill_restores_the_shape_and_keeps_old_writes(
    example: str, pg_url: str, run: Runner
) -> None:
    table, insert, update, content = CASES[example]
    directory = EXAMPLES / example
    db = Database(pg_url)
    try:
        db.script((directory / "setup.sql").read_text())
        raw = yaml.safe_load((directory / "datamigration.yaml").read_text())["spec"]
        spec = parse_spec(raw)
        with db.engine.connect() as conn:
            before = table_shape(conn, table)
        for n, phase in enumerate(("expand", "backfill"), start=1):
            outcome = run(
                pg_url, make_plan(*(dict(r) for r in spec.job_steps(phase).raw), phase=phase)
            )
            assert outcome.code == 0, outcome.out
            db.execute(insert, n=n)  # old code goes on writing its column
            db.execute(update, n=n)
        with db.engine.connect() as conn:
            assert table_shape(conn, table) != before  # expand did change the shape
        expected = db.scalar(content)

        plan = runner_plan(Owner("shop", "users", "uid"), spec, "rollback")
        assert plan["phase"] == "rollback" and "rolloutGate" not in plan
        outcome = run(pg_url, plan)
        assert outcome.code == 0, outcome.out
        with db.engine.connect() as conn:
            assert table_shape(conn, table) == before
        assert db.scalar(content) == expected  # no write of the old code lost
        undo = [step.name for step in spec.rollback_steps().steps]
        rows = db.ledger("shop/users")
        assert undo and all(rows[name]["phase"] == "rollback" for name in undo)
        assert all(rows[name]["state"] == "applied" for name in undo)

        again = run(pg_url, plan)  # a retry: the applied undo steps are skipped
        assert again.code == 0, again.out
        assert "skipped, applied earlier" in again.out
    finally:
        db.close()


def test_the_runner_reads_a_rollback_plan_and_still_refuses_unknown_phases() -> None:
    plan = parse_plan(
        {
            "migration": "shop/users",
            "phase": "rollback",
            "steps": [{"name": "u", "sql": "SELECT 1"}],
        }
    )
    assert plan.phase == "rollback" and plan.rollout_gate is None
    with pytest.raises(
        InvalidInput, match=r"plan\.phase: must be one of expand, backfill, contract, rollback"
    ):
        parse_plan({"migration": "shop/users", "phase": "codeRollout", "steps": []})
