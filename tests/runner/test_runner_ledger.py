"""The ledger's checkpoint write (one per backfill batch), on SQLite and PostgreSQL: it stores the
checkpoint and the rows done of the attempt that holds the step, and it is a compare-and-swap,
so a runner whose attempt is no longer the current one raises `LedgerConflict` and changes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from runner_support import Database

from datamigration.runner import ledger
from datamigration.runner.errors import LedgerConflict

KEY = ledger.StepKey(migration="shop/rename", phase="backfill", step="copy")
OTHER = ledger.StepKey(migration="shop/rename", phase="backfill", step="other")


def test_save_checkpoint_writes_the_current_attempt_only(db: Database) -> None:
    ledger.ensure_ledger(db.engine)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        first = ledger.begin_attempt(conn, KEY, "sum", None, now)
        untouched = ledger.begin_attempt(conn, OTHER, "sum", None, now)
    with db.engine.begin() as conn:
        ledger.save_checkpoint(conn, first, {"last": 40, "rowsDone": 40}, 40)
    with db.engine.begin() as conn:
        previous = ledger.read(conn, KEY)
        assert previous is not None
        second = ledger.begin_attempt(conn, KEY, "sum", previous, now)  # a later runner
    with db.engine.begin() as conn:
        ledger.save_checkpoint(conn, second, {"last": 80, "rowsDone": 80}, 80)

    with pytest.raises(LedgerConflict, match='step "copy"'), db.engine.begin() as conn:
        ledger.save_checkpoint(conn, first, {"last": 999, "rowsDone": 999}, 999)

    with db.engine.connect() as conn:
        entry = ledger.read(conn, KEY)
        other = ledger.read(conn, OTHER)
    assert entry is not None and other is not None
    assert (entry.attempts, entry.checkpoint, entry.rows_done) == (
        second.number,
        {"last": 80, "rowsDone": 80},
        80,
    )
    assert (other.attempts, other.checkpoint, other.rows_done) == (untouched.number, None, 0)
