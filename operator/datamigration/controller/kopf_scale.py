"""kopf's three costs that grow with every watched object, cut to what this operator uses.

1. The start-up wait for the indexes, made linear in the number of objects.

Why: kopf holds the first event of every watched object until every index is filled from the
initial listing. It does so with one `aiotoggles.ToggleSet(all)`: each indexed object adds a
toggle, drops it once indexed, and each object's worker then waits on the set's Condition for
the whole set to be on. Every change wakes every waiter (`notify_all`), and each one checks the
set and sleeps again: with N objects, about N²/2 wake-ups on the event loop. With 1,000
migrations beside their Deployments, ReplicaSets, pods and Secrets that was most of the
operator's start-up (bench/scale.py's first stage alone, first reconcile of all 1,000, on 2
cores: 27 to 32 s before, 19 to 23 s after).

What it guarantees: the same waits, with the same outcomes. A ToggleSet's waiters wait only for
its aggregate state (`ToggleSet.wait_for`: `is_on() == state`; kopf never waits on one toggle of
a set), and every change to a toggle of a set (`turn_to`, `make_toggle`, `drop_toggle(s)`)
notifies under the set's Condition. So a waiter can only stop waiting when the aggregate state
differs from the one last announced: `LevelCondition` wakes the waiters then, and skips the
other notifications. `install` replaces kopf's class before kopf creates its sets; if kopf's
internals are not the shape this was written for (kopf is pinned below 2, and these are private
names), it replaces nothing and logs why: start-up is then slower, never wrong.

2. No diff-base (`NoDiffBase`, kopf's public `DiffBaseStorage` setting).

Why: kopf deep-copies every event's body to compare it with the last handled one, for
on.create/update/resume handlers. This operator has none (only indexes and on.event handlers,
which get no diff), so the copy was pure cost on every event of every watched kind. With no
such handler, kopf never reads the diff; a test asserts that the registry has none.

3. Bodies without what nobody reads (`lean_bodies`).

Why: the API server sends every object with `metadata.managedFields` (server-side apply's field
ownership: 2.5 of a DataMigration's 5.3 KB of JSON, a third of a pod's) and, for what
`kubectl apply` wrote, a last-applied copy of the whole manifest; a Job comes with its pod
template (70% of its JSON once managedFields is gone), a Secret with its values. kopf decodes
each object and holds its first event until every index is filled, so at start-up every
watched object's body is in memory at once, and the heap the operator then keeps is sized by
that moment: bench/scale.py's peak resident memory with 1,000 migrations went from 134 to 120
MB without the metadata alone.

What it guarantees: each list and watch answer kopf receives loses, as it is decoded, what
`cache.drop_unread` names (the one definition, which says why each is unread) and nothing
else. This operator never reads those from a watched body; kopf names kubectl's copy only to
build a diff-base, which 2. does not keep, and its own writes are merge patches of its
annotations and finalizers (on DataMigrations alone), which never send the fields back. If
kopf's client module is not the shape this was written for, nothing is replaced and the reason
is logged: memory is then higher, never wrong.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import kopf

from datamigration.controller.cache import drop_unread

log = logging.getLogger(__name__)


class LevelCondition(asyncio.Condition):
    """A Condition whose `notify_all` wakes the waiters only when `level()` changed since the
    last time it woke them (or on the first call)."""

    def __init__(self, level: Callable[[], bool]) -> None:
        super().__init__()
        self._level = level
        self._announced: bool | None = None

    def notify_all(self) -> None:
        now = self._level()
        if now != self._announced:
            self._announced = now
            super().notify_all()


def level_toggle_set(base: type[Any]) -> type[Any]:
    """kopf's ToggleSet with a `LevelCondition` over its own aggregate state."""

    class LevelToggleSet(base):  # type: ignore[misc]
        __doc__ = f"kopf's {base.__name__}, waking its waiters only when its state changes."
        _level_triggered = True

        def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
            super().__init__(fn)
            self._condition = LevelCondition(self.is_on)

    LevelToggleSet.__name__ = LevelToggleSet.__qualname__ = base.__name__
    return LevelToggleSet


def install() -> bool:
    """Make kopf's ToggleSets level-triggered; whether it was done."""
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError as exc:  # pragma: no cover - only with another kopf layout
        log.warning("kopf start-up wait left as it is (no kopf aiotoggles: %s)", exc)
        return False
    current = getattr(aiotoggles, "ToggleSet", None)
    if current is None or getattr(current, "_level_triggered", False):
        return current is not None
    probe = current(all)
    if not isinstance(getattr(probe, "_condition", None), asyncio.Condition):
        log.warning("kopf start-up wait left as it is (ToggleSet has no Condition to replace)")
        return False
    aiotoggles.ToggleSet = level_toggle_set(current)  # type: ignore[misc]
    return True


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base that keeps nothing: for an operator without change-detecting handlers."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _lean(answer: Any) -> Any:
    """A list answer's items, a watch event's object, or a single object, without what nothing
    reads (in place, `cache.drop_unread`). A list's items carry no kind: the list's names it
    (`JobList`)."""
    if isinstance(answer, dict):
        kind = str(answer.get("kind") or "")
        items = answer.get("items")
        if isinstance(items, list):
            item_kind = kind.removesuffix("List")
            for item in items:
                if isinstance(item, dict):
                    drop_unread(item, item_kind)
        inner = answer.get("object")
        if isinstance(inner, dict):
            drop_unread(inner, str(inner.get("kind") or ""))
        drop_unread(answer, kind)
    return answer


def lean_bodies() -> bool:
    """Wrap kopf's GET and watch-stream calls so that what they decode loses the metadata
    nobody reads; whether it was done (idempotent)."""
    try:
        from kopf._cogs.clients import api
    except ImportError as exc:  # pragma: no cover - only with another kopf layout
        log.warning("kopf bodies kept whole (no kopf client module: %s)", exc)
        return False
    get, stream = getattr(api, "get", None), getattr(api, "stream", None)
    if getattr(get, "_lean", False):
        return True
    if not inspect.iscoroutinefunction(get) or not inspect.isasyncgenfunction(stream):
        log.warning("kopf bodies kept whole (its client's get and stream are not as expected)")
        return False
    assert get is not None and stream is not None

    async def lean_get(*args: Any, **kwargs: Any) -> Any:
        return _lean(await get(*args, **kwargs))

    async def lean_stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in stream(*args, **kwargs):
            yield _lean(event)

    lean_get._lean = lean_stream._lean = True  # type: ignore[attr-defined]
    api.get = lean_get
    api.stream = lean_stream
    return True
