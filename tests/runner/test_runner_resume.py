"""SIGKILL in the middle of a backfill, then resume: every row updated exactly once.

Each row's `hits` column is incremented by the backfill's own SET list, so the table itself
counts how many times each row was updated: no batch done twice shows as no `hits > 1`, none
skipped as no `hits = 0`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from subprocess import Popen

from runner_support import Database, Runner, backfill_step, finish, make_plan, spawn

from localcluster.waiting import wait_for

ROWS = 5000
VERIFY = {
    "name": "all-copied",
    "verify": {
        "query": "SELECT count(*) FROM items WHERE new_col IS DISTINCT FROM upper(old_col)",
        "expect": 0,
    },
}


def rows_done(db: Database) -> int:
    row = db.ledger().get("copy")
    return int(row["rows_done"]) if row else 0


def test_sigkill_mid_backfill_then_resume_updates_every_row_exactly_once(
    db: Database, db_url: str, run: Runner, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    db.make_items(ROWS)
    # Small, steady batches with a pause between them, so the kill lands mid-way.
    step = backfill_step(batchSize=100, targetBatchMilliseconds=1, pauseMilliseconds=30)
    plan = make_plan(step, VERIFY, phase="backfill")
    log = tmp_path / "killed.log"
    processes.append(spawn(db_url, plan, log))
    wait_for(
        "the backfill to commit 500 rows", lambda: rows_done(db) >= 500, timeout=60, interval=0.01
    )
    processes[0].send_signal(signal.SIGKILL)
    assert finish(processes[0], log).code == -signal.SIGKILL

    killed = db.ledger()["copy"]
    assert killed["state"] == "running"
    assert 500 <= killed["rows_done"] < ROWS  # really mid-way
    # The checkpoint committed with each batch is exact: it equals the rows really updated.
    assert db.scalar("SELECT sum(hits) FROM items") == killed["rows_done"]
    assert db.scalar("SELECT max(hits) FROM items") == 1

    resumed = run(db_url, plan)
    assert resumed.code == 0, resumed.out
    assert f"resuming after key {killed['checkpoint']['last']}" in resumed.out
    assert db.scalar("SELECT sum(hits) FROM items") == ROWS
    assert db.scalar("SELECT count(*) FROM items WHERE hits <> 1") == 0
    assert db.scalar("SELECT count(*) FROM items WHERE new_col = upper(old_col)") == ROWS
    final = db.ledger()["copy"]
    assert final["state"] == "applied"
    assert final["rows_done"] == ROWS
    assert final["attempts"] == 2
