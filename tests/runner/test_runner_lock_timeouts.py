"""Lock timeouts with retry (issue 10, item 2), against a real PostgreSQL.

The classic migration outage: a long reader holds a lock, the migration's DDL queues behind it for
ACCESS EXCLUSIVE, and every application query queues behind the DDL. With `lock_timeout` the DDL
gives up after a short wait, the queue drains, and the runner retries with backoff. A second
session (a thread with its own connection) holds a conflicting lock until a deadline; an
application thread keeps querying the table and measures how long each query waited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from runner_support import Database, Runner, make_plan
from sqlalchemy import create_engine, text

from datamigration.runner.engine import make_engine
from datamigration.runner.ledger import ensure_ledger
from datamigration.runner.phase import run_phase
from datamigration.runner.plan import parse_plan
from datamigration.runner.progress import Progress

pytestmark = pytest.mark.pg

LOCK_TIMEOUT_MS = 300
#: How much longer than the lock timeout an application query may wait (a busy 2-core machine).
MARGIN_SECONDS = 0.7


@dataclass
class Holder:
    """A second session holding a lock on `items` until `release` is set or its deadline."""

    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    released_at: datetime | None = None
    error: BaseException | None = None


@contextmanager
def holding(url: str, statement: str, seconds: float) -> Iterator[Holder]:
    holder = Holder()
    engine = create_engine(url)

    def hold() -> None:
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(text(statement))
                holder.held.set()
                holder.release.wait(timeout=seconds)  # the deadline: release then, or earlier
                holder.released_at = datetime.now(UTC)
        except BaseException as exc:  # surfaced by the test
            holder.error = exc
            holder.held.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert holder.held.wait(timeout=30), "the holder never got its lock"
        assert holder.error is None, holder.error
        yield holder
    finally:
        holder.release.set()
        thread.join(timeout=30)
        engine.dispose()


@dataclass
class Application:
    """Queries `items` in a loop from its own connection; records each query's duration."""

    waits: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@contextmanager
def application(url: str) -> Iterator[Application]:
    app = Application()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")

    def query() -> None:
        with engine.connect() as conn:
            while not app.stop.is_set():
                began = time.monotonic()
                conn.execute(text("SELECT count(*) FROM items"))
                app.waits.append(time.monotonic() - began)
                app.stop.wait(0.05)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.stop.set()
        thread.join(timeout=30)
        engine.dispose()


def add_column(**limits: int) -> dict[str, object]:
    return {"name": "add", "sql": "ALTER TABLE items ADD COLUMN extra text", **limits}


def test_ddl_behind_a_long_reader_retries_and_never_blocks_the_application(
    pg_url: str, run: Runner
) -> None:
    db = Database(pg_url)
    try:
        db.make_items(100)
        step = add_column(lockTimeoutMilliseconds=LOCK_TIMEOUT_MS, lockRetries=30)
        with (
            holding(pg_url, "SELECT count(*) FROM items", seconds=3.0) as reader,
            application(pg_url) as app,
        ):
            outcome = run(pg_url, make_plan(step))
        assert reader.error is None, reader.error
        assert outcome.code == 0, outcome.out
        assert reader.released_at is not None
        finished = db.ledger()["add"]["finished_at"]
        assert finished.astimezone(UTC) >= reader.released_at  # it waited for the release
        retries = [line for line in outcome.out.splitlines() if "lock timeout after 300 ms" in line]
        assert len(retries) >= 2, outcome.out
        assert "SQLSTATE 55P03" in retries[0]
        assert "retry 1/30" in retries[0]
        assert len(app.waits) >= 10  # the application kept working during the step
        assert max(app.waits) < LOCK_TIMEOUT_MS / 1000 + MARGIN_SECONDS, sorted(app.waits)[-5:]
        assert db.scalar("SELECT count(extra) FROM items") == 0  # the column exists
    finally:
        db.close()


def test_exhausted_lock_retries_fail_the_step_with_exit_9(pg_url: str, run: Runner) -> None:
    db = Database(pg_url)
    try:
        db.make_items(10)
        step = add_column(lockTimeoutMilliseconds=100, lockRetries=1)
        with holding(pg_url, "LOCK TABLE items IN ACCESS SHARE MODE", seconds=60):
            outcome = run(pg_url, make_plan(step))
        assert outcome.code == 9, outcome.out
        assert "FAILED exit=9" in outcome.last_line
        assert "expand 1/1 add: the step's transaction could not get its database locks" in (
            outcome.last_line
        )
        assert "lockRetries is 1" in outcome.last_line
        row = db.ledger()["add"]
        assert row["state"] == "failed"
        assert "lock_timeout" in row["error"]
        assert (
            db.scalar(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'items' AND column_name = 'extra'"
            )
            == 0
        )
    finally:
        db.close()


class RecordingReporter:
    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def report(self, progress: Progress, *, force: bool = False) -> bool:
        del force
        self.reports.append(progress)
        return False

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("step", "holder"),
    [
        pytest.param(add_column(), "SELECT count(*) FROM items", id="sql"),
        pytest.param(
            {
                "name": "copy",
                "backfill": {"table": "items", "set": {"new_col": "upper(old_col)"}},
            },
            "SELECT * FROM items WHERE id = 3 FOR UPDATE",
            id="backfill-batch",
        ),
        pytest.param(
            {"name": "check", "verify": {"query": "SELECT count(*) FROM items", "expect": 10}},
            "LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
            id="verify",
        ),
    ],
)
def test_lock_retries_are_counted_in_progress(
    pg_url: str, step: dict[str, object], holder: str
) -> None:
    db = Database(pg_url)
    try:
        db.make_items(10)
        plan = parse_plan(make_plan({**step, "lockTimeoutMilliseconds": 100}))
        reporter = RecordingReporter()
        engine = make_engine(pg_url)
        try:
            ensure_ledger(engine)
            with holding(pg_url, holder, seconds=1.0):
                result = run_phase(engine, plan, reporter, scrub=str)
        finally:
            engine.dispose()
        assert result.applied + result.verified == 1
        final = reporter.reports[-1]
        assert final.lock_retries >= 1
        assert final.to_status(datetime.now(UTC))["lockRetries"] == final.lock_retries
    finally:
        db.close()


def test_concurrent_index_build_behind_an_old_transaction_is_retried_clean(
    pg_url: str, run: Runner
) -> None:
    """The build's wait for older transactions times out; the retry drops the INVALID index."""
    db = Database(pg_url)
    try:
        db.make_items(100)
        step = {
            "name": "index-old-col",
            "sql": "CREATE INDEX CONCURRENTLY items_old_col ON items (old_col)",
            "transactional": False,
            "lockTimeoutMilliseconds": 200,
            "lockRetries": 30,
        }
        # A writer's open transaction: the build waits for it (and so does a DROP CONCURRENTLY).
        writer = "UPDATE items SET hits = hits + 1 WHERE id = 1"
        with holding(pg_url, writer, seconds=2.0) as reader:
            outcome = run(pg_url, make_plan(step))
        assert outcome.code == 0, outcome.out
        assert reader.released_at is not None
        assert "lock timeout after 200 ms" in outcome.out
        assert "index items_old_col is INVALID" in outcome.out  # cleaned before a retry
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_old_col')"
        assert db.scalar(valid) is True
        assert db.ledger()["index-old-col"]["state"] == "applied"
    finally:
        db.close()
