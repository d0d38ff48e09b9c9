"""Lock and statement timeouts for every statement the runner sends, and retry after a lock timeout.

Why: a DDL statement waiting for a lock (behind a long reader) makes every application query on
that table queue behind it: the classic migration outage. With `lock_timeout` the statement gives
up after a short wait, the queue drains, and the runner tries again later with exponential backoff
and jitter, up to a bound. Each retry is logged and counted in `status.progress.lockRetries`.

Guarantees (PostgreSQL):
- Every transaction the runner opens for a step runs `SET LOCAL lock_timeout` (and
  `statement_timeout` where one applies) before any user statement, so the settings cover the
  step's statements and its ledger writes and end with the transaction. Non-transactional steps
  set them on their connection for the one statement and reset them afterwards.
- The values: the step's own `lockTimeoutMilliseconds`, `statementTimeoutMilliseconds`,
  `lockRetries`, else the plan's `limits` (the DataMigration's `spec.runner.*`), else the defaults
  below. The statement timeout defaults per kind: transactional `sql` and `verify` steps 5 min,
  backfill batches 60 s, non-transactional steps none (a CONCURRENTLY build may take hours) unless
  the step itself sets one; the spec-wide default applies to transactional sql and verify only.
- A lock timeout (SQLSTATE 55P03) rolls the whole transaction back (nothing of it stays) and the
  transaction is retried from its start after `backoff(n)`; after `lockRetries` retries the step
  fails with exit 9 (`LockRetriesExhausted`).

SQLite has no lock queue (a waiting writer does not block readers, and other writers poll on their
own busy handlers): the runner's lock waits there are bounded by the connection's busy timeout
(`engine.SQLITE_BUSY_TIMEOUT_SECONDS`), and these settings are not used.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from datamigration.core.errors import SpecError
from datamigration.core.steps import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_LOCK_TIMEOUT_MILLISECONDS,
    MAX_LOCK_RETRIES,
    MAX_LOCK_TIMEOUT_MILLISECONDS,
    MAX_STATEMENT_TIMEOUT_MILLISECONDS,
    BackfillStep,
    SqlStep,
    Step,
)
from datamigration.runner.dberrors import describe, sqlstate
from datamigration.runner.errors import LockRetriesExhausted

LOCK_NOT_AVAILABLE = "55P03"
#: statement_timeout defaults (ms) per kind of work; 0 is "no limit" (PostgreSQL's meaning).
TRANSACTIONAL_STATEMENT_TIMEOUT_MS = 300_000
BACKFILL_STATEMENT_TIMEOUT_MS = 60_000
#: Backoff after the n-th lock timeout: BASE * 2**(n-1), at most CAP, then jitter (50-100 %).
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class Defaults:
    """The plan's `limits`: spec-wide defaults (`spec.runner.*`)."""

    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MILLISECONDS
    statement_timeout_ms: int | None = None
    lock_retries: int = DEFAULT_LOCK_RETRIES


@dataclass(frozen=True)
class Limits:
    """What one step's statements run with."""

    lock_timeout_ms: int
    statement_timeout_ms: int  # 0: no limit
    lock_retries: int


def parse_defaults(raw: object, path: str = "plan.limits") -> Defaults:
    """Validate the plan's `limits` object (absent: the built-in defaults)."""
    if raw is None:
        return Defaults()
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object")

    def integer(key: str, default: int | None, high: int, low: int = 0) -> int | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SpecError(f"{path}.{key}", f"must be an integer between {low} and {high}")
        return value

    lock_timeout = integer(
        "lockTimeoutMilliseconds",
        DEFAULT_LOCK_TIMEOUT_MILLISECONDS,
        MAX_LOCK_TIMEOUT_MILLISECONDS,
        1,
    )
    retries = integer("lockRetries", DEFAULT_LOCK_RETRIES, MAX_LOCK_RETRIES)
    return Defaults(
        lock_timeout_ms=int(lock_timeout or DEFAULT_LOCK_TIMEOUT_MILLISECONDS),
        statement_timeout_ms=integer(
            "statementTimeoutMilliseconds", None, MAX_STATEMENT_TIMEOUT_MILLISECONDS
        ),
        lock_retries=DEFAULT_LOCK_RETRIES if retries is None else retries,
    )


def limits_for(step: Step, defaults: Defaults) -> Limits:
    """The effective limits of `step` (its own fields, else the defaults, else per kind)."""
    if step.statement_timeout_milliseconds is not None:
        statement = step.statement_timeout_milliseconds
    elif isinstance(step, BackfillStep):
        statement = BACKFILL_STATEMENT_TIMEOUT_MS
    elif isinstance(step, SqlStep) and not step.transactional:
        statement = 0  # never for CONCURRENTLY builds unless the step sets one
    elif defaults.statement_timeout_ms is not None:
        statement = defaults.statement_timeout_ms
    else:
        statement = TRANSACTIONAL_STATEMENT_TIMEOUT_MS
    return Limits(
        lock_timeout_ms=step.lock_timeout_milliseconds or defaults.lock_timeout_ms,
        statement_timeout_ms=statement,
        lock_retries=(defaults.lock_retries if step.lock_retries is None else step.lock_retries),
    )


def set_local(conn: Connection, limits: Limits) -> None:
    """PostgreSQL: the limits for the rest of the current transaction (SET LOCAL)."""
    _set(conn, limits, local=True)


def set_session(conn: Connection, limits: Limits) -> None:
    """PostgreSQL: the limits for the connection (AUTOCOMMIT statements); `reset_session` after."""
    _set(conn, limits, local=False)


def reset_session(conn: Connection) -> None:
    conn.exec_driver_sql("RESET lock_timeout")
    conn.exec_driver_sql("RESET statement_timeout")


def _set(conn: Connection, limits: Limits, *, local: bool) -> None:
    conn.execute(
        text(
            "SELECT set_config('lock_timeout', :lock, :local), "
            "set_config('statement_timeout', :statement, :local)"
        ),
        {
            "lock": f"{limits.lock_timeout_ms}ms",
            "statement": f"{limits.statement_timeout_ms}ms",
            "local": local,
        },
    )


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate(exc) == LOCK_NOT_AVAILABLE


def backoff(retry: int, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before the `retry`-th retry (1-based): exponential, capped, jittered."""
    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (retry - 1))
    return rand(delay / 2, delay)


@dataclass
class RetryCounter:
    """Lock-timeout retries of the whole run (shown as `status.progress.lockRetries`)."""

    total: int = 0


def retry_on_lock_timeout(
    attempt: Callable[[], T],
    *,
    limits: Limits,
    counter: RetryCounter,
    label: str,
    what: str,
    log: Any,
    on_retry: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `attempt` (one whole transaction), retrying it after a lock timeout.

    `attempt` must leave nothing behind when it raises (its transaction rolled back). After
    `limits.lock_retries` retries, `LockRetriesExhausted` names the step and the wait. `on_retry`
    runs before each retry (e.g. to publish the retry count).
    """
    retries = 0
    while True:
        try:
            return attempt()
        except DBAPIError as exc:
            if not is_lock_timeout(exc):
                raise
            if retries >= limits.lock_retries:
                raise LockRetriesExhausted(
                    f"{label}: {what} could not get its database locks: lock_timeout "
                    f"({limits.lock_timeout_ms} ms) expired {retries + 1} time(s), "
                    f"lockRetries is {limits.lock_retries}; another session holds a "
                    f"conflicting lock ({describe(exc)})"
                ) from None
            retries += 1
            counter.total += 1
            delay = backoff(retries)
            log.warning(
                "%s: lock timeout after %d ms (%s); rolled back, retry %d/%d in %.2f s",
                label,
                limits.lock_timeout_ms,
                describe(exc),
                retries,
                limits.lock_retries,
                delay,
            )
            if on_retry is not None:
                on_retry()
            sleep(delay)
