"""Typed operations (`spec.operations[]`) planned into the steps of each phase. Pure.

Why: the common schema changes (add a column, rename one, change its type, constraints, indexes,
document reshaping) have one safe recipe each, and the rename's recipe has a gap no hand-written
step closes: the writes of the old code between the backfill and the end of the rollout. The
planner writes the recipe, including the sync triggers that close that gap, as ordinary steps:

    planned = plan_operations(raw_spec.get("operations"), parse_dialect(raw_spec["database"]))
    planned.expand / .backfill / .verify / .contract / .undo   -> tuples of Step

Order inside a phase: the operations' steps in the order the operations are written, then the
hand-written steps of that phase. The contract runs the generated verify queries, then the
hand-written ones, then the generated contract steps, then the hand-written ones. `undo` (for a
rollback Job on abort before contract) is in reverse order of application.

`raw_step` turns a generated step back into the manifest form the runner's plan carries
(`parse_steps(raw_step(s))` gives `s` again, same checksum).

`Planned.expressions()` lists every user SQL expression with its field path, for the SQL lint
(which may not be imported here) to parse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from datamigration.core.errors import SpecError
from datamigration.core.operations.compile import Contribution, all_steps, compile_operation
from datamigration.core.operations.model import (
    DIALECTS,
    OPERATION_KINDS,
    AddCheck,
    AddColumn,
    AddIndex,
    Dialect,
    FieldOp,
    Operation,
    SetNotNull,
    Sync,
    Upcast,
    parse_dialect,
    parse_operations,
)
from datamigration.core.steps import (
    BackfillStep,
    CommandStep,
    LintAllow,
    SqlStep,
    Step,
    VerifyStep,
)

__all__ = [
    "DIALECTS",
    "OPERATION_KINDS",
    "Dialect",
    "Planned",
    "check_hand_written",
    "parse_dialect",
    "plan_operations",
    "raw_step",
]


@dataclass(frozen=True)
class Planned:
    """The steps the operations contribute to each phase (all empty without operations)."""

    operations: tuple[Operation, ...] = ()
    dialect: Dialect = "postgresql"
    expand: tuple[Step, ...] = ()
    backfill: tuple[Step, ...] = ()
    verify: tuple[VerifyStep, ...] = ()  # contract, before any contract step
    contract: tuple[Step, ...] = ()
    undo: tuple[Step, ...] = ()
    origin: tuple[tuple[str, str], ...] = ()  # (step name, operation path)

    def phase(self, phase: str) -> tuple[Step, ...]:
        """The generated steps of a phase's Job ("contract": verify first, then steps)."""
        if phase == "expand":
            return self.expand
        if phase == "backfill":
            return self.backfill
        if phase == "contract":
            return (*self.verify, *self.contract)
        if phase == "rollback":
            return self.undo
        raise ValueError(f"{phase} is not a phase with steps")

    def operation_of(self, step: str) -> str | None:
        """The path of the operation that generated step `step` (None if none did)."""
        return dict(self.origin).get(step)

    def expressions(self) -> list[tuple[str, str]]:
        """(field path, SQL expression text) of every user expression, for the SQL lint."""
        found: list[tuple[str, str]] = []
        for op in self.operations:
            found += _expressions(op)
        return found


def plan_operations(
    raw: object, dialect: Dialect = "postgresql", path: str = "spec.operations"
) -> Planned:
    """Parse and plan `spec.operations`; `SpecError` names the first offending field."""
    operations = parse_operations(raw, path)
    parts: list[Contribution] = []
    origin: dict[str, str] = {}
    for op in operations:
        contribution = compile_operation(op, dialect)
        if dialect == "sqlite":
            contribution = _lint_reads_postgresql(contribution)
        for step in all_steps(contribution):
            if step.name in origin:
                raise SpecError(
                    op.path,
                    f'generates step "{step.name}", which {origin[step.name]} also generates: '
                    "two operations do the same thing",
                )
            origin[step.name] = op.path
        parts.append(contribution)
    return Planned(
        operations=operations,
        dialect=dialect,
        expand=tuple(s for c in parts for s in c.expand),
        backfill=tuple(s for c in parts for s in c.backfill),
        verify=tuple(s for c in parts for s in c.verify),
        contract=tuple(s for c in parts for s in c.contract),
        undo=tuple(s for c in reversed(parts) for s in c.undo),
        origin=tuple(origin.items()),
    )


#: Why the generated SQLite steps allow `unparseable-sql`: said in plan, status and an Event.
SQLITE_LINT = LintAllow(
    allow=("unparseable-sql",),
    reason="generated by spec.operations for SQLite; the lint reads PostgreSQL SQL",
)


def _lint_reads_postgresql(c: Contribution) -> Contribution:
    """The SQLite rendering of a recipe (trigger bodies, `IS NOT`, `DROP TRIGGER` without ON)
    is not PostgreSQL SQL, so the lint cannot parse it: each generated step allows exactly that
    rule, visibly. The same recipe in PostgreSQL is linted in full (tests/unit/test_operations)."""

    def mark(steps: list[Any]) -> list[Any]:
        return [replace(step, lint=SQLITE_LINT) for step in steps]

    return Contribution(
        expand=mark(c.expand),
        backfill=mark(c.backfill),
        verify=mark(c.verify),
        contract=mark(c.contract),
        undo=mark(c.undo),
    )


def check_hand_written(planned: Planned, phase_path: str, steps: Iterable[Step]) -> None:
    """Refuse a hand-written step that clashes with the generated ones of its phase: the same
    name (one ledger row for two steps), or a command step (it must be alone in its Job)."""
    if not planned.operations:
        return
    for index, step in enumerate(steps):
        generator = planned.operation_of(step.name)
        if generator is not None:
            raise SpecError(
                f"{phase_path}[{index}].name",
                f'duplicate step name "{step.name}" (generated by {generator}); rename the step',
            )
        if isinstance(step, CommandStep) and _phase_of(phase_path, planned):
            raise SpecError(
                f"{phase_path}[{index}].command",
                "a command step runs as the phase's whole Job, so it cannot share its phase with "
                "the steps spec.operations generates",
            )


def _phase_of(phase_path: str, planned: Planned) -> bool:
    """Whether the phase at `spec.<phase>.steps` has generated steps."""
    phase = phase_path.split(".")[1]
    return bool(planned.phase(phase)) if phase in ("expand", "backfill", "contract") else False


def raw_step(step: Step) -> dict[str, Any]:
    """The manifest form of a step, as `parse_steps` reads it."""
    raw = _raw_body(step)
    if step.lint is not None:
        raw["lint"] = {"allow": list(step.lint.allow), "reason": step.lint.reason}
    return raw


def _raw_body(step: Step) -> dict[str, Any]:
    if isinstance(step, SqlStep):
        raw: dict[str, Any] = {"name": step.name, "sql": step.sql}
        if not step.transactional:
            raw["transactional"] = False
        return raw
    if isinstance(step, BackfillStep):
        body: dict[str, Any] = {"table": step.table, "key": step.key, "set": dict(step.set)}
        if step.where is not None:
            body["where"] = step.where
        body["batchSize"] = step.batch_size
        return {"name": step.name, "backfill": body}
    if isinstance(step, VerifyStep):
        return {"name": step.name, "verify": {"query": step.query, "expect": step.expect}}
    raise ValueError(f"the planner does not generate {step.kind} steps")


def raw_steps(steps: Iterable[Step]) -> tuple[Mapping[str, Any], ...]:
    return tuple(raw_step(step) for step in steps)


def _expressions(op: Operation) -> list[tuple[str, str]]:
    if isinstance(op, AddColumn):
        pairs = [("default", op.default), ("up", op.up)]
        return [(f"{op.path}.{k}", v) for k, v in pairs if v is not None]
    if isinstance(op, Sync):
        if op.copy:
            return []
        if op.kind == "changeColumnType":
            return [(f"{op.path}.up", op.up[0][1]), (f"{op.path}.down", op.down[0][1])]
        if op.kind == "splitColumn":
            return [
                *((f"{op.path}.into[{i}].up", expr) for i, (_, expr) in enumerate(op.up)),
                (f"{op.path}.down", op.down[0][1]),
            ]
        return [
            (f"{op.path}.into.up", op.up[0][1]),
            *((f"{op.path}.down.{col}", expr) for col, expr in op.down),
        ]
    if isinstance(op, SetNotNull):
        return [(f"{op.path}.fill", op.fill)] if op.fill is not None else []
    if isinstance(op, AddCheck):
        return [(f"{op.path}.check", op.check)]
    if isinstance(op, AddIndex):
        return [(f"{op.path}.where", op.where)] if op.where is not None else []
    if isinstance(op, Upcast):
        return [
            (f"{op.path}.transforms[{i}].expression", expr)
            for i, (_, expr) in enumerate(op.transforms)
        ]
    if isinstance(op, FieldOp):
        return []
    return []
