"""Observe: read everything `decide` needs about one DataMigration.

From the API server or from the watches' caches (controller/cache.py says which reads they can
answer exactly; the reconciler acts only on a decision taken on live reads): the migration's
Jobs by the migration's uid label and each Job's pods (a pod that cannot start, an exit code),
the workload with its ReplicaSets and pods (terminating ones included), whether the database
Secret has the key (never its value), and the other DataMigrations of the namespace (one
workload, one owner). Every message copied from a pod or a Job is scrubbed here, before
`decide` can put it into status or an Event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from datamigration.controller.cache import reader_for
from datamigration.core.decide import ACCEPT_CHANGE_ANNOTATION
from datamigration.core.jobs import LABEL_MIGRATION_UID, observe_job, true_condition
from datamigration.core.observed import Invalid, Observed, Peer, Target
from datamigration.core.redact import scrub
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.protocol import OperatorApi
from datamigration.k8s.workloads import read_workload

RETRY_ANNOTATION = "datamigration.dev/retry"


def _targets(spec: Mapping[str, Any]) -> tuple[Target, ...]:
    """What another migration sets or waits for, read leniently from its raw spec (it may be
    invalid; then it names nothing)."""
    single, many = spec.get("workload"), spec.get("workloads")
    entries = [single] if isinstance(single, Mapping) else many if isinstance(many, list) else []
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("kind") == "Pods":
            continue
        containers = entry.get("containers")
        names = containers if isinstance(containers, list) else [entry.get("container", "")]
        image = entry.get("image")
        for container in names:
            found.append(
                Target(
                    str(entry.get("kind") or "Deployment"),
                    str(entry.get("name", "")),
                    str(container),
                    str(image) if image else None,
                )
            )
    return tuple(found)


def _peer(obj: Mapping[str, Any]) -> Peer | None:
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    targets = _targets(spec) if isinstance(spec, Mapping) else ()
    if not targets:
        return None
    first = targets[0]
    return Peer(
        name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        workload=first.name,
        container=first.container,
        image=first.image,
        phase=str((obj.get("status") or {}).get("phase") or "Pending"),
        targets=targets,
    )


def observe(
    api: OperatorApi,
    body: dict[str, Any],
    spec: MigrationSpec | Invalid,
    peer_reads: OperatorApi | None = None,
) -> Observed:
    """What `decide` needs, read from `api`; the namespace's other migrations from
    `peer_reads` when given (the reconciler passes the watch cache there, see below)."""
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

    workloads = tuple(
        read_workload(reader_for(api, w.kind), namespace, w.kind, w.name, w.selector)
        for w in spec.workloads
    )
    has_key = api.secret_has_key(namespace, spec.database.name, spec.database.key)
    # Every migration of the namespace: a peer may name our workloads in spec.workloads, which
    # a field selector on spec.workload.name cannot find.
    # From the DataMigrations' watch even when everything else is read live: a peer can only
    # hold this migration back (one workload, one owner: the older one goes first), and every
    # peer created before this migration came earlier in the same ordered watch stream that
    # delivered this migration itself, so the cache cannot miss one; a peer's finishing seen late
    # only makes this migration wait a moment longer. Listing a namespace of a thousand
    # migrations from the API server before each action cost more than everything else.
    peers = tuple(
        p for p in map(_peer, (peer_reads or api).list_migrations(namespace)) if p is not None
    )
    return Observed(
        secret_exists=has_key is not None,
        secret_has_key=bool(has_key),
        workload=workloads[0],
        workloads=workloads,
        peers=peers,
        **common,
    )
