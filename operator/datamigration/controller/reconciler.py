"""The work queue between kopf's watch events and `decide`.

Why a queue and not "reconcile inside the handler": events for one migration arrive from four
watches (the migration, its Jobs, its Deployment, the Deployment's pods), often in bursts. The
queue keeps at most one reconcile per migration running and at most one more pending, so bursts
coalesce and two reconciles of the same migration never interleave. It also owns the two timed
re-runs a level-based controller needs: `requeue_after` from `decide` (deadlines) and retries
with capped exponential backoff after API errors.

The blocking API calls run in worker threads; the event loop only schedules.

With leader election, only the leader reconciles: a standby's queue drops what it is given
(its watches stay warm, so it has nothing to catch up on but the migrations themselves), and
`resync` enqueues every migration when this process becomes the leader. `act` checks the fence
again before each write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from datamigration.controller import metrics
from datamigration.controller.act import Fence, NotLeader, StatusConflict, act
from datamigration.controller.observe import observe
from datamigration.controller.settings import OperatorSettings
from datamigration.core.decide import TERMINAL, Invalid, Observed, decide
from datamigration.k8s.protocol import OperatorApi
from datamigration.validation import validate

log = logging.getLogger(__name__)
Key = tuple[str, str]
MAX_BACKOFF = 60.0
MAX_CONFLICTS = 5
CONFLICT_RETRY_SECONDS = 0.5


@dataclass
class Reconciler:
    api: OperatorApi
    settings: OperatorSettings
    #: May this process write now? (Always, without leader election.)
    fence: Fence = lambda: True
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)

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
        """Enqueue every migration this operator serves (on becoming the leader)."""
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        count = 0
        for namespace in namespaces:
            items = await asyncio.to_thread(self.api.list_migrations, namespace)
            for item in items:
                meta = item.get("metadata") or {}
                self.enqueue(meta.get("namespace"), str(meta.get("name")))
                count += 1
        log.info("resync: %d migration(s) enqueued", count)
        return count

    def forget(self, namespace: str | None, name: str) -> None:
        key = (namespace or "", name)
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
        try:
            for _ in range(MAX_CONFLICTS):
                try:
                    return self._reconcile(namespace, name)
                except StatusConflict:
                    log.debug(
                        "%s/%s: status changed concurrently; deciding again", *(namespace, name)
                    )
                except NotLeader as exc:
                    log.info("%s/%s: %s", namespace, name, exc)
                    return None  # the leader's resync takes it from here
            return CONFLICT_RETRY_SECONDS
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, namespace: str, name: str) -> float | None:
        if not self.fence():
            raise NotLeader("not the leader: did not reconcile")
        body = self.api.get_migration(namespace, name)
        if body is None:
            return None
        status = body.get("status") or {}
        generation = int(body["metadata"].get("generation", 0))
        if status.get("phase") in TERMINAL:
            if status.get("observedGeneration") == generation:
                return None  # finished for good: nothing to observe
            observed = Observed(generation=generation, secret_exists=False, workload=None)
            decision = decide(validate(body.get("spec")), status, observed, self.now())
            act(self.api, self.settings, body, None, decision, fence=self.fence)
            metrics.record((namespace, name), status, decision.status)
            return None
        spec = validate(body.get("spec"))
        observed = observe(self.api, body, spec)
        decision = decide(spec, status, observed, self.now())
        act(
            self.api,
            self.settings,
            body,
            None if isinstance(spec, Invalid) else spec,
            decision,
            fence=self.fence,
        )
        metrics.record((namespace, name), status, decision.status)
        return decision.requeue_after

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)
