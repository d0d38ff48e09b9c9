"""Executing `sql` and `verify` steps, with their ledger rows.

Guarantees:
- A transactional `sql` step runs all its statements and marks itself `applied` in ONE
  transaction (transactional DDL on both PostgreSQL and SQLite, see `engine`): it is applied
  entirely or not at all. After a failure the transaction is rolled back and a separate
  transaction records the attempt as `failed` with the scrubbed error.
- A `transactional: false` step (e.g. CREATE INDEX CONCURRENTLY) is first marked `running`, then
  each statement commits on its own (PostgreSQL: AUTOCOMMIT; SQLite: one transaction per
  statement), then `applied`. If one fails, earlier statements stay, and the step is recorded
  `failed`, never `applied`; it runs again in full next time, so write such statements to be
  re-runnable (`IF NOT EXISTS`).
- A `verify` step runs every time (the ledger records the last outcome but never skips it). Its
  single scalar is compared as text with `expect`: bool -> "true"/"false", NULL -> "null",
  numbers with `str()` (so 0 -> "0", 0.5 -> "0.5", numeric 1.50 -> "1.50").
- User SQL goes to the driver as written (`sqltext.execute_verbatim`: no parameter parsing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from datamigration.core.steps import SqlStep, VerifyStep
from datamigration.runner import ledger
from datamigration.runner.context import StepContext, log, utcnow
from datamigration.runner.dberrors import describe, is_disconnect
from datamigration.runner.engine import is_postgresql
from datamigration.runner.errors import DatabaseUnreachable, StepFailed, VerifyFailed
from datamigration.runner.sqltext import execute_verbatim, split_statements


def run_sql_step(ctx: StepContext, step: SqlStep, previous: ledger.Entry | None) -> None:
    statements = split_statements(step.sql)
    mode = "in one transaction" if step.transactional else "each statement on its own"
    log.info("%s: sql, %d statement(s), %s", ctx.label, len(statements), mode)
    started = time.monotonic()
    if step.transactional:
        _run_transactional(ctx, step, statements, previous)
    else:
        _run_autocommit(ctx, step, statements, previous)
    log.info("%s: applied in %.2f s", ctx.label, time.monotonic() - started)


def _run_transactional(
    ctx: StepContext, step: SqlStep, statements: list[str], previous: ledger.Entry | None
) -> None:
    position = 0
    try:
        with ctx.engine.begin() as conn:
            attempt = ledger.begin_attempt(conn, ctx.key, step.checksum, previous, utcnow())
            for statement in statements:
                position += 1
                execute_verbatim(conn, statement)
            ledger.complete(conn, attempt, utcnow())
    except StatementError as exc:
        error = _statement_error(ctx, exc, position, len(statements))
        _record_failure(ctx, step.checksum, error)
        raise _step_error(exc, error) from None


def _run_autocommit(
    ctx: StepContext, step: SqlStep, statements: list[str], previous: ledger.Entry | None
) -> None:
    with ctx.engine.begin() as conn:
        attempt = ledger.begin_attempt(conn, ctx.key, step.checksum, previous, utcnow())
    position = 0
    try:
        if is_postgresql(ctx.engine):
            with ctx.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                for statement in statements:
                    position += 1
                    execute_verbatim(conn, statement)
        else:
            # Never AUTOCOMMIT on SQLite (see engine); a transaction per statement is the same.
            for statement in statements:
                position += 1
                with ctx.engine.begin() as conn:
                    execute_verbatim(conn, statement)
    except StatementError as exc:
        error = _statement_error(ctx, exc, position, len(statements))
        _write_quietly(ctx, lambda conn: ledger.fail(conn, attempt, utcnow(), error))
        raise _step_error(exc, error) from None
    with ctx.engine.begin() as conn:
        ledger.complete(conn, attempt, utcnow())


def run_verify_step(ctx: StepContext, step: VerifyStep, previous: ledger.Entry | None) -> None:
    log.info("%s: verify, expecting %r", ctx.label, step.expect)
    try:
        with ctx.engine.begin() as conn:
            rows = execute_verbatim(conn, step.query).fetchmany(2)
            columns = len(rows[0]) if rows else 0
    except StatementError as exc:
        error = ctx.scrub(f'verify step "{step.name}" query failed: {describe(exc)}')
        _record_failure(ctx, step.checksum, error)
        raise _step_error(exc, error) from None
    if len(rows) != 1 or columns != 1:
        actual = f"{len(rows)} row(s)" if len(rows) != 1 else f"{columns} columns"
        error = f'verify step "{step.name}" must return exactly one value, got {actual}'
    else:
        actual = scalar_text(rows[0][0])
        error = (
            ""
            if actual == step.expect
            else ctx.scrub(
                f'verify step "{step.name}" failed: expected {step.expect!r}, got {actual!r}'
            )
        )
    if error:
        _record_failure(ctx, step.checksum, error)
        raise VerifyFailed(error)

    def passed(conn: Connection) -> None:
        attempt = ledger.begin_attempt(
            conn, ctx.key, step.checksum, ledger.read(conn, ctx.key), utcnow()
        )
        ledger.complete(conn, attempt, utcnow())

    _write_quietly(ctx, passed)
    del previous  # verify steps never consult the ledger's past
    log.info("%s: verified (%r)", ctx.label, actual)


def scalar_text(value: Any) -> str:
    """A query result as the text `expect` is compared with."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal | str):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _statement_error(ctx: StepContext, exc: StatementError, position: int, total: int) -> str:
    where = f" at statement {position} of {total}" if total > 1 else ""
    return ctx.scrub(f'step "{ctx.step.name}" failed{where}: {describe(exc)}')


def _step_error(exc: StatementError, message: str) -> StepFailed | DatabaseUnreachable:
    if is_disconnect(exc):
        return DatabaseUnreachable(f"lost the database connection: {message}")
    return StepFailed(message)


def _record_failure(ctx: StepContext, checksum: str, error: str) -> None:
    """A new `failed` attempt, in its own transaction (the step's own was rolled back)."""

    def write(conn: Connection) -> None:
        attempt = ledger.begin_attempt(
            conn, ctx.key, checksum, ledger.read(conn, ctx.key), utcnow()
        )
        ledger.fail(conn, attempt, utcnow(), error)

    _write_quietly(ctx, write)


def _write_quietly(ctx: StepContext, write: Callable[[Connection], None]) -> None:
    """Write to the ledger after a failure; if the database is gone, say so and go on."""
    try:
        with ctx.engine.begin() as conn:
            write(conn)
    except DBAPIError as exc:
        log.warning("%s: could not record the outcome in the ledger: %s", ctx.label, describe(exc))
