"""What every step executor needs to know about the run it belongs to.

A plain value passed down from the phase loop, so executors take no globals and tests can build
one around a real engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from datamigration.core.steps import Step
from datamigration.runner.ledger import StepKey
from datamigration.runner.limits import Limits, RetryCounter, limits_for
from datamigration.runner.plan import Plan
from datamigration.runner.progress import Progress, Reporter, step_summary

log = logging.getLogger("datamigration.runner")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StepContext:
    """One step's place in the run: its engine, plan, position, scrubber and reporter."""

    engine: Engine
    plan: Plan
    step: Step
    index: int  # 1-based position in the phase
    scrub: Callable[[str], str]
    reporter: Reporter
    retries: RetryCounter = field(default_factory=RetryCounter)  # shared by the whole run

    @property
    def limits(self) -> Limits:
        """The lock/statement timeouts and lock retries of this step."""
        return limits_for(self.step, self.plan.limits)

    @property
    def count(self) -> int:
        return len(self.plan.steps)

    @property
    def key(self) -> StepKey:
        return StepKey(self.plan.migration, self.plan.phase, self.step.name)

    @property
    def label(self) -> str:
        """How log lines name the step: `expand 2/3 add-email`."""
        return f"{self.plan.phase} {self.index}/{self.count} {self.step.name}"

    def step_progress(self, done: bool) -> Progress:
        """Progress of a step without rows (sql, verify, skipped)."""
        finished = self.index if done else self.index - 1
        return Progress(
            phase=self.plan.phase,
            step=self.step.name,
            step_index=self.index,
            step_count=self.count,
            percent=round(100 * finished / self.count) if self.count else 100,
            summary=step_summary(self.plan.phase, self.index, self.count),
            lock_retries=self.retries.total,
        )

    def report_retry(self) -> None:
        """Publish the lock-retry count (throttled; the end of the step always reports)."""
        self.reporter.report(self.step_progress(done=False))
