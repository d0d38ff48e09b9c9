"""Benchmark: the backfill of a `renameColumn` with its sync trigger installed, on PostgreSQL.

Run with `make bench-sync` (`.venv/bin/python bench/sync.py [--rows N] [--repeat R]`, R = 3 by
default: the three measurements are interleaved R times and medians are reported).

The table is `items(id bigserial primary key, old_col text, payload text)` with N rows
(`old_col = md5(i)`, a 100-byte payload), rebuilt, vacuumed, analysed and checkpointed before
each measurement, with autovacuum off for it (see `rebuild`). The operation is `renameColumn:
{table: items, from: old_col, to: new_col}`; its steps come from the real planner and run in the
real `datamigration-runner` subprocess.
A writer paced at 200 writes/s (bench/_writer.py: open loop, latency from when each write was
due, a pool of 4 connections like an application's) plays the old application: it updates
`old_col` of random rows with new values. All in one run, against one server:

1. baseline, as in bench/backfill.py: `ALTER TABLE items ADD COLUMN new_col text`, then
   `UPDATE items SET new_col = old_col` as one statement while the paced writer runs (it writes
   `payload`, as there, so the copy stays exact): rows/s.
2. without trigger: the column added by hand, then the generated backfill step alone (no sync
   trigger) with the old-code writer running: the writer's p99 latency.
3. with trigger: the generated expand (column + sync trigger), then the generated backfill with
   the old-code writer running: rows/s over the step's duration (from the ledger) and the
   writer's p99. Afterwards no row may differ (`new_col IS DISTINCT FROM old_col`): the writer's
   updates during and after the backfill reached the new column through the trigger.

(2) and (3) differ only by the trigger: the same writer, the same table, the same backfill, so
`writer_p99_ms_with_trigger` over `writer_p99_ms_without_trigger` is the trigger's cost to old
code. Their order alternates from one repetition to the next (without first in odd runs, with
first in even ones), so what happens to come first on a fresh server (WAL segments created
rather than recycled, a cold cache) does not always land on the same side.

Why medians of several runs: the writer's latency is counted from when each write was due, so
one stall of S ms (a WAL fsync behind a checkpoint's writes, a CPU-starved moment on a shared
machine) delays the S x 0.2 writes scheduled meanwhile, and a p99 over ~2,000 writes is close to
the longest stall in the window. One run's p99 is therefore one sample of the disk's and the
scheduler's worst moment; the median of the per-run p99s is the figure, and the per-run values
are in the JSON line too.

`ratio` is (3) over (1). Human-readable lines first, then LAST one JSON line with the figures.
Compare ratios within a run, never absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from _harness import (  # noqa: E402
    Window,
    Writer,
    background_go_build,
    ledger_step,
    libpq,
    start_runner,
    within,
)
from datamigration.core.operations import Planned, plan_operations, raw_step  # noqa: E402
from datamigration.core.steps import Step  # noqa: E402
from localcluster.postgres import PostgresServer  # noqa: E402

RENAME = {"renameColumn": {"table": "items", "from": "old_col", "to": "new_col", "type": "text"}}


def rebuild(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("DROP TABLE IF EXISTS datamigration_ledger")
        conn.execute("DROP FUNCTION IF EXISTS dm_sync_items_old_col_new_col() CASCADE")
        # No autovacuum on the table: the backfill leaves 1,000,000 dead rows, and the launcher,
        # which looks at a database once a minute, would VACUUM it during whichever window
        # happens to be running then (seen: 6 s of a 23 s window), on one side of the
        # comparison only. The table is vacuumed explicitly before every measurement instead.
        conn.execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, old_col text, payload text) "
            "WITH (autovacuum_enabled = off)"
        )
        conn.execute(
            "INSERT INTO items (old_col, payload) "
            "SELECT md5(i::text), repeat('x', 100) FROM generate_series(1, %s) AS i",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE items")
        conn.execute("CHECKPOINT")


def add_column_by_hand(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE items ADD COLUMN new_col text")


def run_steps(url: str, workdir: Path, migration: str, phase: str, steps: tuple[Step, ...]) -> None:
    plan = {"migration": migration, "phase": phase, "steps": [raw_step(s) for s in steps]}
    path = workdir / f"{migration.replace('/', '-')}-{phase}.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    log = workdir / f"{migration.replace('/', '-')}.log"
    if start_runner(url, path, log).wait() != 0:
        raise RuntimeError(f"the runner failed:\n{log.read_text()}")


def differing(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM items WHERE new_col IS DISTINCT FROM old_col"
        ).fetchone()
    assert row is not None
    return int(row[0])


def single_update(dsn: str, rows: int) -> Window:
    """The one-statement baseline, as bench/backfill.py measures it: with the paced writer."""
    rebuild(dsn, rows)
    add_column_by_hand(dsn)
    writer = Writer(dsn, rows)  # writes `payload`, as in bench/backfill.py
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            start = time.time()
            updated = conn.execute("UPDATE items SET new_col = old_col").rowcount
            end = time.time()
    finally:
        writes = writer.stop()
    if differing(dsn):
        raise RuntimeError("the one-statement UPDATE left rows behind")
    return Window(updated, start, end, within(writes, start, end))


def backfill(
    url: str, dsn: str, rows: int, workdir: Path, planned: Planned, *, trigger: bool
) -> Window:
    """The generated backfill with the old-code writer running; with or without the trigger."""
    rebuild(dsn, rows)
    migration = f"bench/sync-{'with' if trigger else 'without'}-trigger"
    if trigger:
        run_steps(url, workdir, migration, "expand", planned.expand)
    else:
        add_column_by_hand(dsn)
    (step,) = planned.backfill
    writer = Writer(dsn, rows, column="old_col")
    try:
        run_steps(url, workdir, migration, "backfill", planned.backfill)
    finally:
        writes = writer.stop()
    ledger = ledger_step(dsn, migration, step.name)
    assert ledger is not None and ledger["started"] and ledger["finished"]
    window = Window(ledger["rows_done"], ledger["started"], ledger["finished"], [])
    window.latencies_ms = within(writes, window.start, window.end)
    if trigger and differing(dsn):
        raise RuntimeError(f"{differing(dsn)} rows differ after the backfill with the trigger")
    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of 1, 2 and 3")
    args = parser.parse_args()
    rows: int = args.rows
    planned = plan_operations([RENAME])

    go_build = background_go_build()
    load = os.getloadavg()[0]
    print(f"rows: {rows:,}; load average {load:.2f}; background go build: {go_build}")
    singles: list[Window] = []
    withouts: list[Window] = []
    synceds: list[Window] = []
    with PostgresServer.start() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = server.create_database("bench_sync")
        dsn = libpq(url)
        for run in range(1, args.repeat + 1):
            single = single_update(dsn, rows)
            singles.append(single)
            print(
                f"[{run}] one UPDATE: {single.rows_per_s:,.0f} rows/s in "
                f"{single.end - single.start:.2f} s"
            )
            for trigger in (False, True) if run % 2 else (True, False):
                window = backfill(url, dsn, rows, workdir, planned, trigger=trigger)
                (synceds if trigger else withouts).append(window)
                print(
                    f"[{run}] generated backfill, "
                    f"{'sync trigger installed' if trigger else 'no trigger'}: "
                    f"{window.rows_per_s:,.0f} rows/s in {window.end - window.start:.2f} s; "
                    f"old-code writer p50 {window.percentile(0.5):.1f} ms, p99 "
                    f"{window.percentile(0.99):.1f} ms, max {window.max_ms:.1f} ms "
                    f"({len(window.latencies_ms)} writes)"
                    + ("; rows differing afterwards: 0" if trigger else "")
                )

    def median(windows: list[Window], figure: Callable[[Window], float]) -> float:
        return statistics.median(figure(w) for w in windows)

    single_rate = median(singles, lambda w: w.rows_per_s)
    sync_rate = median(synceds, lambda w: w.rows_per_s)
    result = {
        "rows": rows,
        "single_update_rows_per_s": round(single_rate),
        "sync_backfill_rows_per_s": round(sync_rate),
        "ratio": round(sync_rate / single_rate, 3),
        "writer_p99_ms_with_trigger": round(median(synceds, lambda w: w.percentile(0.99)), 1),
        "writer_p99_ms_without_trigger": round(median(withouts, lambda w: w.percentile(0.99)), 1),
        "writer_max_ms_with_trigger": round(max(w.max_ms for w in synceds), 1),
        "writer_max_ms_without_trigger": round(max(w.max_ms for w in withouts), 1),
        "backfill_without_trigger_rows_per_s": round(median(withouts, lambda w: w.rows_per_s)),
        "ratio_runs": [
            round(s.rows_per_s / o.rows_per_s, 3) for s, o in zip(synceds, singles, strict=True)
        ],
        "writer_p99_ms_with_trigger_runs": [round(w.percentile(0.99), 1) for w in synceds],
        "writer_p99_ms_without_trigger_runs": [round(w.percentile(0.99), 1) for w in withouts],
        "repeat": args.repeat,
        "load_average_at_start": round(load, 2),
        "background_go_build": go_build,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
