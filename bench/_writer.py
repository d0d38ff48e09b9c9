"""A paced concurrent writer for the PostgreSQL benchmarks: what the application feels during a
backfill (bench/backfill.py, bench/sync.py).

Runs as its own process: single-row `UPDATE items SET payload = ... WHERE id = <random>` at a
fixed rate (`--column old_col`: the column old application code writes during a rename, a new
value each time, for bench/sync.py), each write autocommitted like a web request.

Open loop, no coordinated omission: write number i is *due* at start + i / rate, whatever
happened before, and its latency is measured from when it was due, not from when it was sent.
A write that waits (for a row lock, a WAL flush, the CPU) therefore also counts the time the
writes due meanwhile spent waiting for a free connection.

Like an application, the writer has a small pool of connections (`--connections`, 4 by
default), each served by its own thread that takes the next due write: one request stuck
behind a row lock does not hold up requests for other rows unless all connections are stuck.
With a single connection every write would queue behind the slowest one before it, and the
percentiles would measure that one stall many times over (a 200 ms stall at 200 writes/s puts
40 writes above the p99 of a 10-second window) rather than how many requests the database
actually delayed.

Protocol: prints `ready` once connected; runs until its stdin closes; then prints one JSON line:
`{"writes": [[due_unix_seconds, latency_ms], ...]}` in order of due time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import threading
import time

import psycopg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True, help="libpq connection string or postgresql:// URL")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--column", choices=["payload", "old_col"], default="payload")
    args = parser.parse_args()

    stop = threading.Event()
    due_numbers = itertools.count()  # next() is atomic under the GIL: each write is taken once
    writes: list[tuple[float, float]] = []
    payload = "w" * 100
    connections = [psycopg.connect(args.dsn, autocommit=True) for _ in range(args.connections)]
    for conn in connections:
        conn.execute("SELECT 1")
    start_perf, start_wall = time.perf_counter(), time.time()

    def serve(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not stop.is_set():
            index = next(due_numbers)
            due = start_perf + index / args.rate
            delay = due - time.perf_counter()
            if delay > 0 and stop.wait(delay):  # pacing, not synchronisation
                return
            row = random.randint(1, args.rows)
            value = payload if args.column == "payload" else f"{payload}{index}"
            conn.execute(
                f"UPDATE items SET {args.column} = %s WHERE id = %s", (value, row), prepare=True
            )
            latency_ms = (time.perf_counter() - due) * 1000
            writes.append((start_wall + (due - start_perf), latency_ms))  # list.append: atomic

    threads = [threading.Thread(target=serve, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    for conn in connections:
        conn.close()
    print(json.dumps({"writes": sorted(writes)}), flush=True)


if __name__ == "__main__":
    main()
