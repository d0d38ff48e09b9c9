"""DataMigration objects as the API serves them, in the states the CLI has to show.

Shared by the CLI's rendering, command and end-to-end tests. Times are fixed relative to `NOW`
so ages and durations in the rendered text are exact.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from datamigration.core.digest import contract_digest, short
from datamigration.core.spec import parse_spec

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(
    *, approval: str = "Manual", approved: bool = False, approved_digest: str | None = None
) -> dict[str, Any]:
    body = {
        "database": {"urlFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}}},
        "workload": {
            "kind": "Deployment",
            "name": "shop-api",
            "container": "api",
            "image": "registry.example/shop-api:2.0",
        },
        "expand": {
            "steps": [
                {
                    "name": "add-email-address",
                    "sql": "ALTER TABLE users ADD COLUMN email_address text",
                }
            ]
        },
        "backfill": {
            "steps": [
                {
                    "name": "copy-email",
                    "backfill": {"table": "users", "key": "id", "set": {"email_address": "email"}},
                }
            ]
        },
        "codeRollout": {"mode": "Apply", "timeoutSeconds": 600},
        "contract": {
            "approval": approval,
            "approved": approved,
            "verify": [
                {
                    "name": "all-copied",
                    "expect": 0,
                    "query": "SELECT count(*) FROM users WHERE email_address IS DISTINCT FROM email",
                }
            ],
            "steps": [{"name": "drop-email", "sql": "ALTER TABLE users DROP COLUMN email"}],
        },
    }
    if approved_digest:
        body["contract"]["approvedDigest"] = approved_digest
    return body


#: status.contract as the operator writes it for `spec()`: the digest an approval names.
DIGEST = str(contract_digest(parse_spec(spec()), "registry.example/shop-api:2.0"))
CONTRACT_STATUS = {
    "digest": DIGEST,
    "shortDigest": short(DIGEST),
    "image": "registry.example/shop-api:2.0",
}


def manifest(
    name: str = "rename-email", namespace: str = "shop", **spec_args: Any
) -> dict[str, Any]:
    """What a user applies: no status, no server fields."""
    return {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec(**spec_args),
    }


def served(
    status: dict[str, Any] | None,
    *,
    name: str = "rename-email",
    namespace: str = "shop",
    created: float = 3600,
    paused: bool = False,
    **spec_args: Any,
) -> dict[str, Any]:
    """The object as the API serves it, with `status` (None: the operator has not written one)."""
    obj = manifest(name, namespace, **spec_args)
    obj["metadata"].update(
        uid="0f1e2d3c-aaaa-bbbb-cccc-000000000001",
        generation=1,
        resourceVersion="100",
        creationTimestamp=ago(created),
    )
    if paused:
        obj["spec"]["paused"] = True
    if status is not None:
        obj["status"] = copy.deepcopy(status)
    return obj


def cond(
    type_: str, status: str, reason: str, message: str = "", since: float = 60
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": ago(since),
    }


def rec(state: str, attempts: int = 0, job: str = "", **times: float) -> dict[str, Any]:
    """A phase record; `started`/`finished` are seconds before NOW."""
    out: dict[str, Any] = {"state": state, "attempts": attempts}
    if job:
        out["job"] = job
    if "started" in times:
        out["startedAt"] = ago(times["started"])
    if "finished" in times:
        out["finishedAt"] = ago(times["finished"])
    return out


JOB_EXPAND = "rename-email-expand-1-0f1e2"
JOB_BACKFILL = "rename-email-backfill-1-0f1e2"
JOB_CONTRACT = "rename-email-contract-1-0f1e2"

BACKFILLING: dict[str, Any] = {
    "observedGeneration": 1,
    "contract": CONTRACT_STATUS,
    "phase": "Backfilling",
    "message": f"backfill running (Job {JOB_BACKFILL})",
    "phases": {
        "expand": rec("Succeeded", 1, JOB_EXPAND, started=600, finished=588),
        "backfill": rec("Running", 1, JOB_BACKFILL, started=580),
        "codeRollout": rec("Pending"),
        "contract": rec("Pending"),
    },
    "progress": {
        "phase": "backfill",
        "step": "copy-email",
        "stepIndex": 1,
        "stepCount": 1,
        "rowsDone": 720000,
        "rowsEstimated": 1000000,
        "percent": 72,
        "rowsPerSecond": 12000,
        "batchSize": 5000,
        "summary": "backfill 72% 720000/1000000 rows",
        "updatedAt": ago(3),
    },
    "conditions": [
        cond("Ready", "False", "PhaseRunning", f"backfill running (Job {JOB_BACKFILL})", 600),
        cond("Progressing", "True", "PhaseRunning", f"backfill running (Job {JOB_BACKFILL})", 600),
        cond("Stalled", "False", "PhaseRunning", "", 600),
    ],
}

ROLLOUT_PROVEN: dict[str, Any] = {
    "revision": "2",
    "podTemplateHash": "7d9f8c6b5",
    "image": "registry.example/shop-api:2.0",
    "replicas": 3,
    "updatedReplicas": 3,
    "availableReplicas": 3,
    "oldPods": 0,
    "terminatingPods": 0,
    "verified": True,
    "message": "all 3 pods run registry.example/shop-api:2.0 (revision 2)",
}

AWAITING_MESSAGE = (
    "contract awaits approval: kubectl datamigration approve (or set spec.contract.approved: true)"
)
AWAITING: dict[str, Any] = {
    "observedGeneration": 1,
    "contract": CONTRACT_STATUS,
    "phase": "AwaitingApproval",
    "message": AWAITING_MESSAGE,
    "phases": {
        "expand": rec("Succeeded", 1, JOB_EXPAND, started=900, finished=890),
        "backfill": rec("Succeeded", 1, JOB_BACKFILL, started=880, finished=400),
        "codeRollout": rec("Succeeded", 1, started=390, finished=300),
        "contract": rec("Pending"),
    },
    "progress": {"phase": "contract", "summary": "awaiting approval"},
    "rollout": ROLLOUT_PROVEN,
    "conditions": [
        cond("Ready", "False", "ApprovalRequired", AWAITING_MESSAGE, 290),
        cond("Progressing", "False", "ApprovalRequired", AWAITING_MESSAGE, 290),
        cond("Stalled", "False", "ApprovalRequired", "", 900),
        cond("AwaitingApproval", "True", "ApprovalRequired", AWAITING_MESSAGE, 290),
        cond("RolloutVerified", "True", "RolloutProven", ROLLOUT_PROVEN["message"], 300),
    ],
}

FAILED_MESSAGE = (
    f"Job {JOB_BACKFILL} failed: BackoffLimitExceeded; exit code 1: "
    'ERROR column "email_adress" does not exist'
)
FAILED: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Failed",
    "message": f"backfill: {FAILED_MESSAGE}",
    "phases": {
        "expand": rec("Succeeded", 1, JOB_EXPAND, started=900, finished=890),
        "backfill": {
            **rec("Failed", 1, JOB_BACKFILL, started=880, finished=860),
            "message": FAILED_MESSAGE,
        },
        "codeRollout": rec("Pending"),
        "contract": rec("Pending"),
    },
    "conditions": [
        cond("Ready", "False", "JobFailed", f"backfill: {FAILED_MESSAGE}", 860),
        cond("Progressing", "False", "JobFailed", f"backfill: {FAILED_MESSAGE}", 860),
        cond("Stalled", "True", "JobFailed", f"backfill: {FAILED_MESSAGE}", 860),
    ],
}

SUCCEEDED: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Succeeded",
    "message": "all phases succeeded",
    "phases": {
        "expand": rec("Succeeded", 1, JOB_EXPAND, started=3000, finished=2990),
        "backfill": rec("Succeeded", 1, JOB_BACKFILL, started=2980, finished=2000),
        "codeRollout": rec("Succeeded", 1, started=1990, finished=1900),
        "contract": rec("Succeeded", 1, JOB_CONTRACT, started=1000, finished=995),
    },
    "progress": {"phase": "contract", "summary": "done"},
    "rollout": ROLLOUT_PROVEN,
    "conditions": [
        cond("Ready", "True", "Succeeded", "all phases succeeded", 995),
        cond("Progressing", "False", "Succeeded", "all phases succeeded", 995),
        cond("Stalled", "False", "Succeeded", "", 3000),
    ],
}

CONTRACTING: dict[str, Any] = {
    **copy.deepcopy(AWAITING),
    "phase": "Contracting",
    "message": f"contract running (Job {JOB_CONTRACT})",
    "phases": {
        **copy.deepcopy(AWAITING["phases"]),
        "contract": rec("Running", 1, JOB_CONTRACT, started=20),
    },
}


def event(
    reason: str, message: str, seconds_ago: float, type_: str = "Normal", **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"rename-email.{reason.lower()}", "namespace": "shop"},
        "involvedObject": {
            "kind": "DataMigration",
            "name": "rename-email",
            "namespace": "shop",
            "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "lastTimestamp": ago(seconds_ago),
        "count": 1,
        **extra,
    }
