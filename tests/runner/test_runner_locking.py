"""One runner per migration: real `datamigration-runner` processes contending for the lock.

The test holds the migration's lock itself (an advisory lock on its own PostgreSQL session, or the
flock on the SQLite sidecar file), so who holds it when is deterministic; runners are observed
through their log ("waiting up to ...") and the ledger, never through sleeps.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

import pytest
from runner_support import MIGRATION, Database, Runner, finish, make_plan, spawn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from datamigration.runner.locking import lock_file, lock_key
from localcluster.waiting import wait_for

ONCE = {
    "name": "once",
    # Not re-runnable: a second execution would fail on CREATE TABLE.
    "sql": "CREATE TABLE once_only (a int); INSERT INTO once_only VALUES (1)",
}
CHECK = {"name": "check", "verify": {"query": "SELECT count(*) FROM once_only", "expect": 1}}


@contextmanager
def holding_the_lock(url: str, migration: str = MIGRATION) -> Iterator[str]:
    """Hold the runner's lock for `migration`; yields how a waiting runner names the holder."""
    if url.startswith("postgresql"):
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(
                text("SELECT pg_advisory_lock(CAST(:k AS BIGINT))"), {"k": lock_key(migration)}
            )
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            try:
                yield f"PostgreSQL backend pid {pid}"
            finally:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
        engine.dispose()
        return
    path = lock_file(Path(str(make_url(url).database)))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield f"process {os.getpid()} (lock file {path})"
    finally:
        os.close(fd)  # releases the flock


def waiting(log: Path) -> bool:
    return "waiting up to" in log.read_text(encoding="utf-8")


def test_a_second_runner_waits_then_skips_what_the_first_applied(
    db: Database, db_url: str, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    plan = make_plan(ONCE, CHECK)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with holding_the_lock(db_url) as holder:
        for log in logs:
            processes.append(spawn(db_url, plan, log, "--lock-timeout", "120"))
        for log in logs:
            wait_for(
                f"the runner of {log.name} to wait for the lock",
                functools.partial(waiting, log),
                timeout=60,
            )
            assert f"held by {holder}" in log.read_text(encoding="utf-8")
        assert not db.ledger()  # nobody got past the lock
    outcomes = [finish(process, log) for process, log in zip(processes, logs, strict=True)]
    assert [outcome.code for outcome in outcomes] == [0, 0], [o.out for o in outcomes]
    applied = [o for o in outcomes if "once: applied" in o.out]
    skipped = [o for o in outcomes if "once: skipped, applied earlier" in o.out]
    assert len(applied) == 1
    assert len(skipped) == 1
    assert db.scalar("SELECT count(*) FROM once_only") == 1
    assert db.ledger()["once"]["attempts"] == 1
    assert db.ledger()["check"]["attempts"] == 2  # both ran the check


def test_a_runner_gives_up_after_its_lock_timeout(
    db: Database, db_url: str, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    log = tmp_path / "runner.log"
    with holding_the_lock(db_url) as holder:
        processes.append(spawn(db_url, make_plan(ONCE), log, "--lock-timeout", "1"))
        outcome = finish(processes[0], log)
    assert outcome.code == 3
    assert outcome.last_line.split(" ", 2)[2] == (
        "FAILED exit=3: timed out after 1 s waiting for the lock of migration shop/users, "
        f"held by {holder}: another runner is working on it."
    )
    assert not db.has_table("once_only")
    assert not db.ledger()


@pytest.mark.pg
def test_postgresql_locks_are_per_migration(pg_url: str, run: Runner) -> None:
    with holding_the_lock(pg_url, migration="shop/someone-else"):
        outcome = run(pg_url, make_plan(ONCE), "--lock-timeout", "5")
    assert outcome.code == 0, outcome.out
    assert "waiting" not in outcome.out


def test_lock_keys_are_stable_signed_64_bit_and_distinct() -> None:
    keys = {lock_key(f"ns/migration-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert lock_key("shop/users") == lock_key("shop/users")
