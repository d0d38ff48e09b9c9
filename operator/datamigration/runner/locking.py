"""One runner per migration at a time, on both databases, with a bounded wait.

Why: the operator starts one Job per phase, but Jobs retry, pods linger after a node loss, and a
person may run the runner by hand. Two runners on one migration would race on the same steps.
Alembic has no lock of its own; this is the usual fix, made portable:

- PostgreSQL: a *session-level* advisory lock, `pg_try_advisory_lock(key)`, on a dedicated
  connection (in autocommit, so it never sits "idle in transaction") held for the whole run. The
  key is a signed 64-bit number derived from the migration id, so different migrations never
  block each other. The server releases it when the session ends, even if the runner is
  SIGKILLed. PgBouncer in *transaction* pooling mode breaks session locks (the lock would stay on
  a server connection that other clients then use): point the runner at PostgreSQL directly or at
  a session-pooling pool.
- SQLite: an exclusive `flock` on a sidecar file `<database>.datamigration.lock`; the kernel
  releases it when the process dies. The holder writes its pid into the file for diagnostics.

Both are polled until `timeout` seconds have passed, then `LockTimeout` (exit 3).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from datamigration.runner.engine import is_postgresql, sqlite_file
from datamigration.runner.errors import LockTimeout

LOCK_FILE_SUFFIX = ".datamigration.lock"
#: How often a waiting runner retries the lock.
POLL_SECONDS = 0.2

_TRY_LOCK = text("SELECT pg_try_advisory_lock(CAST(:key AS BIGINT))")
_UNLOCK = text("SELECT pg_advisory_unlock(CAST(:key AS BIGINT))")
# An advisory lock on a bigint key shows in pg_locks as classid (high 32 bits), objid (low 32
# bits) and objsubid 1.
_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND CAST(classid AS BIGINT) = CAST(:high AS BIGINT)"
    " AND CAST(objid AS BIGINT) = CAST(:low AS BIGINT)"
)


def lock_key(migration: str) -> int:
    """The advisory-lock key of a migration: signed 64 bits of sha256("datamigration:<id>")."""
    digest = hashlib.sha256(f"datamigration:{migration}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_file(database: Path) -> Path:
    """The sidecar lock file of a SQLite database."""
    return database.with_name(database.name + LOCK_FILE_SUFFIX)


@contextmanager
def migration_lock(
    engine: Engine,
    migration: str,
    timeout: float,
    on_wait: Callable[[str], None] = lambda holder: None,
) -> Iterator[None]:
    """Hold the migration's lock for the duration of the block.

    `on_wait(holder)` is called once if the lock is taken, with a description of the holder.
    """
    if is_postgresql(engine):
        with _advisory_lock(engine, migration, timeout, on_wait):
            yield
        return
    database = sqlite_file(engine)
    if database is None:  # in-memory SQLite: nobody else can see it
        yield
        return
    with _file_lock(lock_file(database), migration, timeout, on_wait):
        yield


@contextmanager
def _advisory_lock(
    engine: Engine, migration: str, timeout: float, on_wait: Callable[[str], None]
) -> Iterator[None]:
    key = lock_key(migration)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + timeout
        waited = False
        while not conn.execute(_TRY_LOCK, {"key": key}).scalar():
            holder = _advisory_holder(conn, key)
            if not waited:
                on_wait(holder)
                waited = True
            if time.monotonic() >= deadline:
                raise LockTimeout(_timeout_message(migration, timeout, holder))
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            # If the connection broke, the lock ended with the session anyway.
            with contextlib.suppress(Exception):
                conn.execute(_UNLOCK, {"key": key})


def _advisory_holder(conn: Connection, key: int) -> str:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    pid = conn.execute(_HOLDER, {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}).scalar()
    return f"PostgreSQL backend pid {pid}" if pid else "another session"


@contextmanager
def _file_lock(
    path: Path, migration: str, timeout: float, on_wait: Callable[[str], None]
) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _file_holder(path)
                if not waited:
                    on_wait(holder)
                    waited = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(_timeout_message(migration, timeout, holder)) from None
                time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _file_holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except OSError:
        pid = ""
    return f"process {pid} (lock file {path})" if pid.isdigit() else f"lock file {path}"


def _timeout_message(migration: str, timeout: float, holder: str) -> str:
    return (
        f"timed out after {timeout:g} s waiting for the lock of migration {migration}, "
        f"held by {holder}: another runner is working on it"
    )
