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

The live reads are shared between reconciles that need the same object at once
(controller/shared_reads.py), and begin beside the migration's own re-read (`_read_alongside`).
A status change that only reports progress (`core.status.progress_only`) waits up to
`PROGRESS_WRITE_SECONDS` after this migration's last write.

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

from datamigration.controller import gcpolicy, metrics
from datamigration.controller.act import (
    Fence,
    NotLeader,
    StatusConflict,
    act,
    manages_runner_identity,
)
from datamigration.controller.cache import CachedApi
from datamigration.controller.observe import SelectorHints, observe, peer_source
from datamigration.controller.settings import OperatorSettings
from datamigration.controller.shared_reads import SharedReads
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
from datamigration.core.status import progress_only
from datamigration.k8s.protocol import EventSink, OperatorApi
from datamigration.validation import validate

log = logging.getLogger(__name__)
Key = tuple[str, str]
MAX_BACKOFF = 60.0
MAX_CONFLICTS = 5
#: Validated specs kept (`Reconciler._validate`): the migrations that are active at once (each
#: reconciles often); an idle one is reconciled rarely, and validated again then (about 1 ms).
SPEC_CACHE_SIZE = 256
CONFLICT_RETRY_SECONDS = 0.5
#: A status change that only reports progress (core.status.progress_only: a rollout's pod
#: counts, messages) is written at most this often per migration; it waits for the next one.
PROGRESS_WRITE_SECONDS = 2.0


def live_read_threads(workers: int) -> int:
    """More than `workers` (see `Reconciler._live_reads`)."""
    return workers + max(1, workers // 2)


@dataclass
class Reconciler:
    api: OperatorApi
    settings: OperatorSettings
    #: May this process write now? (Always, without leader election.)
    fence: Fence = lambda: True
    #: Where a reconcile reads first (the watch caches); None: the API server, always.
    reads: OperatorApi | None = None
    #: Where its Events go (the operator's `events.EventPoster`); None: posted by `api` inside
    #: the reconcile.
    events: EventSink | None = None
    #: Per migration, the resourceVersion of our last status write after which nothing more
    #: was to be done: its watch event needs no reconcile.
    _settled: dict[Key, str] = field(default_factory=dict)
    #: Per migration, the object as our last status write left it, until the cache shows it.
    _written: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    #: Per migration, when this process last wrote its status (time.monotonic).
    _last_write: dict[Key, float] = field(default_factory=dict)
    #: Threads for the independent reads of one live observation (`observe(parallel=)`: the
    #: workloads, a workload's ReplicaSets beside its pods, the Secret) and the migration's own
    #: read beside them (`_read_alongside`); threads start on first use and stay. Only the
    #: workloads' task waits on another (its ReplicaSets), at most one per reconcile, so with
    #: more threads than reconciles the pool never fills with tasks that wait. Half as many
    #: again, not four per reconcile: the API server on the other end answers no faster for
    #: more at once, and a thread stays for the life of the process (bench/scale.py stage 2,
    #: after twenty probes' rollouts: 85 threads in the process, 134 with four per reconcile).
    _live_reads: concurrent.futures.ThreadPoolExecutor = field(init=False)
    #: The live reads of an observation, shared by reconciles that need the same object at
    #: once (every migration on one Deployment, proven by one rollout): controller/shared_reads.
    _shared: SharedReads = field(init=False)

    def __post_init__(self) -> None:
        self._shared = SharedReads(self.api)
        self._live_reads = concurrent.futures.ThreadPoolExecutor(
            max_workers=live_read_threads(self.settings.workers), thread_name_prefix="live-read"
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
        self._last_write.pop(key, None)
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
            if not self._running and isinstance(self.reads, CachedApi) and self.reads.cache.bound:
                gcpolicy.after_start()

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

    def _reconcile(
        self, namespace: str, name: str, *, live: bool, decided_on: dict[str, Any] | None = None
    ) -> float | None:
        """`decided_on`: the cached migration a decision to act was taken on (the live
        observation starts from it while the migration itself is read again)."""
        if not self.fence():
            raise NotLeader("not the leader: did not reconcile")
        key = (namespace, name)
        reads = self.api if live or self.reads is None else self.reads
        ahead: Observed | None = None
        if decided_on is not None:
            body, ahead = self._read_alongside(namespace, name, decided_on)
        else:
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
        observed = (
            ahead
            if ahead is not None
            else observe(
                self._shared if live else reads,
                body,
                spec,
                peers_of=peer_source(self.reads or self.api),
                parallel=self._live_reads if live and self.reads is not None else None,
                selector_hints=self._selector_hints(),
            )
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
            self._prepare_runner_identity(namespace, spec, decision)
            return self._reconcile(namespace, name, live=True, decided_on=body)
        if not decision.actions and progress_only(status, decision.status):
            wait = self._last_write.get(key, -PROGRESS_WRITE_SECONDS) + PROGRESS_WRITE_SECONDS
            wait -= time.monotonic()
            if wait > 0:  # written with the next change, or when the interval is over
                return min(wait, decision.requeue_after or wait)
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

    def _prepare_runner_identity(
        self, namespace: str, spec: MigrationSpec | Invalid, decision: Decision
    ) -> None:
        """A Job is likely: make sure of the runner's identity while the live reads run, not
        after them. It is the same idempotent write `act` makes before any Job (and waits for
        here, or finds done), harmless if the live decision creates nothing: a rollout that
        releases a contract long after the last Job of its namespace no longer pays its two
        round trips between the proof and the Job."""
        if (
            isinstance(spec, Invalid)
            or not any(isinstance(a, CreateJob) for a in decision.actions)
            or not manages_runner_identity(self.settings, spec)
            or not self.fence()
        ):
            return
        self._live_reads.submit(
            self.api.ensure_runner_identity,
            namespace,
            self.settings.runner_service_account,
            self.settings.runner_cluster_role,
        )

    def _selector_hints(self) -> SelectorHints | None:
        """The watch caches' workload selectors, for the live reads (`observe`)."""
        return self.reads.cached_selector if isinstance(self.reads, CachedApi) else None

    def _read_alongside(
        self, namespace: str, name: str, decided_on: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, Observed | None]:
        """The migration read from the API server while everything else is, from the cached
        migration the decision to act was taken on: the migration's own read was one more
        round trip between a rollout's proof and the contract Job. Every read still starts
        after the decision. The observation is kept only when the migration read has the same
        inputs to it (uid, generation, so the spec, and annotations); otherwise (None) the
        caller observes again from what it read."""
        pending = self._live_reads.submit(self.api.get_migration, namespace, name)
        observed = observe(
            self._shared,
            decided_on,
            self._validate(decided_on.get("spec")),
            peers_of=peer_source(self.reads or self.api),
            parallel=self._live_reads,
            selector_hints=self._selector_hints(),
        )
        body = pending.result()
        if body is None or _observation_inputs(body) != _observation_inputs(decided_on):
            return body, None
        return body, observed

    def _act(
        self,
        key: Key,
        body: dict[str, Any],
        spec: MigrationSpec | None,
        decision: Decision,
    ) -> dict[str, Any] | None:
        written = act(
            self.api, self.settings, body, spec, decision, fence=self.fence, events=self.events
        )
        if written is not None:
            self._last_write[key] = time.monotonic()
            if self.reads is not None:
                self._written[key] = written
                self._forget_if_echoed(key)
        return written

    def _forget_if_echoed(self, key: Key) -> None:
        """Drop our write when its echo came before the write was kept: the watch event can
        arrive while this thread is still waiting for the response, and `is_own_echo` then
        found nothing to drop. Kept, one full object per migration stayed in memory until the
        migration's next reconcile, which for a paused or waiting one may never come. Checked
        after the write was kept, so an echo that comes later is dropped by `is_own_echo`;
        `_newest` drops it when the cache is not older."""
        assert self.reads is not None
        cached = self.reads.get_migration(*key)
        if cached is not None:
            self._newest(key, cached)

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


def _observation_inputs(body: dict[str, Any]) -> tuple[Any, ...]:
    """What `observe` reads of the migration besides its spec (which `generation` stands for)."""
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("generation"), meta.get("annotations") or {}


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
