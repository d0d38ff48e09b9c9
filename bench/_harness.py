"""What the PostgreSQL benchmarks share (bench/backfill.py, bench/sync.py): measured windows, the
paced writer process (bench/_writer.py), the runner as a subprocess, its ledger's timings, and
the note about background load.

One harness, so the two benchmarks measure the same way: rows/s over the step's own duration as
the ledger records it (process start-up excluded), writer latencies from when each write was due
(no coordinated omission, served by a small pool of connections as an application would),
percentiles computed the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(sys.executable).parent / "datamigration-runner"
WRITER = Path(__file__).resolve().parent / "_writer.py"


@dataclass
class Window:
    """A measured operation: its rows, its wall-clock span, and the writer's latencies in it."""

    rows: int
    start: float
    end: float
    latencies_ms: list[float]

    @property
    def rows_per_s(self) -> float:
        return self.rows / (self.end - self.start)

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=0.0)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Writer:
    """The paced writer process; `stop()` returns its (due time, latency ms) pairs.

    `column` is what each write sets: `payload` (a column no migration touches) or `old_col`
    (what old application code writes during a rename)."""

    def __init__(self, dsn: str, rows: int, column: str = "payload") -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                "--dsn",
                dsn,
                "--rows",
                str(rows),
                "--rate",
                "200",
                "--column",
                column,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the writer did not start")

    def stop(self) -> list[tuple[float, float]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        output = self.process.stdout.read()
        self.process.wait(timeout=60)
        writes: list[tuple[float, float]] = json.loads(output)["writes"]
        return writes


def within(writes: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [latency for due, latency in writes if start <= due <= end]


def start_runner(url: str, plan: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [str(RUNNER), "--plan", str(plan)],
            env={**os.environ, "DATABASE_URL": url},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def ledger_step(dsn: str, migration: str, step: str = "copy") -> dict[str, Any] | None:
    """The ledger row of one step: state, rows done, start and finish (unix seconds)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('datamigration_ledger') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(
            "SELECT state, rows_done, extract(epoch FROM started_at), "
            "extract(epoch FROM finished_at), checkpoint "
            "FROM datamigration_ledger WHERE migration = %s AND step = %s",
            (migration, step),
        ).fetchone()
    if row is None:
        return None
    state, rows_done, started, finished, checkpoint = row
    return {
        "state": state,
        "rows_done": int(rows_done),
        "started": float(started) if started is not None else None,
        "finished": float(finished) if finished is not None else None,
        "checkpoint": json.loads(checkpoint) if checkpoint else None,
    }


def background_go_build() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"go") and b"build" in cmdline[1:3]:
                return True
    return False
