"""The work queue between kopf's watch events and `decide`.

Why a queue and not "reconcile inside the handler": events for one migration arrive from four
watches (the migration, its Jobs, its Deployment, the Deployment's pods), often in bursts. The
queue keeps at most one reconcile per migration running and at most one more pending, so bursts
coalesce and two reconciles of the same migration never interleave. It also owns the two timed
re-runs a level-based controller needs: `requeue_after` from `decide` (deadlines) and retries
with capped exponential backoff after API errors.

The blocking API calls run in worker threads; the event loop only schedules.

Reads and acts are split (controller/cache.py): a reconcile first decides on the watches'
caches (`reads`), which costs the API nothing; only when that decision would do something (a
Job, an image, a deleted Job) does it read everything again from the API server and decide
again, and acts on that second decision alone. A status-only write is decided on the caches and
carries their resourceVersion: a stale cache meets a 409, and the retry reads live. After its
own status write the reconciler decides once more on what it wrote: when nothing more would
change, the watch event of that write (its echo) wakes nothing (`is_own_echo`).

With leader election, only the leader reconciles: a standby's queue drops what it is given
(its watches stay warm, so it has nothing to catch up on but the migrations themselves), and
`resync` enqueues every migration when this process becomes the leader. `act` checks the fence
again before each write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from datamigration.controller import metrics
from datamigration.controller.act import Fence, NotLeader, StatusConflict, act
from datamigration.controller.cache import CachedApi
from datamigration.controller.observe import observe, peer_source
from datamigration.controller.settings import OperatorSettings
from datamigration.controller.wakeups import workload_interest
from datamigration.core.decide import (
    TERMINAL,
    CreateJob,
    Decision,
    DeleteJob,
    Invalid,
    Observed,
    SetWorkloadImage,
    decide,
)
from datamigration.core.diff import merge_patch
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.protocol import OperatorApi
from datamigration.validation import validate

log = logging.getLogger(__name__)
Key = tuple[str, str]
MAX_BACKOFF = 60.0
MAX_CONFLICTS = 5
#: Validated specs kept (`Reconciler._validate`): the migrations that are active at once (each
#: reconciles often); an idle one is reconciled rarely, and validated again then (about 1 ms).
SPEC_CACHE_SIZE = 256
CONFLICT_RETRY_SECONDS = 0.5


@dataclass
class Reconciler:
    api: OperatorApi
    settings: OperatorSettings
    #: May this process write now? (Always, without leader election.)
    fence: Fence = lambda: True
    #: Where a reconcile reads first (the watch caches); None: the API server, always.
    reads: OperatorApi | None = None
    #: Per migration, the resourceVersion of our last status write after which nothing more
    #: was to be done: its watch event needs no reconcile.
    _settled: dict[Key, str] = field(default_factory=dict)
    #: Per migration, the object as our last status write left it, until the cache shows it.
    _written: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    #: Threads for the independent reads of one live observation (`observe(parallel=)`): two
    #: per reconcile that may run at once (threads start on first use).
    _live_reads: concurrent.futures.ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._live_reads = concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * self.settings.workers, thread_name_prefix="live-read"
        )

    def enqueue(self, namespace: str | None, name: str) -> None:
        """Reconcile this migration soon; coalesces with a reconcile already under way."""
        if namespace is None:  # DataMigrations are namespaced; kopf types allow None
            return
        if not self.fence():  # a standby: the leader's resync picks everything up
            return
        key = (namespace, name)
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._worker(key))
        metrics.QUEUE_DEPTH.set(len(self._running))

    async def resync(self) -> int:
        """Enqueue every migration this operator serves (on becoming the leader), from the
        watch cache (no request).

        When the watches have not completed their first listing yet, nothing is enqueued here:
        kopf hands every existing migration to `migration_event` once they have, and this
        process already leads then, so each is enqueued by its own first event. Enqueued now,
        every one would be reconciled from the API server (the caches are not complete), six
        requests or more each, while kopf is still listing: at start-up, most of the time."""
        if isinstance(self.reads, CachedApi) and not self.reads.cache.bound:
            log.info("resync: left to the watches' first events (they are still listing)")
            return 0
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        reads = self.reads or self.api
        count = 0
        for namespace in namespaces:
            items = await asyncio.to_thread(reads.list_migrations, namespace)
            for item in items:
                meta = item.get("metadata") or {}
                self.enqueue(meta.get("namespace"), str(meta.get("name")))
                count += 1
        log.info("resync: %d migration(s) enqueued", count)
        return count

    def is_own_echo(self, namespace: str | None, name: str, resource_version: str) -> bool:
        """Whether a watch event of this migration is our own settled status write coming
        back: nothing changed since we decided, and deciding again would change nothing."""
        key = (namespace or "", name)
        written = self._written.get(key)
        if written is not None and written["metadata"].get("resourceVersion") == resource_version:
            self._written.pop(key, None)  # the cache has caught up with our write
        return self._settled.pop(key, None) == resource_version

    def forget(self, namespace: str | None, name: str) -> None:
        key = (namespace or "", name)
        self._settled.pop(key, None)
        self._written.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        metrics.forget(key)

    def _requeue(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self.enqueue, *key)

    async def _worker(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                try:
                    delay = await asyncio.to_thread(self.reconcile_once, *key)
                except Exception:
                    failures = self._failures.get(key, 0) + 1
                    self._failures[key] = failures
                    delay = min(MAX_BACKOFF, 0.5 * 2**failures)
                    log.exception("%s/%s: reconcile failed; retrying in %.1fs", *key, delay)
                else:
                    self._failures.pop(key, None)
                if delay is not None:
                    self._requeue(key, delay)
                if key not in self._dirty:
                    return
        finally:
            self._running.pop(key, None)
            metrics.QUEUE_DEPTH.set(len(self._running))

    def reconcile_once(self, namespace: str, name: str) -> float | None:
        """Observe, decide, act, for one migration. Returns when to look again, if ever.

        A status write that meets a concurrent write (409) is decided again on a fresh read,
        a few times in a row, then retried later: nothing is ever written over a newer state."""
        started = time.monotonic()
        live = self.reads is None
        try:
            for _ in range(MAX_CONFLICTS):
                try:
                    return self._reconcile(namespace, name, live=live)
                except StatusConflict:
                    live = True  # the cache may be behind: decide again on the API's state
                    log.debug(
                        "%s/%s: status changed concurrently; deciding again", *(namespace, name)
                    )
                except NotLeader as exc:
                    log.info("%s/%s: %s", namespace, name, exc)
                    return None  # the leader's resync takes it from here
            return CONFLICT_RETRY_SECONDS
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, namespace: str, name: str, *, live: bool) -> float | None:
        if not self.fence():
            raise NotLeader("not the leader: did not reconcile")
        key = (namespace, name)
        reads = self.api if live or self.reads is None else self.reads
        body = reads.get_migration(namespace, name)
        if body is None:
            return None
        if not live:
            body = self._newest(key, body)
        status = body.get("status") or {}
        generation = int(body["metadata"].get("generation", 0))
        if status.get("phase") in TERMINAL:
            if status.get("observedGeneration") == generation:
                return None  # finished for good: nothing to observe
            observed = Observed(generation=generation, secret_exists=False, workload=None)
            decision = decide(self._validate(body.get("spec")), status, observed, self.now())
            self._act(key, body, None, decision)
            metrics.record(key, status, decision.status)
            return None
        spec = self._validate(body.get("spec"))
        parallel = self._live_reads if live and self.reads is not None else None
        observed = observe(
            reads, body, spec, peers_of=peer_source(self.reads or self.api), parallel=parallel
        )
        decision = decide(spec, status, observed, self.now())
        log.debug(
            "%s/%s: decided on %s reads: phase %s, %s",
            namespace,
            name,
            "live" if live else "cached",
            decision.status.get("phase"),
            ", ".join(type(a).__name__ for a in decision.actions) or "no action",
        )
        if not live and _has_side_effects(decision):
            # Never act on a cache: read everything from the API server and decide again.
            return self._reconcile(namespace, name, live=True)
        checked = None if isinstance(spec, Invalid) else spec
        written = self._act(key, body, checked, decision)
        if written is not None and not _has_side_effects(decision):
            after = written.get("status") or {}
            again = decide(spec, after, observed, self.now())
            # The echo still wakes the migration when this write changed what its workloads'
            # events wake it for: an event filtered by the index as it was before the write
            # (the last old pod leaving, say) may be the last one there will be.
            if (
                not _has_side_effects(again)
                and not merge_patch(after, again.status)
                and workload_interest(name, status) == workload_interest(name, after)
            ):
                self._settled[key] = str(written["metadata"].get("resourceVersion"))
        metrics.record(key, status, decision.status)
        return decision.requeue_after

    def _act(
        self,
        key: Key,
        body: dict[str, Any],
        spec: MigrationSpec | None,
        decision: Decision,
    ) -> dict[str, Any] | None:
        written = act(self.api, self.settings, body, spec, decision, fence=self.fence)
        if written is not None and self.reads is not None:
            self._written[key] = written
        return written

    @staticmethod
    def _validate(raw_spec: Any) -> MigrationSpec | Invalid:
        """`validate`, once per distinct spec (`_validated`)."""
        return _validated(json.dumps(raw_spec, default=str))

    def _newest(self, key: Key, cached: dict[str, Any]) -> dict[str, Any]:
        """The cached object, or our own later write of it when the cache has not caught up."""
        written = self._written.get(key)
        if written is None:
            return cached
        ours = _version(written)
        theirs = _version(cached)
        if ours is not None and theirs is not None and ours > theirs:
            return written
        self._written.pop(key, None)  # the event loop may have dropped it meanwhile
        return cached

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@functools.lru_cache(maxsize=SPEC_CACHE_SIZE)
def _validated(spec_json: str) -> MigrationSpec | Invalid:
    """With many migrations and frequent events, the lint of every step on every reconcile was
    most of the operator's CPU. Keyed by the spec's JSON in its own key order (the order of a
    backfill's `set` is the order of its SQL, so it is never sorted away); both results are
    immutable; lru_cache because reconciles run in several worker threads at once."""
    return validate(json.loads(spec_json))


def _has_side_effects(decision: Decision) -> bool:
    """Whether acting on the decision changes anything but the migration's status."""
    return any(isinstance(a, (CreateJob, DeleteJob, SetWorkloadImage)) for a in decision.actions)


def _version(body: dict[str, Any]) -> int | None:
    """The resourceVersion as a number, to tell which of two reads of one object is newer
    (etcd's revision; when it is not a number, nothing is assumed and the cache is used)."""
    try:
        return int(str(body["metadata"].get("resourceVersion")))
    except ValueError:
        return None
