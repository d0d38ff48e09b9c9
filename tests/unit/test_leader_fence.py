"""The leader fence, the resync on becoming leader, the metrics and the probes, against the
in-memory API of test_controller.py (a fake at the adapter boundary only).

What it shows: a standby writes nothing; a fence that closes in the middle of an `act` stops
the very next write, and the next leader finishes the transition with one Job and one Event;
becoming leader enqueues every migration; a reconcile updates the metrics; the probes answer
what the process knows.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from factories import spec
from prometheus_client import REGISTRY
from test_controller import NS, FakeApi, status

from datamigration.controller import metrics
from datamigration.controller.reconciler import Reconciler
from datamigration.controller.settings import OperatorSettings, SettingsError


def reconciler(api: FakeApi, fence: Any = lambda: True) -> Reconciler:
    return Reconciler(api=api, settings=OperatorSettings(manage_runner_rbac=False), fence=fence)


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_a_standby_reads_and_writes_nothing() -> None:
    api = FakeApi(spec())
    assert reconciler(api, fence=lambda: False).reconcile_once(NS, "m") is None
    assert api.jobs == {} and api.events == {} and api.status_writes == 0
    assert "status" not in api.migration


def test_a_fence_closing_mid_act_stops_the_next_write_and_the_next_leader_finishes() -> None:
    api = FakeApi(spec())
    leading = {"old": True}
    create_job = api.create_job

    def create_then_lose_the_lease(manifest: dict[str, Any]) -> dict[str, Any]:
        result = create_job(manifest)
        leading["old"] = False  # the renew deadline passes while the Job is being created
        return result

    api.create_job = create_then_lose_the_lease  # type: ignore[method-assign]
    reconciler(api, fence=lambda: leading["old"]).reconcile_once(NS, "m")
    assert list(api.jobs) == ["m-expand-1-uid-1"]
    assert api.status_writes == 0 and api.events == {}, "wrote after the fence closed"
    api.create_job = create_job  # type: ignore[method-assign]
    reconciler(api).reconcile_once(NS, "m")  # the new leader adopts the Job
    assert list(api.jobs) == ["m-expand-1-uid-1"]
    assert status(api)["phases"]["expand"]["state"] == "Running"
    assert api.reasons() == ["PhaseStarted"]


def test_becoming_leader_enqueues_every_migration_and_a_standby_enqueues_none() -> None:
    api = FakeApi(spec())
    leading = {"now": False}
    rec = reconciler(api, fence=lambda: leading["now"])

    async def scenario() -> int:
        rec.enqueue(NS, "m")
        assert rec._running == {}  # the standby queued nothing
        leading["now"] = True
        count = await rec.resync()
        await asyncio.gather(*rec._running.values())
        return count

    assert asyncio.run(scenario()) == 1
    assert list(api.jobs) == ["m-expand-1-uid-1"] and api.reasons() == ["PhaseStarted"]


def test_a_leader_whose_watches_are_still_listing_leaves_the_resync_to_their_events() -> None:
    """Before kopf completes its indexes, a resync would reconcile every migration from the API
    server; kopf's first event of each migration enqueues it anyway, once they are complete."""
    from test_controller import CountingApi

    from datamigration.controller.cache import INDEXES, CachedApi, Packed, WatchCache

    api = CountingApi(spec())
    cache = WatchCache()
    rec = Reconciler(
        api=api, settings=OperatorSettings(manage_runner_rbac=False), reads=CachedApi(api, cache)
    )

    async def scenario() -> tuple[int, int, int]:
        before = await rec.resync()  # still listing: nothing enqueued, nothing read
        reads_before = api.reads
        indexes: dict[str, Any] = {name: {} for name in INDEXES}
        indexes["cache_migrations"] = {(NS, "m"): [Packed.of(api.migration)]}
        cache.bind(indexes)  # complete
        after = await rec.resync()
        rec.fence = lambda: False  # let the enqueued reconcile stop at once
        await asyncio.gather(*rec._running.values())
        return before, reads_before, after

    assert asyncio.run(scenario()) == (0, 0, 1)


def test_reconciling_updates_the_metrics() -> None:
    reconciles = sample("datamigration_reconcile_duration_seconds_count")
    stalls = sample("datamigration_stalls_total", reason="SecretKeyNotFound")
    api = FakeApi(spec(), secret_keys=("password",))
    reconciler(api).reconcile_once(NS, "m")
    assert sample("datamigration_reconcile_duration_seconds_count") == reconciles + 1
    assert sample("datamigration_stalls_total", reason="SecretKeyNotFound") == stalls + 1
    reconciler(api).reconcile_once(NS, "m")  # still stalled, not a new stall
    assert sample("datamigration_stalls_total", reason="SecretKeyNotFound") == stalls + 1

    api = FakeApi(spec())
    api.migration["metadata"]["name"] = "m2"
    reconciler(api).reconcile_once(NS, "m2")
    api.finish("expand")
    reconciler(api).reconcile_once(NS, "m2")
    assert sample("datamigration_migrations", phase=status(api)["phase"]) >= 1
    assert sample("datamigration_phase_duration_seconds_count", phase="expand") >= 1
    api.runner_progress(
        {"phase": "backfill", "rowsDone": 400, "rowsEstimated": 1000, "rowsPerSecond": 50}
    )
    reconciler(api).reconcile_once(NS, "m2")
    labels = {"namespace": NS, "name": "m2"}
    assert sample("datamigration_backfill_rows_done", **labels) == 400
    assert sample("datamigration_backfill_rows_remaining", **labels) == 600
    assert sample("datamigration_backfill_rows_per_second", **labels) == 50
    reconciler(api).forget(NS, "m2")
    assert REGISTRY.get_sample_value("datamigration_backfill_rows_done", labels) is None


def test_a_backfills_series_end_when_it_finishes() -> None:
    """A finished backfill's last rate is no rate: its three series go with it."""
    api = FakeApi(spec())
    api.migration["metadata"]["name"] = "m3"
    labels = {"namespace": NS, "name": "m3"}
    reconciler(api).reconcile_once(NS, "m3")
    api.finish("expand")
    reconciler(api).reconcile_once(NS, "m3")
    api.runner_progress(
        {"phase": "backfill", "rowsDone": 10, "rowsEstimated": 1000, "rowsPerSecond": 5}
    )
    reconciler(api).reconcile_once(NS, "m3")
    assert sample("datamigration_backfill_rows_per_second", **labels) == 5
    api.finish("backfill")
    reconciler(api).reconcile_once(NS, "m3")
    assert status(api)["phases"]["backfill"].get("finishedAt")
    for name in ("done", "per_second", "remaining"):
        assert REGISTRY.get_sample_value(f"datamigration_backfill_rows_{name}", labels) is None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (http only)
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_and_metrics_endpoint() -> None:
    def no_api() -> None:
        raise OSError("connection refused")

    health = metrics.Health(api_liveness_bound=30.0, ping=no_api)
    server = metrics.serve(0, health, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _get(f"{base}/readyz")[0] == 503
        health.started = True
        code, body = _get(f"{base}/readyz")
        assert code == 200 and json.loads(body)["leader"] is False  # a standby is ready
        metrics._on_request("GET", 200)  # an API answer, as the client reports
        assert _get(f"{base}/livez")[0] == 200
        metrics._last_api_answer["at"] -= 31  # no answer for longer than the bound
        code, body = _get(f"{base}/livez")
        assert code == 503 and "no answer from the API server" in body
        code, text = _get(f"{base}/metrics")
        assert code == 200
        for name in ("datamigration_api_requests_total", "datamigration_leader"):
            assert name in text
    finally:
        metrics._on_request("GET", 200)
        server.shutdown()


def test_leader_election_settings_are_checked() -> None:
    settings = OperatorSettings.from_env({"DATAMIGRATION_LEASE_NAMESPACE": "dm-system"})
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (
        15.0,
        10.0,
        2.0,
    )
    assert settings.leader_election and settings.lease_namespace == "dm-system"
    with pytest.raises(SettingsError, match="DATAMIGRATION_RENEW_DEADLINE"):
        OperatorSettings.from_env({"DATAMIGRATION_RENEW_DEADLINE": "20"})
    with pytest.raises(SettingsError, match="DATAMIGRATION_LEASE_DURATION"):
        OperatorSettings.from_env({"DATAMIGRATION_LEASE_DURATION": "soon"})
    with pytest.raises(SettingsError, match="DATAMIGRATION_METRICS_PORT"):
        OperatorSettings.from_env({"DATAMIGRATION_METRICS_PORT": "99999"})
    with pytest.raises(SettingsError, match="DATAMIGRATION_LEADER_ELECTION"):
        OperatorSettings.from_env({"DATAMIGRATION_LEADER_ELECTION": "maybe"})


def test_worker_count_is_checked() -> None:
    assert OperatorSettings.from_env({}).workers == 32
    assert OperatorSettings.from_env({"DATAMIGRATION_WORKERS": "4"}).workers == 4
    for bad in ("0", "257", "many", "-3"):
        with pytest.raises(SettingsError, match="DATAMIGRATION_WORKERS"):
            OperatorSettings.from_env({"DATAMIGRATION_WORKERS": bad})


def test_the_reference_lists_exactly_the_metrics() -> None:
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    source = Path(metrics.__file__).read_text()
    defined = set(re.findall(r'^\w+ = \w+\(\s*"(datamigration_[a-z_]+)"', source, re.M))
    reference = (repo / "docs" / "reference.md").read_text().split("## Metrics", 1)[1]
    listed = set(re.findall(r"^\| `(datamigration_[a-z_]+)`", reference, re.M))
    assert len(defined) == 12 and defined == listed


def test_a_shared_deployments_metadata_or_status_wakes_no_paused_migration() -> None:
    """As the API server does it: an annotation bumps a Deployment's generation (a legacy of
    its rollback annotation), a label does not; neither changes its spec."""
    import kopf

    from datamigration.controller import handlers
    from datamigration.controller.cache import WatchCache

    deployment: dict[str, Any] = {
        "metadata": {
            "name": "api",
            "namespace": NS,
            "generation": 3,
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:1"}]}}},
        "status": {"observedGeneration": 3, "updatedReplicas": 3},
    }
    api = FakeApi(spec())
    rec = reconciler(api)
    woken: list[str] = []
    rec.enqueue = lambda namespace, name: woken.append(name)  # type: ignore[method-assign]
    memo = kopf.Memo(reconciler=rec, cache=WatchCache())
    index = {
        (NS, "api"): [
            ("expanding", True, False, False),
            ("rolling-out", True, True, False),
            ("paused", True, False, True),
            ("done", False, False, False),
        ]
    }
    kinds = {
        (NS, "Deployment", "api"): [
            ("listed", True, False, False),
            ("listed-rolling", True, True, False),
        ]
    }

    def event(body: dict[str, Any]) -> list[str]:
        woken.clear()
        asyncio.run(
            handlers.deployment_event(
                event={"type": "MODIFIED", "object": body},
                namespace=NS,
                name="api",
                body=kopf.Body(body),
                memo=memo,
                by_workload=index,
                by_kind=kinds,  # kopf passes every index to every handler
            )
        )
        return sorted(woken)

    def changed(base: dict[str, Any], **parts: Any) -> dict[str, Any]:
        return {**base, **{k: {**base[k], **v} for k, v in parts.items()}}

    everyone = ["expanding", "listed", "listed-rolling", "paused", "rolling-out"]
    unpaused = ["expanding", "listed", "listed-rolling", "rolling-out"]
    assert event(deployment) == everyone  # first sight: all that still care
    labelled = changed(deployment, metadata={"labels": {"team": "web"}})
    assert event(labelled) == []
    annotated = changed(labelled, metadata={"generation": 4, "annotations": {"team": "web"}})
    assert event(annotated) == unpaused  # status and metadata: never the paused ones
    caught_up = changed(annotated, status={"observedGeneration": 4})
    assert event(caught_up) == unpaused
    new_image = {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}}
    assert event(changed(caught_up, metadata={"generation": 5}, spec=new_image)) == everyone
