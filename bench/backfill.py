"""Benchmark: the runner's batched backfill against one big UPDATE, on a throwaway PostgreSQL.

Run with `make bench-backfill` (`.venv/bin/python bench/backfill.py [--rows N] [--repeat R]`).

Per run, the table `items(id bigserial primary key, old_col text, new_col text, payload text)` is
rebuilt with N rows (`old_col = md5(i)`, a 100-byte payload), vacuumed, analysed and
checkpointed, so every measurement starts from the same state. Measured in one process against
one server (compare ratios within a run, never absolute numbers across machines):

1. `UPDATE items SET new_col = upper(old_col)` as one statement: rows/s, and the latencies a
   paced concurrent writer (bench/_writer.py, 200 single-row updates/s, latency from when each
   write was due) sees meanwhile.
2. The same change as the runner's backfill step (`set: {new_col: "upper(old_col)"}`, default
   tuning), run as a real `datamigration-runner` subprocess: rows/s over the step's duration as
   recorded in the ledger (process start-up excluded), and the writer's latencies meanwhile.
3. Resume: a backfill that also counts updates per row (`hits = hits + 1`), SIGKILLed at about
   half-way (watching the ledger checkpoint), then restarted; the total of `hits` must equal N,
   with every row updated exactly once and `new_col` right everywhere.

With `--repeat R`, steps 1 and 2 are interleaved R times and medians are reported.
Human-readable lines first, then LAST one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from localcluster.postgres import PostgresServer  # noqa: E402


def rebuild(dsn: str, rows: int, *, hits: bool = False) -> None:
    extra = ", hits integer NOT NULL DEFAULT 0" if hits else ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("DROP TABLE IF EXISTS datamigration_ledger")
        conn.execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, old_col text, new_col text, "
            f"payload text{extra})"
        )
        conn.execute(
            "INSERT INTO items (old_col, payload) "
            "SELECT md5(i::text), repeat('x', 100) FROM generate_series(1, %s) AS i",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE items")
        conn.execute("CHECKPOINT")


def single_update(dsn: str, rows: int) -> Window:
    rebuild(dsn, rows)
    writer = Writer(dsn, rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.time()
        updated = conn.execute("UPDATE items SET new_col = upper(old_col)").rowcount
        end = time.time()
    writes = writer.stop()
    check_done(dsn, rows)
    return Window(updated, start, end, within(writes, start, end))


def plan_file(directory: Path, name: str, assignments: dict[str, str]) -> Path:
    plan = {
        "migration": f"bench/{name}",
        "phase": "backfill",
        "steps": [{"name": "copy", "backfill": {"table": "items", "set": assignments}}],
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def runner_backfill(url: str, dsn: str, rows: int, workdir: Path, run: int) -> tuple[Window, Any]:
    rebuild(dsn, rows)
    name = f"copy-{run}"
    plan = plan_file(workdir, name, {"new_col": "upper(old_col)"})
    log = workdir / f"{name}.log"
    writer = Writer(dsn, rows)
    wall_start = time.time()
    code = start_runner(url, plan, log).wait()
    wall = time.time() - wall_start
    writes = writer.stop()
    if code != 0:
        raise RuntimeError(f"the runner failed ({code}):\n{log.read_text()}")
    step = ledger_step(dsn, f"bench/{name}")
    assert step is not None and step["started"] and step["finished"]
    check_done(dsn, rows)
    window = Window(step["rows_done"], step["started"], step["finished"], [])
    window.latencies_ms = within(writes, window.start, window.end)
    return window, {"wall_s": wall, "final_batch_size": step["checkpoint"]["batchSize"]}


def check_done(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE new_col IS DISTINCT FROM upper(old_col)), count(*) "
            "FROM items"
        ).fetchone()
    assert row is not None
    wrong, total = row
    if wrong or total != rows:
        raise RuntimeError(f"backfill incomplete: {wrong} rows wrong of {total}")


def resume(url: str, dsn: str, rows: int, workdir: Path) -> dict[str, Any]:
    rebuild(dsn, rows, hits=True)
    plan = plan_file(workdir, "resume", {"new_col": "upper(old_col)", "hits": "hits + 1"})
    log = workdir / "resume.log"
    process = start_runner(url, plan, log)
    killed_at = 0
    while process.poll() is None:
        step = ledger_step(dsn, "bench/resume")
        if step and step["rows_done"] >= rows // 2:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at = int(step["rows_done"])
            break
        time.sleep(0.005)  # polling the ledger; the kill point only needs to be about half-way
    at_kill = ledger_step(dsn, "bench/resume")
    assert at_kill is not None
    if start_runner(url, plan, log).wait() != 0:
        raise RuntimeError(f"the resumed runner failed:\n{log.read_text()}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sum(hits), count(*) FILTER (WHERE hits <> 1), "
            "count(*) FILTER (WHERE new_col IS DISTINCT FROM upper(old_col)) FROM items"
        ).fetchone()
    assert row is not None
    total_hits, not_once, wrong = int(row[0]), int(row[1]), int(row[2])
    return {
        "killed": killed_at > 0,
        "rows_done_at_kill": at_kill["rows_done"],
        "resume_rows_updated": total_hits,
        "rows_not_updated_exactly_once": not_once,
        "rows_wrong": wrong,
        "resume_correct": total_hits == rows and not_once == 0 and wrong == 0 and killed_at > 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of 1 and 2")
    args = parser.parse_args()
    rows: int = args.rows

    go_build = background_go_build()
    print(f"rows: {rows:,}; load average {os.getloadavg()[0]:.2f}; background go build: {go_build}")
    with PostgresServer.start() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = server.create_database("bench_backfill")
        dsn = libpq(url)
        singles: list[Window] = []
        runners: list[Window] = []
        extras: list[dict[str, Any]] = []
        for run in range(args.repeat):
            single = single_update(dsn, rows)
            singles.append(single)
            print(
                f"[{run + 1}] one UPDATE: {single.rows_per_s:,.0f} rows/s in "
                f"{single.end - single.start:.2f} s; writer p99 {single.percentile(0.99):.1f} ms, "
                f"max {single.max_ms:.1f} ms ({len(single.latencies_ms)} writes)"
            )
            runner, extra = runner_backfill(url, dsn, rows, workdir, run)
            runners.append(runner)
            extras.append(extra)
            print(
                f"[{run + 1}] runner backfill: {runner.rows_per_s:,.0f} rows/s in "
                f"{runner.end - runner.start:.2f} s (process wall {extra['wall_s']:.2f} s, "
                f"final batch size {extra['final_batch_size']:,}); writer p99 "
                f"{runner.percentile(0.99):.1f} ms, max {runner.max_ms:.1f} ms "
                f"({len(runner.latencies_ms)} writes)"
            )
        resumed = resume(url, dsn, rows, workdir)
        print(
            f"resume: SIGKILL at {resumed['rows_done_at_kill']:,} rows, restarted; rows updated "
            f"in total {resumed['resume_rows_updated']:,} (expected {rows:,}); "
            f"correct: {resumed['resume_correct']}"
        )

    single_rate = statistics.median(w.rows_per_s for w in singles)
    runner_rate = statistics.median(w.rows_per_s for w in runners)
    result = {
        "rows": rows,
        "single_update_rows_per_s": round(single_rate),
        "runner_rows_per_s": round(runner_rate),
        "ratio": round(runner_rate / single_rate, 3),
        "writer_p99_ms_runner": round(statistics.median(w.percentile(0.99) for w in runners), 1),
        "writer_max_ms_runner": round(max(w.max_ms for w in runners), 1),
        "writer_max_ms_single": round(max(w.max_ms for w in singles), 1),
        "resume_rows_updated": resumed["resume_rows_updated"],
        "writer_p99_ms_single": round(statistics.median(w.percentile(0.99) for w in singles), 1),
        "runner_final_batch_size": extras[-1]["final_batch_size"],
        "resume_correct": resumed["resume_correct"],
        "repeat": args.repeat,
        "background_go_build": go_build,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
