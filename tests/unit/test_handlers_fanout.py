"""Which migrations an event wakes (controller/handlers.py): only those whose decision it can
change. Driven through the kopf handlers themselves with the index values kopf would pass."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from factories import spec
from test_controller import NS, FakeApi

from datamigration.controller import handlers
from datamigration.controller.cache import WatchCache
from datamigration.controller.reconciler import Reconciler
from datamigration.controller.settings import OperatorSettings


class Woken(Reconciler):
    """A reconciler that records what it is asked to reconcile, and reconciles nothing."""

    def __init__(self) -> None:
        super().__init__(api=FakeApi(spec()), settings=OperatorSettings(manage_runner_rbac=False))
        self.woken: list[str] = []

    def enqueue(self, namespace: str | None, name: str) -> None:
        self.woken.append(name)


def woken_by(call: Callable[[kopf.Memo, dict[str, Any]], Awaitable[None]]) -> list[str]:
    rec = Woken()
    memo = kopf.Memo(reconciler=rec, cache=WatchCache())
    indexes: dict[str, Any] = {
        "by_workload": {
            (NS, "web"): [
                ("rolling-out", True, True, False),  # RollingOut: waits on the rollout
                ("expanding", True, False, False),  # Expanding: the pods cannot change it
                ("done", False, False, False),  # Succeeded
            ]
        },
        "by_kind": {},
        "by_secret": {(NS, "db"): ["needs-db"]},
    }
    asyncio.run(call(memo, indexes))
    return sorted(rec.woken)


def pod(owner_rs: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{owner_rs}-x",
            "namespace": NS,
            "labels": {"pod-template-hash": "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": owner_rs, "controller": True}],
        }
    }


def test_a_pod_event_wakes_only_the_migrations_waiting_on_that_rollout() -> None:
    async def call(memo: kopf.Memo, ix: dict[str, Any]) -> None:
        body = pod("web-abc")
        await handlers.pod_event(namespace=NS, body=kopf.Body(body), memo=memo, **ix)

    assert woken_by(call) == ["rolling-out"]


def test_a_replicaset_event_wakes_only_the_migrations_waiting_on_its_deployment() -> None:
    async def call(memo: kopf.Memo, ix: dict[str, Any]) -> None:
        meta = {"ownerReferences": [{"kind": "Deployment", "name": "web"}]}
        await handlers.replicaset_event(
            namespace=NS, meta=kopf.Meta(kopf.Body({"metadata": meta})), memo=memo, **ix
        )

    assert woken_by(call) == ["rolling-out"]


def test_a_secret_event_wakes_the_migrations_that_name_it_and_no_other() -> None:
    async def named(memo: kopf.Memo, ix: dict[str, Any]) -> None:
        await handlers.secret_event(namespace=NS, name="db", memo=memo, **ix)

    async def other(memo: kopf.Memo, ix: dict[str, Any]) -> None:
        await handlers.secret_event(namespace=NS, name="unrelated", memo=memo, **ix)

    assert woken_by(named) == ["needs-db"]
    assert woken_by(other) == []


def test_the_secret_index_names_the_migrations_secret() -> None:
    raw = spec()
    found = asyncio.run(
        handlers.by_secret(namespace=NS, name="m", spec=kopf.Spec(kopf.Body({"spec": raw})))
    )
    secret = raw["database"]["urlFrom"]["secretKeyRef"]["name"]
    assert found == {(NS, secret): "m"}


def test_the_workload_index_says_which_migrations_wait_on_a_rollout() -> None:
    def entry(phase: str, ready_reason: str = "") -> Any:
        conditions = [{"type": "Ready", "status": "False", "reason": ready_reason}]
        status = {"phase": phase, "conditions": conditions}
        body = kopf.Body({"spec": {"workload": {"name": "web"}}, "status": status})
        found = asyncio.run(
            handlers.by_workload(
                namespace=NS, name="m", spec=kopf.Spec(body), status=kopf.Status(body)
            )
        )
        return found[(NS, "web")]

    assert entry("RollingOut") == ("m", True, True, False)
    assert entry("Contracting") == ("m", True, True, False)
    assert entry("Expanding") == ("m", True, False, False)
    assert entry("Succeeded") == ("m", False, False, False)
    assert entry("Paused") == ("m", True, False, True)
    # Before expand, waiting for the workload to be stable: its pods and status matter.
    assert entry("Pending", "WaitingForWorkload") == ("m", True, True, False)
