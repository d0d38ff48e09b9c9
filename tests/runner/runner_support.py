"""Helpers shared by the runner tests: plans, a database handle, running the runner.

The runner runs either in-process (`main(argv)`, fast, for most behaviour) or as the real
`datamigration-runner` console script in a subprocess (locking, SIGKILL, progress over HTTP).
Both read the same environment variables a phase Job sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, inspect, text

MIGRATION = "shop/users"
RUNNER = Path(sys.executable).parent / "datamigration-runner"


def make_plan(*steps: dict[str, Any], phase: str = "expand", **extra: Any) -> dict[str, Any]:
    return {"migration": MIGRATION, "phase": phase, "steps": list(steps), **extra}


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str

    @property
    def last_line(self) -> str:
        lines = self.out.strip().splitlines()
        return lines[-1] if lines else ""


#: The `run` fixture: run(url, plan, *argv) -> Outcome, in-process.
Runner = Callable[..., Outcome]


class Database:
    """A SQLAlchemy handle on the test's database (the test's own, not the runner's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)

    def execute(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement), params)

    def script(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def scalar(self, statement: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(statement), params).scalar()

    def has_table(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return inspect(conn).has_table(name)

    def ledger(self, migration: str = MIGRATION) -> dict[str, dict[str, Any]]:
        """Ledger rows of a migration by step (empty if the ledger does not exist yet)."""
        if not self.has_table("datamigration_ledger"):
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM datamigration_ledger WHERE migration = :m"), {"m": migration}
            ).mappings()
            result = {row["step"]: dict(row) for row in rows}
        for row in result.values():
            row["checkpoint"] = json.loads(row["checkpoint"]) if row["checkpoint"] else None
        return result

    def make_items(self, rows: int, *, key: str = "integer") -> None:
        """items(id, old_col, new_col, hits): old_col = 'v<i>', hits counts backfill updates."""
        key_type = {"integer": "INTEGER PRIMARY KEY", "text": "TEXT PRIMARY KEY"}[key]
        self.script(
            f"CREATE TABLE items (id {key_type}, old_col TEXT, new_col TEXT, "
            "hits INTEGER NOT NULL DEFAULT 0)"
        )
        values = [
            {"id": i if key == "integer" else f"k{i:08d}", "old": f"v{i}"}
            for i in range(1, rows + 1)
        ]
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO items (id, old_col) VALUES (:id, :old)"), values)

    def close(self) -> None:
        self.engine.dispose()


def backfill_step(name: str = "copy", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "table": "items",
        "set": {"new_col": "upper(old_col)", "hits": "hits + 1"},
    }
    body.update(fields)
    return {"name": name, "backfill": body}


def runner_env(url: str, plan: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "DATABASE_URL"}
    }
    env.update(DATABASE_URL=url, DATAMIGRATION_PLAN=json.dumps(plan), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def spawn(
    url: str, plan: dict[str, Any], log: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """The real console script, its output (stdout and stderr) going to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(RUNNER), *args],
            env=runner_env(url, plan, **env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> Outcome:
    code = process.wait(timeout=timeout)
    return Outcome(code, log.read_text(encoding="utf-8"))
