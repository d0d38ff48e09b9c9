"""The typed view of a DataMigration's `spec`, parsed once per reconcile.

The CRD's OpenAPI schema already rejects most malformed input at the API server; this module
re-checks what the operator relies on (so a resource written before a schema change, or applied
with validation off, still fails cleanly) and adds the rules a schema cannot express. Every error
names the field path, as the API server does: `spec.workload.image: required when ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from datamigration.core.errors import SpecError
from datamigration.core.operations import (
    Planned,
    check_hand_written,
    parse_dialect,
    plan_operations,
    raw_steps,
)
from datamigration.core.steps import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_LOCK_TIMEOUT_MILLISECONDS,
    MAX_LOCK_RETRIES,
    MAX_LOCK_TIMEOUT_MILLISECONDS,
    MAX_STATEMENT_TIMEOUT_MILLISECONDS,
    Step,
    parse_steps,
)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

JOB_PHASES: tuple[str, ...] = ("expand", "backfill", "contract")
PHASES: tuple[str, ...] = ("expand", "backfill", "codeRollout", "contract")

RolloutMode = Literal["Apply", "Observe"]
Approval = Literal["Automatic", "Manual"]


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


#: The kinds `spec.workloads[].kind` accepts (each has a gate in core/rollout.py or
#: core/workloads.py).
WORKLOAD_KINDS: tuple[str, ...] = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "Rollout",
    "Pods",
)


@dataclass(frozen=True)
class Workload:
    """One workload whose pods must all run the new code before contract.

    `spec.workload` is the one-item shorthand (a Deployment). For `kind: Pods`, `name` is empty
    and `selector` is the label selector (query-string form) of the pods in the namespace.
    `containers` lists every container that must run `image` (`container` is the first)."""

    kind: str
    name: str
    container: str
    image: str | None
    containers: tuple[str, ...] = ()
    selector: str = ""
    mode: RolloutMode = "Apply"
    #: Where the entry came from, for error messages: `spec.workload` or `spec.workloads[i]`.
    path: str = "spec.workload"

    @property
    def all_containers(self) -> tuple[str, ...]:
        return self.containers or (self.container,)

    @property
    def label(self) -> str:
        """`StatefulSet db`, `Pods app=legacy`: how status and messages name it."""
        return f"Pods {self.selector}" if self.kind == "Pods" else f"{self.kind} {self.name}"

    @property
    def key(self) -> str:
        """`StatefulSet/db`: a stable key for per-workload records."""
        return f"Pods/{self.selector}" if self.kind == "Pods" else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class RunnerSpec:
    image: str | None = None
    service_account_name: str | None = None
    backoff_limit: int = 0
    active_deadline_seconds: int | None = None
    lock_timeout_seconds: int = 60  # the runner's wait for the migration's advisory lock
    allow_checksum_change: bool = False
    # Defaults for every runner statement (a step's own fields win): PostgreSQL lock_timeout,
    # statement_timeout (None: the runner's per-kind default) and retries after a lock timeout.
    lock_timeout_milliseconds: int = DEFAULT_LOCK_TIMEOUT_MILLISECONDS
    statement_timeout_milliseconds: int | None = None
    lock_retries: int = DEFAULT_LOCK_RETRIES

    def statement_limits(self) -> dict[str, int]:
        """The runner plan's `limits`: spec-wide defaults for the runner's statements."""
        limits = {
            "lockTimeoutMilliseconds": self.lock_timeout_milliseconds,
            "lockRetries": self.lock_retries,
        }
        if self.statement_timeout_milliseconds is not None:
            limits["statementTimeoutMilliseconds"] = self.statement_timeout_milliseconds
        return limits


@dataclass(frozen=True)
class PhaseSteps:
    """The steps of one database phase: parsed for decisions, raw for the runner's plan."""

    steps: tuple[Step, ...] = ()
    raw: tuple[Mapping[str, Any], ...] = ()

    @property
    def command_step(self) -> Mapping[str, Any] | None:
        """The `command` step's body when this phase runs a team's own tool."""
        for raw in self.raw:
            if "command" in raw:
                body: Mapping[str, Any] = raw["command"]
                return body
        return None


@dataclass(frozen=True)
class CodeRollout:
    mode: RolloutMode = "Apply"
    timeout_seconds: int = 900
    #: Apply mode: set every workload's image at once instead of one after another.
    together: bool = False


@dataclass(frozen=True)
class DatabaseSessions:
    """`spec.contract.databaseSessions`: proof from the database's side, checked by the contract
    Job right before each destructive step (runner/sessions.py)."""

    #: A PostgreSQL regular expression (`~`) for the OLD version's `application_name`.
    application_name_pattern: str
    #: Only sessions of this role count for the pattern; required by `older_than_rollout_proof`.
    role: str | None = None
    #: Also block on any session of `role` that started before the rollout was proven.
    older_than_rollout_proof: bool = False


@dataclass(frozen=True)
class Contract:
    approval: Approval = "Manual"
    approved: bool = False
    #: The contract digest a person approved (`sha256:<hex>`); see `core/digest.py`.
    approved_digest: str | None = None
    verify: PhaseSteps = field(default_factory=PhaseSteps)
    steps: PhaseSteps = field(default_factory=PhaseSteps)
    database_sessions: DatabaseSessions | None = None


@dataclass(frozen=True)
class MigrationSpec:
    database: SecretKeyRef
    workload: Workload  # the first of `workloads` (the single `spec.workload` shorthand)
    runner: RunnerSpec
    expand: PhaseSteps
    backfill: PhaseSteps
    code_rollout: CodeRollout
    contract: Contract
    paused: bool = False
    abort: bool = False
    operations: Planned = field(default_factory=Planned)  # spec.operations, planned
    rollback: PhaseSteps = field(default_factory=PhaseSteps)  # spec.rollback.steps
    #: Every workload the contract waits for, in rollout order (`spec.workloads`, or the one
    #: `spec.workload`); empty means `(workload,)`.
    workload_list: tuple[Workload, ...] = ()

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return self.workload_list or (self.workload,)

    def job_steps(self, phase: str) -> PhaseSteps:
        """What the phase's Job runs: the steps spec.operations generates, then the
        hand-written ones. Contract runs its verify queries first (generated, then written), in
        the same Job.

        The runner runs the verify queries and the transactional contract steps that follow
        them in ONE database transaction (PostgreSQL and SQLite both have transactional DDL),
        calling the rollout gate right before each contract step: verify, gate and step commit
        together or not at all, and no DDL changes the verified tables in between. Rows the
        application writes after a verify query ran are not re-checked (READ COMMITTED), and a
        `transactional: false` contract step runs after that transaction committed
        (docs/runner.md, "Transactions in the contract phase")."""
        ops = self.operations
        if phase == "expand":
            return _joined(_generated(ops.expand), self.expand)
        if phase == "backfill":
            return _joined(_generated(ops.backfill), self.backfill)
        if phase == "contract":
            return _joined(
                _generated(ops.verify),
                self.contract.verify,
                _generated(ops.contract),
                self.contract.steps,
            )
        raise ValueError(f"{phase} is not a database phase")

    def rollback_steps(self) -> PhaseSteps:
        """What a rollback Job runs on abort before contract: the hand-written
        `spec.rollback.steps` (they undo the hand-written expand, which ran last), then the
        undo of `spec.operations` (reverse order)."""
        return _joined(self.rollback, _generated(self.operations.undo))


def _generated(steps: tuple[Step, ...]) -> PhaseSteps:
    return PhaseSteps(steps=steps, raw=raw_steps(steps))


def _joined(*parts: PhaseSteps) -> PhaseSteps:
    return PhaseSteps(
        steps=tuple(s for p in parts for s in p.steps), raw=tuple(r for p in parts for r in p.raw)
    )


def _obj(raw: Any, path: str, *, required: bool = True) -> Mapping[str, Any]:
    if raw is None and not required:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object" if raw is not None else "is required")
    return raw


def _str(raw: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise SpecError(f"{path}.{key}", "is required")
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}.{key}", "must be a non-empty string")
    return value


def _int(raw: Mapping[str, Any], key: str, path: str, default: int, *bounds: int) -> int:
    lo, hi = bounds
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{path}.{key}", f"must be an integer between {lo} and {hi}")
    return value


def _bool(raw: Mapping[str, Any], key: str, path: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key}", "must be true or false")
    return value


def _enum(raw: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    value = raw.get(key, allowed[0])
    if value not in allowed:
        raise SpecError(f"{path}.{key}", f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _digest(raw: Mapping[str, Any], key: str, path: str) -> str | None:
    value = _str(raw, key, path, required=False)
    if value is not None and not _DIGEST.fullmatch(value):
        raise SpecError(
            f"{path}.{key}",
            "must be a digest as status.contract.digest shows it: sha256: and 64 hex digits",
        )
    return value


def _phase_steps(raw: Any, path: str) -> PhaseSteps:
    body = _obj(raw, path, required=False)
    if not body:
        return PhaseSteps()
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise SpecError(f"{path}.steps", "must be a non-empty list of steps")
    steps = tuple(parse_steps(raw_steps, f"{path}.steps"))
    commands = [i for i, step in enumerate(steps) if step.kind == "command"]
    if commands and len(steps) > 1:
        raise SpecError(
            f"{path}.steps[{commands[0]}].command",
            "a command step runs as the phase's whole Job, so it must be the only step of "
            "its phase",
        )
    return PhaseSteps(steps=steps, raw=tuple(raw_steps))


def _verify_steps(raw: Any, path: str) -> PhaseSteps:
    if raw is None:
        return PhaseSteps()
    if not isinstance(raw, list):
        raise SpecError(path, "must be a list of {name, query, expect}")
    as_steps: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        entry = _obj(item, f"{path}[{i}]")
        as_steps.append(
            {
                "name": entry.get("name"),
                "verify": {"query": entry.get("query"), "expect": entry.get("expect")},
            }
        )
    steps = tuple(parse_steps(as_steps, path))
    return PhaseSteps(steps=steps, raw=tuple(as_steps))


def parse_spec(raw: Any) -> MigrationSpec:
    """Parse `spec`, raising `SpecError` for the first problem found."""
    spec = _obj(raw, "spec")
    database = _obj(spec.get("database"), "spec.database")
    url_from = _obj(database.get("urlFrom"), "spec.database.urlFrom")
    ref = _obj(url_from.get("secretKeyRef"), "spec.database.urlFrom.secretKeyRef")
    ref_path = "spec.database.urlFrom.secretKeyRef"
    secret = SecretKeyRef(
        name=str(_str(ref, "name", ref_path)), key=str(_str(ref, "key", ref_path))
    )

    rn = _obj(spec.get("runner"), "spec.runner", required=False)
    deadline = rn.get("activeDeadlineSeconds")
    runner = RunnerSpec(
        image=_str(rn, "image", "spec.runner", required=False),
        service_account_name=_str(rn, "serviceAccountName", "spec.runner", required=False),
        backoff_limit=_int(rn, "backoffLimit", "spec.runner", 0, 0, 10),
        active_deadline_seconds=(
            None
            if deadline is None
            else _int(rn, "activeDeadlineSeconds", "spec.runner", 1, 1, 604800)
        ),
        lock_timeout_seconds=_int(rn, "lockTimeoutSeconds", "spec.runner", 60, 1, 3600),
        allow_checksum_change=_bool(rn, "allowChecksumChange", "spec.runner"),
        lock_timeout_milliseconds=_int(
            rn,
            "lockTimeoutMilliseconds",
            "spec.runner",
            DEFAULT_LOCK_TIMEOUT_MILLISECONDS,
            1,
            MAX_LOCK_TIMEOUT_MILLISECONDS,
        ),
        statement_timeout_milliseconds=(
            None
            if rn.get("statementTimeoutMilliseconds") is None
            else _int(
                rn,
                "statementTimeoutMilliseconds",
                "spec.runner",
                0,
                0,
                MAX_STATEMENT_TIMEOUT_MILLISECONDS,
            )
        ),
        lock_retries=_int(
            rn, "lockRetries", "spec.runner", DEFAULT_LOCK_RETRIES, 0, MAX_LOCK_RETRIES
        ),
    )

    cr = _obj(spec.get("codeRollout"), "spec.codeRollout", required=False)
    code_rollout = CodeRollout(
        mode="Observe"
        if _enum(cr, "mode", "spec.codeRollout", ("Apply", "Observe")) == "Observe"
        else "Apply",
        timeout_seconds=_int(cr, "timeoutSeconds", "spec.codeRollout", 900, 30, 86400),
        together=_bool(cr, "together", "spec.codeRollout"),
    )
    workloads = _workloads(spec, code_rollout.mode)
    workload = workloads[0]

    ct = _obj(spec.get("contract"), "spec.contract", required=False)
    approval = _enum(ct, "approval", "spec.contract", ("Manual", "Automatic"))
    contract = Contract(
        approval="Automatic" if approval == "Automatic" else "Manual",
        approved=_bool(ct, "approved", "spec.contract"),
        approved_digest=_digest(ct, "approvedDigest", "spec.contract"),
        verify=_verify_steps(ct.get("verify"), "spec.contract.verify"),
        steps=_phase_steps(ct if ct.get("steps") is not None else None, "spec.contract"),
        database_sessions=_database_sessions(ct.get("databaseSessions")),
    )
    expand = _phase_steps(spec.get("expand"), "spec.expand")
    backfill = _phase_steps(spec.get("backfill"), "spec.backfill")
    planned = plan_operations(spec.get("operations"), parse_dialect(database))
    rollback = _phase_steps(spec.get("rollback"), "spec.rollback")
    for path, phase_steps in (
        ("spec.expand.steps", expand),
        ("spec.backfill.steps", backfill),
        ("spec.contract.verify", contract.verify),
        ("spec.contract.steps", contract.steps),
        ("spec.rollback.steps", rollback),
    ):
        check_hand_written(planned, path, phase_steps.steps)
    if not (expand.steps or backfill.steps or contract.steps.steps or planned.operations):
        raise SpecError(
            "spec", "at least one of operations, expand, backfill, contract must have steps"
        )
    destructive = contract.steps.steps or planned.contract
    if (
        destructive
        and contract.approval == "Automatic"
        and not (contract.verify.steps or planned.verify)
    ):
        raise SpecError(
            "spec.contract",
            "a destructive contract needs a gate besides the rollout: set approval: Manual "
            "or add at least one verify query",
        )
    return MigrationSpec(
        database=secret,
        workload=workload,
        runner=runner,
        expand=expand,
        backfill=backfill,
        code_rollout=code_rollout,
        contract=contract,
        paused=_bool(spec, "paused", "spec"),
        abort=_bool(spec, "abort", "spec"),
        operations=planned,
        rollback=rollback,
        workload_list=workloads,
    )


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def selector_string(raw: Any, path: str) -> str:
    """A `metav1.LabelSelector` (matchLabels, matchExpressions) in the query-string form the API
    accepts; an empty selector is refused (it would match every pod of the namespace)."""
    body = _obj(raw, path)
    labels = _obj(body.get("matchLabels"), f"{path}.matchLabels", required=False)
    parts = [f"{k}={v}" for k, v in sorted(labels.items())]
    for i, expr in enumerate(body.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{i}]"
        item = _obj(expr, where)
        key = str(_str(item, "key", where))
        op = _enum(item, "operator", where, ("In", "NotIn", "Exists", "DoesNotExist"))
        values = [str(v) for v in item.get("values") or []]
        if op in ("In", "NotIn") and not values:
            raise SpecError(f"{where}.values", f"is required for operator {op}")
        parts.append(
            {
                "In": f"{key} in ({','.join(values)})",
                "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    if not parts:
        raise SpecError(
            path,
            "must have matchLabels or matchExpressions (an empty selector "
            "would match every pod of the namespace)",
        )
    return ",".join(parts)


def _workload(raw: Any, path: str, default_mode: RolloutMode, *, shorthand: bool) -> Workload:
    wl = _obj(raw, path)
    kinds = ("Deployment",) if shorthand else WORKLOAD_KINDS
    kind = _enum(wl, "kind", path, kinds)
    mode: RolloutMode = (
        default_mode
        if shorthand or "mode" not in wl
        else ("Observe" if _enum(wl, "mode", path, ("Apply", "Observe")) == "Observe" else "Apply")
    )
    name, selector = "", ""
    if kind == "Pods":
        if "name" in wl:
            raise SpecError(f"{path}.name", "does not apply to kind Pods: set selector")
        selector = selector_string(wl.get("selector"), f"{path}.selector")
        if mode == "Apply" and "mode" in wl:
            raise SpecError(f"{path}.mode", "must be Observe for kind Pods (no template to set)")
        mode = "Observe"
    else:
        if "selector" in wl:
            raise SpecError(f"{path}.selector", f"applies to kind Pods only, not {kind}")
        name = str(_str(wl, "name", path))
        if not _NAME.fullmatch(name):
            raise SpecError(f"{path}.name", f"{name!r} is not a valid {kind} name")
    containers: tuple[str, ...] = ()
    if not shorthand and "containers" in wl:
        if "container" in wl:
            raise SpecError(f"{path}.containers", "set container or containers, not both")
        listed = wl.get("containers")
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(c, str) and c for c in listed)
        ):
            raise SpecError(f"{path}.containers", "must be a non-empty list of container names")
        containers = tuple(listed)
        container = containers[0]
    else:
        container = str(_str(wl, "container", path))
    image = _str(wl, "image", path, required=False)
    if image is None and (mode == "Apply" or not shorthand):
        why = (
            "is required when spec.codeRollout.mode is Apply"
            if shorthand
            else "is required (the image every pod of this workload must run)"
        )
        raise SpecError(f"{path}.image", why)
    return Workload(
        kind=kind,
        name=name,
        container=container,
        image=image,
        containers=containers,
        selector=selector,
        mode=mode,
        path=path,
    )


def _database_sessions(raw: Any) -> DatabaseSessions | None:
    path = "spec.contract.databaseSessions"
    if raw is None:
        return None
    body = _obj(raw, path)
    pattern = str(_str(body, "applicationNamePattern", path))
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SpecError(
            f"{path}.applicationNamePattern", f"is not a regular expression: {exc}"
        ) from None
    sessions = DatabaseSessions(
        application_name_pattern=pattern,
        role=_str(body, "role", path, required=False),
        older_than_rollout_proof=_bool(body, "olderThanRolloutProof", path),
    )
    if sessions.older_than_rollout_proof and sessions.role is None:
        raise SpecError(f"{path}.role", "is required when olderThanRolloutProof is true")
    return sessions


#: At most this many entries in spec.workloads (the CRD's maxItems).
MAX_WORKLOADS = 32


def _workloads(spec: Mapping[str, Any], default_mode: RolloutMode) -> tuple[Workload, ...]:
    """`spec.workloads`, or the one `spec.workload` (exactly one of them is set)."""
    single, many = spec.get("workload"), spec.get("workloads")
    if single is not None and many is not None:
        raise SpecError("spec.workloads", "set spec.workload or spec.workloads, not both")
    if many is None:
        return (_workload(single, "spec.workload", default_mode, shorthand=True),)
    if not isinstance(many, list) or not many or len(many) > MAX_WORKLOADS:
        raise SpecError("spec.workloads", f"must be a list of 1 to {MAX_WORKLOADS} workloads")
    parsed = tuple(
        _workload(item, f"spec.workloads[{i}]", default_mode, shorthand=False)
        for i, item in enumerate(many)
    )
    seen: dict[str, str] = {}
    for entry in parsed:
        if entry.key in seen:
            raise SpecError(entry.path, f"{entry.label} is already listed at {seen[entry.key]}")
        seen[entry.key] = entry.path
    return parsed
