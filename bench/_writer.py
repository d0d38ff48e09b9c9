"""A paced concurrent writer for bench/backfill.py: what the application feels during a backfill.

Runs as its own process with its own connection (autocommit, like a web request): single-row
`UPDATE items SET payload = ... WHERE id = <random>` at a fixed rate (`--column old_col`: the
column old application code writes during a rename, a new value each time, for bench/sync.py).
Latency is measured from when each write was *due*, not when it was sent, so a write stuck behind
a lock also delays the writes scheduled after it and they all count (no coordinated omission).

Protocol: prints `ready` once connected; runs until its stdin closes; then prints one JSON line:
`{"writes": [[due_unix_seconds, latency_ms], ...]}`.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--column", choices=["payload", "old_col"], default="payload")
    args = parser.parse_args()

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    writes: list[tuple[float, float]] = []
    payload = "w" * 100
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        print("ready", flush=True)
        start_perf, start_wall = time.perf_counter(), time.time()
        index = 0
        while not stop.is_set():
            due = start_perf + index / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                stop.wait(delay)  # pacing, not synchronisation
                if stop.is_set():
                    break
            row = random.randint(1, args.rows)
            value = payload if args.column == "payload" else f"{payload}{index}"
            conn.execute(
                f"UPDATE items SET {args.column} = %s WHERE id = %s", (value, row), prepare=True
            )
            latency_ms = (time.perf_counter() - due) * 1000
            writes.append((start_wall + (due - start_perf), latency_ms))
            index += 1
    print(json.dumps({"writes": writes}), flush=True)


if __name__ == "__main__":
    main()
