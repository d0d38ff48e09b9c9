"""Executing a `backfill` step: key-ordered batches, one transaction each, resumable exactly.

Guarantees:
- Each batch is ONE transaction that updates the rows of a key range AND writes the ledger
  checkpoint (last key done, rows done, batch size). Killed at any instant, the runner resumes
  after the last committed batch: no batch is done twice and none is skipped.
- Integer keys with a dense enough span use arithmetic ranges `key > lo AND key <= hi` (bounds
  computed in Python, cast to BIGINT). Other keys (text, uuid, timestamps, numeric) and very
  sparse integer keys use keyset iteration: the batch's upper key is
  `SELECT key ... WHERE key > lo ORDER BY key LIMIT 1 OFFSET n-1`. Never `key IN (SELECT ...
  LIMIT n)`: the planner scans the whole table per batch, so the work grows quadratically.
- The batch size adapts toward `targetBatchMilliseconds` (`batching.BatchSizer`): that duration
  is how long a concurrent writer may wait for a row lock held by the backfill.
- PostgreSQL batches run with the step's `lock_timeout` and `statement_timeout` (`limits`: by
  default 2 s and 60 s). A batch that hits the lock timeout is rolled back and retried at half the
  size after an exponential backoff with jitter, up to the step's `lockRetries` in a row (each
  retry logged and counted in progress as `lockRetries`; then exit 9). A batch that hits the
  statement timeout or a deadlock is retried at half the size at once, up to `MAX_RETRIES` times
  in a row.
- The UPDATE is built from the `set` and `where` expressions as printed from their parse trees
  (`lint.expressions.expression_sql`), never from the text as written.
- PostgreSQL batches commit with `synchronous_commit = off`: the batch does not wait for its WAL
  to reach disk (that wait is a fixed cost per batch, and it competes with the application's own
  commits). This keeps exactly-once: a batch and its checkpoint are one transaction, so a server
  crash loses both or neither, and the resumed run redoes exactly the lost batches. The final
  transaction that marks the step `applied` commits synchronously, which flushes all earlier
  batches, so "applied" (and the Job's success) is only reported once everything is durable.
- Rows beyond the maximum key seen at the start are picked up: when the loop reaches the end it
  re-reads max(key) and continues if the table grew. Rows inserted into ranges already done are
  the application's job (it writes the new columns once the expand phase has shipped).
- Rows whose key is NULL are never visited: use a NOT NULL key (the primary key).

Progress (for the log and `status.progress`): rows done counts rows the UPDATEs touched. The
estimate of the total is cheap: for integer ranges, rows done divided by the fraction of the key
span covered; for keyset iteration, the table's row count (PostgreSQL: the planner's `reltuples`
estimate, read once; SQLite: `count(*)`) scaled by the share of rows the `where` matched so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from datamigration.core.steps import BackfillStep
from datamigration.runner import ledger
from datamigration.runner.batching import BatchSizer
from datamigration.runner.context import StepContext, log, utcnow
from datamigration.runner.dberrors import describe, is_disconnect, is_retryable
from datamigration.runner.engine import is_postgresql
from datamigration.runner.errors import (
    DatabaseUnreachable,
    LockRetriesExhausted,
    Paused,
    StepFailed,
)
from datamigration.runner.limits import backoff, is_lock_timeout, set_session
from datamigration.runner.progress import Progress, backfill_summary
from datamigration.runner.sqltext import (
    POSTGRES_ROW_ESTIMATE,
    BackfillSql,
    backfill_sql,
    quote_table,
)

#: Consecutive statement-timed-out (or deadlocked) batches tolerated before the step fails.
MAX_RETRIES = 5
#: Integer keys use arithmetic ranges unless the key span exceeds this many times the row count
#: (plus a constant): then empty ranges would dominate, and keyset iteration is used instead.
SPARSE_FACTOR = 4
SPARSE_SLACK = 1_000_000
#: At most one progress log line per this many seconds.
LOG_INTERVAL_SECONDS = 10.0

INTEGER = "integer"
KEYSET = "keyset"


@dataclass
class _State:
    """Where the backfill stands; `checkpoint()` is what the ledger stores after each batch."""

    mode: str
    last: Any  # exclusive lower bound for the next batch (None: from the start)
    rows_done: int
    scanned: int  # keyset: rows iterated over (for the estimate)
    batch_size: int

    def checkpoint(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "last": _json_key(self.last),
            "rowsDone": self.rows_done,
            "scanned": self.scanned,
            "batchSize": self.batch_size,
        }


def run_backfill_step(
    ctx: StepContext, step: BackfillStep, previous: ledger.Entry | None
) -> Progress:
    """Run (or resume) the backfill; returns its final progress."""
    sql = backfill_sql(ctx.engine.dialect, step)
    with ctx.engine.begin() as conn:
        attempt = ledger.begin_attempt(conn, ctx.key, step.checksum, previous, utcnow())
    resumed = previous.checkpoint if previous and previous.checksum == step.checksum else None
    if previous and previous.checkpoint and resumed is None:
        log.info("%s: the step changed since its last attempt; starting over", ctx.label)
    try:
        with ctx.engine.connect() as conn:
            try:
                if is_postgresql(ctx.engine):
                    set_session(conn, ctx.limits)
                    # A batch commits without waiting for its WAL flush (module docstring).
                    conn.exec_driver_sql("SET synchronous_commit = off")
                    conn.commit()
                return _Backfill(
                    ctx=ctx, step=step, sql=sql, conn=conn, attempt=attempt, resumed=resumed
                ).run()
            finally:
                # Never hand this connection's session settings to the pool (and later steps).
                conn.invalidate()
    except LockRetriesExhausted as exc:
        _record(ctx, attempt, ctx.scrub(exc.message))
        raise
    except StatementError as exc:
        error = ctx.scrub(f'backfill step "{step.name}" failed: {describe(exc)}')
        _record(ctx, attempt, error)
        if is_disconnect(exc):
            raise DatabaseUnreachable(f"lost the database connection: {error}") from None
        raise StepFailed(error) from None


def _record(ctx: StepContext, attempt: ledger.Attempt, error: str) -> None:
    try:
        with ctx.engine.begin() as conn:
            ledger.fail(conn, attempt, utcnow(), error)
    except DBAPIError as again:
        log.warning("%s: could not record the failure: %s", ctx.label, describe(again))


class _Backfill:
    """The batch loop of one backfill step on one connection."""

    def __init__(
        self,
        *,
        ctx: StepContext,
        step: BackfillStep,
        sql: BackfillSql,
        conn: Connection,
        attempt: ledger.Attempt,
        resumed: dict[str, Any] | None,
    ) -> None:
        self.ctx, self.step, self.sql, self.conn, self.attempt = ctx, step, sql, conn, attempt
        self.resumed = resumed
        self.started = time.monotonic()
        self.rows_at_start = int(resumed["rowsDone"]) if resumed else 0
        self.last_log = self.started
        self.retries = 0  # consecutive statement timeouts / deadlocks
        self.lock_retries = 0  # consecutive lock timeouts

    def run(self) -> Progress:
        with self.conn.begin():
            low, high = self.conn.execute(self.sql.key_bounds).one()
            table_rows = self._row_estimate() if low is not None else 0
        self.low, self.high, self.table_rows = low, high, table_rows
        state = self._initial_state(low, high, table_rows)
        sizer = BatchSizer(
            size=state.batch_size, target_seconds=self.step.target_batch_milliseconds / 1000
        )
        log.info(
            "%s: backfill %s, %s key %s, batch size %d, target %d ms per batch%s",
            self.ctx.label,
            self.step.table,
            state.mode,
            self.step.key,
            sizer.size,
            self.step.target_batch_milliseconds,
            f", resuming after key {state.last!r} ({state.rows_done} rows done)"
            if self.resumed
            else "",
        )
        if low is not None:
            while self._batch(state, sizer):
                self._after_batch(state)
        return self._finish(state)

    def _initial_state(self, low: Any, high: Any, table_rows: int) -> _State:
        if self.resumed:
            return _State(
                mode=str(self.resumed["mode"]),
                last=self.resumed["last"],
                rows_done=int(self.resumed["rowsDone"]),
                scanned=int(self.resumed.get("scanned", 0)),
                batch_size=int(self.resumed.get("batchSize", self.step.batch_size)),
            )
        dense = (
            _is_int(low)
            and _is_int(high)
            and high - low <= SPARSE_FACTOR * table_rows + SPARSE_SLACK
        )
        mode = INTEGER if dense else KEYSET
        last = low - 1 if mode == INTEGER else None
        return _State(mode=mode, last=last, rows_done=0, scanned=0, batch_size=self.step.batch_size)

    def _row_estimate(self) -> int:
        if is_postgresql(self.ctx.engine):
            table = quote_table(self.ctx.engine.dialect, self.step.table)
            estimate = self.conn.execute(POSTGRES_ROW_ESTIMATE, {"table": table}).scalar()
            if estimate is not None and estimate > 0:
                return int(estimate)
        return int(self.conn.execute(self.sql.row_count).scalar() or 0)

    def _batch(self, state: _State, sizer: BatchSizer) -> bool:
        """Run one batch (retrying timeouts); False when there is nothing left.

        `state` only advances once the batch's transaction has committed.
        """
        while True:
            began = time.perf_counter()
            try:
                with self.conn.begin():
                    done = (
                        self._integer_batch(state, sizer.size)
                        if state.mode == INTEGER
                        else self._keyset_batch(state, sizer.size)
                    )
                    if done is None:
                        return False
                    units, rows, last = done
                    after = replace(
                        state,
                        last=last,
                        rows_done=state.rows_done + rows,
                        scanned=state.scanned + (units if state.mode == KEYSET else 0),
                        batch_size=sizer.size,
                    )
                    ledger.save_checkpoint(
                        self.conn, self.attempt, after.checkpoint(), after.rows_done
                    )
            except DBAPIError as exc:
                if is_lock_timeout(exc):
                    self._lock_retry(exc, sizer, state)
                    continue
                if not is_retryable(exc) or self.retries >= MAX_RETRIES:
                    raise
                self.retries += 1
                log.warning(
                    "%s: batch timed out or conflicted (%s); retrying with batch size %d (%d/%d)",
                    self.ctx.label,
                    describe(exc),
                    sizer.back_off(),
                    self.retries,
                    MAX_RETRIES,
                )
                continue
            state.last, state.rows_done = after.last, after.rows_done
            state.scanned, state.batch_size = after.scanned, after.batch_size
            self.retries = self.lock_retries = 0
            sizer.observe(units, time.perf_counter() - began)
            return True

    def _lock_retry(self, exc: DBAPIError, sizer: BatchSizer, state: _State) -> None:
        """After a batch's lock timeout (rolled back): back off, smaller, or give up."""
        limits = self.ctx.limits
        if self.lock_retries >= limits.lock_retries:
            raise LockRetriesExhausted(
                f"{self.ctx.label}: a batch could not get its row locks: lock_timeout "
                f"({limits.lock_timeout_ms} ms) expired {self.lock_retries + 1} time(s) in a row, "
                f"lockRetries is {limits.lock_retries} ({describe(exc)})"
            ) from None
        self.lock_retries += 1
        self.ctx.retries.total += 1
        delay = backoff(self.lock_retries)
        log.warning(
            "%s: batch lock timeout after %d ms (%s); rolled back, retry %d/%d in %.2f s "
            "with batch size %d",
            self.ctx.label,
            limits.lock_timeout_ms,
            describe(exc),
            self.lock_retries,
            limits.lock_retries,
            delay,
            sizer.back_off(),
        )
        self.ctx.reporter.report(self._progress(state, finished=False))
        time.sleep(delay)

    def _integer_batch(self, state: _State, size: int) -> tuple[int, int, Any] | None:
        low = int(state.last)
        if low >= self.high:
            # The end as seen at the start: pick up rows appended since.
            latest = self.conn.execute(self.sql.max_all).scalar()
            if latest is None or latest <= low:
                return None
            self.high = latest
        high = min(low + size, self.high)
        rows = self.conn.execute(self.sql.int_update, {"lo": low, "hi": high}).rowcount
        return high - low, max(rows, 0), high

    def _keyset_batch(self, state: _State, size: int) -> tuple[int, int, Any] | None:
        low = state.last
        if low is None:
            upper = self.conn.execute(self.sql.boundary_first, {"skip": size - 1}).first()
        else:
            upper = self.conn.execute(
                self.sql.boundary_after, {"lo": low, "skip": size - 1}
            ).first()
        if upper is not None:
            high = upper[0]
        elif low is None:
            high = self.conn.execute(self.sql.max_all).scalar()
        else:
            high = self.conn.execute(self.sql.max_after, {"lo": low}).scalar()
        if high is None:
            return None
        if low is None:
            result = self.conn.execute(self.sql.update_upto, {"hi": high})
        else:
            result = self.conn.execute(self.sql.update_after, {"lo": low, "hi": high})
        return size, max(result.rowcount, 0), _json_key(high)

    def _after_batch(self, state: _State) -> None:
        progress = self._progress(state, finished=False)
        now = time.monotonic()
        if now - self.last_log >= LOG_INTERVAL_SECONDS:
            self.last_log = now
            log.info(
                "%s: %d%% %d/%d rows, %d rows/s, batch size %d",
                self.ctx.label,
                progress.percent,
                progress.rows_done,
                progress.rows_estimated,
                progress.rows_per_second,
                progress.batch_size,
            )
        if self.ctx.reporter.report(progress):
            log.info(
                "%s: paused (spec.paused is true) after a committed batch; %d rows done, "
                "the next run resumes after key %r",
                self.ctx.label,
                state.rows_done,
                state.last,
            )
            raise Paused(
                f'paused by spec.paused during backfill step "{self.step.name}" '
                f"with {state.rows_done} rows done; it resumes from its checkpoint"
            )
        if self.step.pause_milliseconds:
            time.sleep(self.step.pause_milliseconds / 1000)

    def _finish(self, state: _State) -> Progress:
        with self.conn.begin():
            if is_postgresql(self.ctx.engine):
                # This commit waits for the WAL flush, so every earlier batch is durable too
                # before the step is reported applied.
                self.conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            ledger.complete(
                self.conn,
                self.attempt,
                utcnow(),
                rows_done=state.rows_done,
                checkpoint=state.checkpoint(),
            )
        elapsed = time.monotonic() - self.started
        progress = self._progress(state, finished=True)
        log.info(
            "%s: applied, %d rows in %.2f s (%d rows/s in this run)",
            self.ctx.label,
            state.rows_done,
            elapsed,
            progress.rows_per_second,
        )
        return progress

    def _progress(self, state: _State, *, finished: bool) -> Progress:
        fraction = 1.0 if finished else self._fraction(state)
        if finished:
            estimate = state.rows_done
        elif state.rows_done and fraction > 0:
            estimate = max(state.rows_done, round(state.rows_done / fraction))
        else:
            estimate = max(self.table_rows, state.rows_done)
        percent = 100 if finished else min(99, int(fraction * 100))
        elapsed = max(time.monotonic() - self.started, 1e-6)
        phase = self.ctx.plan.phase
        return Progress(
            phase=phase,
            step=self.step.name,
            step_index=self.ctx.index,
            step_count=self.ctx.count,
            rows_done=state.rows_done,
            rows_estimated=estimate,
            percent=percent,
            rows_per_second=int((state.rows_done - self.rows_at_start) / elapsed),
            batch_size=state.batch_size,
            summary=backfill_summary(phase, percent, state.rows_done, estimate),
            lock_retries=self.ctx.retries.total,
        )

    def _fraction(self, state: _State) -> float:
        if state.mode == INTEGER and _is_int(self.low) and _is_int(self.high):
            span = self.high - self.low + 1
            return max(0.0, min(1.0, (int(state.last) - self.low + 1) / span)) if span > 0 else 1.0
        if self.table_rows > 0:
            return min(1.0, state.scanned / self.table_rows)
        return 0.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_key(value: Any) -> Any:
    """A key as JSON for the checkpoint; bound back as-is (PostgreSQL casts text literals)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise StepFailed(
        f"backfill key values of type {type(value).__name__} are not supported; "
        "use an integer, text, uuid, numeric or timestamp key"
    )
