"""Validation of a whole spec: its shape (`parse_spec`) and its safety (the SQL lint).

A DataMigration that fails here is marked InvalidSpec and runs nothing. The lint refuses
destructive statements outside contract, so that an expand or a backfill can never break the
old code that is still serving traffic.
"""

from __future__ import annotations

from typing import Any

from datamigration.core.decide import Invalid
from datamigration.core.errors import SpecError
from datamigration.core.spec import MigrationSpec, parse_spec
from datamigration.lint import Severity, lint_steps


def validate(raw_spec: Any) -> MigrationSpec | Invalid:
    """The parsed spec, or every problem found, each naming its field."""
    try:
        spec = parse_spec(raw_spec)
    except SpecError as exc:
        return Invalid((str(exc),))
    problems = [
        f'spec.{phase}: step "{finding.step}": {finding.rule}: {finding.message} '
        f"(in: {finding.statement})"
        for phase in ("expand", "backfill", "contract")
        for finding in lint_steps(phase, list(spec.job_steps(phase).steps))
        if finding.severity == Severity.ERROR
    ]
    return Invalid(tuple(problems)) if problems else spec
