"""Phase Jobs: their deterministic names, their manifests, and what their state means.

One Job per (migration, phase, attempt), named deterministically so that a create repeated after
an operator crash answers 409 instead of starting the phase twice, and labelled so the operator
finds its Jobs again from the API alone. Pure: builds and reads dicts, talks to nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datamigration.core.spec import MigrationSpec

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "datamigration-operator"
LABEL_MIGRATION = "datamigration.dev/migration"
LABEL_MIGRATION_UID = "datamigration.dev/migration-uid"
LABEL_PHASE = "datamigration.dev/phase"
LABEL_ATTEMPT = "datamigration.dev/attempt"

RUNNER_CONTAINER = "runner"
VERIFY_CONTAINER = "verify"
DATABASE_URL_ENV = "DATABASE_URL"
PLAN_ENV = "DATAMIGRATION_PLAN"
RUNNER_UID = 65532  # the distroless "nonroot" user; the image runs as it too

# Exit codes of the runner that carry meaning for the operator (see docs/runner.md).
EXIT_VERIFY_FAILED = 4
EXIT_PAUSED = 75

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


def runner_plan(owner: Owner, spec: MigrationSpec, phase: str) -> dict[str, Any]:
    """The runner's input: the phase's runner steps, and where to report progress.

    `command` steps are not the runner's: they run as the Job's main container.
    """
    return {
        "migration": f"{owner.namespace}/{owner.name}",
        "phase": phase,
        "steps": [dict(step) for step in spec.job_steps(phase).raw if "command" not in step],
        "allowChecksumChange": spec.runner.allow_checksum_change,
        "limits": spec.runner.statement_limits(),
        "report": {"namespace": owner.namespace, "name": owner.name},
    }


_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_job(
    owner: Owner, spec: MigrationSpec, phase: str, attempt: int, settings: JobSettings
) -> dict[str, Any]:
    """The Job manifest for one attempt of one database phase."""
    labels = job_labels(owner, phase, attempt)
    database_url = {
        "name": DATABASE_URL_ENV,
        "valueFrom": {"secretKeyRef": {"name": spec.database.name, "key": spec.database.key}},
    }
    steps = spec.job_steps(phase)
    runner = {
        "name": RUNNER_CONTAINER,
        "image": spec.runner.image or settings.runner_image,
        "command": ["datamigration-runner"],
        "args": ["run", "--lock-timeout", str(spec.runner.lock_timeout_seconds)],
        "env": [
            database_url,
            {"name": PLAN_ENV, "value": json.dumps(runner_plan(owner, spec, phase))},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
    }
    init_containers: list[dict[str, Any]] = []
    command = steps.command_step
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
        if len(steps.raw) > 1:  # contract's verify queries gate the team's own tool
            init_containers.append({**runner, "name": VERIFY_CONTAINER})
    for c in (container, *init_containers):
        c.update(
            {
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": dict(_CONTAINER_SECURITY),
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.runner.service_account_name or settings.runner_service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        **({"initContainers": init_containers} if init_containers else {}),
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.runner.backoff_limit,
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
