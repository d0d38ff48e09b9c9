"""The throwaway PostgreSQL harness (`localcluster.postgres`): safe names, and no server left
behind even when the process that started it is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster.postgres import database_name
from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

STARTER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from localcluster.postgres import PostgresServer
server = PostgresServer.start()
pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
print(json.dumps({"base": str(server.base), "pid": pid, "url": server.url}), flush=True)
sys.stdin.read()  # until the test kills us
"""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain_name", "plain_name"),
        ("test_x[postgresql]", "test_x_postgresql_"),
        ("Test-Ünïcode name", "test_n_code_name_"),
        ("1starts_with_digit", "db_1starts_with_digit_"),
        ("x" * 80, "x" * 54 + "_"),
    ],
)
def test_database_names_are_sanitised_and_distinct(name: str, expected: str) -> None:
    cleaned = database_name(name)
    assert cleaned.startswith(expected)
    assert len(cleaned) <= 63
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in cleaned)
    assert cleaned == cleaned.lower()
    assert database_name("test_x[sqlite]") != database_name("test_x[sqlite-]")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.pg
def test_a_killed_owner_does_not_leave_postgres_behind() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(REPO / "hack")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        info = json.loads(starter.stdout.readline())
        assert alive(info["pid"])
        assert info["url"].startswith("postgresql+psycopg://datamigration:")
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    wait_for("the watchdog to stop PostgreSQL", lambda: not alive(info["pid"]), timeout=60)
    wait_for("the watchdog to remove the data", lambda: not Path(info["base"]).exists(), timeout=60)
