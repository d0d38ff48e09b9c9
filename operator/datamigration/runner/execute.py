"""Executing `sql` and `verify` steps, with their ledger rows, lock timeouts and retries.

Guarantees:
- A transactional `sql` step runs all its statements and marks itself `applied` in ONE
  transaction (transactional DDL on both PostgreSQL and SQLite, see `engine`): it is applied
  entirely or not at all. After a failure the transaction is rolled back and a separate
  transaction records the attempt as `failed` with the scrubbed error; the retry starts from the
  state before the step. `plan` refuses what would break this (a COMMIT inside the step, a
  statement that cannot run in a transaction: `statements.check_sql_step`).
- A `transactional: false` step holds exactly one statement (e.g. CREATE INDEX CONCURRENTLY). It is
  marked `running`, the statement runs on its own (PostgreSQL: AUTOCOMMIT; SQLite: its own
  transaction), then the step is marked `applied`. Before a `CREATE [UNIQUE] INDEX CONCURRENTLY` is
  retried (the ledger shows an earlier attempt, or a lock timeout in this run), an index of that
  name that PostgreSQL marks INVALID (`pg_index.indisvalid` false, what a failed build leaves) is
  dropped with `DROP INDEX CONCURRENTLY IF EXISTS`, so the retry starts clean.
- Every transaction runs with the step's `lock_timeout` and `statement_timeout` (`limits`); after a
  lock timeout the whole transaction (or the single non-transactional statement) is retried with
  backoff, each retry logged and counted in progress (`lockRetries`).
- A `verify` step runs every time (the ledger records the last outcome but never skips it), in a
  READ ONLY transaction on PostgreSQL. Its single scalar is compared as text with `expect`:
  bool -> "true"/"false", NULL -> "null", numbers with `str()` (0 -> "0", numeric 1.50 -> "1.50").
- User statements go to the driver as written (`sqltext.execute_verbatim`: no parameter parsing).

`run_contract_group` runs verify queries and transactional contract steps in ONE transaction
(docs/runner.md, "Transactions"), calling the `before_destructive` hook right before each contract
step's statements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, StatementError

from datamigration.core.steps import SqlStep, Step, VerifyStep
from datamigration.runner import ledger
from datamigration.runner.context import StepContext, log, utcnow
from datamigration.runner.dberrors import describe, is_disconnect
from datamigration.runner.engine import is_postgresql
from datamigration.runner.errors import (
    DatabaseUnreachable,
    LedgerConflict,
    RunnerError,
    StepFailed,
    VerifyFailed,
)
from datamigration.runner.limits import (
    Limits,
    reset_session,
    retry_on_lock_timeout,
    set_local,
    set_session,
)
from datamigration.runner.sqltext import execute_verbatim, quote_table
from datamigration.runner.statements import Statement, concurrent_index, parse_statements

#: The hook called right before a contract step's statements (see `phase.run_phase`).
BeforeDestructive = Callable[[], None]


def run_sql_step(ctx: StepContext, step: SqlStep, previous: ledger.Entry | None) -> None:
    statements = parse_statements(step.sql)
    mode = "in one transaction" if step.transactional else "on its own (not in a transaction)"
    log.info("%s: sql, %d statement(s), %s", ctx.label, len(statements), mode)
    started = time.monotonic()
    if step.transactional:
        _run_transactional(ctx, step, statements, previous)
    else:
        _run_autocommit(ctx, step, statements, previous)
    log.info("%s: applied in %.2f s", ctx.label, time.monotonic() - started)


def _run_transactional(
    ctx: StepContext, step: SqlStep, statements: list[Statement], previous: ledger.Entry | None
) -> None:
    position = [0]

    def attempt() -> None:
        with ctx.engine.begin() as conn:
            if is_postgresql(ctx.engine):
                set_local(conn, ctx.limits)
            _apply(
                conn, ctx, step=step, statements=statements, previous=previous, position=position
            )

    try:
        _with_retries(ctx, attempt, "the step's transaction")
    except StatementError as exc:
        error = _statement_error(ctx, exc, position[0], len(statements))
        record_failure(ctx, step.checksum, error)
        raise _step_error(exc, error) from None
    except LedgerConflict:
        raise
    except RunnerError as exc:
        record_failure(ctx, step.checksum, ctx.scrub(exc.message))
        raise


def _apply(
    conn: Connection,
    ctx: StepContext,
    *,
    step: SqlStep,
    statements: Sequence[Statement],
    previous: ledger.Entry | None,
    position: list[int],
) -> None:
    """The step's statements and its ledger row, in the caller's transaction."""
    attempt = ledger.begin_attempt(conn, ctx.key, step.checksum, previous, utcnow())
    position[0] = 0
    for statement in statements:
        position[0] += 1
        execute_verbatim(conn, statement.text)
    ledger.complete(conn, attempt, utcnow())


def _run_autocommit(
    ctx: StepContext, step: SqlStep, statements: list[Statement], previous: ledger.Entry | None
) -> None:
    (statement,) = statements  # plan refuses more than one (statements.check_sql_step)
    with ctx.engine.begin() as conn:
        attempt = ledger.begin_attempt(conn, ctx.key, step.checksum, previous, utcnow())
    index = concurrent_index(statement.node)
    retrying = [previous is not None]

    def run_once() -> None:
        if is_postgresql(ctx.engine):
            with ctx.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                set_session(conn, ctx.limits)
                try:
                    if index is not None and retrying[0]:
                        _drop_invalid_index(ctx, conn, *index)
                    retrying[0] = True
                    execute_verbatim(conn, statement.text)
                finally:
                    reset_session(conn)
        else:
            # Never AUTOCOMMIT on SQLite (see engine); its own transaction is the same.
            with ctx.engine.begin() as conn:
                execute_verbatim(conn, statement.text)

    try:
        _with_retries(ctx, run_once, "the statement")
    except StatementError as exc:
        error = _statement_error(ctx, exc, 1, 1)
        _write_quietly(ctx, lambda conn: ledger.fail(conn, attempt, utcnow(), error))
        raise _step_error(exc, error) from None
    except LedgerConflict:
        raise
    except RunnerError as exc:
        message = ctx.scrub(exc.message)
        _write_quietly(ctx, lambda conn: ledger.fail(conn, attempt, utcnow(), message))
        raise
    with ctx.engine.begin() as conn:
        ledger.complete(conn, attempt, utcnow())


def _drop_invalid_index(ctx: StepContext, conn: Connection, schema: str | None, name: str) -> None:
    """Drop the INVALID index a failed concurrent build of `name` left (valid ones stay)."""
    qualified = quote_table(ctx.engine.dialect, f"{schema}.{name}" if schema else name)
    valid = conn.execute(
        text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": qualified},
    ).first()
    if valid is None or valid[0]:
        return
    log.warning(
        "%s: index %s is INVALID (left by a failed concurrent build); dropping it before the retry",
        ctx.label,
        qualified,
    )
    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")


def run_verify_step(ctx: StepContext, step: VerifyStep, previous: ledger.Entry | None) -> None:
    log.info("%s: verify, expecting %r", ctx.label, step.expect)
    del previous  # verify steps never consult the ledger's past

    def attempt() -> str:
        with ctx.engine.begin() as conn:
            if is_postgresql(ctx.engine):
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                set_local(conn, ctx.limits)
            return _verify(conn, ctx, step)

    try:
        actual = _with_retries(ctx, attempt, "the verify query")
    except StatementError as exc:
        error = ctx.scrub(f'verify step "{step.name}" query failed: {describe(exc)}')
        record_failure(ctx, step.checksum, error)
        raise _step_error(exc, error) from None
    except LedgerConflict:
        raise
    except RunnerError as exc:
        record_failure(ctx, step.checksum, ctx.scrub(exc.message))
        raise
    _write_quietly(ctx, lambda conn: _record_passed(conn, ctx, step))
    log.info("%s: verified (%r)", ctx.label, actual)


def _verify(conn: Connection, ctx: StepContext, step: VerifyStep) -> str:
    """Run the query in the caller's transaction; the value as text, else `VerifyFailed`."""
    rows = execute_verbatim(conn, step.query).fetchmany(2)
    columns = len(rows[0]) if rows else 0
    if len(rows) != 1 or columns != 1:
        got = f"{len(rows)} row(s)" if len(rows) != 1 else f"{columns} columns"
        raise VerifyFailed(f'verify step "{step.name}" must return exactly one value, got {got}')
    actual = scalar_text(rows[0][0])
    if actual != step.expect:
        raise VerifyFailed(
            ctx.scrub(f'verify step "{step.name}" failed: expected {step.expect!r}, got {actual!r}')
        )
    return actual


def _record_passed(conn: Connection, ctx: StepContext, step: Step) -> None:
    attempt = ledger.begin_attempt(
        conn, ctx.key, step.checksum, ledger.read(conn, ctx.key), utcnow()
    )
    ledger.complete(conn, attempt, utcnow())


@dataclass(frozen=True)
class GroupMember:
    ctx: StepContext
    previous: ledger.Entry | None


def run_contract_group(
    members: Sequence[GroupMember], before_destructive: BeforeDestructive | None
) -> list[str]:
    """Verify steps and transactional contract sql steps in ONE transaction, in order.

    Before each contract step's statements `before_destructive` is called inside the
    transaction; if it (or a verify query, or a statement) fails, everything rolls back, the
    failing step's attempt is recorded `failed`, and the error propagates. A lock timeout retries
    the whole group. Returns each member's outcome: "verified", "applied" or "skipped".
    """
    first = members[0].ctx
    current: list[GroupMember] = [members[0]]
    position = [0]
    parsed = {
        member.ctx.step.name: parse_statements(member.ctx.step.sql)
        for member in members
        if isinstance(member.ctx.step, SqlStep)
    }

    def attempt() -> list[str]:
        outcomes: list[str] = []
        with first.engine.begin() as conn:
            for member in members:
                current[0] = member
                ctx, step = member.ctx, member.ctx.step
                if is_postgresql(ctx.engine):
                    set_local(conn, ctx.limits)
                if isinstance(step, VerifyStep):
                    log.info(
                        "%s: verify, expecting %r (in the contract transaction)",
                        ctx.label,
                        step.expect,
                    )
                    _verify(conn, ctx, step)
                    _record_passed(conn, ctx, step)
                    outcomes.append("verified")
                elif member.previous is not None and member.previous.state == ledger.State.APPLIED:
                    outcomes.append("skipped")
                else:
                    assert isinstance(step, SqlStep)
                    if before_destructive is not None:
                        before_destructive()
                    log.info(
                        "%s: sql, %d statement(s), in the contract transaction",
                        ctx.label,
                        len(parsed[step.name]),
                    )
                    _apply(
                        conn,
                        ctx,
                        step=step,
                        statements=parsed[step.name],
                        previous=member.previous,
                        position=position,
                    )
                    outcomes.append("applied")
        return outcomes

    limits = Limits(
        lock_timeout_ms=max(m.ctx.limits.lock_timeout_ms for m in members),
        statement_timeout_ms=0,
        lock_retries=max(m.ctx.limits.lock_retries for m in members),
    )
    try:
        return retry_on_lock_timeout(
            attempt,
            limits=limits,
            counter=first.retries,
            label=f"{first.plan.phase} steps {members[0].ctx.index}-{members[-1].ctx.index}",
            what="the contract transaction",
            log=log,
            on_retry=first.report_retry,
        )
    except StatementError as exc:
        ctx = current[0].ctx
        if isinstance(ctx.step, VerifyStep):
            error = ctx.scrub(f'verify step "{ctx.step.name}" query failed: {describe(exc)}')
        else:
            error = _statement_error(ctx, exc, position[0], len(parsed.get(ctx.step.name, [])))
        record_failure(ctx, ctx.step.checksum, error)
        raise _step_error(exc, error) from None
    except LedgerConflict:
        raise
    except RunnerError as exc:
        ctx = current[0].ctx
        record_failure(ctx, ctx.step.checksum, ctx.scrub(exc.message))
        raise


def _with_retries(ctx: StepContext, attempt: Callable[[], Any], what: str) -> Any:
    return retry_on_lock_timeout(
        attempt,
        limits=ctx.limits,
        counter=ctx.retries,
        label=ctx.label,
        what=what,
        log=log,
        on_retry=ctx.report_retry,
    )


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


def record_failure(ctx: StepContext, checksum: str, error: str) -> None:
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
