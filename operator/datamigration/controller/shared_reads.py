"""Shared live reads: reconciles that need the same object read live at the same time share one
read of it, and each still gets a read that began after it asked.

Why: when a Deployment's rollout completes, every migration waiting on it is proven at the same
moment, and each must read the Deployment, its ReplicaSets, its pods and often one shared Secret
again from the API server before it creates its contract Job (the reconciler never acts on a
cache). Twenty migrations on one web tier made twenty identical sets of requests at once, which
queued behind each other at the API server: most of the time from a rollout's proof to the
contract Jobs (bench/scale.py, `reaction_p99_ms_under_fanout`).

What it guarantees: the result a caller gets comes from a request that *started after the call
began*, so it is as fresh as a request of the caller's own: the reason for reading live (what
was decided on the caches is checked against the API server's state after the decision) holds.
A caller that arrives while a read of the same thing is in flight therefore does not join it
(that read may predate what the caller decided on); it joins the next one, which starts as soon
as the one in flight ends and serves every caller that arrived meanwhile. Under a burst there
are at most two reads of one thing at a time, one in flight and one gathering callers; a lone
caller's read starts at once, as before.

Results are shared between threads as they are (not copied): everything downstream of `observe`
treats what it reads as read-only, as it already does with the watch caches' objects. Writes,
and reads that only one reconcile makes at a time (its own migration), go straight through.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from datamigration.controller.live_writes import LiveWrites
from datamigration.k8s.protocol import OperatorApi

JSON = dict[str, Any]
T = TypeVar("T")


@dataclass
class _Read:
    """One request and everyone waiting for its answer."""

    callers: int = 1
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class SharedReads(LiveWrites):
    """`OperatorApi` over `live`, with its reads of workloads, pods and Secrets shared; its
    writes go to `live` (`LiveWrites`)."""

    def __init__(self, live: OperatorApi) -> None:
        super().__init__(live)
        self._lock = threading.Lock()
        self._in_flight: dict[Hashable, _Read] = {}
        self._gathering: dict[Hashable, _Read] = {}

    def waiting(self, key: Hashable) -> int:
        """How many callers wait for the next read of `key` (not yet started)."""
        with self._lock:
            read = self._gathering.get(key)
            return read.callers if read is not None else 0

    def _shared(self, key: Hashable, request: Callable[[], T]) -> T:
        with self._lock:
            ahead = None
            mine = self._gathering.get(key)
            if mine is not None:
                mine.callers += 1
                leads = False
            else:
                mine, leads = _Read(), True
                ahead = self._in_flight.get(key)
                if ahead is None:
                    self._in_flight[key] = mine
                else:
                    self._gathering[key] = mine
        if not leads:
            mine.done.wait()
            if mine.error is not None:
                raise copy.copy(mine.error)
            return mine.value  # type: ignore[no-any-return]
        if ahead is not None:
            ahead.done.wait()
            with self._lock:  # from now on, a newcomer gathers for the read after this one
                self._gathering.pop(key, None)
                self._in_flight[key] = mine
        try:
            mine.value = request()
        except BaseException as exc:
            mine.error = exc
            raise
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
            mine.done.set()
        return mine.value  # type: ignore[no-any-return]

    # -- shared reads -----------------------------------------------------------------------
    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return self._shared(
            ("deployment", namespace, name), lambda: self.live.get_deployment(namespace, name)
        )

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None:
        return self._shared(
            ("workload", namespace, kind, name),
            lambda: self.live.get_workload(namespace, kind, name),
        )

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]:
        return self._shared(
            ("replicasets", namespace, selector),
            lambda: self.live.list_replicasets(namespace, selector),
        )

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]:
        return self._shared(
            ("revisions", namespace, selector),
            lambda: self.live.list_controller_revisions(namespace, selector),
        )

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        return self._shared(
            ("pods", namespace, selector), lambda: self.live.list_pods(namespace, selector)
        )

    def list_jobs(self, namespace: str, selector: str) -> list[JSON]:
        return self._shared(
            ("jobs", namespace, selector), lambda: self.live.list_jobs(namespace, selector)
        )

    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None:
        return self._shared(
            ("secret", namespace, name), lambda: self.live.secret_key_names(namespace, name)
        )

    # -- read by one reconcile at a time: straight through ---------------------------------
    def get_migration(self, namespace: str, name: str) -> JSON | None:
        return self.live.get_migration(namespace, name)

    def list_migrations(
        self, namespace: str | None = None, workload: str | None = None
    ) -> list[JSON]:
        return self.live.list_migrations(namespace, workload)
