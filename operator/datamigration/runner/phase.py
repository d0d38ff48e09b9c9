"""The phase loop: consult the ledger, refuse changed steps, run the rest in order, report.

Rules (docs/runner.md has the user-facing version):
- Before anything runs, every step already `applied` is compared by checksum with the plan. A
  difference is refused (exit 5) unless the plan sets `allowChecksumChange`; then the new
  checksum is recorded and the step stays applied (it is not run again).
- `applied` steps are skipped. `running` (a runner died or was paused) and `failed` steps run
  again; a backfill resumes from its checkpoint if its definition did not change.
- `verify` steps always run.
- After each step the progress is reported (forced); if the DataMigration is paused and steps
  remain, the run stops there with exit 75.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from datamigration.core.steps import BackfillStep, SqlStep, VerifyStep
from datamigration.runner import ledger
from datamigration.runner.backfill import run_backfill_step
from datamigration.runner.context import StepContext, log
from datamigration.runner.errors import ChecksumMismatch, InvalidInput, Paused
from datamigration.runner.execute import run_sql_step, run_verify_step
from datamigration.runner.plan import Plan
from datamigration.runner.progress import Progress, Reporter


@dataclass(frozen=True)
class PhaseResult:
    applied: int
    skipped: int
    verified: int


def run_phase(
    engine: Engine,
    plan: Plan,
    reporter: Reporter,
    scrub: Callable[[str], str],
    before_destructive: Callable[[], None] | None = None,
) -> PhaseResult:
    with engine.begin() as conn:
        entries = ledger.read_phase(conn, plan.migration, plan.phase)
    _check_checksums(engine, plan, entries)
    applied = skipped = verified = 0
    for index, step in enumerate(plan.steps, start=1):
        ctx = StepContext(engine, plan, step, index, scrub, reporter)
        previous = entries.get(step.name)
        final: Progress | None = None
        if isinstance(step, VerifyStep):
            run_verify_step(ctx, step, previous)
            verified += 1
        elif previous is not None and previous.state == ledger.State.APPLIED:
            log.info("%s: skipped, applied earlier (%s)", ctx.label, _when(previous))
            skipped += 1
        elif isinstance(step, SqlStep):
            if before_destructive is not None:  # the contract's rollout gate (runner/gate.py)
                before_destructive()
            run_sql_step(ctx, step, previous)
            applied += 1
        elif isinstance(step, BackfillStep):
            if before_destructive is not None:
                before_destructive()
            final = run_backfill_step(ctx, step, previous)
            applied += 1
        else:  # command steps are refused by the plan parser; this is a safety net
            raise InvalidInput(f'step "{step.name}" of kind {step.kind} cannot run in the runner')
        paused = reporter.report(final or ctx.step_progress(done=True), force=True)
        if paused and index < len(plan.steps):
            log.info("%s: paused (spec.paused is true); stopping before the next step", ctx.label)
            raise Paused(
                f"paused by spec.paused after step {index}/{len(plan.steps)} ({step.name})"
            )
    return PhaseResult(applied=applied, skipped=skipped, verified=verified)


def _check_checksums(engine: Engine, plan: Plan, entries: dict[str, ledger.Entry]) -> None:
    for step in plan.steps:
        entry = entries.get(step.name)
        if (
            entry is None
            or entry.state != ledger.State.APPLIED
            or isinstance(step, VerifyStep)
            or entry.checksum == step.checksum
        ):
            continue
        if not plan.allow_checksum_change:
            raise ChecksumMismatch(
                f'step "{step.name}" of migration {plan.migration} phase {plan.phase} was applied '
                f"with checksum {entry.checksum} but the plan now has {step.checksum}; an applied "
                "step is never run again, so put the change in a new step "
                "(or set allowChecksumChange to accept the edit)"
            )
        log.warning(
            '%s step "%s": checksum changed from %s to %s; accepted (allowChecksumChange), '
            "the step stays applied and is not run again",
            plan.phase,
            step.name,
            entry.checksum,
            step.checksum,
        )
        with engine.begin() as conn:
            ledger.accept_checksum(conn, entry, step.checksum)


def _when(entry: ledger.Entry) -> str:
    if entry.finished_at is None:
        return f"attempt {entry.attempts}"
    return f"attempt {entry.attempts}, finished {entry.finished_at:%Y-%m-%d %H:%M:%S}"
