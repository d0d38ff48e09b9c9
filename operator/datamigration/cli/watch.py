"""`kubectl datamigration status NAME --watch`, driven by API watches instead of polling.

Two watches run side by side, one on the DataMigration and one on its Events (each in a thread
of its own, resumed from the last resourceVersion when the server ends it, restarted from the
current state after a 410 Gone). Every change they report wakes the screen up; the screen is then
drawn from a fresh read of the object and its Events, exactly as `status` without `--watch`
draws it, and only when something changed. It ends at a terminal phase: exit code 0 for
Succeeded, 1 for Failed, Aborted or Invalid.

Why watches: a change shows within the API's own latency instead of up to a polling interval
later, and an idle migration costs the API server nothing but two open connections.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Protocol, TextIO, runtime_checkable

from datamigration.cli import render
from datamigration.cli.errors import EXIT_FAILURE, EXIT_OK
from datamigration.k8s.client import JSON, KubeError

WATCH_SECONDS = 300  # each watch request's server-side timeout; it is then resumed
RETRY_SECONDS = 2.0  # after a broken connection, before watching again


@runtime_checkable
class WatchApi(Protocol):
    """The API a watching `status` needs (`datamigration.k8s.cluster.ClusterApi` has it)."""

    def get_migration(self, namespace: str, name: str) -> JSON | None: ...

    def list_events(self, namespace: str, name: str) -> list[JSON]: ...

    def watch_migration(
        self, namespace: str, name: str, resource_version: str = "", timeout_seconds: int = 300
    ) -> Iterator[tuple[str, JSON]]: ...

    def watch_events(
        self, namespace: str, name: str, resource_version: str = "", timeout_seconds: int = 300
    ) -> Iterator[tuple[str, JSON]]: ...


Source = Callable[[str], Iterator[tuple[str, JSON]]]


class _Watcher(threading.Thread):
    """Follows one watch forever; puts None on `changes` for each change, or the error that
    stopped it (anything but a 410 or a dropped connection)."""

    def __init__(
        self,
        name: str,
        source: Source,
        changes: queue.Queue[Exception | None],
        *,
        optional: bool = False,
    ) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.source, self.changes, self.optional = source, changes, optional
        self.stopped = threading.Event()

    def run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            try:
                for kind, obj in self.source(version):
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self.changes.put(None)
                    if self.stopped.is_set():
                        return
            except KubeError as exc:
                if exc.status == 410:  # too old: start again from the current state
                    version = ""
                    self.changes.put(None)
                    continue
                if exc.status == 0:  # the connection broke: watch again shortly
                    self.stopped.wait(RETRY_SECONDS)
                    continue
                if self.optional and exc.status in (401, 403):
                    return  # Events are optional garnish: no access, no Events
                self.changes.put(exc)
                return
            except OSError:
                self.stopped.wait(RETRY_SECONDS)


def follow_status(
    api: WatchApi,
    namespace: str,
    name: str,
    *,
    draw: Callable[[JSON, list[JSON]], None],
    fetch: Callable[[], JSON],
    events: Callable[[], list[JSON]],
) -> int:
    """Draw the screen now and after every change the watches report, until a terminal phase."""
    changes: queue.Queue[Exception | None] = queue.Queue()
    watchers = [
        _Watcher(
            "migration",
            lambda rv: api.watch_migration(namespace, name, rv, WATCH_SECONDS),
            changes,
        ),
        _Watcher(
            "events",
            lambda rv: api.watch_events(namespace, name, rv, WATCH_SECONDS),
            changes,
            optional=True,
        ),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        while True:
            obj = fetch()
            draw(obj, events())
            phase = render.phase_of(obj)
            if phase in render.TERMINAL_PHASES:
                return EXIT_OK if phase == "Succeeded" else EXIT_FAILURE
            change = changes.get()
            while not changes.empty():  # a burst of changes: one redraw
                change = change or changes.get_nowait()
            if isinstance(change, Exception):
                raise change
    finally:
        for watcher in watchers:
            watcher.stopped.set()


def screen_writer(
    out: TextIO, *, clear: bool, now: Callable[[], datetime], clear_screen: str
) -> Callable[[JSON, list[JSON]], None]:
    """What `status --watch` prints for each state: the whole screen redrawn in place on a
    terminal; otherwise the screen again, under a time rule, only when the object or its Events
    changed (so a log stays readable)."""
    last: list[tuple[object, ...]] = []

    def draw(obj: JSON, events: list[JSON]) -> None:
        key = (
            obj.get("metadata", {}).get("resourceVersion"),
            tuple(e.get("metadata", {}).get("resourceVersion") for e in events),
        )
        text = render.render_status(obj, events, now())
        if clear:
            out.write(clear_screen)
            out.write(text + "\n")
        elif not last or key != last[0]:
            if last:
                out.write(f"\n--- {now().strftime('%H:%M:%S')} " + "-" * 60 + "\n")
            out.write(text + "\n")
        out.flush()
        last[:] = [key]

    return draw
