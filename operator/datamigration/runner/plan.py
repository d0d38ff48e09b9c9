"""Reading the runner's input: which migration, which phase, which steps, where to report.

Why a module: the plan comes from the operator (env `DATAMIGRATION_PLAN`, JSON) or from a person
(`--plan FILE`, JSON or YAML). Both go through `parse_plan`, which validates everything before the
runner touches the database, so a bad plan is exit 2 with a message naming the field, and never a
half-run phase.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from datamigration.core.errors import SpecError
from datamigration.core.status import ROLLBACK
from datamigration.core.steps import (
    STEP_PHASES,
    BackfillStep,
    CommandStep,
    SqlStep,
    Step,
    VerifyStep,
    parse_steps,
)
from datamigration.lint.expressions import (
    POSTGRESQL,
    UnsafeExpression,
    backfill_problems,
    verify_problems,
)
from datamigration.runner.errors import InvalidInput
from datamigration.runner.limits import Defaults, parse_defaults
from datamigration.runner.statements import check_sql_step

PLAN_ENV = "DATAMIGRATION_PLAN"
#: The database phases, and `rollback` (an abort's undo): run like a contract without the
#: rollout gate, its ledger rows keyed by phase `rollback`, so a retry skips what it undid.
RUNNER_PHASES = (*STEP_PHASES, ROLLBACK)
KNOWN_FIELDS = frozenset(
    {"migration", "phase", "steps", "allowChecksumChange", "limits", "report", "rolloutGate"}
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportTarget:
    """The DataMigration whose status subresource receives progress."""

    namespace: str
    name: str


@dataclass(frozen=True)
class RolloutGate:
    """The rollout the operator proved before creating a contract Job; runner/gate.py proves it
    again before each destructive step. `expected_image` None: no image named (Observe mode)."""

    kind: str
    namespace: str
    name: str
    container: str
    expected_image: str | None


@dataclass(frozen=True)
class Plan:
    """One phase of one migration, validated."""

    migration: str  # "<namespace>/<name>": the ledger and lock key
    phase: str
    steps: tuple[Step, ...]
    allow_checksum_change: bool = False
    report: ReportTarget | None = None
    rollout_gate: RolloutGate | None = None
    limits: Defaults = field(default_factory=Defaults)  # spec-wide statement limits (spec.runner.*)


def read_plan(plan_file: str | None, environ: Mapping[str, str], dialect: str = POSTGRESQL) -> Plan:
    """The plan from `--plan FILE` if given, else from `$DATAMIGRATION_PLAN`."""
    if plan_file:
        try:
            text = Path(plan_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read the plan file {plan_file}: {exc.strerror}") from None
        try:
            document = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise InvalidInput(
                f"the plan file {plan_file} is not valid JSON or YAML: {exc}"
            ) from None
    else:
        text = environ.get(PLAN_ENV, "")
        if not text.strip():
            raise InvalidInput(f"no plan: set ${PLAN_ENV} (JSON) or pass --plan FILE")
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"${PLAN_ENV} is not valid JSON: {exc}") from None
    return parse_plan(document, dialect)


def parse_plan(document: object, dialect: str = POSTGRESQL) -> Plan:
    """Validate a decoded plan document; raises `InvalidInput` naming the field."""
    try:
        return _parse(document, dialect)
    except SpecError as exc:
        raise InvalidInput(f"invalid plan: {exc}") from None


def _parse(document: object, dialect: str) -> Plan:
    if not isinstance(document, Mapping):
        raise SpecError("plan", "must be a JSON/YAML object")
    unknown = sorted(str(key) for key in document if key not in KNOWN_FIELDS)
    if unknown:
        log.warning("ignoring unknown plan field(s): %s", ", ".join(unknown))

    migration = document.get("migration")
    namespace, _, name = migration.partition("/") if isinstance(migration, str) else ("", "", "")
    if not (_is_label(namespace) and _is_subdomain(name)):
        raise SpecError("plan.migration", 'must be "<namespace>/<name>" of the DataMigration')

    phase = document.get("phase")
    if phase not in RUNNER_PHASES:
        raise SpecError("plan.phase", f"must be one of {', '.join(RUNNER_PHASES)}")
    steps = parse_steps(document.get("steps"), "plan.steps")
    for index, step in enumerate(steps):
        _check_step(step, f"plan.steps[{index}]", dialect)

    allow = document.get("allowChecksumChange", False)
    if not isinstance(allow, bool):
        raise SpecError("plan.allowChecksumChange", "must be true or false")

    report = document.get("report")
    target = None
    if report is not None:
        if not isinstance(report, Mapping):
            raise SpecError("plan.report", "must be an object with namespace and name")
        report_ns, report_name = report.get("namespace"), report.get("name")
        if not _is_label(report_ns):
            raise SpecError("plan.report.namespace", "must be a namespace name")
        if not _is_subdomain(report_name):
            raise SpecError("plan.report.name", "must be a DataMigration name")
        target = ReportTarget(namespace=str(report_ns), name=str(report_name))

    return Plan(
        migration=f"{namespace}/{name}",
        phase=str(phase),
        steps=tuple(steps),
        allow_checksum_change=allow,
        report=target,
        rollout_gate=_rollout_gate(document.get("rolloutGate")),
        limits=parse_defaults(document.get("limits")),
    )


def _rollout_gate(raw: object) -> RolloutGate | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("workload"), Mapping):
        raise SpecError("plan.rolloutGate", "must be an object with workload and container")
    workload = raw["workload"]
    if workload.get("kind") != "Deployment":
        raise SpecError("plan.rolloutGate.workload.kind", "must be Deployment")
    if not _is_label(workload.get("namespace")):
        raise SpecError("plan.rolloutGate.workload.namespace", "must be a namespace name")
    if not _is_subdomain(workload.get("name")):
        raise SpecError("plan.rolloutGate.workload.name", "must be a Deployment name")
    if not _is_label(raw.get("container")):
        raise SpecError("plan.rolloutGate.container", "must be a container name")
    image = raw.get("expectedImage")
    if image is not None and not (isinstance(image, str) and image.strip()):
        raise SpecError("plan.rolloutGate.expectedImage", "must be an image reference or null")
    return RolloutGate(
        kind="Deployment",
        namespace=str(workload["namespace"]),
        name=str(workload["name"]),
        container=str(raw["container"]),
        expected_image=image,
    )


def _check_step(step: Step, path: str, dialect: str) -> None:
    """What the step parser cannot see: all-or-nothing SQL, expressions that cannot break out."""
    if isinstance(step, CommandStep):
        raise SpecError(
            f"{path}.command",
            f'step "{step.name}" is a command step: the operator runs it as its own Job, '
            "the runner does not execute containers",
        )
    if isinstance(step, SqlStep):
        check_sql_step(step, path)
    problems = (
        backfill_problems(step, path, dialect)
        if isinstance(step, BackfillStep)
        else verify_problems(step, f"{path}.verify.query", dialect)
        if isinstance(step, VerifyStep)
        else []
    )
    if problems:
        raise UnsafeExpression(problems[0])


def _is_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS_LABEL.fullmatch(value))


def _is_subdomain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(value))
