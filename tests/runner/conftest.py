"""Fixtures for the runner tests: one real database per test, SQLite file or PostgreSQL.

`db_url` is parametrized over both databases (the PostgreSQL variant carries the `pg` mark, so
`-m 'not pg'` runs the SQLite half alone); tests of PostgreSQL-only behaviour use `pg_url`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_support import Database, Outcome, Runner

from datamigration.runner.main import main


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    sqlite3.connect(path).close()  # the runner refuses a file that does not exist
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    """Run `datamigration-runner` in-process with a plan; returns its exit code and output."""

    def run_plan(url: str, plan: dict[str, Any], *args: str) -> Outcome:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DATAMIGRATION_PLAN", json.dumps(plan))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        capsys.readouterr()
        code = main(list(args))
        return Outcome(code, capsys.readouterr().out)

    return run_plan


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Runner subprocesses a test starts; any still alive at the end are killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
