"""Shared live reads (controller/shared_reads.py): callers that need one object at once share a
read of it, and none is ever given a read that began before it asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from datamigration.controller.shared_reads import SharedReads
from datamigration.k8s.client import KubeError

POD_KEY = ("pods", "shop", "app=web")


class GatedPods:
    """An API whose pod lists block until the test lets each one answer; the n-th request
    answers `[{"request": n}]`, so a caller can tell which request its answer came from."""

    def __init__(self) -> None:
        self.requests = 0
        self.started: list[threading.Event] = [threading.Event() for _ in range(8)]
        self.release: list[threading.Event] = [threading.Event() for _ in range(8)]
        self.fail_with: BaseException | None = None
        self.created: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self._lock:
            n = self.requests
            self.requests += 1
        self.started[n].set()
        assert self.release[n].wait(10), f"request {n} was never released"
        if self.fail_with is not None:
            raise self.fail_with
        return [{"request": n, "namespace": namespace, "selector": selector}]

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.created.append(manifest)
        return manifest


def until(check: Callable[[], bool], what: str) -> None:
    """Wait for a condition another thread brings about (a caller has joined a read)."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def list_pods(pool: ThreadPoolExecutor, shared: SharedReads) -> Future[list[dict[str, Any]]]:
    return pool.submit(shared.list_pods, "shop", "app=web")


def test_a_lone_caller_reads_at_once() -> None:
    api = GatedPods()
    api.release[0].set()
    assert SharedReads(api).list_pods("shop", "app=web")[0]["request"] == 0  # type: ignore[arg-type]
    assert api.requests == 1


def test_a_caller_arriving_during_a_read_gets_a_later_read_not_that_one(
    pool: ThreadPoolExecutor,
) -> None:
    api = GatedPods()
    shared = SharedReads(api)  # type: ignore[arg-type]
    first = list_pods(pool, shared)
    assert api.started[0].wait(10)
    second = list_pods(pool, shared)
    until(lambda: shared.waiting(POD_KEY) == 1, "the second caller to gather")
    api.release[0].set()
    assert first.result(10)[0]["request"] == 0
    # The read in flight when the second caller asked may predate what it decided on.
    assert api.started[1].wait(10)
    assert not second.done()
    api.release[1].set()
    assert second.result(10)[0]["request"] == 1
    assert api.requests == 2


def test_callers_arriving_during_a_read_share_the_next_one(pool: ThreadPoolExecutor) -> None:
    api = GatedPods()
    shared = SharedReads(api)  # type: ignore[arg-type]
    first = list_pods(pool, shared)
    assert api.started[0].wait(10)
    later = [list_pods(pool, shared) for _ in range(5)]
    until(lambda: shared.waiting(POD_KEY) == 5, "five callers to gather")
    api.release[0].set()
    api.release[1].set()
    assert first.result(10)[0]["request"] == 0
    assert [f.result(10)[0]["request"] for f in later] == [1] * 5
    assert api.requests == 2  # six callers, two requests


def test_different_objects_are_not_shared(pool: ThreadPoolExecutor) -> None:
    api = GatedPods()
    shared = SharedReads(api)  # type: ignore[arg-type]
    web = list_pods(pool, shared)
    assert api.started[0].wait(10)
    other = pool.submit(shared.list_pods, "shop", "app=worker")
    assert api.started[1].wait(10)  # its own request, started without waiting for the first
    api.release[0].set()
    api.release[1].set()
    assert web.result(10)[0]["selector"] == "app=web"
    assert other.result(10)[0]["selector"] == "app=worker"


def test_a_failed_read_fails_every_caller_that_shared_it(pool: ThreadPoolExecutor) -> None:
    api = GatedPods()
    shared = SharedReads(api)  # type: ignore[arg-type]
    first = list_pods(pool, shared)
    assert api.started[0].wait(10)
    later = [list_pods(pool, shared) for _ in range(3)]
    until(lambda: shared.waiting(POD_KEY) == 3, "three callers to gather")
    api.fail_with = KubeError(503, "Service Unavailable", "etcd leader changed")
    api.release[0].set()
    api.release[1].set()
    for future in [first, *later]:
        with pytest.raises(KubeError, match="503"):
            future.result(10)
    # Nothing is left behind: the next caller reads afresh.
    api.fail_with = None
    api.release[2].set()
    assert shared.list_pods("shop", "app=web")[0]["request"] == 2


def test_writes_go_straight_through() -> None:
    api = GatedPods()
    SharedReads(api).create_job({"metadata": {"name": "m-contract-1"}})  # type: ignore[arg-type]
    assert api.created == [{"metadata": {"name": "m-contract-1"}}]
