"""Reads served from the watches' caches, so that a migration that waits costs the API nothing.

Why: every reconcile used to read the migration, its Jobs and their pods, the workload with its
ReplicaSets and pods, the Secret and the namespace's other migrations from the API server: six
requests or more for a migration that was only waiting, and a shared Deployment's event turned
into thousands of them. kopf already watches every one of those kinds; its indexes
(`@kopf.index`, registered in handlers.py with the `INDEXES` names) keep what the watches saw,
and this module answers the reconciler's reads from them.

What it guarantees:

- Only complete caches answer. kopf fills every index from its initial LIST before it runs any
  other handler; the cache is bound by the first handler call, so until then (a leader's resync
  racing the operator's start) every read goes to the API server.
- A read the caches cannot answer exactly goes to the API server: kinds without a watch (Argo
  Rollouts, CronJobs and their Jobs, ControllerRevisions), a `Pods` selector, a selector form it
  does not know. Nothing is ever guessed.
- The caches decide nothing that acts: the reconciler decides again on live reads before any
  side effect (controller/reconciler.py), and status writes carry the resourceVersion they were
  decided on. A cache only lets the operator find out, for free, that nothing needs doing.
- Thread-safe: kopf changes its indexes on the event loop; the reconciler reads them from
  worker threads, where each reader takes what it needs with one `list(...)` of a store or of
  an index's keys (see `WatchCache.read`), and hops to the loop only if a change met it.
- Small: the Secret index keeps key names, never a value; Jobs keep metadata and status; pods
  lose their volumes; nothing keeps `managedFields` or kubectl's last-applied copy; every object
  is kept as compact JSON (`Packed`, its labels beside it for selectors), each migration's
  `Peer` beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from datamigration.controller.live_writes import LiveWrites
from datamigration.core.jobs import LABEL_MIGRATION_UID
from datamigration.core.observed import Peer, peer_from
from datamigration.k8s.cluster import label_selector, selector_matches
from datamigration.k8s.protocol import JSON, OperatorApi

T = TypeVar("T")
#: A workload as peers are looked up by: (kind, name).
WorkloadRef = tuple[str, str]

#: The kopf index of each cached kind, by the name kopf passes it to handlers under.
INDEXES = (
    "cache_migrations",  # (namespace, name) -> DataMigration, Packed
    "cache_peers",  # (namespace, kind, name) of each workload it names -> Peer
    "cache_jobs",  # (namespace, migration uid) -> Job of a migration
    "cache_job_pods",  # (namespace, migration uid) -> pod of one of the migration's Jobs
    "cache_deployments",  # (namespace, name) -> Deployment
    "cache_replicasets",  # namespace -> ReplicaSet
    "cache_app_pods",  # namespace -> pod with a pod-template-hash (a ReplicaSet's)
    "cache_revision_pods",  # namespace -> pod with a controller-revision-hash (STS, DS)
    "cache_statefulsets",  # (namespace, name) -> StatefulSet
    "cache_daemonsets",  # (namespace, name) -> DaemonSet
    "cache_secrets",  # (namespace, name) -> the Secret's key names
)
HOP_TIMEOUT = 10.0


class NotCached(Exception):
    """The caches cannot answer this read exactly: ask the API server."""


# -- what an index keeps of an object ------------------------------------------------------
#: An annotation nothing here reads, as large as the spec it copies (`kubectl apply` writes it).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def drop_unread_metadata(body: dict[str, Any]) -> None:
    """Remove, in place, what nothing in this operator (or kopf) reads and the API server sends
    with every object: `managedFields` (about half of a DataMigration's JSON) and kubectl's
    last-applied copy (as large as the spec it copies)."""
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        return
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)


def drop_unread(body: dict[str, Any], kind: str) -> None:
    """Remove, in place, what nothing in this operator (or kopf) reads of a watched object of
    this kind: the metadata above (`drop_unread_metadata`); a Job's `spec` (its pod template,
    70% of its JSON: the handlers read a Job's metadata, the caches its metadata and status,
    and a live read fetches the whole Job); a pod's volumes (the rollout gates read its
    containers, owners and status); a Secret's values (the operator reads key names only,
    `k8s.cluster.secret_keys`: the values never stay in its memory, not even while kopf holds
    an event)."""
    drop_unread_metadata(body)
    if kind == "Job":
        body.pop("spec", None)
    elif kind == "Pod":
        spec = body.get("spec")
        if isinstance(spec, dict):
            spec.pop("volumes", None)
    elif kind == "Secret":
        for field in ("data", "stringData"):
            values = body.get(field)
            if isinstance(values, dict):
                body[field] = dict.fromkeys(values, "")


def _meta(body: Mapping[str, Any]) -> JSON:
    meta = dict(body.get("metadata") or {})
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = dict(annotations)
    drop_unread_metadata({"metadata": meta})
    return meta


def slim(body: Mapping[str, Any]) -> JSON:
    """The object as the API serves it, without `managedFields` and kubectl's last-applied copy
    (nothing here reads them)."""
    kept = {k: v for k, v in body.items() if k != "metadata"}
    kept["metadata"] = _meta(body)
    return kept


@dataclass(frozen=True)
class Packed:
    """An object kept as compact JSON, unpacked by the reading thread, never on the event loop.

    Why: decoded, an object's dicts and strings take four to five times its JSON (measured on
    bench/scale.py's objects: a DataMigration about 14 KB against under 3 KB; a Job's pod
    without volumes 20 KB against 4 KB; a Job's metadata and status 5.6 KB against 1.2 KB).
    The caches keep every Job and Job pod of every migration, and every ReplicaSet and pod of
    every workload, for as long as they exist: decoded, a thousand finished migrations' Jobs
    and pods alone were about 80 MB of the operator's memory.

    `labels` stays decoded, as sorted (key, value) pairs, so that a selector is matched
    without unpacking what it does not match."""

    data: bytes
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Packed:
        labels = (body.get("metadata") or {}).get("labels") or {}
        return cls(
            json.dumps(body, separators=(",", ":"), default=str).encode(),
            tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        )

    def unpack(self) -> JSON:
        unpacked: JSON = json.loads(self.data)
        return unpacked


def _unpacked(found: Iterable[Packed]) -> list[JSON]:
    return [packed.unpack() for packed in found]


def slim_job(body: Mapping[str, Any]) -> JSON:
    """A Job as `observe_job` reads it: metadata and status (its pod template stays out)."""
    return {"metadata": _meta(body), "status": dict(body.get("status") or {})}


def slim_pod(body: Mapping[str, Any]) -> JSON:
    """A pod as `drop_unread` leaves it (no volumes), on a copy: kopf's body stays whole."""
    kept = slim(body)
    kept["spec"] = dict(kept.get("spec") or {})
    drop_unread(kept, "Pod")
    return kept


# -- the caches ----------------------------------------------------------------------------
class WatchCache:
    """kopf's indexes, once complete, read safely from any thread."""

    def __init__(self) -> None:
        self._indexes: Mapping[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def bound(self) -> bool:
        return self._indexes is not None

    def bind(self, handler_kwargs: Mapping[str, Any]) -> None:
        """Called from every handler (kopf runs none before the indexes are complete)."""
        if self._indexes is None and all(name in handler_kwargs for name in INDEXES):
            self._loop = asyncio.get_running_loop()
            self._indexes = {name: handler_kwargs[name] for name in INDEXES}

    def read(self, reader: Callable[[Mapping[str, Any]], T]) -> T:
        """Run `reader` over the indexes, in the calling thread.

        kopf changes the indexes on the event loop. A reader looks a store up by its key and
        copies it, or an index's keys, with one `list(...)`: CPython does each of those on a
        built-in dict without letting another thread run (the FAQ's "what kinds of global
        value mutation are thread-safe"), and kopf replaces values, never changes one in
        place. The iterator of a store can still meet a change of its size between its
        creation and the copy (RuntimeError): that reader runs again on the event loop, where
        nothing changes under it.

        Why not always on the loop: every cached reconcile reads six or seven times, and the
        loop is busiest exactly when reconciles are many (a start-up's listing, a rollout's
        events), so each read queued behind kopf's event processing; a rollout's proof
        waited on those hops before its contract Job was decided."""
        indexes, loop = self._indexes, self._loop
        if indexes is None or loop is None:
            raise NotCached("the watch caches are not complete yet")
        if _in_loop(loop):
            return reader(indexes)
        try:
            return reader(indexes)
        except RuntimeError:
            pass  # a store changed while it was copied: read again where nothing changes
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(reader(indexes))
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError as exc:  # the loop is closed: the process is stopping
            raise NotCached(str(exc)) from None
        try:
            return done.result(timeout=HOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise NotCached("the event loop did not answer in time") from None


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # a worker thread
        return False


def _values(indexes: Mapping[str, Any], index: str, key: Any) -> list[Any]:
    store = indexes[index].get(key)
    return list(store) if store is not None else []


def _one(indexes: Mapping[str, Any], index: str, key: Any) -> Any:
    found = _values(indexes, index, key)
    return found[0] if found else None


def _matching(found: Iterable[Packed], selector: str) -> list[Packed]:
    try:
        return [p for p in found if selector_matches(selector, dict(p.labels))]
    except ValueError as exc:
        raise NotCached(str(exc)) from None


def _single_term(selector: str, key: str) -> str | None:
    """The value of `key=value` when that is the whole selector."""
    name, sep, value = selector.partition("=")
    if sep and name == key and value and "," not in value and "=" not in value:
        return value
    return None


#: The workload kinds whose object, ReplicaSets and pods the caches hold; the others (Argo
#: Rollouts, CronJobs, a `Pods` selector) are read from the API server (`reader_for`).
CACHED_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
#: The index that holds each cached kind's objects, by (namespace, name).
WORKLOAD_INDEXES = {
    "Deployment": "cache_deployments",
    "StatefulSet": "cache_statefulsets",
    "DaemonSet": "cache_daemonsets",
}


def listed_peers(api: OperatorApi, namespace: str, workloads: Iterable[WorkloadRef]) -> list[Peer]:
    """The namespace's migrations that name one of `workloads` ((kind, name) pairs), as
    `workload_owner` sees them, listed from `api` and derived (`peer_from`) on the spot: what
    the `cache_peers` index keeps derived in advance."""
    wanted = set(workloads)
    return [
        p
        for p in map(peer_from, api.list_migrations(namespace))
        if p is not None and any((t.kind, t.name) in wanted for t in p.all_targets)
    ]


def reader_for(api: OperatorApi, kind: str) -> OperatorApi:
    """Where to read a workload of this kind from: the caches hold only the pods of
    ReplicaSets and controller revisions, so a selector of any other kind could match pods
    they do not have."""
    if isinstance(api, CachedApi) and kind not in CACHED_KINDS:
        return api.live
    return api


class CachedApi(LiveWrites):
    """The operator's API (`OperatorApi`) with reads from the watch caches where they can
    answer exactly, and from `live` otherwise; every write goes to `live` (`LiveWrites`)."""

    def __init__(self, live: OperatorApi, cache: WatchCache) -> None:
        super().__init__(live)
        self.cache = cache

    # -- reads --------------------------------------------------------------------------
    def get_migration(self, namespace: str, name: str) -> JSON | None:
        try:
            packed: Packed | None = self.cache.read(
                lambda ix: _one(ix, "cache_migrations", (namespace, name))
            )
        except NotCached:
            return self.live.get_migration(namespace, name)
        return packed.unpack() if packed is not None else None

    def list_migrations(
        self, namespace: str | None = None, workload: str | None = None
    ) -> list[JSON]:
        """A namespace's migrations, or every one the operator serves (namespace None)."""

        def find(ix: Mapping[str, Any]) -> list[Packed]:
            return [
                packed
                for key in list(ix["cache_migrations"])
                if namespace is None or key[0] == namespace
                for packed in _values(ix, "cache_migrations", key)
            ]

        try:
            if workload is not None:
                raise NotCached("by workload: the API server's field selector")
            found = self.cache.read(find)
        except NotCached:
            return self.live.list_migrations(namespace, workload)
        return _unpacked(found)

    def list_peers(self, namespace: str, workloads: Iterable[WorkloadRef]) -> list[Peer]:
        """The namespace's migrations that name one of `workloads` ((kind, name) pairs), as
        `workload_owner` sees them (`peer_from`), as the index derived them when each last
        changed, each once; from the API server when not cached."""
        keys = [(namespace, kind, name) for kind, name in workloads]

        def find(ix: Mapping[str, Any]) -> list[Peer]:
            found = {p.name: p for key in keys for p in _values(ix, "cache_peers", key)}
            return list(found.values())

        try:
            return self.cache.read(find)
        except NotCached:
            return listed_peers(self.live, namespace, workloads)

    def list_jobs(self, namespace: str, selector: str) -> list[JSON]:
        uid = _single_term(selector, LABEL_MIGRATION_UID)
        try:
            if uid is None:
                raise NotCached(f"jobs by {selector!r}")
            found = self.cache.read(lambda ix: _values(ix, "cache_jobs", (namespace, uid)))
        except NotCached:
            return self.live.list_jobs(namespace, selector)
        return _unpacked(found)

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        uid = _single_term(selector, LABEL_MIGRATION_UID)

        def find(ix: Mapping[str, Any]) -> list[Packed]:
            if uid is not None:
                return _values(ix, "cache_job_pods", (namespace, uid))
            if not selector:
                raise NotCached("every pod of a namespace")
            pods = dict.fromkeys(  # a pod in both indexes packs to the same bytes: once
                p
                for index in ("cache_app_pods", "cache_revision_pods")
                for p in _values(ix, index, namespace)
            )
            return _matching(pods, selector)

        try:
            found = self.cache.read(find)
        except NotCached:
            return self.live.list_pods(namespace, selector)
        return _unpacked(found)

    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        try:
            found: Packed | None = self.cache.read(
                lambda ix: _one(ix, "cache_deployments", (namespace, name))
            )
        except NotCached:
            return self.live.get_deployment(namespace, name)
        return found.unpack() if found is not None else None

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]:
        try:
            found = self.cache.read(
                lambda ix: _matching(_values(ix, "cache_replicasets", namespace), selector)
            )
        except NotCached:
            return self.live.list_replicasets(namespace, selector)
        return _unpacked(found)

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None:
        index = WORKLOAD_INDEXES.get(kind) if kind != "Deployment" else None  # get_deployment
        try:
            if index is None:
                raise NotCached(f"{kind} has no watch")
            found: Packed | None = self.cache.read(lambda ix: _one(ix, index, (namespace, name)))
        except NotCached:
            return self.live.get_workload(namespace, kind, name)
        return found.unpack() if found is not None else None

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]:
        return self.live.list_controller_revisions(namespace, selector)

    def cached_selector(self, namespace: str, kind: str, name: str) -> str | None:
        """The pod selector of a cached workload as the watch last showed it (None: not
        cached): a hint for the live reads, which check it against the workload they read."""
        index = WORKLOAD_INDEXES.get(kind)
        if index is None:
            return None
        try:
            found: Packed | None = self.cache.read(lambda ix: _one(ix, index, (namespace, name)))
        except NotCached:
            return None
        if found is None:
            return None
        spec = found.unpack().get("spec") or {}
        return label_selector(spec.get("selector") or {}) or None

    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None:
        """From the Secrets' watch: a missing Secret or key too (kopf completes that index
        before any handler runs, and an index whose LIST is refused never completes, so the
        cache never binds and every read goes to the API server). A migration waiting for its
        Secret costs nothing until the Secret's event wakes it."""
        try:
            keys: tuple[str, ...] | None = self.cache.read(
                lambda ix: _one(ix, "cache_secrets", (namespace, name))
            )
        except NotCached:
            return self.live.secret_key_names(namespace, name)
        return keys
