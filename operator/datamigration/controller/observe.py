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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from datamigration.controller.cache import CachedApi, listed_peers, reader_for
from datamigration.core.decide import ACCEPT_CHANGE_ANNOTATION
from datamigration.core.jobs import (
    LABEL_MIGRATION_UID,
    JobObservation,
    observe_job,
    true_condition,
)
from datamigration.core.observed import Invalid, Observed, Peer, Workload
from datamigration.core.redact import scrub
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.protocol import OperatorApi
from datamigration.k8s.workloads import read_workload

RETRY_ANNOTATION = "datamigration.dev/retry"


PeerSource = Callable[[str, Sequence[tuple[str, str]]], Sequence[Peer]]
#: (namespace, kind, name) -> the workload's pod selector as last seen, if known.
SelectorHints = Callable[[str, str, str], str | None]


def peer_source(reads: OperatorApi) -> PeerSource:
    """How to read the other migrations of a namespace that name given workloads ((kind, name)
    pairs) from `reads`: the watch cache keeps each one's Peer, derived when it last changed,
    under each workload it names; any other source is listed and derived here."""
    if isinstance(reads, CachedApi):
        return reads.list_peers
    return lambda namespace, workloads: listed_peers(reads, namespace, workloads)


def observe(
    api: OperatorApi,
    body: dict[str, Any],
    spec: MigrationSpec | Invalid,
    *,
    peers_of: PeerSource | None = None,
    parallel: Executor | None = None,
    selector_hints: SelectorHints | None = None,
) -> Observed:
    """What `decide` needs, read from `api`; the namespace's other migrations from `peers_of`
    when given (the reconciler passes the watch cache's, see below). With `parallel`, the
    independent reads (the Jobs with their pods, the workloads, the Secret; a workload's
    ReplicaSets and its pods) run side by side, each in its own order: the reconciler passes it
    for the live reads before an action, which sit between a rollout's proof and its contract
    Job. `selector_hints` (kind, namespace and name to the workload's pod selector as the watch
    last showed it) lets a workload's pods be read beside the workload itself
    (`read_workload`'s `expected_selector`)."""
    meta = body["metadata"]
    namespace, generation = meta["namespace"], int(meta.get("generation", 0))
    annotations = meta.get("annotations") or {}

    def read_jobs() -> tuple[list[JobObservation], dict[str, list[Mapping[str, Any]]]]:
        selector = f"{LABEL_MIGRATION_UID}={meta['uid']}"
        listed = None if parallel is None else parallel.submit(api.list_pods, namespace, selector)
        found = api.list_jobs(namespace, selector)
        # Every pod of the migration's Jobs, by Job: a deleted Job's pods included, since
        # they may still run (and commit) until they are gone.
        job_pods: dict[str, list[Mapping[str, Any]]] = {}
        for pod in api.list_pods(namespace, selector) if listed is None else listed.result():
            owner = str((pod["metadata"].get("labels") or {}).get("job-name", ""))
            job_pods.setdefault(owner, []).append(pod)
        jobs = []
        for job in found:
            name = job["metadata"]["name"]
            # A finished Job's pods matter only for a failure's exit code and message.
            done = true_condition(job, "Complete") or true_condition(job, "SuccessCriteriaMet")
            seen = observe_job(job, [] if done else job_pods.setdefault(name, []))
            jobs.append(dataclasses.replace(seen, message=scrub(seen.message)))
        return jobs, job_pods

    def common(jobs: Sequence[JobObservation], job_pods: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "generation": generation,
            "jobs": tuple(jobs),
            "job_pods": job_pods,
            "retry_token": str(annotations.get(RETRY_ANNOTATION, "")),
            "accept_change": str(annotations.get(ACCEPT_CHANGE_ANNOTATION, "")),
            "name": str(meta.get("name", "")),
            "created": str(meta.get("creationTimestamp", "")),
        }

    if isinstance(spec, Invalid):
        return Observed(secret_exists=False, workload=None, **common(*read_jobs()))
    checked = spec

    def read_workloads() -> tuple[Workload | None, ...]:
        return tuple(
            read_workload(
                reader_for(api, w.kind),
                namespace,
                w.kind,
                w.name,
                w.selector,
                parallel=parallel,
                expected_selector=(
                    selector_hints(namespace, w.kind, w.name)
                    if selector_hints is not None and parallel is not None
                    else None
                ),
            )
            for w in checked.workloads
        )

    def read_secret() -> bool | None:
        names = api.secret_key_names(namespace, checked.database.name)
        return None if names is None else checked.database.key in names

    if parallel is not None:
        pending_workloads = parallel.submit(read_workloads)
        pending_secret = parallel.submit(read_secret)
        jobs, job_pods = read_jobs()
        workloads, has_key = pending_workloads.result(), pending_secret.result()
    else:
        jobs, job_pods = read_jobs()
        workloads, has_key = read_workloads(), read_secret()

    # The namespace's migrations that name one of our workloads (in spec.workload or any entry
    # of spec.workloads, which a field selector on spec.workload.name cannot find): only those
    # can conflict (one workload, one owner). A `Pods` selector owns no template: nothing to
    # fight over.
    # From the DataMigrations' watch even when everything else is read live: a peer can only
    # hold this migration back (one workload, one owner: the older one goes first), and every
    # peer created before this migration came earlier in the same ordered watch stream that
    # delivered this migration itself, so the cache cannot miss one; a peer's finishing seen late
    # only makes this migration wait a moment longer. Listing a namespace of a thousand
    # migrations from the API server before each action cost more than everything else.
    # Each migration's Peer is derived once per change of it, in its watch's index, under each
    # workload it names: deriving a thousand of them on every reconcile, then looking at every
    # one of a namespace's thousand, was most of a reconcile's time.
    named = [(w.kind, w.name) for w in checked.workloads if w.kind != "Pods"]
    peers = tuple((peers_of or peer_source(api))(namespace, named))
    return Observed(
        secret_exists=has_key is not None,
        secret_has_key=bool(has_key),
        workload=workloads[0],
        workloads=workloads,
        peers=peers,
        **common(jobs, job_pods),
    )
