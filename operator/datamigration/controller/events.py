"""Events posted beside the reconciles, not inside them: one poster thread, in emitted order.

Why: an Event is a courtesy (the status, written first, already says it all), yet each one is a
write the API server has to make. Posted inside the reconcile, a migration's Event held its
reconcile thread, and in a burst (start-up with 1,000 migrations: 1,000 status writes and 1,000
Events) every status write queued behind Events as well: bench/scale.py's `startup_s` was 12 s
with them, 9 s without. client-go's EventRecorder makes the same choice: controllers hand an
Event to a broadcaster and go on.

What it guarantees:
- Order: one thread posts every Event in the order `post_event` was called, so a migration's
  Events keep the order of its transitions (the CLI sorts them by resourceVersion).
- Only a leader posts: the fence is checked again right before each request. An Event whose
  poster has lost the lead meanwhile is dropped and logged: the status that recorded the
  transition was written while this process led, and a new leader does not repeat it.
- Once: the names `act.event_name` derives make a repeated create a 409 and a no-op.
- Nothing is lost on a clean shutdown: `drain` waits (bounded) for the queue to empty before
  the Lease is handed over. A process killed outright loses what was queued, as it would have
  lost the Event of the reconcile it was in.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datamigration.k8s.client import KubeError
from datamigration.k8s.protocol import EventSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Event:
    involved: Mapping[str, Any]
    type_: str
    reason: str
    message: str
    name: str | None


class EventPoster:
    """`post_event` that queues; a daemon thread (started on first use) posts to `live`."""

    def __init__(self, live: EventSink, fence: Callable[[], bool]) -> None:
        self.live = live
        self.fence = fence
        self._queue: deque[_Event] = deque()
        self._changed = threading.Condition()
        self._posting = False
        self._thread: threading.Thread | None = None

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        meta = involved.get("metadata") or {}
        # What an Event names of its object, not the object: a queue of a thousand Events
        # must not hold a thousand migrations.
        reference = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "uid")},
        }
        with self._changed:
            self._queue.append(_Event(reference, type_, reason, message, name))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-poster", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Events queued or being posted."""
        with self._changed:
            return len(self._queue) + int(self._posting)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued Event was posted (or dropped); whether that happened."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._queue and not self._posting, timeout=timeout
            )

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                event = self._queue.popleft()
                self._posting = True
            try:
                self._post(event)
            finally:
                with self._changed:
                    self._posting = False
                    self._changed.notify_all()

    def _post(self, event: _Event) -> None:
        meta = event.involved.get("metadata") or {}
        who = f"{meta.get('namespace')}/{meta.get('name')}"
        if not self.fence():
            log.info("%s: Event %s not posted: this process no longer leads", who, event.reason)
            return
        try:
            self.live.post_event(
                event.involved, event.type_, event.reason, event.message, event.name
            )
        except KubeError as exc:  # a courtesy: the status already says it all
            log.warning("%s: could not post Event %s: %s", who, event.reason, exc)
        except Exception:  # the thread must go on posting the others
            log.exception("%s: could not post Event %s", who, event.reason)
