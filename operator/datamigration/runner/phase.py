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
- Contract: verify steps and transactional `sql` steps that follow one another run in ONE
  transaction (`execute.run_contract_group`) with their ledger rows: verify, the gate and the
  DROP commit together or not at all, and no DDL can change the tables verify read in between
  (docs/runner.md, "Transactions in the contract phase", also says what is not guaranteed).
  `before_destructive` (the rollout gate, `runner/gate.py`) is called inside that transaction
  immediately before each contract step's statements, and before every other contract step
  (non-transactional sql, backfill) on its own. If it raises
  (`RolloutRegressed`, exit 8) the transaction rolls back: nothing destructive happened. Progress
  is reported and the pause flag read only after the transaction committed (no API call while it
  holds its locks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from datamigration.core.steps import BackfillStep, SqlStep, VerifyStep
from datamigration.runner import ledger
from datamigration.runner.backfill import run_backfill_step
from datamigration.runner.context import StepContext, log
from datamigration.runner.errors import ChecksumMismatch, InvalidInput, Paused, RunnerError
from datamigration.runner.execute import (
    BeforeDestructive,
    GroupMember,
    record_failure,
    run_contract_group,
    run_sql_step,
    run_verify_step,
)
from datamigration.runner.limits import RetryCounter
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
    before_destructive: BeforeDestructive | None = None,
) -> PhaseResult:
    """Run the plan's steps; `before_destructive` gates each contract step (see module doc)."""
    with engine.begin() as conn:
        entries = ledger.read_phase(conn, plan.migration, plan.phase)
    _check_checksums(engine, plan, entries)
    retries = RetryCounter()
    contexts = [
        StepContext(engine, plan, step, index, scrub, reporter, retries)
        for index, step in enumerate(plan.steps, start=1)
    ]
    counts = {"applied": 0, "skipped": 0, "verified": 0}
    position = 0
    while position < len(contexts):
        group = _contract_group(plan, contexts, position, entries)
        if group:
            outcomes = run_contract_group(group, before_destructive)
            for member, outcome in zip(group, outcomes, strict=True):
                counts[outcome] += 1
                _log_outcome(member, outcome)
            position += len(group)
            last = group[-1].ctx
            _report(last, reporter.report(last.step_progress(done=True), force=True))
            continue
        ctx = contexts[position]
        position += 1
        final = _run_step(ctx, entries.get(ctx.step.name), before_destructive, counts)
        _report(ctx, reporter.report(final or ctx.step_progress(done=True), force=True))
    return PhaseResult(
        applied=counts["applied"], skipped=counts["skipped"], verified=counts["verified"]
    )


def _run_step(
    ctx: StepContext,
    previous: ledger.Entry | None,
    before_destructive: BeforeDestructive | None,
    counts: dict[str, int],
) -> Progress | None:
    step = ctx.step
    if isinstance(step, VerifyStep):
        run_verify_step(ctx, step, previous)
        counts["verified"] += 1
        return None
    if previous is not None and previous.state == ledger.State.APPLIED:
        log.info("%s: skipped, applied earlier (%s)", ctx.label, _when(previous))
        counts["skipped"] += 1
        return None
    if ctx.plan.phase == "contract" and before_destructive is not None:
        _gate(ctx, before_destructive)
    final: Progress | None = None
    if isinstance(step, SqlStep):
        run_sql_step(ctx, step, previous)
    elif isinstance(step, BackfillStep):
        final = run_backfill_step(ctx, step, previous)
    else:  # command steps are refused by the plan parser; this is a safety net
        raise InvalidInput(f'step "{step.name}" of kind {step.kind} cannot run in the runner')
    counts["applied"] += 1
    return final


def _gate(ctx: StepContext, before_destructive: BeforeDestructive) -> None:
    """The gate before a contract step that runs outside the contract transaction."""
    try:
        before_destructive()
    except RunnerError as exc:
        record_failure(ctx, ctx.step.checksum, ctx.scrub(exc.message))
        raise


def _contract_group(
    plan: Plan, contexts: list[StepContext], start: int, entries: dict[str, ledger.Entry]
) -> list[GroupMember]:
    """The verify and transactional sql steps from `start` on that share one transaction.

    Only in the contract phase, and only if the run contains a contract sql step to protect
    (a run of verify steps alone keeps its READ ONLY transactions)."""
    if plan.phase != "contract":
        return []
    group: list[GroupMember] = []
    for ctx in contexts[start:]:
        step = ctx.step
        if not (isinstance(step, VerifyStep) or (isinstance(step, SqlStep) and step.transactional)):
            break
        group.append(GroupMember(ctx, entries.get(step.name)))
    if not any(isinstance(member.ctx.step, SqlStep) for member in group):
        return []
    return group


def _log_outcome(member: GroupMember, outcome: str) -> None:
    ctx = member.ctx
    if outcome == "skipped" and member.previous is not None:
        log.info("%s: skipped, applied earlier (%s)", ctx.label, _when(member.previous))
    else:
        log.info("%s: %s (committed with the contract transaction)", ctx.label, outcome)


def _report(ctx: StepContext, paused: bool) -> None:
    if paused and ctx.index < ctx.count:
        log.info("%s: paused (spec.paused is true); stopping before the next step", ctx.label)
        raise Paused(f"paused by spec.paused after step {ctx.index}/{ctx.count} ({ctx.step.name})")


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
