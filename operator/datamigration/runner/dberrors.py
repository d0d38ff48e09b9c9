"""Turning database exceptions into one line a person can act on, and into the right exit code.

Why: SQLAlchemy's exception text spans several lines (the statement, the parameters, a link);
the operator shows the last log line as the failure message, so the runner reports the driver's
primary message and SQLSTATE on one line. Callers scrub the result before it leaves the process.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

#: SQLSTATEs after which a backfill batch is retried smaller instead of failing the step.
RETRYABLE_SQLSTATES = frozenset(
    {
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)


def sqlstate(exc: DBAPIError) -> str | None:
    """The SQLSTATE of a PostgreSQL error (None for SQLite and connection failures)."""
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def describe(exc: BaseException) -> str:
    """The driver's primary message on one line, with the SQLSTATE when there is one."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
        primary = lines[0] if lines else type(orig).__name__
    code = sqlstate(exc) if isinstance(exc, DBAPIError) else None
    return f"{primary} (SQLSTATE {code})" if code else str(primary)


def is_disconnect(exc: BaseException) -> bool:
    """True when the connection to the database is gone (or never came up)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    # Class 08: connection exception; 57P01-57P03: the server is shutting down or starting up.
    return bool(code) and (str(code).startswith("08") or str(code) in {"57P01", "57P02", "57P03"})


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate(exc) in RETRYABLE_SQLSTATES
