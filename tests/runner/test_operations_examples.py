"""examples/05-rename-with-sync and 06-change-column-type, as written, through the runner on a
real PostgreSQL: setup.sql, the phases the operator would run (parsed from the example's
manifest), an old-code writer inserting and updating between the phases and a new-code insert
after the backfill, then check.sql.

(The e2e test tests/e2e/test_examples.py applies every example on the local cluster too; this one
needs no cluster and adds the writer of the old version.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from runner_support import Database, Runner, make_plan

from datamigration.core.spec import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# What old code writes (the old column only) while the migration runs, and what it means later.
OLD_CODE = {
    "05-rename-with-sync": (
        "INSERT INTO users (email) VALUES ('late' || :n || '@example.com')",
        "UPDATE users SET email = 'user' || id || '@example.com' WHERE id = :n",
    ),
    "06-change-column-type": (
        "INSERT INTO orders (id, total) VALUES (100000 + :n, 2.5)",
        "UPDATE orders SET total = id + 0.99 WHERE id = :n",
    ),
}

# What new code writes after the backfill (the new column only): the old column is NOT NULL, so
# the insert succeeds only because the trigger derives it (down) before the constraint check.
NEW_CODE = {
    "05-rename-with-sync": (
        "INSERT INTO users (email_address) VALUES ('new' || :n || '@example.com')",
        "SELECT count(*) FROM users WHERE email_address LIKE 'new%@example.com'",
    ),
    "06-change-column-type": (
        "INSERT INTO orders (id, total_cents) VALUES (200000 + :n, 1234)",
        "SELECT count(*) FROM orders WHERE id > 200000 AND total_cents = 1234",
    ),
}


@pytest.mark.parametrize("example", sorted(OLD_CODE))
def test_example_runs_with_an_old_code_writer(example: str, pg_url: str, run: Runner) -> None:
    directory = EXAMPLES / example
    db = Database(pg_url)
    try:
        db.script((directory / "setup.sql").read_text())
        spec = parse_spec(yaml.safe_load((directory / "datamigration.yaml").read_text())["spec"])
        insert, update = OLD_CODE[example]
        for n, phase in enumerate(("expand", "backfill", "contract"), start=1):
            if phase == "contract":
                # old code's last writes: an insert, and an update that rewrites a value
                db.execute(insert, n=n)
                db.execute(update, n=n)
            steps = spec.job_steps(phase)
            outcome = run(pg_url, make_plan(*(dict(r) for r in steps.raw), phase=phase))
            assert outcome.code == 0, outcome.out
            if phase != "contract":
                db.execute(insert, n=n)
                db.execute(update, n=n)
            if phase == "backfill":
                db.execute(NEW_CODE[example][0], n=n)
        # check.sql counts the original rows; the rows old code inserted must have come through
        assert db.scalar((directory / "check.sql").read_text()) is True
        if example == "05-rename-with-sync":
            late = "SELECT count(*) FROM users WHERE email_address LIKE 'late%@example.com'"
        else:
            late = "SELECT count(*) FROM orders WHERE id > 100000 AND total_cents = 250"
        assert db.scalar(late) == 3
        assert db.scalar(NEW_CODE[example][1]) == 1
    finally:
        db.close()
