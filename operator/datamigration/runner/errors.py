"""Exit codes of `datamigration-runner` and the exceptions that carry them.

Why: the runner is a Job's container; the operator learns what happened from the exit code and
the last log line. Every expected failure is a `RunnerError` subclass with its exit code and a
one-sentence message (already free of secrets); anything else is exit 1. The codes are part of the
contract with the operator (docs/runner.md), so they never change meaning.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The runner's exit status. 75 is EX_TEMPFAIL from sysexits.h: "try again later"."""

    OK = 0
    UNEXPECTED = 1
    INVALID_INPUT = 2
    LOCK_TIMEOUT = 3
    VERIFY_FAILED = 4
    CHECKSUM_MISMATCH = 5
    DATABASE_UNREACHABLE = 6
    STEP_FAILED = 7
    ROLLOUT_REGRESSED = 8
    LOCK_RETRIES_EXHAUSTED = 9
    OLD_SESSIONS = 10
    PAUSED = 75


class RunnerError(Exception):
    """An expected failure: `message` is one sentence, safe to log and to show to users."""

    exit_code = ExitCode.UNEXPECTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(RunnerError):
    """The plan, the arguments or the database URL are unusable."""

    exit_code = ExitCode.INVALID_INPUT


class LockTimeout(RunnerError):
    """Another runner held the migration's lock for longer than --lock-timeout."""

    exit_code = ExitCode.LOCK_TIMEOUT


class VerifyFailed(RunnerError):
    """A verify step's query returned something other than its `expect`."""

    exit_code = ExitCode.VERIFY_FAILED


class ChecksumMismatch(RunnerError):
    """An applied step's definition changed since it was applied."""

    exit_code = ExitCode.CHECKSUM_MISMATCH


class DatabaseUnreachable(RunnerError):
    """The database refused or dropped the connection."""

    exit_code = ExitCode.DATABASE_UNREACHABLE


class StepFailed(RunnerError):
    """A step's SQL failed in the database."""

    exit_code = ExitCode.STEP_FAILED


class RolloutRegressed(RunnerError):
    """The contract's gate no longer holds (e.g. a pod of the old code is back).

    Raised by the `before_destructive` hook of `phase.run_phase` immediately before a contract
    step; the step's transaction is rolled back, so nothing destructive happened. The message
    names what regressed (the workload, the pods).
    """

    exit_code = ExitCode.ROLLOUT_REGRESSED


class LockRetriesExhausted(RunnerError):
    """A step's statements hit `lock_timeout` more often than its `lockRetries` allow."""

    exit_code = ExitCode.LOCK_RETRIES_EXHAUSTED


class LedgerConflict(RunnerError):
    """The ledger row changed under us: someone else runs this migration without the lock."""

    exit_code = ExitCode.UNEXPECTED


class OldSessionsConnected(RunnerError):
    """Right before a destructive step, the database still had sessions of the old code
    (`databaseSessions`); the step did not run."""

    exit_code = ExitCode.OLD_SESSIONS


class Paused(RunnerError):
    """`spec.paused` is set: the runner stopped at a safe point (a committed batch or step)."""

    exit_code = ExitCode.PAUSED


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for an exception that ended the run (1 for anything unexpected)."""
    if isinstance(error, RunnerError):
        return error.exit_code
    return ExitCode.UNEXPECTED
