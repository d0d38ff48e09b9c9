"""kopf registrations: each handler maps a watch event to the migrations it concerns.

Handlers hold no logic: they find which DataMigration an event is about and enqueue it; the
`Reconciler` observes, decides and acts. Five watches feed it: DataMigrations themselves (a
change to one also wakes the others on the same workload: one workload, one owner), their Jobs
(by owner), their Jobs' pods (a pod that cannot start is seen within seconds), Deployments they
target, and those Deployments' pods (so that the last old pod leaving, terminating ones
included, is seen at once rather than at the next resync).
The other kinds of `spec.workloads` wake their migrations through the `by_kind` index: the
StatefulSets, DaemonSets and CronJobs themselves, the pods of StatefulSets and DaemonSets (by
`controller-revision-hash`), and Job pods and Jobs of CronJobs. Argo Rollouts and `Pods`
selectors have no watch (the Rollout CRD may be absent; a selector's pods are any pods): `decide`
looks at them again every 10 seconds while unproven.
Handlers are `async` because kopf runs sync ones in worker threads, away from the event loop
that owns the work queue.

Reads come from the watches (controller/cache.py): the `cache_*` indexes below keep what each
watch saw, and kopf completes them all before it runs any handler. An event wakes only the
migrations whose decision it can change (`concerned`): a change of a Deployment's spec wakes
every migration naming it that still cares; of its status or metadata, none that is paused (an
annotation bumps a Deployment's generation, so it is not "metadata-only" to the API server); a
pod or ReplicaSet wakes only the migrations that wait on the workload (`ROLLOUT_PHASES`, or
waiting for a stable workload before a database phase); a Secret wakes the migrations that name
it (instead of a timer); the echo of the operator's own status write wakes nothing when there
was nothing more to do (`Reconciler.is_own_echo`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from typing import Any

import kopf

from datamigration.controller import cache as caches
from datamigration.controller import kopf_scale, leadership
from datamigration.controller.cache import CachedApi, WatchCache
from datamigration.controller.events import EventPoster
from datamigration.controller.reconciler import Reconciler, live_read_threads
from datamigration.controller.settings import OperatorSettings
from datamigration.controller.wakeups import concerned, workload_interest
from datamigration.core.jobs import LABEL_MIGRATION, LABEL_MIGRATION_UID
from datamigration.core.observed import peer_from
from datamigration.core.rollout import REVISION_ANNOTATION, owning_deployment
from datamigration.k8s.client import KubeClient, load_api_client
from datamigration.k8s.cluster import ClusterApi, secret_keys

GROUP, VERSION, PLURAL = "datamigration.dev", "v1alpha1", "datamigrations"
#: How long a clean shutdown waits for the queued Events (well inside the pod's grace period).
EVENT_DRAIN_SECONDS = 5.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Our own Events and status only: kopf's per-handler log Events would be noise, and its
    bookkeeping annotations are not needed by event handlers."""
    settings.posting.enabled = False
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Lists in pages: the first listing of 1,000 migrations is not decoded in one piece.
    settings.watching.chunk_size = 200
    settings.persistence.finalizer = "datamigration.dev/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf_scale.NoDiffBase()  # no on.create/update
    operator_settings = OperatorSettings.from_env()
    # Explicit namespaces need no namespace scanning, nor the cluster-wide permission it takes.
    settings.scanning.disabled = bool(operator_settings.namespaces)
    # Reconciles run in the loop's default executor (asyncio.to_thread): size it, and the API
    # client's connection pool with it, to the configured number of reconciles at once.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=operator_settings.workers, thread_name_prefix="reconcile"
        )
    )
    # One connection for each thread that may call the API server: the reconciles and their
    # live reads (Reconciler._live_reads).
    threads = operator_settings.workers + live_read_threads(operator_settings.workers)
    api = ClusterApi(KubeClient(load_api_client(connections=threads)))
    cache = WatchCache()
    memo["cache"] = cache
    reconciler = Reconciler(api=api, settings=operator_settings, reads=CachedApi(api, cache))

    def leads() -> bool:  # late-bound: the leader election set up below replaces the fence
        return reconciler.fence()

    reconciler.events = EventPoster(api, leads)
    memo["reconciler"] = reconciler
    # Leader election: until this process leads, the reconciler's fence keeps it from acting.
    health = memo.get("health")
    memo["elector"] = leadership.start(
        memo["reconciler"], operator_settings, asyncio.get_running_loop(), health
    )
    if health is not None:
        health.started = True
    logging.getLogger(__name__).info(
        "watching %s; runner image %s",
        ", ".join(operator_settings.namespaces) or "all namespaces",
        operator_settings.runner_image,
    )


@kopf.on.cleanup()
async def release_lease(memo: kopf.Memo, **_: Any) -> None:
    """A clean shutdown (SIGTERM, an upgrade) posts the Events still queued, then hands the
    Lease over at once."""
    reconciler = memo.get("reconciler")
    events = getattr(reconciler, "events", None)
    if isinstance(events, EventPoster) and not await asyncio.to_thread(
        events.drain, EVENT_DRAIN_SECONDS
    ):
        logging.getLogger(__name__).warning(
            "shutting down with %d Event(s) not posted", events.pending
        )
    elector = memo.get("elector")
    if elector is not None:
        await asyncio.to_thread(elector.release)


@kopf.index(GROUP, VERSION, PLURAL)
async def by_workload(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    """Which migrations target which Deployment, with their interest in its events
    (`wakeups.workload_interest`: name, still cares, waits on the workload, paused)."""
    workload = spec.get("workload", {}).get("name")
    return {(namespace, workload): workload_interest(name, status)}


@kopf.index(GROUP, VERSION, PLURAL)
async def by_secret(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    """Which migrations read which Secret (spec.database.urlFrom.secretKeyRef.name)."""
    ref = ((spec.get("database") or {}).get("urlFrom") or {}).get("secretKeyRef") or {}
    return {(namespace, ref.get("name")): name} if ref.get("name") else None


# -- the watch caches (controller/cache.py reads them; names in cache.INDEXES) -----------------
@kopf.index(GROUP, VERSION, PLURAL)
async def cache_migrations(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): caches.Packed.of(caches.slim(body))}


@kopf.index(GROUP, VERSION, PLURAL)
async def cache_peers(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Each migration as the others see it (one workload, one owner), derived once per change,
    under every workload it names: a migration's reconcile looks only at the peers that share
    one of its workloads, not at every migration of its namespace."""
    peer = peer_from(body)
    if peer is None:
        return None
    return {(namespace, t.kind, t.name): peer for t in peer.all_targets}


@kopf.index("batch", "v1", "jobs", labels={LABEL_MIGRATION_UID: kopf.PRESENT})
async def cache_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, labels.get(LABEL_MIGRATION_UID)): caches.Packed.of(caches.slim_job(body))}


@kopf.index("", "v1", "pods", labels={LABEL_MIGRATION_UID: kopf.PRESENT})
async def cache_job_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels.get(LABEL_MIGRATION_UID)): caches.Packed.of(caches.slim_pod(body))}


@kopf.index("apps", "v1", "deployments")
async def cache_deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): caches.Packed.of(caches.slim(body))}


@kopf.index("apps", "v1", "replicasets")
async def cache_replicasets(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {namespace: caches.Packed.of(caches.slim(body))}


@kopf.index("", "v1", "pods", labels={"pod-template-hash": kopf.PRESENT})
async def cache_app_pods(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {namespace: caches.Packed.of(caches.slim_pod(body))}


@kopf.index("", "v1", "pods", labels={"controller-revision-hash": kopf.PRESENT})
async def cache_revision_pods(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    return {namespace: caches.Packed.of(caches.slim_pod(body))}


@kopf.index("apps", "v1", "statefulsets")
async def cache_statefulsets(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): caches.Packed.of(caches.slim(body))}


@kopf.index("apps", "v1", "daemonsets")
async def cache_daemonsets(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): caches.Packed.of(caches.slim(body))}


@kopf.index("", "v1", "secrets")
async def cache_secrets(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Key names only: a Secret's values are dropped here, never kept, logged or compared."""
    return {(namespace, name): secret_keys(body)}


def _reconciler(memo: kopf.Memo, kwargs: dict[str, Any] | None = None) -> Reconciler:
    """The reconciler; with a handler's kwargs, also binds the watch caches (complete by now:
    kopf runs no handler before every index has its initial list)."""
    if kwargs is not None:
        cache: WatchCache = memo["cache"]
        cache.bind(kwargs)  # once: later calls find it bound
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


@kopf.on.event(GROUP, VERSION, PLURAL)
async def migration_event(
    *,
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    reconciler = _reconciler(memo, kwargs)
    if event["type"] == "DELETED":
        reconciler.forget(namespace, name)
    elif not reconciler.is_own_echo(
        namespace, name, str(event["object"].get("metadata", {}).get("resourceVersion"))
    ):
        reconciler.enqueue(namespace, name)
    # Another migration of the same workload may be waiting for this one (WorkloadConflict):
    # wake it when this one is gone or finished, not on every change (that would be a storm
    # among many migrations of one workload).
    finished = event["type"] == "DELETED" or status.get("phase") in ("Succeeded", "Aborted")
    if not finished:
        return
    workload = spec.get("workload", {}).get("name")
    for other, active, _rollout in _by_workload(kwargs).get((namespace, workload), []):
        if other != name and active:
            _reconciler(memo).enqueue(namespace, other)


@kopf.on.event("batch", "v1", "jobs", labels={"datamigration.dev/migration-uid": kopf.PRESENT})
async def job_event(namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any) -> None:
    for ref in meta.get("ownerReferences", []):
        if ref.get("kind") == "DataMigration":
            _reconciler(memo, kwargs).enqueue(namespace, ref["name"])


def _by_workload(kwargs: dict[str, Any]) -> kopf.Index[tuple[str | None, str], Any]:
    """The `by_workload` index, which kopf passes by name among the handler's kwargs."""
    index: kopf.Index[tuple[str | None, str], Any] = kwargs["by_workload"]
    return index


@kopf.on.event("", "v1", "pods", labels={LABEL_MIGRATION_UID: kopf.PRESENT})
async def job_pod_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A phase Job's pod changed (started, cannot start, ended): wake its migration."""
    migration = labels.get(LABEL_MIGRATION)
    if migration:
        _reconciler(memo, kwargs).enqueue(namespace, migration)


def deployment_fingerprint(body: kopf.Body | dict[str, Any]) -> str:
    """What of a Deployment a rollout's decision can depend on: its generation, the revision
    annotation (the rollout proof), deletion, and its status. A label change leaves it equal,
    so it wakes no migration: with one Deployment shared by many migrations, such an event would
    otherwise reconcile every one of them. (An annotation does change it: the API server bumps a
    Deployment's generation on any annotation change, a legacy of its rollback annotation.)"""
    meta = body.get("metadata") or {}
    relevant = (
        meta.get("generation"),
        (meta.get("annotations") or {}).get(REVISION_ANNOTATION),
        meta.get("deletionTimestamp"),
        body.get("status"),
    )
    return json.dumps(relevant, sort_keys=True, default=str)


def deployment_spec_fingerprint(body: kopf.Body | dict[str, Any]) -> str:
    """What of a Deployment a migration that does not wait on its rollout can depend on: that
    it exists, its spec (containers, images) and its deletion; not its status nor its metadata.
    An annotation or a status update of a shared Deployment wakes only the rollout's waiters."""
    meta = body.get("metadata") or {}
    return json.dumps(
        (body.get("spec"), meta.get("deletionTimestamp")), sort_keys=True, default=str
    )


#: Per Deployment, the two fingerprints of the last event that woke anything.
_deployment_seen: dict[tuple[str | None, str], tuple[str, str]] = {}


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    key = (namespace, name)
    if event["type"] == "DELETED":
        _deployment_seen.pop(key, None)
        change = "spec"
    else:
        seen = _deployment_seen.get(key)
        now = (deployment_fingerprint(body), deployment_spec_fingerprint(body))
        if seen == now:
            return  # nothing a decision reads has changed
        _deployment_seen[key] = now
        change = "status" if seen is not None and seen[1] == now[1] else "spec"
    for entry in _by_workload(kwargs).get(key, []):
        if concerned(entry, change):
            _reconciler(memo, kwargs).enqueue(namespace, entry[0])
    _wake(kwargs, memo, namespace, "Deployment", name, change=change)  # named in spec.workloads


@kopf.on.event("", "v1", "pods", labels={"pod-template-hash": kopf.PRESENT})
async def pod_event(namespace: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    deployment = owning_deployment(body)
    if deployment is None:
        return
    _wake_rollout(kwargs, memo, namespace, deployment)


def _wake_rollout(
    kwargs: dict[str, Any], memo: kopf.Memo, namespace: str | None, deployment: str
) -> None:
    """Wake the migrations that wait on this Deployment's pods (not the others: with many
    migrations sharing one Deployment, every pod event would reconcile all of them)."""
    for entry in _by_workload(kwargs).get((namespace, deployment), []):
        if concerned(entry, change="pods"):
            _reconciler(memo, kwargs).enqueue(namespace, entry[0])
    _wake(
        kwargs, memo, namespace, "Deployment", deployment, change="pods"
    )  # named in spec.workloads


@kopf.on.event("apps", "v1", "replicasets")
async def replicaset_event(
    namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A ReplicaSet's counts changed (the rollout proof reads them): wake its Deployment's."""
    for ref in meta.get("ownerReferences", []) or []:
        if ref.get("kind") == "Deployment":
            _wake_rollout(kwargs, memo, namespace, str(ref.get("name", "")))


@kopf.on.event("", "v1", "secrets")
async def secret_event(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A Secret appeared, changed or went away: wake the migrations that name it (a migration
    waiting for its Secret has no timer)."""
    index: kopf.Index[tuple[str | None, str], Any] = kwargs["by_secret"]
    for migration in index.get((namespace, name), []):
        _reconciler(memo, kwargs).enqueue(namespace, migration)


# -- the other workload kinds of spec.workloads ---------------------------------------------------
#: The kinds woken by a watch; the others (Rollout, Pods) are looked at again by a timed requeue
#: (core.decide.UNWATCHED_RECHECK_SECONDS): a Rollout watch would need the Argo CRD installed, and
#: a selector's pods are any pods.
WATCHED_KINDS = {"statefulsets": "StatefulSet", "daemonsets": "DaemonSet", "cronjobs": "CronJob"}


@kopf.index(GROUP, VERSION, PLURAL)
async def by_kind(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    """Which migrations name which (kind, name) in spec.workloads, with their interest in its
    events (`wakeups.workload_interest`)."""
    entries = spec.get("workloads") or []
    value = workload_interest(name, status)
    return {
        (namespace, str(e.get("kind")), str(e.get("name"))): value
        for e in entries
        if isinstance(e, dict) and e.get("name")
    }


def _wake(
    kwargs: dict[str, Any],
    memo: kopf.Memo,
    namespace: str | None,
    kind: str,
    name: str,
    *,
    change: str = "spec",
) -> None:
    """Wake the migrations that name this workload in spec.workloads and are `concerned` by
    this kind of change (a workload object's own event: "spec", unless told otherwise)."""
    index: kopf.Index[tuple[str | None, str, str], Any] = kwargs["by_kind"]
    for entry in index.get((namespace, kind, name), []):
        if concerned(entry, change):
            _reconciler(memo, kwargs).enqueue(namespace, entry[0])


@kopf.on.event("apps", "v1", "statefulsets")
async def statefulset_event(
    namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    _wake(kwargs, memo, namespace, "StatefulSet", name)


@kopf.on.event("apps", "v1", "daemonsets")
async def daemonset_event(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    _wake(kwargs, memo, namespace, "DaemonSet", name)


@kopf.on.event("batch", "v1", "cronjobs")
async def cronjob_event(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    _wake(kwargs, memo, namespace, "CronJob", name)


@kopf.on.event("", "v1", "pods", labels={"controller-revision-hash": kopf.PRESENT})
async def revision_pod_event(
    namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A StatefulSet's or DaemonSet's pod changed (the last old one leaving included)."""
    for ref in meta.get("ownerReferences", []) or []:
        if ref.get("kind") in ("StatefulSet", "DaemonSet"):
            _wake(
                kwargs,
                memo,
                namespace,
                str(ref["kind"]),
                str(ref.get("name", "")),
                change="pods",
            )


@kopf.on.event("", "v1", "pods", labels={"job-name": kopf.PRESENT})
async def cronjob_pod_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A Job's pod changed (an old CronJob run's last pod leaving included). A CronJob names its
    Jobs `<cronjob>-<suffix>`: wake the migrations naming any CronJob that prefix could be."""
    parts = str(labels.get("job-name", "")).split("-")
    for end in range(len(parts) - 1, 0, -1):
        _wake(kwargs, memo, namespace, "CronJob", "-".join(parts[:end]), change="pods")


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MIGRATION_UID: kopf.ABSENT})
async def cronjob_job_event(
    namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A CronJob's Job changed (an old one finished): wake the migrations naming the CronJob."""
    for ref in meta.get("ownerReferences", []) or []:
        if ref.get("kind") == "CronJob":
            _wake(kwargs, memo, namespace, "CronJob", str(ref.get("name", "")), change="pods")
