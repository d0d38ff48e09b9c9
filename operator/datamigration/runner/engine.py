"""Engines for the two supported databases, with the transaction behaviour the runner relies on.

Why: the runner's guarantees (a step and its ledger row commit together, a backfill batch and its
checkpoint commit together) need transactional DDL. PostgreSQL has it. Python's sqlite3 driver
does not BEGIN before DDL in its legacy mode, so DDL would autocommit; the documented SQLAlchemy
recipe fixes that: `isolation_level = None` on the DBAPI connection (the driver stops managing
transactions) and an explicit `BEGIN IMMEDIATE` when SQLAlchemy begins one (IMMEDIATE also takes
SQLite's write lock up front, so a step never fails half-way on a read-to-write lock upgrade).
We never switch SQLite connections to AUTOCOMMIT: SQLAlchemy would reset the driver's
`isolation_level` afterwards and silently undo the recipe.

PostgreSQL connections start with `lock_timeout` at the built-in default (2 s), so even the runner's
own bookkeeping (ledger reads, the ledger's creation) never queues application queries behind it;
steps then set their own limits per transaction (`limits`).

URLs: `postgresql://`, `postgres://` and `postgresql+psycopg://` all use psycopg 3; `sqlite:///path`
must name an existing file (a typo must not create an empty database and "migrate" it).
Messages never contain the URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from datamigration.core.steps import DEFAULT_LOCK_TIMEOUT_MILLISECONDS
from datamigration.runner.errors import DatabaseUnreachable, InvalidInput

_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}

#: How long a PostgreSQL connection attempt may take before the runner reports exit 6.
CONNECT_TIMEOUT_SECONDS = 10
#: How long SQLite waits for another writer's lock before failing a statement.
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def database_url(raw: str) -> URL:
    """Parse and normalise a database URL; `InvalidInput` (without the URL) if unsupported."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise InvalidInput(
            "the database URL is not a valid URL (expected postgresql://... or sqlite:///path)"
        ) from None
    if url.drivername in _POSTGRES_DRIVERS:
        return url.set(drivername="postgresql+psycopg")
    if url.drivername in _SQLITE_DRIVERS:
        return url
    raise InvalidInput(
        f"unsupported database URL scheme {url.drivername!r}: "
        "use postgresql:// (psycopg 3) or sqlite:///path"
    )


def dialect_of(raw_url: str) -> str:
    """`sqlite` or `postgresql` (also for an unusable URL: `database_url` reports that)."""
    return "sqlite" if raw_url.strip().lower().startswith("sqlite") else "postgresql"


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine (None for PostgreSQL and in-memory SQLite)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def make_engine(raw_url: str) -> Engine:
    """An Engine for `raw_url` with transactional DDL on both dialects."""
    url = database_url(raw_url)
    if url.drivername == "postgresql+psycopg":
        postgres = create_engine(
            url,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "datamigration-runner",
            },
            pool_size=2,
            max_overflow=2,
        )
        event.listen(postgres, "connect", _postgres_connect)
        return postgres
    database = url.database
    if database and database != ":memory:" and not Path(database).is_file():
        raise DatabaseUnreachable(f"the SQLite database file {database} does not exist")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _postgres_connect(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {DEFAULT_LOCK_TIMEOUT_MILLISECONDS}")
    dbapi_connection.commit()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not manage transactions itself (it would not BEGIN before DDL).
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
