"""Phase Jobs: their deterministic names, their manifests, and what their state means.

One Job per (migration, phase, attempt), named deterministically so that a create repeated after
an operator crash answers 409 instead of starting the phase twice, and labelled so the operator
finds its Jobs again from the API alone. Pure: builds and reads dicts, talks to nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datamigration.core.spec import MigrationSpec, PhaseSteps
from datamigration.core.status import ROLLBACK

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "datamigration-operator"
LABEL_MIGRATION = "datamigration.dev/migration"
LABEL_MIGRATION_UID = "datamigration.dev/migration-uid"
LABEL_PHASE = "datamigration.dev/phase"
LABEL_ATTEMPT = "datamigration.dev/attempt"

RUNNER_CONTAINER = "runner"
VERIFY_CONTAINER = "verify"
GATE_CONTAINER = "rollout-gate"
DATABASE_URL_ENV = "DATABASE_URL"
PLAN_ENV = "DATAMIGRATION_PLAN"
RUNNER_UID = 65532  # the distroless "nonroot" user; the image runs as it too

# Exit codes of the runner that carry meaning for the operator (see docs/runner.md). Each is
# final for its Job (FAILURE_POLICY_EXIT_CODES): running the same pod again cannot change it.
EXIT_VERIFY_FAILED = 4
EXIT_CHECKSUM_CHANGED = 5
EXIT_ROLLOUT_REGRESSED = 8
EXIT_OLD_SESSIONS = 10
EXIT_PAUSED = 75
FAILURE_POLICY_EXIT_CODES = (
    EXIT_VERIFY_FAILED,
    EXIT_CHECKSUM_CHANGED,
    EXIT_ROLLOUT_REGRESSED,
    EXIT_OLD_SESSIONS,
    EXIT_PAUSED,
)

# The API credentials of the runner's containers: what the ServiceAccount admission plugin mounts
# for `automountServiceAccountToken: true`, but mounted only into the containers that run our
# runner. The pod itself sets automount to false, so a `command` step's own container gets no
# token unless the step asks for one (`command.automountServiceAccountToken: true`).
API_TOKEN_VOLUME = "api-token"  # noqa: S105 - a volume name
API_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
_API_TOKEN_SOURCES = [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {
        "downwardAPI": {
            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
        }
    },
]

JobOutcome = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class Owner:
    """The DataMigration a Job belongs to."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class JobSettings:
    """Operator-wide settings for the Jobs it creates."""

    runner_image: str
    runner_service_account: str = "datamigration-runner"
    extra_pod_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobObservation:
    """A phase Job as the operator sees it."""

    name: str
    phase: str
    attempt: int
    outcome: JobOutcome
    exit_code: int | None = None
    message: str = ""


def job_name(owner: Owner, phase: str, attempt: int) -> str:
    """`<migration>-<phase>-<attempt>-<uid prefix>`, at most 63 characters.

    The uid prefix keeps a re-created migration of the same name from meeting its predecessor's
    Jobs; the attempt number gives each retry its own Job.
    """
    suffix = f"-{phase}-{attempt}-{owner.uid[:5]}"
    base = owner.name[: 63 - len(suffix)].rstrip("-.")
    return f"{base}{suffix}"


def job_labels(owner: Owner, phase: str, attempt: int) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MIGRATION: owner.name[:63].rstrip("-."),
        LABEL_MIGRATION_UID: owner.uid,
        LABEL_PHASE: phase,
        LABEL_ATTEMPT: str(attempt),
    }


def phase_steps(spec: MigrationSpec, phase: str) -> PhaseSteps:
    """What the Job of `phase` runs: a database phase's steps, or for `rollback` (the Job an
    abort before contract starts) `spec.rollback_steps()`. A rollback runs destructive undo SQL
    like a contract, but proves no rollout: the old code is the one that stays."""
    return spec.rollback_steps() if phase == ROLLBACK else spec.job_steps(phase)


def runner_plan(
    owner: Owner,
    spec: MigrationSpec,
    phase: str,
    expected_image: str | None = None,
    rollout_proven_at: str | None = None,
) -> dict[str, Any]:
    """The runner's input: the phase's runner steps, and where to report progress.

    `command` steps are not the runner's: they run as the Job's main container. A contract plan
    also carries the rollout gate (`rolloutGate`), which the runner re-checks right before each
    destructive step.
    """
    plan: dict[str, Any] = {
        "migration": f"{owner.namespace}/{owner.name}",
        "phase": phase,
        "steps": [dict(step) for step in phase_steps(spec, phase).raw if "command" not in step],
        "allowChecksumChange": spec.runner.allow_checksum_change,
        "limits": spec.runner.statement_limits(),
        "report": {"namespace": owner.namespace, "name": owner.name},
    }
    if phase == "contract":
        gates = rollout_gates(owner, spec, expected_image)
        plan["rolloutGate"] = gates[0] if len(gates) == 1 else gates
        sessions = spec.contract.database_sessions
        if sessions is not None:
            plan["databaseSessions"] = {
                "applicationNamePattern": sessions.application_name_pattern,
                "role": sessions.role,
                # Sessions of `role` older than this block too (None: that check is off).
                "olderThan": rollout_proven_at if sessions.older_than_rollout_proof else None,
            }
    return plan


def rollout_gates(
    owner: Owner, spec: MigrationSpec, expected_image: str | None = None
) -> list[dict[str, Any]]:
    """What the contract Job re-proves before a destructive step, one entry per container of
    every workload the operator proved: the workload, the container, and the image every pod
    must run (for the first workload `expected_image`, the one the operator's proof used; by
    default, and for every other workload, the spec's image). Null `expectedImage` (the single
    `spec.workload` in Observe mode without an image, when the caller passes none) still requires
    every pod to belong to the newest ReplicaSet and no old ReplicaSet to want replicas. In the
    plan, one gate is an object (`rolloutGate: {...}`), several are a list."""
    gates = []
    for index, entry in enumerate(spec.workloads):
        workload: dict[str, Any] = {"kind": entry.kind, "namespace": owner.namespace}
        if entry.kind == "Pods":
            workload["selector"] = entry.selector
        else:
            workload["name"] = entry.name
        image = (expected_image if index == 0 else None) or entry.image
        for container in entry.all_containers:
            gates.append({"workload": workload, "container": container, "expectedImage": image})
    return gates


_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_job(
    owner: Owner,
    spec: MigrationSpec,
    phase: str,
    attempt: int,
    settings: JobSettings,
    *,
    expected_image: str | None = None,
    rollout_proven_at: str | None = None,
) -> dict[str, Any]:
    """The Job manifest for one attempt of one database phase.

    `expected_image` is the image the operator's rollout proof used (contract only; default
    `spec.workload.image`): the contract Job proves it again before each destructive step.
    `rollout_proven_at` is when the rollout was proven (contract only; for
    `databaseSessions.olderThanRolloutProof`).
    """
    labels = job_labels(owner, phase, attempt)
    database_url = {
        "name": DATABASE_URL_ENV,
        "valueFrom": {"secretKeyRef": {"name": spec.database.name, "key": spec.database.key}},
    }
    steps = phase_steps(spec, phase)
    plan = json.dumps(runner_plan(owner, spec, phase, expected_image, rollout_proven_at))
    runner = {
        "name": RUNNER_CONTAINER,
        "image": spec.runner.image or settings.runner_image,
        "command": ["datamigration-runner"],
        "args": ["run", "--lock-timeout", str(spec.runner.lock_timeout_seconds)],
        "env": [
            database_url,
            {"name": PLAN_ENV, "value": plan},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
    }
    init_containers: list[dict[str, Any]] = []
    command = steps.command_step
    token_mounts = [RUNNER_CONTAINER]  # the containers that run datamigration-runner
    if command is None:
        container: dict[str, Any] = runner
    else:
        container = {
            "name": RUNNER_CONTAINER,
            "image": command["image"],
            "command": list(command["command"]),
            "args": list(command.get("args", [])),
            "env": [
                database_url,
                {"name": "DATAMIGRATION_MIGRATION", "value": f"{owner.namespace}/{owner.name}"},
                {"name": "DATAMIGRATION_PHASE", "value": phase},
                *({"name": e["name"], "value": e["value"]} for e in command.get("env", [])),
            ],
        }
        token_mounts = [VERIFY_CONTAINER, GATE_CONTAINER]
        if command.get("automountServiceAccountToken") is True:  # the team's tool asked for it
            token_mounts.append(RUNNER_CONTAINER)
        if len(steps.raw) > 1:  # contract's verify queries gate the team's own tool
            init_containers.append({**runner, "name": VERIFY_CONTAINER})
        if phase == "contract":
            # The runner cannot interpose between the statements of a team's tool: it proves the
            # rollout once more as the last init container, right before the tool starts.
            init_containers.append(
                {
                    "name": GATE_CONTAINER,
                    "image": runner["image"],
                    "command": ["datamigration-runner"],
                    "args": ["gate"],
                    "env": [
                        {"name": PLAN_ENV, "value": plan},
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                    ],
                }
            )
    for c in (container, *init_containers):
        mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - emptyDir
        if c["name"] in token_mounts:
            mounts.append({"name": API_TOKEN_VOLUME, "mountPath": API_TOKEN_PATH, "readOnly": True})
        c.update(
            {
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": dict(_CONTAINER_SECURITY),
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": mounts,
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.runner.service_account_name or settings.runner_service_account,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        **({"initContainers": init_containers} if init_containers else {}),
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {
                "name": API_TOKEN_VOLUME,
                "projected": {"defaultMode": 0o444, "sources": _API_TOKEN_SOURCES},
            },
        ],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.runner.backoff_limit,
        # The containers that run the runner: the main one, or else the init containers.
        "podFailurePolicy": pod_failure_policy(
            [c["name"] for c in init_containers] if command is not None else [RUNNER_CONTAINER]
        ),
        "template": {
            "metadata": {"labels": {**labels, **settings.extra_pod_labels}},
            "spec": pod_spec,
        },
    }
    if spec.runner.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.runner.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner, phase, attempt),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "datamigration.dev/v1alpha1",
                    "kind": "DataMigration",
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }


def pod_failure_policy(runner_containers: Sequence[str]) -> dict[str, Any]:
    """Exit codes of the runner that no retry can change end the Job at once (`FailJob`): verify
    failed, checksum changed, rollout regressed, paused. Only for the containers that run the
    runner: a team's tool (a `command` step's container) may use these numbers for anything, so
    its exit codes keep the Job's ordinary `backoffLimit`. A pod ended by a disruption (eviction,
    preemption, node drain) is not counted against `backoffLimit`."""
    rules: list[dict[str, Any]] = [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": name,
                "operator": "In",
                "values": sorted(FAILURE_POLICY_EXIT_CODES),
            },
        }
        for name in runner_containers
    ]
    rules.append(
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    )
    return {"rules": rules}


#: The Job controller's message for a Job failed by a FailJob rule (pkg/controller/job):
#: "Container <name> for pod <ns>/<pod> failed with exit code <N> matching FailJob rule at
#: index <i>"
_FAIL_JOB_MESSAGE = re.compile(r"failed with exit code (\d+) matching FailJob rule")


def true_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The Job's condition of this type when it is True (`Complete`, `Failed`, ...)."""
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            found: Mapping[str, Any] = cond
            return found
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The state of the container that ended the pod: a failed init container (verify) first,
    else the main container."""
    status = pod.get("status", {})
    for cs in status.get("initContainerStatuses", []) or []:
        state = cs.get("state", {}).get("terminated")
        if state and int(state.get("exitCode", 0)) != 0:
            found: Mapping[str, Any] = state
            return found
    for cs in status.get("containerStatuses", []) or []:
        if cs.get("name") == RUNNER_CONTAINER and cs.get("state", {}).get("terminated"):
            found = cs["state"]["terminated"]
            return found
    return None


def observe_job(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObservation:
    """A Job's outcome from its conditions, and for a failure the exit code and log tail of its
    most recent pod (what `kubectl logs` would show, as the runner's last line says why)."""
    labels = job.get("metadata", {}).get("labels", {})
    name = str(job.get("metadata", {}).get("name", ""))
    attempt = int(labels.get(LABEL_ATTEMPT, "0") or 0)
    phase = str(labels.get(LABEL_PHASE, ""))
    if true_condition(job, "Complete") or true_condition(job, "SuccessCriteriaMet"):
        return JobObservation(name=name, phase=phase, attempt=attempt, outcome="Succeeded")
    failed = true_condition(job, "Failed")
    if failed is None:
        return JobObservation(name=name, phase=phase, attempt=attempt, outcome="Running")
    terminated = [t for t in (_terminated(p) for p in pods) if t is not None]
    terminated.sort(key=lambda t: str(t.get("finishedAt", "")))
    last = terminated[-1] if terminated else None
    exit_code = int(last["exitCode"]) if last is not None and "exitCode" in last else None
    if exit_code is None:  # the pod is gone; a Job failed by its podFailurePolicy still says
        matched = _FAIL_JOB_MESSAGE.search(str(failed.get("message", "")))
        exit_code = int(matched.group(1)) if matched else None
    tail = str(last.get("message", "")).strip() if last is not None else ""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    message = f"Job {name} failed: {failed.get('reason', 'Failed')}"
    if failed.get("message"):
        message += f" ({failed['message']})"
    if exit_code is not None:
        message += f"; exit code {exit_code}"
    if lines:
        message += f": {lines[-1][:400]}"
    return JobObservation(
        name=name,
        phase=phase,
        attempt=attempt,
        outcome="Failed",
        exit_code=exit_code,
        message=message,
    )
