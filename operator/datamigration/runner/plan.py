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
from datamigration.core.spec import WORKLOAD_KINDS
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
    {
        "migration",
        "phase",
        "steps",
        "allowChecksumChange",
        "limits",
        "report",
        "rolloutGate",
        "databaseSessions",
    }
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
    #: Kind Pods: the label selector (query-string form) instead of a name.
    selector: str = ""

    @property
    def label(self) -> str:
        where = self.selector if self.kind == "Pods" else self.name
        return f"{self.kind} {self.namespace}/{where}"


@dataclass(frozen=True)
class SessionsGate:
    """`databaseSessions`: no session of the old code may be connected before a destructive
    step (runner/sessions.py)."""

    application_name_pattern: str
    role: str | None = None
    #: ISO timestamp: sessions of `role` that started before it block too (None: off).
    older_than: str | None = None


@dataclass(frozen=True)
class Plan:
    """One phase of one migration, validated."""

    migration: str  # "<namespace>/<name>": the ledger and lock key
    phase: str
    steps: tuple[Step, ...]
    allow_checksum_change: bool = False
    report: ReportTarget | None = None
    limits: Defaults = field(default_factory=Defaults)  # spec-wide statement limits (spec.runner.*)
    #: Every workload container the contract Job proves again before a destructive step.
    rollout_gates: tuple[RolloutGate, ...] = ()
    database_sessions: SessionsGate | None = None

    @property
    def rollout_gate(self) -> RolloutGate | None:
        """The first gate (the single `spec.workload`'s), if any."""
        return self.rollout_gates[0] if self.rollout_gates else None


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
        limits=parse_defaults(document.get("limits")),
        rollout_gates=_rollout_gates(document.get("rolloutGate")),
        database_sessions=_sessions_gate(document.get("databaseSessions")),
    )


def _sessions_gate(raw: object) -> SessionsGate | None:
    path = "plan.databaseSessions"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object with applicationNamePattern")
    pattern, role, older = (raw.get(k) for k in ("applicationNamePattern", "role", "olderThan"))
    if not (isinstance(pattern, str) and pattern):
        raise SpecError(f"{path}.applicationNamePattern", "must be a regular expression")
    for key, value in (("role", role), ("olderThan", older)):
        if value is not None and not (isinstance(value, str) and value):
            raise SpecError(f"{path}.{key}", "must be a non-empty string or null")
    if older is not None and role is None:
        raise SpecError(f"{path}.role", "is required with olderThan")
    return SessionsGate(str(pattern), role, older)


def _rollout_gates(raw: object) -> tuple[RolloutGate, ...]:
    """`rolloutGate`: one gate object, or a list of them (several workloads)."""
    if raw is None:
        return ()
    if isinstance(raw, list):
        if not raw:
            raise SpecError("plan.rolloutGate", "must not be an empty list")
        return tuple(_rollout_gate(item, f"plan.rolloutGate[{i}]") for i, item in enumerate(raw))
    return (_rollout_gate(raw, "plan.rolloutGate"),)


def _rollout_gate(raw: object, path: str) -> RolloutGate:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("workload"), Mapping):
        raise SpecError(path, "must be an object with workload and container")
    workload = raw["workload"]
    kind = workload.get("kind")
    if kind not in WORKLOAD_KINDS:
        raise SpecError(f"{path}.workload.kind", f"must be one of {', '.join(WORKLOAD_KINDS)}")
    if not _is_label(workload.get("namespace")):
        raise SpecError(f"{path}.workload.namespace", "must be a namespace name")
    selector = workload.get("selector")
    if kind == "Pods":
        if not (isinstance(selector, str) and selector.strip()):
            raise SpecError(f"{path}.workload.selector", "must be a label selector")
    elif not _is_subdomain(workload.get("name")):
        raise SpecError(f"{path}.workload.name", f"must be a {kind} name")
    if not _is_label(raw.get("container")):
        raise SpecError(f"{path}.container", "must be a container name")
    image = raw.get("expectedImage")
    if image is not None and not (isinstance(image, str) and image.strip()):
        raise SpecError(f"{path}.expectedImage", "must be an image reference or null")
    if image is None and kind not in ("Deployment",):
        raise SpecError(f"{path}.expectedImage", f"is required for kind {kind}")
    return RolloutGate(
        kind=str(kind),
        namespace=str(workload["namespace"]),
        name=str(workload.get("name") or ""),
        container=str(raw["container"]),
        expected_image=image,
        selector=str(selector or "") if kind == "Pods" else "",
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
