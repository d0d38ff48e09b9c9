"""`datamigration-runner`: run one phase of one DataMigration against its database.

This is the entry point of every phase Job. It reads the plan, connects, takes the migration's
lock, makes sure the ledger exists, runs the steps (`phase.run_phase`), and exits with a code
from `errors.ExitCode`. The last log line always says how the run ended, in one sentence:
`done: ...`, `PAUSED exit=75: ...` or `FAILED exit=N: ...`. docs/runner.md is the manual.

`datamigration-runner gate` only proves the contract's rollout again (runner/gate.py), with no
database: the last init container of a contract Job whose step is a team's own tool.
"""

from __future__ import annotations

import argparse
import logging
import os
import traceback
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from datamigration import __version__
from datamigration.runner import gate, logs, sessions
from datamigration.runner.dberrors import describe, is_disconnect
from datamigration.runner.engine import dialect_of, make_engine
from datamigration.runner.errors import (
    DatabaseUnreachable,
    ExitCode,
    InvalidInput,
    Paused,
    RunnerError,
    exit_code_for,
)
from datamigration.runner.ledger import ensure_ledger
from datamigration.runner.locking import migration_lock
from datamigration.runner.phase import PhaseResult, run_phase
from datamigration.runner.plan import Plan, read_plan
from datamigration.runner.progress import (
    DEFAULT_INTERVAL_SECONDS,
    LogOnlyReporter,
    Progress,
    Reporter,
    StatusReporter,
    step_summary,
)
from datamigration.runner.redact import Scrubber

DEFAULT_URL_ENV = "DATABASE_URL"
DEFAULT_LOCK_TIMEOUT = 60.0

log = logging.getLogger("datamigration.runner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datamigration-runner",
        description="Run one phase (expand, backfill or contract) of a DataMigration's steps.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "gate"],
        default="run",
        help="what to do: run the plan's steps (the default), or only prove the plan's "
        "rolloutGate again (before a contract command step)",
    )
    parser.add_argument(
        "--plan",
        metavar="FILE",
        help="the plan as a JSON or YAML file (default: $DATAMIGRATION_PLAN, JSON)",
    )
    parser.add_argument(
        "--database-url-env",
        metavar="NAME",
        default=DEFAULT_URL_ENV,
        help=f"environment variable holding the database URL (default {DEFAULT_URL_ENV})",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT,
        help="how long to wait for another runner of the same migration (default 60)",
    )
    parser.add_argument(
        "--report-interval",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="minimum seconds between progress patches (default 2)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phase; returns the process exit code."""
    args = build_parser().parse_args(argv)
    scrubber = Scrubber()
    logs.configure(scrubber)
    try:
        plan = read_plan(
            args.plan, os.environ, dialect_of(os.environ.get(args.database_url_env, ""))
        )
        if args.command == "gate":
            return _gate_only(plan)
        raw_url = os.environ.get(args.database_url_env, "")
        if not raw_url.strip():
            raise InvalidInput(f"no database URL: ${args.database_url_env} is empty or unset")
        scrubber.add_url(raw_url)
        engine = make_engine(raw_url)
        try:
            result = _run(engine, plan, args.lock_timeout, args.report_interval, scrubber)
        finally:
            engine.dispose()
    except Paused as exc:
        log.warning("PAUSED exit=%d: %s", ExitCode.PAUSED, exc.message)
        return int(ExitCode.PAUSED)
    except RunnerError as exc:
        return _failed(exc.exit_code, exc.message)
    except DBAPIError as exc:
        if is_disconnect(exc):
            return _failed(ExitCode.DATABASE_UNREACHABLE, f"lost the database: {describe(exc)}")
        return _failed(ExitCode.UNEXPECTED, f"database error outside a step: {describe(exc)}")
    except KeyboardInterrupt:
        return _failed(ExitCode.UNEXPECTED, "interrupted")
    except Exception as exc:
        for line in traceback.format_exception(exc):
            for part in line.rstrip().splitlines():
                log.error("  %s", part)
        return _failed(exit_code_for(exc), f"unexpected {type(exc).__name__}: {exc}")
    log.info(
        "done: %s of %s: %d applied, %d skipped, %d verified",
        plan.phase,
        plan.migration,
        result.applied,
        result.skipped,
        result.verified,
    )
    return int(ExitCode.OK)


def _run(
    engine: Engine, plan: Plan, lock_timeout: float, report_interval: float, scrubber: Scrubber
) -> PhaseResult:
    log.info(
        "datamigration-runner %s: %s phase %s, %d step(s), %s database",
        __version__,
        plan.migration,
        plan.phase,
        len(plan.steps),
        engine.dialect.name,
    )
    if engine.dialect.name == "postgresql":
        _log_lint(plan)
    _check_connection(engine)
    reporter: Reporter = (
        StatusReporter(plan.report, interval=report_interval) if plan.report else LogOnlyReporter()
    )
    if plan.steps and reporter.report(_starting(plan), force=True):
        raise Paused("paused by spec.paused before the first step; nothing was run")

    def waiting(holder: str) -> None:
        log.info(
            "waiting up to %g s for the lock of migration %s, held by %s",
            lock_timeout,
            plan.migration,
            holder,
        )

    try:
        with migration_lock(engine, plan.migration, lock_timeout, on_wait=waiting):
            log.info("lock acquired for migration %s", plan.migration)
            ensure_ledger(engine)
            return run_phase(
                engine,
                plan,
                reporter,
                scrubber,
                before_destructive=sessions.both(
                    gate.before_destructive(plan.rollout_gates),
                    sessions.before_destructive(engine, plan.database_sessions),
                ),
            )
    finally:
        reporter.close()


def _gate_only(plan: Plan) -> int:
    """`datamigration-runner gate`: prove the rollout, run nothing (raises RolloutRegressed)."""
    check = gate.before_destructive(plan.rollout_gates)
    if check is None:
        raise InvalidInput("the plan has no rolloutGate: there is no rollout to prove")
    check()
    log.info("done: rollout of %s proven again; the contract command may start", plan.migration)
    return int(ExitCode.OK)


def _check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError as exc:
        raise DatabaseUnreachable(f"cannot connect to the database: {describe(exc)}") from None


def _starting(plan: Plan) -> Progress:
    return Progress(
        phase=plan.phase,
        step=plan.steps[0].name,
        step_index=1,
        step_count=len(plan.steps),
        summary=step_summary(plan.phase, 1, len(plan.steps)),
    )


def _log_lint(plan: Plan) -> None:
    """The safety lint's findings as warnings (the operator enforces them; the runner informs)."""
    from datamigration.lint import lint_steps

    for finding in lint_steps(plan.phase, plan.steps, migration=plan.migration):
        log.warning(
            'lint %s %s in step "%s": %s',
            finding.severity.value,
            finding.rule,
            finding.step,
            finding.message,
        )


def _failed(code: ExitCode, message: str) -> int:
    one_line = " ".join(message.split())
    log.error("FAILED exit=%d: %s", code, one_line.rstrip(". ") + ".")
    return int(code)
