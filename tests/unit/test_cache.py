"""The watch caches (controller/cache.py): which reads they answer, from which thread, and
which they leave to the API server; and the label selector matcher they filter with."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from datamigration.controller.cache import (
    INDEXES,
    CachedApi,
    NotCached,
    Packed,
    WatchCache,
    reader_for,
    slim,
    slim_job,
    slim_pod,
)
from datamigration.core.observed import Peer
from datamigration.k8s.cluster import label_selector, secret_keys, selector_matches

JSON = dict[str, Any]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "api"}, False),
        ("app==web", {"app": "web"}, True),
        ("app!=web", {"app": "api"}, True),
        ("app!=web", {"app": "web"}, False),
        ("app=web,tier=front", {"app": "web"}, False),
        ("app in (web,api)", {"app": "api"}, True),
        ("app in (web,api),tier", {"app": "api"}, False),
        ("app notin (web,api)", {"app": "db"}, True),
        ("app notin (web,api)", {"app": "web"}, False),
        ("app notin (web)", {}, True),
        ("job-name", {"job-name": "x"}, True),
        ("!canary", {"canary": "yes"}, False),
        ("!canary", {}, True),
    ],
    ids=lambda v: repr(v),
)
def test_selector_matches_as_the_api_server_does(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    assert selector_matches(selector, labels) is expected


def test_selector_matches_what_label_selector_writes() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "track", "operator": "NotIn", "values": ["canary"]},
            {"key": "owner", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    written = label_selector(selector)
    assert selector_matches(written, {"app": "web", "tier": "b", "owner": "x"})
    assert not selector_matches(written, {"app": "web", "tier": "b", "owner": "x", "legacy": "1"})
    assert not selector_matches(written, {"app": "web", "tier": "c", "owner": "x"})


def test_an_unknown_selector_term_is_an_error_never_a_match() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        selector_matches("app~web", {"app": "web"})


def test_what_the_indexes_keep() -> None:
    secret = {"metadata": {"name": "db"}, "data": {"url": "c2VjcmV0"}, "stringData": {"pw": "x"}}
    assert secret_keys(secret) == ("pw", "url")
    job = {
        "metadata": {"name": "j", "managedFields": [{}]},
        "spec": {"template": {}},
        "status": {"active": 1},
    }
    assert slim_job(job) == {"metadata": {"name": "j"}, "status": {"active": 1}}
    applied = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "1"}
    assert slim({"metadata": {"annotations": applied}})["metadata"] == {
        "annotations": {"keep": "1"}
    }
    pod = {"metadata": {"name": "p"}, "spec": {"volumes": [{}], "containers": [{"name": "c"}]}}
    assert slim_pod(pod)["spec"] == {"containers": [{"name": "c"}]}


class LiveReads:
    """The API server, for these tests: records which reads reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return None if name.startswith("get") or name == "secret_key_names" else []

        return call


def indexes() -> dict[str, Any]:
    pod = {
        "metadata": {
            "name": "web-1",
            "uid": "p1",
            "labels": {"app": "web", "pod-template-hash": "h"},
        }
    }
    other = {"metadata": {"name": "db-1", "uid": "p2", "labels": {"app": "db"}}}
    found: dict[str, Any] = {name: {} for name in INDEXES}
    found["cache_app_pods"] = {"shop": [Packed.of(pod), Packed.of(other)]}
    found["cache_revision_pods"] = {"shop": [Packed.of(pod)]}  # in two indexes: listed once
    found["cache_deployments"] = {("shop", "web"): [Packed.of({"metadata": {"name": "web"}})]}
    found["cache_secrets"] = {("shop", "db"): [("url",)]}
    found["cache_migrations"] = {
        ("shop", "m"): [Packed.of({"metadata": {"name": "m", "namespace": "shop"}})],
        ("other", "n"): [Packed.of({"metadata": {"name": "n", "namespace": "other"}})],
    }
    peer = Peer("m", "t", "web", "api", "img:2", "Pending")
    found["cache_peers"] = {
        ("shop", "Deployment", "web"): [peer],
        ("shop", "StatefulSet", "db"): [peer],
    }
    found["cache_jobs"] = {("shop", "uid-1"): [Packed.of({"metadata": {"name": "m-expand-1"}})]}
    return found


def test_reads_are_answered_from_the_caches_in_the_worker_thread_while_the_loop_is_busy() -> None:
    """The event loop is kept busy (blocked) for the whole read: a read that waited for the
    loop would time out and go to the API server."""
    live = LiveReads()

    async def scenario() -> list[Any]:
        cache = WatchCache()
        cache.bind(indexes())
        api = CachedApi(live, cache)  # type: ignore[arg-type]

        def from_a_worker_thread() -> list[Any]:
            return [
                [p["metadata"]["name"] for p in api.list_pods("shop", "app=web")],
                api.get_deployment("shop", "web"),
                api.secret_key_names("shop", "db"),
                api.get_migration("shop", "m"),
                api.list_jobs("shop", "datamigration.dev/migration-uid=uid-1"),
                api.secret_key_names("shop", "other"),
                [m["metadata"]["name"] for m in api.list_migrations(None)],
                [m["metadata"]["name"] for m in api.list_migrations("shop")],
                [
                    p.name
                    for p in api.list_peers("shop", [("Deployment", "web"), ("StatefulSet", "db")])
                ],
                api.list_peers("shop", [("Deployment", "api")]),
            ]

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(from_a_worker_thread).result(timeout=5)  # blocks the loop

    found = asyncio.run(scenario())
    pods, deployment, key_names, migration, jobs, no_secret, every, shop, peers, none = found
    assert sorted(every) == ["m", "n"]  # every namespace's, for the leader's resync
    assert shop == ["m"]
    assert peers == ["m"]  # named by two of the workloads asked for: once
    assert none == []  # nobody else names Deployment api
    assert key_names == ("url",)
    assert no_secret is None  # absent from a complete cache: absent
    assert pods == ["web-1"]
    assert deployment == {"metadata": {"name": "web"}}
    assert migration["metadata"]["name"] == "m"
    assert [j["metadata"]["name"] for j in jobs] == ["m-expand-1"]
    assert live.calls == []


def test_a_read_that_meets_a_change_of_the_caches_runs_again_on_the_event_loop() -> None:
    async def scenario() -> tuple[str, list[int], int]:
        cache = WatchCache()
        cache.bind(indexes())
        threads: list[int] = []

        def reader(ix: Any) -> str:
            threads.append(threading.get_ident())
            if len(threads) == 1:  # kopf changed a store's size while it was copied
                raise RuntimeError("dictionary changed size during iteration")
            return "read"

        return await asyncio.to_thread(cache.read, reader), threads, threading.get_ident()

    result, threads, loop_thread = asyncio.run(scenario())
    assert result == "read"
    assert threads[0] != loop_thread and threads[1] == loop_thread


def test_what_the_caches_cannot_answer_exactly_goes_to_the_api_server() -> None:
    live = LiveReads()

    async def scenario() -> None:
        cache = WatchCache()
        cache.bind(indexes())
        api = CachedApi(live, cache)  # type: ignore[arg-type]

        def reads() -> None:
            api.get_workload("shop", "Rollout", "web")  # no watch
            api.list_controller_revisions("shop", "app=web")  # no watch
            api.list_jobs("shop", "")  # every Job (a CronJob's)
            api.list_migrations("shop", "web")  # by workload: the API's field selector

        await asyncio.to_thread(reads)

    asyncio.run(scenario())
    assert live.calls == [
        "get_workload",
        "list_controller_revisions",
        "list_jobs",
        "list_migrations",
    ]


def test_before_kopf_completes_the_indexes_every_read_goes_to_the_api_server() -> None:
    live = LiveReads()
    cache = WatchCache()
    cache.bind({"cache_migrations": {}})  # a handler's kwargs without every index
    assert not cache.bound
    with pytest.raises(NotCached):
        cache.read(lambda ix: ix)
    CachedApi(live, cache).get_deployment("shop", "web")  # type: ignore[arg-type]
    assert live.calls == ["get_deployment"]


def test_workloads_of_kinds_without_a_watch_are_read_from_the_api_server() -> None:
    live = LiveReads()
    api = CachedApi(live, WatchCache())  # type: ignore[arg-type]
    assert reader_for(api, "Deployment") is api
    assert reader_for(api, "StatefulSet") is api
    for kind in ("CronJob", "Rollout", "Pods"):
        assert reader_for(api, kind) is live


def test_every_cached_object_is_kept_as_compact_json_with_its_labels_beside_it() -> None:
    """Decoded, a Job's pod took five times its JSON, and the caches keep every Job and pod of
    every migration for as long as they exist (controller/cache.py, `Packed`)."""
    from datamigration.controller import handlers

    pod = {
        "metadata": {"name": "m-expand-1-x", "labels": {"b": "2", "a": "1"}, "managedFields": [{}]},
        "spec": {"volumes": [{"name": "v"}], "containers": [{"name": "runner"}]},
        "status": {"phase": "Running"},
    }
    job = {"metadata": {"name": "m-expand-1"}, "spec": {"template": {}}, "status": {"active": 1}}
    deployment = {"metadata": {"name": "web"}, "spec": {"replicas": 2}}
    kept = {
        "pod": asyncio.run(handlers.cache_job_pods(namespace="shop", labels={}, body=pod)),
        "app pod": asyncio.run(handlers.cache_app_pods(namespace="shop", body=pod)),
        "job": asyncio.run(handlers.cache_jobs(namespace="shop", labels={}, body=job)),
        "deployment": asyncio.run(
            handlers.cache_deployments(namespace="shop", name="web", body=deployment)
        ),
        "replicaset": asyncio.run(handlers.cache_replicasets(namespace="shop", body=deployment)),
    }
    expected = {
        "pod": slim_pod(pod),
        "app pod": slim_pod(pod),
        "job": slim_job(job),
        "deployment": slim(deployment),
        "replicaset": slim(deployment),
    }
    for what, index in kept.items():
        (packed,) = index.values()
        assert isinstance(packed, Packed), what
        assert packed.unpack() == expected[what], what
    assert kept["pod"][("shop", None)].labels == (("a", "1"), ("b", "2"))


def test_a_selector_is_matched_on_the_kept_labels_without_unpacking_the_rest() -> None:
    live = LiveReads()
    found = indexes()
    unreadable = Packed(b"not json", (("app", "db"), ("pod-template-hash", "h")))
    found["cache_app_pods"] = {"shop": [*found["cache_app_pods"]["shop"], unreadable]}
    found["cache_replicasets"] = {"shop": [Packed(b"not json", (("app", "db"),))]}

    async def scenario() -> tuple[list[str], list[Any]]:
        cache = WatchCache()
        cache.bind(found)
        api = CachedApi(live, cache)  # type: ignore[arg-type]

        def reads() -> tuple[list[str], list[Any]]:
            pods = [p["metadata"]["name"] for p in api.list_pods("shop", "app=web")]
            return pods, api.list_replicasets("shop", "app=web")

        return await asyncio.to_thread(reads)

    pods, replicasets = asyncio.run(scenario())
    assert pods == ["web-1"]
    assert replicasets == []
    assert live.calls == []
