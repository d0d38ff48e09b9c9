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
- An invalid spec, a missing Secret or key, a missing workload, an edited step of a phase that
  already ran (`SpecChanged`), another migration owning the workload (`WorkloadConflict`):
  nothing runs, and the reason is in status. An invalid spec never overwrites a terminal phase
  and never hides a Job that still runs: its record keeps being updated.
- Approval binds to content: the contract runs only when `spec.contract.approvedDigest` equals
  the digest of what it would run (`core/digest.py`); otherwise `ApprovalStale`.
- A contract Job whose steps have not started is withdrawn when the rollout proof goes away.
- `Paused` means nothing of the migration runs: while a pod of one of its Jobs has not ended
  (the backfill Job the pause deleted included: its process may still commit), the reason is
  `Pausing` and the message names the pod.
- One failure keeps one reason (recorded in the phase record).
- Events are returned only for transitions, never for an unchanged state.

`decide` grows by gates: each gate is a small function that either blocks (and says why in
status) or lets the evaluation go on. Order: terminal, invalid, job outcomes, abort, retry,
spec changes, workload owner, Secret, workload; then the phases in order.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from datamigration.core import gates
from datamigration.core import reasons as R
from datamigration.core.conditions import Condition, find, set_conditions
from datamigration.core.digest import (
    change_token,
    changed_steps,
    contract_digest,
    phase_checksums,
    short,
)
from datamigration.core.jobs import (
    EXIT_OLD_SESSIONS,
    EXIT_PAUSED,
    EXIT_ROLLOUT_REGRESSED,
    EXIT_VERIFY_FAILED,
    LABEL_PHASE,
    JobObservation,
)
from datamigration.core.observed import Invalid, Observed, Peer, Workload
from datamigration.core.pods import not_ended, start_problem, started
from datamigration.core.rollout import RolloutVerdict
from datamigration.core.rules import TERMINAL, contract_started
from datamigration.core.spec import JOB_PHASES, PHASES, MigrationSpec
from datamigration.core.spec import Workload as SpecWorkload
from datamigration.core.status import ROLLBACK
from datamigration.core.workloads import evaluate_workload, template_image

PHASE_LABELS = {
    "expand": "Expanding",
    "backfill": "Backfilling",
    "codeRollout": "RollingOut",
    "contract": "Contracting",
}
#: How long a running backfill may take to stop by itself after spec.paused before the operator
#: deletes its Job (each batch is its own transaction: nothing is lost).
PAUSE_GRACE_SECONDS = 30.0
ACCEPT_CHANGE_ANNOTATION = "datamigration.dev/accept-change"
#: Kinds no watch wakes the operator for (an Argo Rollout: its CRD may be absent; a Pods
#: selector: any pod): while one of them is not proven, look again this often.
UNWATCHED_KINDS = ("Rollout", "Pods")
UNWATCHED_RECHECK_SECONDS = 10.0
#: After the contract Job found sessions of the old code, a new attempt waits this long.
SESSIONS_RETRY_SECONDS = 15.0
__all__ = ["TERMINAL", "Invalid", "Observed", "Peer", "Workload", "decide"]


@dataclass(frozen=True)
class CreateJob:
    phase: str
    attempt: int
    #: This attempt runs an accepted edit: the runner records new checksums of applied steps.
    allow_checksum_change: bool = False
    #: Contract only: the image the operator's rollout proof used, which the contract Job proves
    #: again before each destructive step (in Observe mode without `workload.image`, the image
    #: of the revision observed; it is part of the approved digest).
    expected_image: str | None = None
    #: Contract only: when the rollout was proven (databaseSessions.olderThanRolloutProof).
    rollout_proven_at: str | None = None


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class SetWorkloadImage:
    container: str
    image: str
    #: The workload whose pod template gets the image (empty name: spec.workload's).
    kind: str = "Deployment"
    name: str = ""


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
        """Set the summary phase, message and the standard conditions together.

        `Paused` says that nothing of the migration runs: while a pod of one of its Jobs has not
        ended (the Job deleted by the pause included), the phase stays that Job's and the reason
        is `Pausing`, naming the pod."""
        if phase == "Paused":
            lingering = self._runner_still_running()
            if lingering is not None:
                phase, message = lingering[0], f"{lingering[1]}; then: {message}"
                ready, progressing = ("False", R.PAUSING), None
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

    def _runner_still_running(self) -> tuple[str, str] | None:
        """(phase label, message) for the first pod of the migration's Jobs not ended, if any."""
        for job, pods in sorted(self.observed.job_pods.items()):
            for pod in not_ended(pods):
                meta = pod.get("metadata") or {}
                phase = str((meta.get("labels") or {}).get(LABEL_PHASE, ""))
                label = PHASE_LABELS.get(phase, "RollingBack" if phase == ROLLBACK else "")
                if not label:  # a pod without our phase label: not ours to name, still running
                    label = "Pending" if _keep_phase(self) == "Paused" else _keep_phase(self)
                state = "terminating" if meta.get("deletionTimestamp") else "running"
                return (
                    label,
                    f"pausing: runner pod {meta.get('name', '')} of Job {job} is still {state}; "
                    "it may commit the batch in progress until it exits",
                )
        return None

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
        progress = self.status.get("progress")
        merged = dict(progress) if isinstance(progress, Mapping) else {}
        merged.update(phase=phase, summary=summary)  # the runner's keys (rowsDone...) stay
        self.status["progress"] = merged

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
        stalled = find(self.status["conditions"], R.STALLED) or {}
        kind: Literal["Normal", "Warning"] = (
            "Warning" if stalled.get("status") == "True" else "Normal"
        )
        emitted = [a for a in self.actions if isinstance(a, EmitEvent)]
        # A more specific Event already tells the story, except that a new stall always gets
        # its own Warning (a person must act).
        if any(a.reason == reason for a in emitted) or (emitted and kind == "Normal"):
            return
        self.event(kind, reason, str(self.status.get("message", "")))


def decide(
    spec: MigrationSpec | Invalid,
    status: Mapping[str, Any],
    observed: Observed,
    now: datetime,
) -> Decision:
    """The next status of a DataMigration and the actions that lead there."""
    run = _Run(old=status, observed=observed, now=now)
    if status.get("phase") in TERMINAL:
        return run.decision()  # finished for good: not even an invalid edit changes that
    _adopt_jobs(run)
    _track_jobs(run)
    if isinstance(spec, Invalid):
        message = "; ".join(spec.problems)
        running = [j.name for j in observed.jobs if j.outcome == "Running"]
        if running:
            message += f"; Job {', '.join(running)} keeps running and is still observed"
        run.stall("Invalid", R.INVALID_SPEC, message)
        return run.decision()
    _contract_digest(run, spec)

    if (spec.abort or _rolling_back(run)) and _abort(run, spec):
        return run.decision()
    _apply_retry(run)
    if _spec_changed(run, spec):
        return run.decision()
    for gate in (gates.workload_owner, gates.secret, gates.workload_exists):
        blocked = gate(spec, observed)
        if blocked is not None:
            run.stall(blocked.phase or _keep_phase(run), blocked.reason, blocked.message)
            run.requeue_after = blocked.recheck_after
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


def _rolling_back(run: _Run) -> bool:
    """A rollback once started finishes (or stalls) even if spec.abort is unset again: the
    phases it undoes cannot simply resume."""
    rollback = run.status["phases"].get(ROLLBACK)
    return isinstance(rollback, Mapping) and int(rollback.get("attempts", 0)) > 0


# -- gates: each returns True when it blocked the migration (and said why in status) ------------
def _keep_phase(run: _Run) -> str:
    return str(run.status.get("phase") or "Pending")


def _spec_changed(run: _Run, spec: MigrationSpec) -> bool:
    """An edited step of a phase that ran (or runs) is never skipped: it stalls the migration
    until reverted, or accepted through the `datamigration.dev/accept-change` annotation whose
    value names exactly this version of the phase (`<phase>/<12 hex>`)."""
    blocked: list[str] = []
    for phase in JOB_PHASES:
        rec = run.record(phase)
        recorded = rec.get("steps")
        if not isinstance(recorded, Mapping) or rec.get("state") == "Skipped":
            continue
        current = phase_checksums(spec, phase)
        changed = changed_steps(recorded, current)
        if not changed:
            continue
        token = change_token(phase, current)
        job = _current_job(run, phase)
        running = job is not None and job.outcome == "Running" and rec.get("state") == "Running"
        if run.observed.accept_change == token:
            if running and job is not None:
                run.actions.append(DeleteJob(job.name))
            rec.update(
                state="Pending",
                steps=current,
                acceptChange=True,
                message=f"edit accepted ({ACCEPT_CHANGE_ANNOTATION}={token}): the phase runs again",
            )
            rec.pop("reason", None)
            run.event(
                "Normal",
                R.CHANGE_ACCEPTED,
                f"edit of spec.{phase} step {', '.join(changed)} accepted ({token}); "
                f"phase {phase} runs again",
            )
            continue
        if running and phase == "backfill" and job is not None:
            # Its runner would go on with the old definition: stop it before rows get mixed.
            run.actions.append(DeleteJob(job.name))
            rec.update(state="Pending", message=f"Job {job.name} stopped: its steps were edited")
        when = "succeeded" if rec.get("state") == "Succeeded" else "started"
        name = run.observed.name or "<name>"
        blocked.append(
            f"spec.{phase} step {', '.join(changed)} changed after phase {phase} {when}; "
            "revert the edit, or accept it (the phase runs again): kubectl annotate "
            f"datamigration {name} {ACCEPT_CHANGE_ANNOTATION}={token} --overwrite"
        )
    if not blocked:
        return False
    run.stall(_keep_phase(run), R.SPEC_CHANGED, "; ".join(blocked) + "; nothing runs until then")
    return True


def _approval(run: _Run, spec: MigrationSpec, digest: str | None) -> tuple[str, str] | None:
    """None when the contract is approved for exactly what it would run; else (reason, why)."""
    approved = spec.contract.approved_digest
    if approved is not None and approved != digest:
        return (
            R.APPROVAL_STALE,
            f"the approval is stale: spec.contract.approvedDigest is {short(approved)} but the "
            f"contract (steps, verify queries, target image) is now {short(digest or '')}; "
            f"review it and approve again: kubectl datamigration approve "
            f"(sets spec.contract.approvedDigest: {digest})",
        )
    if spec.contract.approval == "Automatic" or approved is not None:
        return None
    if spec.contract.approved:
        return (
            R.APPROVAL_REQUIRED,
            "contract awaits approval: spec.contract.approved is true but names no digest, so it "
            f"approves nothing in particular; approve {short(digest or '')}: kubectl "
            f"datamigration approve (or set spec.contract.approvedDigest: {digest})",
        )
    return (
        R.APPROVAL_REQUIRED,
        f"contract awaits approval of {short(digest or '')}: kubectl datamigration approve "
        f"(or set spec.contract.approvedDigest: {digest})",
    )


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
            # Whoever records the start announces it (the process that created the Job may
            # have lost the status write to another one).
            run.event(
                "Normal",
                R.PHASE_STARTED,
                f"phase {job.phase} started (attempt {job.attempt}, Job {job.name})",
            )


def _current_job(run: _Run, phase: str) -> JobObservation | None:
    attempts = int(run.record(phase).get("attempts", 0))
    for job in run.observed.jobs:
        if job.phase == phase and job.attempt == attempts and attempts > 0:
            return job
    return None


def _failure_reason(phase: str, exit_code: int | None) -> str:
    if phase == "contract" and exit_code == EXIT_VERIFY_FAILED:
        return R.VERIFY_FAILED
    if phase == "contract" and exit_code == EXIT_ROLLOUT_REGRESSED:
        return R.ROLLOUT_REGRESSED
    return R.JOB_FAILED


def _track_jobs(run: _Run) -> None:
    """Record the outcome of every phase Job that was running, whatever else blocks: a finished
    Job is never lost from status, and each failure gets its reason once, here."""
    for phase in JOB_PHASES:
        rec = run.record(phase)
        job = _current_job(run, phase)
        if job is None or rec.get("state") != "Running" or job.outcome == "Running":
            continue
        rec["job"] = job.name
        rec.pop("pauseRequestedAt", None)
        if job.outcome == "Succeeded":
            rec.update(state="Succeeded", message="")
            rec.pop("reason", None)
            rec["finishedAt"] = _iso(run.now)
            run.event("Normal", R.PHASE_SUCCEEDED, f"phase {phase} succeeded (Job {job.name})")
        elif job.exit_code == EXIT_PAUSED:
            rec.update(state="Pending", message="paused at a checkpoint; resumes on unpause")
        elif phase == "contract" and job.exit_code == EXIT_OLD_SESSIONS:
            # Nothing destructive ran past the check; a new attempt follows once the sessions
            # may have gone (the runner's message lists them: pid, application_name, client,
            # backend start; never a query).
            rec.update(state="Pending", message=job.message, reason=R.OLD_SESSIONS_CONNECTED)
            rec["finishedAt"] = _iso(run.now)
            run.event("Warning", R.OLD_SESSIONS_CONNECTED, f"contract: {job.message}")
        else:
            reason = _failure_reason(phase, job.exit_code)
            rec.update(state="Failed", message=job.message, reason=reason)
            rec["finishedAt"] = _iso(run.now)
            run.event("Warning", reason, f"{phase}: {job.message}")


def _contract_digest(run: _Run, spec: MigrationSpec) -> None:
    """status.contract: the digest an approval must name, or why it is not known yet."""
    if not (spec.contract.steps.steps or spec.contract.verify.steps):
        run.status.pop("contract", None)
        return
    image = _target_image(run, spec)
    digest = contract_digest(spec, _target_images(run, spec))
    if digest is None:
        run.status["contract"] = {
            "message": "the digest is known once the rollout to the new code is observed "
            "(spec.codeRollout.mode Observe without spec.workload.image)"
        }
        return
    run.status["contract"] = {"digest": digest, "shortDigest": short(digest), "image": image or ""}
    if spec.contract.approved_digest:
        run.status["contract"]["approvedDigest"] = spec.contract.approved_digest


def _abort(run: _Run, spec: MigrationSpec) -> bool:
    """Abort stops everything before contract, for good, and takes the database back to its old
    shape when there is something to undo. Once contract has started it cannot be taken back, so
    the abort is refused (and said so) rather than leave a half-done contract.

    Undo: when expand ever ran and the spec has rollback steps (`spec.rollback.steps`, then the
    undo of `spec.operations`), a Job of phase `rollback` runs them; the phase Jobs still running
    are deleted first (a runner still finishing holds the migration's lock, so the rollback's
    runner waits for it). Success records `status.phases.rollback` (the steps undone) and a
    `RolledBack` Event, then `Aborted`; failure stalls with `RollbackFailed` until a retry."""
    if ROLLBACK not in run.status["phases"] and (
        contract_started(run.status) or _current_job(run, "contract") is not None
    ):
        run.flag(R.STALLED, False, R.ABORTED, "abort ignored: contract has already started")
        return False
    for job in run.observed.jobs:
        if job.outcome == "Running" and job.phase != ROLLBACK:
            run.actions.append(DeleteJob(job.name))
    for phase in PHASES:
        if run.record(phase).get("state") == "Running":
            run.record(phase)["state"] = "Failed"
            run.record(phase)["message"] = "aborted"
    undo = spec.rollback_steps()
    if not undo.steps or int(run.record("expand").get("attempts", 0)) == 0:
        why = "no rollback steps" if not undo.steps else "expand never ran"
        run.stall(
            "Aborted",
            R.ABORTED,
            f"aborted by spec.abort; nothing to undo ({why}); contract will never run",
        )
        return True
    _rollback(run, spec, [step.name for step in undo.steps])
    return True


def _rollback(run: _Run, spec: MigrationSpec, names: list[str]) -> None:
    """Advance the rollback Job of an abort (see `_abort`)."""
    rec: dict[str, Any] = run.status["phases"].setdefault(
        ROLLBACK, {"state": "Pending", "attempts": 0}
    )
    for seen in run.observed.jobs:  # adopt a Job created before a crash lost its status write
        if seen.phase == ROLLBACK and seen.attempt > int(rec.get("attempts", 0)):
            rec.update(state="Running", attempts=seen.attempt, job=seen.name)
            rec.setdefault("startedAt", _iso(run.now))
    _retry_rollback(run, rec)
    attempts = int(rec.get("attempts", 0))
    job = next(
        (j for j in run.observed.jobs if j.phase == ROLLBACK and j.attempt == attempts),
        None,
    )
    state = rec.get("state")
    if state == "Running" and job is not None and job.outcome == "Succeeded":
        rec.update(state="Succeeded", job=job.name, undone=names)
        rec["message"] = f"undid {len(names)} step(s): {', '.join(names)}"
        rec["finishedAt"] = _iso(run.now)
        rec.pop("reason", None)
        run.event("Normal", R.ROLLED_BACK, f"rolled back (Job {job.name}): {rec['message']}")
        state = "Succeeded"
    elif state == "Running" and job is not None and job.exit_code == EXIT_PAUSED:
        rec.update(state="Pending", job=job.name, message="paused; resumes on unpause")
        state = "Pending"
    elif state == "Running" and job is not None and job.outcome == "Failed":
        rec.update(state="Failed", job=job.name, message=job.message, reason=R.ROLLBACK_FAILED)
        rec["finishedAt"] = _iso(run.now)
        run.event("Warning", R.ROLLBACK_FAILED, f"rollback: {job.message}")
        state = "Failed"
    if state == "Succeeded":
        run.stall(
            "Aborted",
            R.ABORTED,
            f"aborted by spec.abort and rolled back ({rec.get('message', '')}); "
            "contract will never run",
        )
        return
    if state == "Failed":
        name = run.observed.name or "<name>"
        run.stall(
            "Failed",
            R.ROLLBACK_FAILED,
            f"abort: the rollback failed: {rec.get('message', '')}; fix the cause, then retry it: "
            f"kubectl datamigration retry {name}",
        )
        return
    if state == "Running" and job is not None:
        rec["job"] = job.name
        problem = start_problem(run.observed.job_pods.get(job.name, ()), run.now)
        if problem is not None and problem.recheck_after == 0.0:
            run.stall(
                "RollingBack",
                problem.reason,
                f"rollback: Job {job.name} cannot start: {problem.message}",
            )
            return
        if problem is not None:
            run.requeue_after = problem.recheck_after
        run.set(
            "RollingBack",
            f"aborted by spec.abort; rolling back (Job {job.name}): undoing {', '.join(names)}",
            ready=("False", R.ROLLING_BACK),
        )
        return
    if spec.paused:  # as for every phase: no new Job while paused
        run.set(
            "Paused",
            f"aborted by spec.abort; the rollback (undoing {', '.join(names)}) waits for "
            "spec.paused to be unset",
            ready=("False", R.PAUSED),
            progressing=("False", R.PAUSED),
        )
        return
    # Pending, or Running whose Job is gone (deleted by hand): the same attempt again, so its
    # ledger entries (phase rollback) say which undo steps already ran.
    attempt = attempts if state == "Running" and attempts > 0 else attempts + 1
    run.actions.append(CreateJob(ROLLBACK, attempt))
    rec.update(state="Running", attempts=attempt, message="")
    rec["startedAt"] = _iso(run.now)
    for key in ("finishedAt", "job", "reason", "undone"):
        rec.pop(key, None)
    run.set(
        "RollingBack",
        f"aborted by spec.abort; rollback started (attempt {attempt}): undoing {', '.join(names)}",
        ready=("False", R.ROLLING_BACK),
    )
    run.event("Normal", R.PHASE_STARTED, f"phase rollback started (attempt {attempt})")


def _retry_rollback(run: _Run, rec: dict[str, Any]) -> None:
    """A new `datamigration.dev/retry` token re-arms a failed rollback for one more attempt."""
    token = run.observed.retry_token
    if not token or token == run.old.get("retryToken") or rec.get("state") != "Failed":
        return
    run.status["retryToken"] = token
    rec.update(state="Pending", message="retry requested")
    for key in ("reason", "startedAt", "finishedAt"):
        rec.pop(key, None)
    run.event("Normal", R.RETRIED, "retrying phase rollback")


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
            rec.pop("reason", None)
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


Proof = list[tuple[SpecWorkload, RolloutVerdict]]


def _verdicts(run: _Run, spec: MigrationSpec, with_image: bool) -> Proof:
    """Each workload's verdict, in spec order. `with_image`: the proof (every pod runs the
    target image); otherwise stability only (no rollout in progress)."""
    pairs: Proof = []
    targets = _target_images(run, spec)
    for entry, seen, target in zip(
        spec.workloads, run.observed.workload_list(), targets, strict=False
    ):
        assert seen is not None  # gates.workload_exists ran first
        if not with_image and entry.kind in ("Pods", "CronJob"):
            # Nothing rolls out: a selector's pods, a CronJob's runs (stability before a
            # database phase is about rollouts in progress; the proof still checks every pod).
            pairs.append((entry, RolloutVerdict("Complete", f"{entry.label} has no rollout")))
            continue
        verdicts = [
            evaluate_workload(
                entry.kind,
                seen.deployment,
                seen.replicasets,
                seen.pods,
                container=container,
                expected_image=target if with_image else None,
                selector=entry.selector,
            )
            for container in entry.all_containers
        ]
        pairs.append((entry, next((v for v in verdicts if not v.complete), verdicts[0])))
    return pairs


def _combined(pairs: Proof) -> RolloutVerdict:
    """One verdict for all workloads: the first failed or unproven one (named), else Complete;
    the counts are summed. A single workload's verdict is returned as it is."""
    if len(pairs) == 1:
        return pairs[0][1]
    totals = {
        key: sum(getattr(v, key) for _, v in pairs)
        for key in (
            "replicas",
            "updated_replicas",
            "available_replicas",
            "old_pods",
            "terminating_pods",
        )
    }
    first = pairs[0][1]
    for state in ("Failed", "InProgress"):
        for entry, verdict in pairs:
            if verdict.state == state:
                return dataclasses.replace(
                    first, state=state, message=f"{entry.label}: {verdict.message}", **totals
                )
    names = ", ".join(entry.label for entry, _ in pairs)
    return dataclasses.replace(
        first, state="Complete", message=f"all {len(pairs)} workloads proven ({names})", **totals
    )


def _verdict(run: _Run, spec: MigrationSpec, with_image: bool) -> RolloutVerdict:
    return _combined(_verdicts(run, spec, with_image))


def _record_rollout(run: _Run, pairs: Proof) -> None:
    verdict = _combined(pairs)
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
        "workloads": [
            {
                "kind": entry.kind,
                "name": entry.name or entry.selector,
                "verified": v.complete,
                "message": v.message,
                "image": v.image,
                "replicas": v.replicas,
                "updatedReplicas": v.updated_replicas,
                "availableReplicas": v.available_replicas,
                "oldPods": v.old_pods,
                "terminatingPods": v.terminating_pods,
            }
            for entry, v in pairs
        ],
    }


def _target_images(run: _Run, spec: MigrationSpec) -> list[str | None]:
    """The image that proves the new code, per workload: the named one, or (the single
    `spec.workload` in Observe mode without an image) the template image of the first new
    revision seen after code-rollout began."""
    seen = run.record("codeRollout").get("image")
    return [
        w.image or (str(seen) if seen and i == 0 else None) for i, w in enumerate(spec.workloads)
    ]


def _target_image(run: _Run, spec: MigrationSpec) -> str | None:
    """The first workload's target image (the contract Job's gate takes the others from the
    spec, where they are required)."""
    return _target_images(run, spec)[0]


def _targets_known(run: _Run, spec: MigrationSpec) -> bool:
    return all(_target_images(run, spec))


def _job_phase(run: _Run, spec: MigrationSpec, phase: str) -> bool:
    """Advance one database phase; True when it is done and the next may begin."""
    rec = run.record(phase)
    label = PHASE_LABELS[phase]
    if not spec.job_steps(phase).steps:
        rec["state"] = "Skipped"
        rec["message"] = "no steps"
        return True

    job = _current_job(run, phase)
    if job is not None and rec.get("state") == "Running" and job.outcome == "Running":
        return _running(run, spec, phase, job)
    if rec.get("state") == "Failed":
        reason = str(rec.get("reason") or R.JOB_FAILED)
        run.stall("Failed", reason, f"{phase}: {rec.get('message', 'failed')}")
        return False

    # Nothing runs for this phase: may it start now?
    if spec.paused:
        run.set(
            "Paused",
            f"paused before {phase}" + (f" ({rec['message']})" if rec.get("message") else ""),
            ready=("False", R.PAUSED),
            progressing=("False", R.PAUSED),
        )
        return False
    if phase == "contract" and rec.get("reason") == R.OLD_SESSIONS_CONNECTED:
        since = (run.now - _parse_iso(str(rec.get("finishedAt") or _iso(run.now)))).total_seconds()
        if since < SESSIONS_RETRY_SECONDS:
            run.stall(
                label,
                R.OLD_SESSIONS_CONNECTED,
                f"contract waits for the old code's database sessions to end (checked again in "
                f"{int(SESSIONS_RETRY_SECONDS - since)}s): {rec.get('message', '')}",
            )
            run.requeue_after = max(1.0, SESSIONS_RETRY_SECONDS - since)
            return False
    # A contract withdrawn for a regressed rollout keeps saying so while it waits.
    regressed = rec.get("reason") == R.ROLLOUT_REGRESSED
    waiting = R.ROLLOUT_REGRESSED if regressed else R.WAITING_FOR_WORKLOAD
    stable = _verdict(run, spec, False)
    if not stable.complete:
        what = spec.workload.label if len(spec.workloads) == 1 else "the workloads"
        run.set(
            label if run.started_any() else "Pending",
            f"waiting for {what} to be stable before {phase}: {stable.message}",
            ready=("False", waiting),
        )
        return False
    if phase == "contract":
        pairs = _verdicts(run, spec, True)
        proof = _combined(pairs)
        _record_rollout(run, pairs)
        if not proof.complete:
            run.flag(R.ROLLOUT_VERIFIED, False, R.ROLLOUT_IN_PROGRESS, proof.message)
            run.set(
                label,
                f"contract waits for the rollout proof: {proof.message}",
                ready=("False", waiting),
            )
            _recheck_unwatched(run, pairs)
            return False
        blocked = _approval(run, spec, contract_digest(spec, _target_images(run, spec)))
        if blocked is not None:
            reason, message = blocked
            stale = reason == R.APPROVAL_STALE
            run.set(
                "AwaitingApproval",
                message,
                ready=("False", reason),
                progressing=("False", reason),
                stalled=("True", reason) if stale else None,
                awaiting=True,
            )
            run.progress("contract", "approval stale" if stale else "awaiting approval")
            return False

    # A phase recorded Running whose Job is gone (deleted by hand) gets the same attempt again:
    # same name, same ledger entries, so nothing is counted or run twice.
    attempts = int(rec.get("attempts", 0))
    attempt = attempts if rec.get("state") == "Running" and attempts > 0 else attempts + 1
    accepted = bool(rec.pop("acceptChange", False))
    expected = _target_image(run, spec) if phase == "contract" else None
    proven_at = run.record("codeRollout").get("finishedAt") if phase == "contract" else None
    run.actions.append(
        CreateJob(
            phase,
            attempt,
            allow_checksum_change=accepted,
            expected_image=expected,
            rollout_proven_at=str(proven_at) if proven_at else None,
        )
    )
    rec.update(state="Running", attempts=attempt, message="", steps=phase_checksums(spec, phase))
    rec["startedAt"] = _iso(run.now)
    for key in ("finishedAt", "job", "reason", "pauseRequestedAt"):
        rec.pop(key, None)
    run.set(label, f"{phase} started (attempt {attempt})")
    run.progress(phase, f"{phase} starting")
    run.event("Normal", R.PHASE_STARTED, f"phase {phase} started (attempt {attempt})")
    return False


def _running(run: _Run, spec: MigrationSpec, phase: str, job: JobObservation) -> bool:
    """A phase whose Job runs: watch that its pod can start, enforce a pause, and for contract
    withdraw the Job while its steps have not started if the rollout proof went away."""
    rec = run.record(phase)
    label = PHASE_LABELS[phase]
    rec["job"] = job.name
    pods = run.observed.job_pods.get(job.name, ())
    if phase == "contract" and not _contract_steps_started(run, spec, pods):
        pairs = _verdicts(run, spec, True)
        proof = _combined(pairs)
        if not proof.complete:
            _record_rollout(run, pairs)
            run.actions.append(DeleteJob(job.name))
            message = (
                f"contract Job {job.name} withdrawn before its steps started: the rollout proof "
                f"no longer holds: {proof.message}"
            )
            rec.update(state="Pending", reason=R.ROLLOUT_REGRESSED, message=message)
            run.flag(R.ROLLOUT_VERIFIED, False, R.ROLLOUT_REGRESSED, proof.message)
            run.stall(label, R.ROLLOUT_REGRESSED, message)
            return False
    problem = start_problem(pods, run.now)
    if problem is not None and problem.recheck_after == 0.0:
        run.stall(label, problem.reason, f"{phase}: Job {job.name} cannot start: {problem.message}")
        return False
    if problem is not None:
        run.requeue_after = problem.recheck_after
    if spec.paused and phase == "backfill":
        asked = str(rec.setdefault("pauseRequestedAt", _iso(run.now)))
        waited = (run.now - _parse_iso(asked)).total_seconds()
        if waited >= PAUSE_GRACE_SECONDS:
            run.actions.append(DeleteJob(job.name))
            rec.update(
                state="Pending",
                message=f"the operator stopped Job {job.name} after {int(PAUSE_GRACE_SECONDS)}s "
                "of spec.paused (the runner had not stopped by itself); the last committed batch "
                "is kept",
            )
            rec.pop("pauseRequestedAt", None)
            run.set(
                "Paused",
                f"paused in backfill: {rec['message']}",
                ready=("False", R.PAUSED),
                progressing=("False", R.PAUSED),
            )
            return False
        # Not "Paused" yet: that phase means nothing runs any more.
        run.set(
            label,
            f"pausing: backfill Job {job.name} stops after the batch in progress (else the "
            f"operator stops it {int(PAUSE_GRACE_SECONDS)}s after the pause was seen)",
            ready=("False", R.PAUSING),
        )
        run.requeue_after = max(1.0, PAUSE_GRACE_SECONDS - waited)
        return False
    rec.pop("pauseRequestedAt", None)
    run.set(label, f"{phase} running (Job {job.name})")
    return False


def _contract_steps_started(
    run: _Run, spec: MigrationSpec, pods: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether the contract Job may have begun a destructive step. Not begun: its pod has not
    started, or the runner reports a verify query as its current step. Anything else counts as
    begun (the runner re-checks the proof itself before each step)."""
    if not started(pods):
        return False
    progress = run.old.get("progress")
    if not isinstance(progress, Mapping) or progress.get("phase") != "contract":
        return True
    verify = {step.name for step in spec.contract.verify.steps}
    return str(progress.get("step", "")) not in verify


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
        rec.pop("reason", None)
        # A retry keeps the revision it started from and the image it saw roll out, so a rollout
        # that timed out but completed since is recognised (not another revision awaited).
        rec.setdefault("fromRevision", _verdict(run, spec, False).revision)
        action = "setting" if spec.code_rollout.mode == "Apply" else "waiting for"
        run.event(
            "Normal",
            R.ROLLOUT_STARTED,
            "code rollout started: "
            + "; ".join(
                f"{action} {w.image or 'a new revision'}"
                + (f" in {w.label}" if len(spec.workloads) > 1 else "")
                for w in spec.workloads
            ),
        )

    current = _verdict(run, spec, False)
    _apply_images(run, spec)
    if (
        not spec.workload.image
        and current.revision != rec.get("fromRevision")
        and not rec.get("image")
    ):
        rec["image"] = current.image  # Observe without an image: the new revision's image
    known = _targets_known(run, spec)
    pairs = _verdicts(run, spec, True) if known else _verdicts(run, spec, False)
    verdict = _combined(pairs)
    _record_rollout(run, pairs)

    if verdict.state == "Failed":
        return _rollout_failed(run, R.ROLLOUT_FAILED, verdict.message)
    if verdict.complete and known:
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
    _recheck_unwatched(run, pairs)
    return False


def _recheck_unwatched(run: _Run, pairs: Proof) -> None:
    """A workload no watch reports on is looked at again by a timed requeue while unproven."""
    if any(e.kind in UNWATCHED_KINDS and not v.complete for e, v in pairs):
        current = run.requeue_after
        run.requeue_after = min(current or UNWATCHED_RECHECK_SECONDS, UNWATCHED_RECHECK_SECONDS)


def _apply_images(run: _Run, spec: MigrationSpec) -> None:
    """Apply mode: set each workload's image, in list order, each once the ones before it are
    proven (all at once with `codeRollout.together`). Observe entries are waited for, not set."""
    proven = _verdicts(run, spec, True)
    for index, (entry, verdict) in enumerate(proven):
        seen = run.observed.workload_list()[index]
        if entry.mode == "Apply" and entry.image and seen is not None:
            for container in entry.all_containers:
                if template_image(entry.kind, seen.deployment, container) != entry.image:
                    run.actions.append(
                        SetWorkloadImage(container, entry.image, kind=entry.kind, name=entry.name)
                    )
        if not verdict.complete and not spec.code_rollout.together:
            return  # the next workload waits until this one is proven


def _rollout_failed(run: _Run, reason: str, message: str) -> bool:
    rec = run.record("codeRollout")
    rec.update(state="Failed", message=message, reason=reason)
    rec["finishedAt"] = _iso(run.now)
    run.flag(R.ROLLOUT_VERIFIED, False, reason, message)
    run.stall("Failed", reason, f"codeRollout: {message}; contract will not run")
    run.event("Warning", reason, f"{message}; contract will not run")
    return False
