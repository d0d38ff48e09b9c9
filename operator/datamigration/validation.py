"""Validation of a whole spec: its shape (`parse_spec`) and its safety (the SQL lint).

A DataMigration that fails here is marked InvalidSpec and runs nothing. The lint refuses
destructive statements outside contract, so that an expand or a backfill can never break the
old code that is still serving traffic; the rollback an abort would run (`spec.rollback.steps`
and the undo of `spec.operations`) is linted with contract's rules, since undo SQL is destructive
by design. Every user expression of `spec.operations` is checked on its own
(`lint/expressions.py`): the planner splices it into triggers and backfills, so one that breaks
out of its parentheses or calls a side-effect function is refused with its field named. What the
lint cannot see into (command steps) is named by `unchecked_steps`, with `UNCHECKED_COMMAND`
saying what a person must do instead.
"""

from __future__ import annotations

from typing import Any

from datamigration.core.errors import SpecError
from datamigration.core.observed import Invalid  # not via core.decide: lint needs no decisions
from datamigration.core.spec import JOB_PHASES, MigrationSpec, parse_spec
from datamigration.core.steps import CommandStep
from datamigration.lint import lint_spec
from datamigration.lint.expressions import expression_problems


def validate(raw_spec: Any) -> MigrationSpec | Invalid:
    """The parsed spec, or every problem found, each naming its field."""
    try:
        spec = parse_spec(raw_spec)
    except SpecError as exc:
        return Invalid((str(exc),))
    problems = [
        f'{finding.field or "spec." + finding.phase}: step "{finding.step}": {finding.rule}: '
        f"{finding.message}" + (f" (in: {finding.statement})" if finding.statement else "")
        for finding in lint_spec(spec)  # every phase, and the rollback with contract's rules
        if finding.blocking  # an error the step did not allow explicitly (lint.allow)
    ]
    problems += operation_expression_problems(spec)
    return Invalid(tuple(problems)) if problems else spec


#: The expressions of `spec.operations` that are predicates (the others compute a value).
_PREDICATES = (".check", ".where")


def operation_expression_problems(spec: MigrationSpec) -> list[str]:
    """Every user expression of `spec.operations` (up, down, default, fill, check, where,
    transforms) checked on its own, as exactly one side-effect-free expression: the planner
    splices them into triggers, backfills and DDL, where one that breaks out of its parentheses
    or calls a side-effect function would run with the runner's rights. Each problem names the
    operation's field (`spec.operations[0].renameColumn.up`)."""
    planned = spec.operations
    problems: list[str] = []
    for field, expression in planned.expressions():
        found = expression_problems(
            expression,
            field,
            in_set=not field.endswith(_PREDICATES),
            dialect=planned.dialect,
        )
        problems += [f"{p.field}: {p.rule}: {p.message}" for p in found]
    return problems


#: Why a command step is unchecked and what to do instead (the CLI, status and docs say this).
UNCHECKED_COMMAND = (
    "the SQL lint cannot see what a program does to the database: review its image and command "
    "as you would a schema change, run your tool's own dry run against a copy of the database, "
    "and add verify steps that prove the result"
)


def unchecked_steps(spec: MigrationSpec) -> list[tuple[str, str]]:
    """`(phase, step name)` of every step the lint cannot check: the command steps."""
    return [
        (phase, step.name)
        for phase in JOB_PHASES
        for step in spec.job_steps(phase).steps
        if isinstance(step, CommandStep)
    ]
