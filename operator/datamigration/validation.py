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
from datamigration.lint import lint_spec


def validate(raw_spec: Any) -> MigrationSpec | Invalid:
    """The parsed spec, or every problem found, each naming its field."""
    try:
        spec = parse_spec(raw_spec)
    except SpecError as exc:
        return Invalid((str(exc),))
    problems = [
        f'{finding.field or "spec." + finding.phase}: step "{finding.step}": {finding.rule}: '
        f"{finding.message}" + (f" (in: {finding.statement})" if finding.statement else "")
        for finding in lint_spec(spec)
        if finding.blocking  # an error the step did not allow explicitly (lint.allow)
    ]
    return Invalid(tuple(problems)) if problems else spec
