"""Observe: read from the API everything `decide` needs about one DataMigration.

Always from the API server, never from memory, so that a restarted operator sees exactly what
a running one would: the migration's Jobs by the migration's uid label and each Job's pods (a
pod that cannot start, an exit code), the workload with its ReplicaSets and pods (terminating
ones included), whether the database Secret has the key (never its value), and the other
DataMigrations of the namespace (one workload, one owner). Every message copied from a pod or
a Job is scrubbed here, before `decide` can put it into status or an Event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from datamigration.core.decide import ACCEPT_CHANGE_ANNOTATION
from datamigration.core.jobs import LABEL_MIGRATION_UID, observe_job, true_condition
from datamigration.core.observed import Invalid, Observed, Peer, Workload
from datamigration.core.redact import scrub
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.cluster import label_selector
from datamigration.k8s.protocol import OperatorApi

RETRY_ANNOTATION = "datamigration.dev/retry"


def _peer(obj: Mapping[str, Any]) -> Peer | None:
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    workload = spec.get("workload") if isinstance(spec, Mapping) else None
    if not isinstance(workload, Mapping):
        return None
    image = workload.get("image")
    return Peer(
        name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        workload=str(workload.get("name", "")),
        container=str(workload.get("container", "")),
        image=str(image) if image else None,
        phase=str((obj.get("status") or {}).get("phase") or "Pending"),
    )


def observe(api: OperatorApi, body: dict[str, Any], spec: MigrationSpec | Invalid) -> Observed:
    meta = body["metadata"]
    namespace, generation = meta["namespace"], int(meta.get("generation", 0))
    annotations = meta.get("annotations") or {}

    jobs = []
    job_pods: dict[str, Sequence[Mapping[str, Any]]] = {}
    for job in api.list_jobs(namespace, f"{LABEL_MIGRATION_UID}={meta['uid']}"):
        name = job["metadata"]["name"]
        # A finished Job's pods matter only for a failure's exit code and message.
        done = true_condition(job, "Complete") or true_condition(job, "SuccessCriteriaMet")
        pods = [] if done else api.list_pods(namespace, f"job-name={name}")
        job_pods[name] = pods
        seen = observe_job(job, pods)
        jobs.append(dataclasses.replace(seen, message=scrub(seen.message)))
    common: dict[str, Any] = {
        "generation": generation,
        "jobs": tuple(jobs),
        "job_pods": job_pods,
        "retry_token": str(annotations.get(RETRY_ANNOTATION, "")),
        "accept_change": str(annotations.get(ACCEPT_CHANGE_ANNOTATION, "")),
        "name": str(meta.get("name", "")),
        "created": str(meta.get("creationTimestamp", "")),
    }
    if isinstance(spec, Invalid):
        return Observed(secret_exists=False, workload=None, **common)

    workload = None
    deployment = api.get_deployment(namespace, spec.workload.name)
    if deployment is not None:
        selector = label_selector(deployment.get("spec", {}).get("selector", {}))
        workload = Workload(
            deployment=deployment,
            replicasets=api.list_replicasets(namespace, selector),
            pods=api.list_pods(namespace, selector),
        )
    has_key = api.secret_has_key(namespace, spec.database.name, spec.database.key)
    same_workload = api.list_migrations(namespace, workload=spec.workload.name)
    peers = tuple(p for p in map(_peer, same_workload) if p is not None)
    return Observed(
        secret_exists=has_key is not None,
        secret_has_key=bool(has_key),
        workload=workload,
        peers=peers,
        **common,
    )
