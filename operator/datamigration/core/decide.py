"""`decide(spec, status, observed, now) -> Decision`: everything the operator does, as data.

The operator is level-based: on every event it observes the world (the migration's Jobs, its
workload, its Secret), hands that to `decide`, and carries out the returned actions. `decide`
is pure, so restarts are safe by construction: it recomputes the same answer from the same
observations, and its inputs (Jobs by label, the workload) are read from the API, not memory.

Invariants `decide` keeps, each tested in tests/unit/test_decide.py:

- Phases run in order: expand, backfill, code-rollout, contract. A database phase starts only
  when the workload is stable (no rollout in progress).
- Contract starts only when, in the same observation: code-rollout has succeeded, the rollout is
  still proven (every pod, terminating ones included, runs the newest ReplicaSet and the
  expected image), the migration is approved where approval is Manual, and it is not paused or
  aborted. Its Job runs the verify queries before any destructive step.
- A Job that exists for the current attempt is adopted, never created again; a new attempt
  only starts after a retry request or a pause, so nothing runs twice by accident.
- An invalid spec, a missing Secret or workload: nothing runs, and the reason is in status.
- Events are returned only for transitions, never for an unchanged state.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from datamigration.core import reasons as R
from datamigration.core.conditions import Condition, find, set_conditions
from datamigration.core.jobs import EXIT_PAUSED, EXIT_VERIFY_FAILED, JobObservation
from datamigration.core.rollout import RolloutVerdict, container_names, evaluate_rollout
from datamigration.core.spec import PHASES, MigrationSpec

PHASE_LABELS = {
    "expand": "Expanding",
    "backfill": "Backfilling",
    "codeRollout": "RollingOut",
    "contract": "Contracting",
}
TERMINAL = ("Succeeded", "Aborted")
SECRET_RECHECK_SECONDS = 10.0


@dataclass(frozen=True)
class Invalid:
    """A spec that failed validation: each problem names its field."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class Workload:
    """The workload as listed from the API: the Deployment, its ReplicaSets, its pods."""

    deployment: Mapping[str, Any]
    replicasets: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Observed:
    generation: int
    secret_exists: bool
    workload: Workload | None  # None: the Deployment does not exist
    jobs: Sequence[JobObservation] = ()
    retry_token: str = ""


@dataclass(frozen=True)
class CreateJob:
    phase: str
    attempt: int


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class SetWorkloadImage:
    container: str
    image: str


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = CreateJob | DeleteJob | SetWorkloadImage | EmitEvent


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None


def _iso(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class _Run:
    """One evaluation: the status being built, and what to do."""

    old: Mapping[str, Any]
    observed: Observed
    now: datetime
    status: dict[str, Any] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(dict(self.old))
        self.status.setdefault("phases", {})
        for phase in PHASES:
            self.status["phases"].setdefault(phase, {"state": "Pending", "attempts": 0})
        self.status.setdefault("conditions", [])

    # -- helpers --------------------------------------------------------------------------------
    def record(self, phase: str) -> dict[str, Any]:
        rec: dict[str, Any] = self.status["phases"][phase]
        return rec

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def set(
        self,
        phase: str,
        message: str,
        *,
        ready: tuple[str, str] = ("False", R.PHASE_RUNNING),
        progressing: tuple[str, str] | None = None,
        stalled: tuple[str, str] | None = None,
        awaiting: bool = False,
    ) -> None:
        """Set the summary phase, message and the standard conditions together."""
        self.status["phase"] = phase
        self.status["message"] = message
        r_status, r_reason = ready
        prog = progressing or ("True", r_reason)
        stall = stalled or ("False", r_reason)
        desired = [
            Condition(R.READY, "True" if r_status == "True" else "False", r_reason, message),
            Condition(R.PROGRESSING, "True" if prog[0] == "True" else "False", prog[1], message),
            Condition(R.STALLED, "True" if stall[0] == "True" else "False", stall[1], message),
            Condition(
                R.AWAITING_APPROVAL,
                "True" if awaiting else "False",
                R.APPROVAL_REQUIRED if awaiting else r_reason,
                message if awaiting else "",
            ),
        ]
        self.status["conditions"] = set_conditions(
            self.status["conditions"],
            desired,
            generation=self.observed.generation,
            now=_iso(self.now),
        )

    def stall(self, phase: str, reason: str, message: str) -> None:
        self.set(
            phase,
            message,
            ready=("False", reason),
            progressing=("False", reason),
            stalled=("True", reason),
        )

    def flag(self, type_: str, value: bool, reason: str, message: str = "") -> None:
        self.status["conditions"] = set_conditions(
            self.status["conditions"],
            [Condition(type_, "True" if value else "False", reason, message)],
            generation=self.observed.generation,
            now=_iso(self.now),
        )

    def progress(self, phase: str, summary: str) -> None:
        """Progress the operator itself reports (the runner reports its own Jobs' progress)."""
        self.status["progress"] = {"phase": phase, "summary": summary}

    def started_any(self) -> bool:
        return any(self.record(p).get("state") != "Pending" for p in PHASES)

    def decision(self) -> Decision:
        self.status["observedGeneration"] = self.observed.generation
        self._transition_event()
        return Decision(
            status=self.status, actions=tuple(self.actions), requeue_after=self.requeue_after
        )

    def _transition_event(self) -> None:
        """One Event when the summary state changes, unless a more specific one was emitted."""
        old_ready = find(list(self.old.get("conditions", [])), R.READY) or {}
        new_ready = find(self.status["conditions"], R.READY) or {}
        old_key = (self.old.get("phase"), old_ready.get("reason"))
        new_key = (self.status.get("phase"), new_ready.get("reason"))
        if old_key == new_key:
            return
        reason = str(new_ready.get("reason", ""))
        if any(isinstance(a, EmitEvent) for a in self.actions):
            return
        stalled = find(self.status["conditions"], R.STALLED) or {}
        kind: Literal["Normal", "Warning"] = (
            "Warning" if stalled.get("status") == "True" else "Normal"
        )
        self.event(kind, reason, str(self.status.get("message", "")))


def decide(
    spec: MigrationSpec | Invalid,
    status: Mapping[str, Any],
    observed: Observed,
    now: datetime,
) -> Decision:
    """The next status of a DataMigration and the actions that lead there."""
    run = _Run(old=status, observed=observed, now=now)
    if isinstance(spec, Invalid):
        run.stall("Invalid", R.INVALID_SPEC, "; ".join(spec.problems))
        return run.decision()
    if status.get("phase") in TERMINAL:
        return run.decision()

    _adopt_jobs(run)
    if spec.abort and _abort(run, spec):
        return run.decision()
    _apply_retry(run)

    if not observed.secret_exists:
        ref = spec.database
        run.stall(
            run.status.get("phase") or "Pending",
            R.SECRET_NOT_FOUND,
            f"Secret {ref.name} (spec.database.urlFrom.secretKeyRef.name) not found",
        )
        run.requeue_after = SECRET_RECHECK_SECONDS  # Secrets are not watched: no read access
        return run.decision()
    if observed.workload is None:
        run.stall(
            run.status.get("phase") or "Pending",
            R.WORKLOAD_NOT_FOUND,
            f"Deployment {spec.workload.name} (spec.workload.name) not found",
        )
        return run.decision()
    names = container_names(observed.workload.deployment)
    if spec.workload.container not in names:
        run.stall(
            "Invalid",
            R.INVALID_SPEC,
            f"spec.workload.container: Deployment {spec.workload.name} has no container "
            f"{spec.workload.container!r} (containers: {', '.join(names) or 'none'})",
        )
        return run.decision()

    for phase in PHASES:
        state = run.record(phase).get("state")
        if state in ("Succeeded", "Skipped"):
            continue
        done = _rollout(run, spec) if phase == "codeRollout" else _job_phase(run, spec, phase)
        if not done:
            _ready_for_rollout(run)
            return run.decision()

    _ready_for_rollout(run)
    run.set(
        "Succeeded",
        "all phases succeeded",
        ready=("True", R.SUCCEEDED),
        progressing=("False", R.SUCCEEDED),
    )
    run.progress("contract", "done")
    run.event("Normal", R.SUCCEEDED, "all phases succeeded")
    return run.decision()


def _adopt_jobs(run: _Run) -> None:
    """Trust the API over our own status: a Job of a later attempt than recorded (the operator
    stopped between creating it and writing status) becomes the phase's current Job."""
    for job in run.observed.jobs:
        rec = run.record(job.phase) if job.phase in PHASES else None
        if rec is not None and job.attempt > int(rec.get("attempts", 0)):
            rec["attempts"] = job.attempt
            rec["job"] = job.name
            rec["state"] = "Running"
            rec.setdefault("startedAt", _iso(run.now))


def _current_job(run: _Run, phase: str) -> JobObservation | None:
    attempts = int(run.record(phase).get("attempts", 0))
    for job in run.observed.jobs:
        if job.phase == phase and job.attempt == attempts and attempts > 0:
            return job
    return None


def _abort(run: _Run, spec: MigrationSpec) -> bool:
    """Abort stops everything before contract, for good. Once contract has started it cannot be
    taken back, so the abort is refused (and said so) rather than leave a half-done contract."""
    contract = run.record("contract")
    if contract.get("state") != "Pending" or _current_job(run, "contract") is not None:
        run.flag(R.STALLED, False, R.ABORTED, "abort ignored: contract has already started")
        return False
    for job in run.observed.jobs:
        if job.outcome == "Running":
            run.actions.append(DeleteJob(job.name))
    for phase in PHASES:
        if run.record(phase).get("state") == "Running":
            run.record(phase)["state"] = "Failed"
            run.record(phase)["message"] = "aborted"
    run.stall("Aborted", R.ABORTED, "aborted by spec.abort; contract will never run")
    return True


def _apply_retry(run: _Run) -> None:
    """A new `datamigration.dev/retry` token re-arms the failed phase for one more attempt."""
    token = run.observed.retry_token
    if not token or token == run.old.get("retryToken"):
        return
    run.status["retryToken"] = token
    for phase in PHASES:
        rec = run.record(phase)
        if rec.get("state") == "Failed":
            rec["state"] = "Pending"
            rec["message"] = "retry requested"
            rec.pop("startedAt", None)
            rec.pop("finishedAt", None)
            run.event("Normal", R.RETRIED, f"retrying phase {phase}")
            return


def _ready_for_rollout(run: _Run) -> None:
    done = all(
        run.record(p).get("state") in ("Succeeded", "Skipped") for p in ("expand", "backfill")
    )
    run.flag(
        R.READY_FOR_ROLLOUT,
        done,
        R.PHASE_SUCCEEDED if done else R.PENDING,
        "expand and backfill are done; the new code may roll out" if done else "",
    )


def _verdict(run: _Run, spec: MigrationSpec, expected_image: str | None) -> RolloutVerdict:
    workload = run.observed.workload
    assert workload is not None
    return evaluate_rollout(
        workload.deployment,
        workload.replicasets,
        workload.pods,
        container=spec.workload.container,
        expected_image=expected_image,
    )


def _record_rollout(run: _Run, verdict: RolloutVerdict) -> None:
    run.status["rollout"] = {
        "revision": verdict.revision,
        "podTemplateHash": verdict.pod_template_hash,
        "image": verdict.image,
        "replicas": verdict.replicas,
        "updatedReplicas": verdict.updated_replicas,
        "availableReplicas": verdict.available_replicas,
        "oldPods": verdict.old_pods,
        "terminatingPods": verdict.terminating_pods,
        "verified": verdict.complete,
        "message": verdict.message,
    }


def _target_image(run: _Run, spec: MigrationSpec) -> str | None:
    """The image that proves the new code: the named one, or (Observe without an image) the
    template image of the first new revision seen after code-rollout began."""
    if spec.workload.image:
        return spec.workload.image
    image = run.record("codeRollout").get("image")
    return str(image) if image else None


def _job_phase(run: _Run, spec: MigrationSpec, phase: str) -> bool:
    """Advance one database phase; True when it is done and the next may begin."""
    rec = run.record(phase)
    label = PHASE_LABELS[phase]
    if not spec.job_steps(phase).steps:
        rec["state"] = "Skipped"
        rec["message"] = "no steps"
        return True

    job = _current_job(run, phase)
    if job is not None and rec.get("state") == "Running":
        if job.outcome == "Succeeded":
            rec.update(state="Succeeded", job=job.name, message="")
            rec["finishedAt"] = _iso(run.now)
            run.event("Normal", R.PHASE_SUCCEEDED, f"phase {phase} succeeded (Job {job.name})")
            return True
        if job.outcome == "Running":
            rec["job"] = job.name
            run.set(label, f"{phase} running (Job {job.name})")
            return False
        if job.exit_code == EXIT_PAUSED:
            rec.update(state="Pending", message="paused at a checkpoint; resumes on unpause")
        else:
            reason = (
                R.VERIFY_FAILED
                if phase == "contract" and job.exit_code == EXIT_VERIFY_FAILED
                else R.JOB_FAILED
            )
            rec.update(state="Failed", message=job.message)
            rec["finishedAt"] = _iso(run.now)
            run.stall("Failed", reason, f"{phase}: {job.message}")
            run.event("Warning", reason, f"{phase}: {job.message}")
            return False
    if rec.get("state") == "Failed":
        run.stall("Failed", R.JOB_FAILED, f"{phase}: {rec.get('message', 'failed')}")
        return False

    # Nothing runs for this phase: may it start now?
    if spec.paused:
        run.set(
            "Paused",
            f"paused before {phase}",
            ready=("False", R.PAUSED),
            progressing=("False", R.PAUSED),
        )
        return False
    stable = _verdict(run, spec, None)
    if not stable.complete:
        run.set(
            label if run.started_any() else "Pending",
            f"waiting for Deployment {spec.workload.name} to be stable before {phase}: "
            f"{stable.message}",
            ready=("False", R.WAITING_FOR_WORKLOAD),
        )
        return False
    if phase == "contract":
        proof = _verdict(run, spec, _target_image(run, spec))
        _record_rollout(run, proof)
        if not proof.complete:
            run.flag(R.ROLLOUT_VERIFIED, False, R.ROLLOUT_IN_PROGRESS, proof.message)
            run.set(
                label,
                f"contract waits for the rollout proof: {proof.message}",
                ready=("False", R.WAITING_FOR_WORKLOAD),
            )
            return False
        if spec.contract.approval == "Manual" and not spec.contract.approved:
            message = (
                "contract awaits approval: kubectl datamigration approve "
                "(or set spec.contract.approved: true)"
            )
            run.set(
                "AwaitingApproval",
                message,
                ready=("False", R.APPROVAL_REQUIRED),
                progressing=("False", R.APPROVAL_REQUIRED),
                awaiting=True,
            )
            run.progress("contract", "awaiting approval")
            return False

    # A phase recorded Running whose Job is gone (deleted by hand) gets the same attempt again:
    # same name, same ledger entries, so nothing is counted or run twice.
    attempts = int(rec.get("attempts", 0))
    attempt = attempts if rec.get("state") == "Running" and attempts > 0 else attempts + 1
    run.actions.append(CreateJob(phase, attempt))
    rec.update(state="Running", attempts=attempt, message="")
    rec["startedAt"] = _iso(run.now)
    rec.pop("finishedAt", None)
    rec.pop("job", None)
    run.set(label, f"{phase} started (attempt {attempt})")
    run.progress(phase, f"{phase} starting")
    run.event("Normal", R.PHASE_STARTED, f"phase {phase} started (attempt {attempt})")
    return False


def _rollout(run: _Run, spec: MigrationSpec) -> bool:
    """Advance code-rollout; True once every pod provably runs the new code."""
    rec = run.record("codeRollout")
    if rec.get("state") == "Failed":
        run.stall(
            "Failed", str(rec.get("reason", R.ROLLOUT_FAILED)), f"codeRollout: {rec.get('message')}"
        )
        return False
    if rec.get("state") != "Running":
        if spec.paused:
            run.set(
                "Paused",
                "paused before codeRollout",
                ready=("False", R.PAUSED),
                progressing=("False", R.PAUSED),
            )
            return False
        rec.update(state="Running", attempts=int(rec.get("attempts", 0)) + 1, message="")
        rec["startedAt"] = _iso(run.now)
        rec.pop("finishedAt", None)
        rec.pop("image", None)
        rec["fromRevision"] = _verdict(run, spec, None).revision
        action = "setting" if spec.code_rollout.mode == "Apply" else "waiting for"
        run.event(
            "Normal",
            R.ROLLOUT_STARTED,
            f"code rollout started: {action} {spec.workload.image or 'a new revision'}",
        )

    current = _verdict(run, spec, None)
    if (
        spec.code_rollout.mode == "Apply"
        and spec.workload.image
        and current.image != spec.workload.image
    ):
        run.actions.append(SetWorkloadImage(spec.workload.container, spec.workload.image))
    if (
        not spec.workload.image
        and current.revision != rec.get("fromRevision")
        and not rec.get("image")
    ):
        rec["image"] = current.image  # Observe without an image: the new revision's image
    target = _target_image(run, spec)
    verdict = _verdict(run, spec, target) if target else current
    _record_rollout(run, verdict)

    if verdict.state == "Failed":
        return _rollout_failed(run, R.ROLLOUT_FAILED, verdict.message)
    if verdict.complete and target is not None:
        rec.update(state="Succeeded", message=verdict.message)
        rec["finishedAt"] = _iso(run.now)
        run.flag(R.ROLLOUT_VERIFIED, True, R.ROLLOUT_PROVEN, verdict.message)
        run.event("Normal", R.ROLLOUT_PROVEN, verdict.message)
        return True
    elapsed = (run.now - _parse_iso(str(rec["startedAt"]))).total_seconds()
    timeout = spec.code_rollout.timeout_seconds
    if elapsed >= timeout:
        return _rollout_failed(
            run, R.ROLLOUT_TIMED_OUT, f"rollout not proven after {timeout}s: {verdict.message}"
        )
    run.flag(R.ROLLOUT_VERIFIED, False, R.ROLLOUT_IN_PROGRESS, verdict.message)
    run.set(
        "RollingOut", f"code rollout: {verdict.message}", ready=("False", R.ROLLOUT_IN_PROGRESS)
    )
    run.progress(
        "codeRollout",
        f"rollout {verdict.updated_replicas}/{verdict.replicas} updated, "
        f"{verdict.available_replicas} available, {verdict.old_pods} old pods",
    )
    run.requeue_after = max(1.0, timeout - elapsed)
    return False


def _rollout_failed(run: _Run, reason: str, message: str) -> bool:
    rec = run.record("codeRollout")
    rec.update(state="Failed", message=message, reason=reason)
    rec["finishedAt"] = _iso(run.now)
    run.flag(R.ROLLOUT_VERIFIED, False, reason, message)
    run.stall("Failed", reason, f"codeRollout: {message}; contract will not run")
    run.event("Warning", reason, f"{message}; contract will not run")
    return False
