"""kopf's index wait at start-up: the same outcomes, with wake-ups linear in the objects."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.aiokits import aiotoggles

from datamigration.controller import cache, kopf_scale
from datamigration.k8s.cluster import secret_keys

Level = kopf_scale.level_toggle_set(aiotoggles.ToggleSet)


class Counted:
    """A ToggleSet class that counts the aggregate checks its waiters make."""

    def __init__(self, base: type[Any]) -> None:
        self.checks = 0
        counter = self

        class CountingSet(base):  # type: ignore[misc, valid-type]
            def wait_for(self, state: bool) -> Any:
                async def waiting() -> None:
                    async with self._condition:

                        def check() -> bool:
                            counter.checks += 1
                            return bool(self.is_on() == state)

                        await self._condition.wait_for(check)

                return waiting()

        self.cls = CountingSet


async def index_then_wait(cls: type[Any], objects: int) -> tuple[int, list[bool]]:
    """kopf's start-up in small: every object adds a toggle, its worker drops it once indexed
    and waits for all; returns the checks made and whether each waiter saw the set on."""
    counted = Counted(cls)
    indexed = counted.cls(all)
    toggles = [await indexed.make_toggle(name=str(i)) for i in range(objects)]
    seen: list[bool] = []

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await indexed.drop_toggle(toggle)
        await indexed.wait_for(True)
        seen.append(indexed.is_on())

    workers = []
    for toggle in toggles:  # indexed one after another, as their events arrive
        workers.append(asyncio.create_task(worker(toggle)))
        for _ in range(4):  # the loop runs between two events: woken waiters wait again
            await asyncio.sleep(0)
    await asyncio.gather(*workers)
    return counted.checks, seen


def test_every_waiter_goes_on_only_once_every_object_is_indexed() -> None:
    _, seen = asyncio.run(index_then_wait(Level, 300))
    assert seen == [True] * 300


def test_the_waiters_wake_linearly_where_kopfs_own_set_wakes_quadratically() -> None:
    ours, _ = asyncio.run(index_then_wait(Level, 300))
    theirs, _ = asyncio.run(index_then_wait(aiotoggles.ToggleSet, 300))
    assert ours <= 2 * 300  # each waiter checks on arrival and once when the set goes on
    assert theirs > 300 * 300 // 4  # about N²/2: the cost this module exists to remove


def test_an_any_set_still_wakes_on_each_change_of_its_state() -> None:
    """kopf's pause set (`any`): off, on while one toggle is on, off again."""

    async def scenario() -> list[str]:
        paused = Level(any)
        events: list[str] = []
        first = await paused.make_toggle(name="a")
        second = await paused.make_toggle(name="b")

        async def watch() -> None:
            await paused.wait_for(True)
            events.append("paused")
            await paused.wait_for(False)
            events.append("resumed")

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)  # the watcher waits for True
        await first.turn_to(True)
        await second.turn_to(True)  # no change of state: nobody needs waking
        await first.turn_to(False)  # still on (b)
        await asyncio.sleep(0)
        assert events == ["paused"]
        await second.turn_to(False)
        await asyncio.wait_for(watcher, 5)
        return events

    assert asyncio.run(scenario()) == ["paused", "resumed"]


def test_install_replaces_kopfs_class_once_and_kopf_builds_sets_from_it() -> None:
    original = aiotoggles.ToggleSet
    try:
        assert kopf_scale.install()
        installed = aiotoggles.ToggleSet
        assert kopf_scale.install() and aiotoggles.ToggleSet is installed  # idempotent
        created = aiotoggles.ToggleSet(all)
        assert isinstance(created, original)
        assert isinstance(created._condition, kopf_scale.LevelCondition)
    finally:
        aiotoggles.ToggleSet = original


def test_no_handler_needs_the_diff_base_the_operator_does_not_keep() -> None:
    """`NoDiffBase` keeps nothing: right only while no handler detects changes (on.create,
    update, resume, field) or spawns daemons and timers, the handlers kopf gives a diff to."""
    import kopf

    import datamigration.controller.handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert registry._watching.get_all_handlers()  # the on.event handlers are there
    body = kopf.Body({"metadata": {"name": "m"}, "spec": {"a": 1}})
    assert kopf_scale.NoDiffBase().build(body=body) == {}
    assert kopf_scale.NoDiffBase().fetch(body=body) is None


def _answers(monkeypatch: Any) -> tuple[Any, Any]:
    """kopf's client with its get and stream answering fixed objects, then made lean."""
    from kopf._cogs.clients import api

    def migration() -> dict[str, Any]:
        return {
            "metadata": {
                "name": "m",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {cache.LAST_APPLIED: "{...}", "datamigration.dev/approve": "x"},
            },
            "spec": {"steps": []},
        }

    async def get(url: str, **_: Any) -> Any:
        return {"kind": "List", "items": [migration(), migration()]}

    async def stream(url: str, **_: Any) -> Any:
        yield {"type": "MODIFIED", "object": migration()}

    monkeypatch.setattr(api, "get", get)
    monkeypatch.setattr(api, "stream", stream)
    assert kopf_scale.lean_bodies()
    assert kopf_scale.lean_bodies() and api.get._lean  # idempotent: wrapped once
    return api.get, api.stream


def test_kopfs_lists_and_watch_events_arrive_without_the_metadata_nobody_reads(
    monkeypatch: Any,
) -> None:
    get, stream = _answers(monkeypatch)

    async def received() -> list[dict[str, Any]]:
        listed = await get("/apis/x", settings=None, logger=None)
        watched = [event["object"] async for event in stream("/apis/x")]
        return [*listed["items"], *watched]

    bodies = asyncio.run(received())
    assert len(bodies) == 3
    for body in bodies:
        assert "managedFields" not in body["metadata"]
        assert body["metadata"]["annotations"] == {"datamigration.dev/approve": "x"}
        assert body["spec"] == {"steps": []}


def test_kopf_reads_neither_field_lean_bodies_drops() -> None:
    """The guarantee `lean_bodies` rests on, checked against the installed kopf: it never names
    managedFields, and names kubectl's copy only where it builds a diff-base (not kept here)."""
    from pathlib import Path

    import kopf

    naming = {
        str(path.relative_to(Path(kopf.__file__).parent))
        for path in Path(kopf.__file__).parent.rglob("*.py")
        for text in [path.read_text(encoding="utf-8")]
        if "managedFields" in text or "last-applied-configuration" in text
    }
    assert naming == {"_cogs/configs/diffbase.py"}


def test_jobs_lose_their_template_pods_their_volumes_secrets_their_values(
    monkeypatch: Any,
) -> None:
    """kopf holds every object's first event until every index is filled: what nothing reads
    (`cache.drop_unread`) is gone from list items (whose kind the list names) and watch events
    alike; everything else stays."""
    from kopf._cogs.clients import api

    def job() -> dict[str, Any]:
        return {
            "kind": "Job",
            "metadata": {"name": "j", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"name": "runner"}]}}},
            "status": {"active": 1},
        }

    def pod() -> dict[str, Any]:
        spec = {"containers": [{"name": "api", "image": "x:1"}], "volumes": [{"name": "token"}]}
        return {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": spec,
            "status": {"phase": "Running"},
        }

    def secret() -> dict[str, Any]:
        return {"kind": "Secret", "metadata": {"name": "s"}, "data": {"url": "cG9zdGdyZXM6Ly8="}}

    def without_kinds(item: dict[str, Any]) -> dict[str, Any]:  # as a list's items come
        return {k: v for k, v in item.items() if k != "kind"}

    lists = {"jobs": ("JobList", job), "pods": ("PodList", pod), "secrets": ("SecretList", secret)}

    async def get(url: str, **_: Any) -> Any:
        kind, make = lists[url]
        return {"kind": kind, "items": [without_kinds(make())]}

    async def stream(url: str, **_: Any) -> Any:
        yield {"type": "ADDED", "object": lists[url][1]()}

    monkeypatch.setattr(api, "get", get)
    monkeypatch.setattr(api, "stream", stream)
    assert kopf_scale.lean_bodies()

    async def received(url: str) -> list[dict[str, Any]]:
        listed = await api.get(url)
        return [*listed["items"], *[event["object"] async for event in api.stream(url)]]

    for listed, watched in (asyncio.run(received(url)) for url in lists):
        assert {k: v for k, v in watched.items() if k != "kind"} == listed
    job_body, _ = asyncio.run(received("jobs"))
    assert job_body == {"metadata": {"name": "j", "labels": {"a": "1"}}, "status": {"active": 1}}
    pod_body, _ = asyncio.run(received("pods"))
    assert pod_body["spec"] == {"containers": [{"name": "api", "image": "x:1"}]}
    assert pod_body["status"] == {"phase": "Running"}
    secret_body, _ = asyncio.run(received("secrets"))
    assert secret_body["data"] == {"url": ""}
    assert secret_keys(secret_body) == ("url",)
