"""The controller (observe, decide, act, the reconciler) against a fake of the API adapter.

The fake implements `OperatorApi` in memory, with the API server's rules that matter here:
resourceVersion preconditions on status writes (409 on a stale version), 409 on creating a Job
or an Event whose name exists. What it shows: status writes never overwrite a newer state, the
runner's progress keys survive, Events go out once per transition even with two operators at
once, a Secret without the key creates no Job, and messages from pods are scrubbed.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from typing import Any

from factories import Cluster, spec

from datamigration.controller.reconciler import PROGRESS_WRITE_SECONDS, Reconciler
from datamigration.controller.settings import OperatorSettings
from datamigration.core.diff import merge_patch
from datamigration.k8s.client import KubeError
from datamigration.k8s.cluster import label_selector

JSON = dict[str, Any]
NS = "shop"


def apply_merge(target: JSON, patch: Mapping[str, Any]) -> JSON:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            apply_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeApi:
    """An in-memory API server for one namespace."""

    def __init__(self, raw_spec: JSON, *, secret_keys: tuple[str, ...] = ("url",)) -> None:
        self.rv = 1
        self.migration: JSON = {
            "apiVersion": "datamigration.dev/v1alpha1",
            "kind": "DataMigration",
            "metadata": {
                "name": "m",
                "namespace": NS,
                "uid": "uid-12345",
                "generation": 1,
                "resourceVersion": "1",
                "creationTimestamp": "2026-11-21T10:00:00Z",
            },
            "spec": raw_spec,
        }
        self.cluster = Cluster()
        self.secret_keys = secret_keys
        self.jobs: dict[str, JSON] = {}
        self.pods: dict[str, list[JSON]] = {}
        self.events: dict[str, JSON] = {}
        self.job_creates = 0
        self.status_writes = 0
        self.before_status_write: Callable[[], None] | None = None

    def _bump(self) -> None:
        self.rv += 1
        self.migration["metadata"]["resourceVersion"] = str(self.rv)

    # -- the runner, from outside -----------------------------------------------------------------
    def runner_progress(self, progress: JSON) -> None:
        status = self.migration.setdefault("status", {})
        apply_merge(status, {"progress": progress})
        self._bump()

    # -- OperatorApi --------------------------------------------------------------------------------
    def get_migration(self, namespace: str, name: str) -> JSON | None:
        return copy.deepcopy(self.migration)

    def list_migrations(
        self, namespace: str | None = None, workload: str | None = None
    ) -> list[JSON]:
        return [copy.deepcopy(self.migration)]

    def patch_migration_status(
        self, namespace: str, name: str, status: JSON, resource_version: str | None = None
    ) -> JSON:
        hook, self.before_status_write = self.before_status_write, None
        if hook is not None:
            hook()
        if resource_version is not None and resource_version != str(self.rv):
            raise KubeError(409, "Conflict", "the object has been modified")
        apply_merge(self.migration.setdefault("status", {}), status)
        self.status_writes += 1
        self._bump()
        return copy.deepcopy(self.migration)

    def list_jobs(self, namespace: str, selector: str) -> list[JSON]:
        return [copy.deepcopy(j) for j in self.jobs.values()]

    def create_job(self, manifest: JSON) -> JSON:
        self.job_creates += 1
        self.jobs.setdefault(manifest["metadata"]["name"], copy.deepcopy(manifest))
        return manifest

    def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop(name, None)

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        if selector.startswith("datamigration.dev/migration-uid="):
            return [pod for pods in self.pods.values() for pod in pods]
        return self.cluster.pods

    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return self.cluster.deployment()

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]:
        return self.cluster.rs

    def set_container_image(
        self, namespace: str, name: str, container: str, image: str, kind: str = "Deployment"
    ) -> None:
        self.cluster.rolled_out(image)

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None:
        return None  # only the Deployment of `cluster` exists

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]:
        return []

    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None:
        return tuple(self.secret_keys)

    def ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None:
        pass

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        assert name is not None
        if name not in self.events:  # the API server answers 409; the adapter ignores it
            self.events[name] = {"type": type_, "reason": reason, "message": message}

    # -- helpers --------------------------------------------------------------------------------
    def finish(self, phase: str, *, failed: bool = False, log: str = "") -> None:
        for name, job in self.jobs.items():
            if job["metadata"]["labels"]["datamigration.dev/phase"] == phase:
                kind = "Failed" if failed else "Complete"
                job["status"] = {"conditions": [{"type": kind, "status": "True"}]}
                if failed:
                    self.pods[name] = [
                        {
                            "metadata": {"name": f"{name}-p", "labels": {"job-name": name}},
                            "status": {
                                "phase": "Failed",
                                "containerStatuses": [
                                    {
                                        "name": "runner",
                                        "state": {
                                            "terminated": {
                                                "exitCode": 7,
                                                "message": log,
                                                "finishedAt": "2026-11-21T10:00:00Z",
                                            }
                                        },
                                    }
                                ],
                            },
                        }
                    ]

    def reasons(self) -> list[str]:
        return sorted(e["reason"] for e in self.events.values())


def reconciler(api: FakeApi) -> Reconciler:
    return Reconciler(api=api, settings=OperatorSettings(manage_runner_rbac=False))


def status(api: FakeApi) -> JSON:
    result: JSON = api.migration.get("status") or {}
    return result


def test_reconcile_creates_one_job_then_records_it_then_emits_the_event() -> None:
    api = FakeApi(spec())
    reconciler(api).reconcile_once(NS, "m")
    assert list(api.jobs) == ["m-expand-1-uid-1"]
    assert status(api)["phases"]["expand"]["state"] == "Running"
    assert api.reasons() == ["PhaseStarted"]
    reconciler(api).reconcile_once(NS, "m")  # sees its Job running: a message, no Event
    writes = api.status_writes
    reconciler(api).reconcile_once(NS, "m")  # nothing changed: no write, no Event
    assert api.job_creates == 1 and api.reasons() == ["PhaseStarted"]
    assert api.status_writes == writes


def test_a_concurrent_runner_write_is_not_overwritten_and_its_keys_survive() -> None:
    api = FakeApi(spec())
    reconciler(api).reconcile_once(NS, "m")
    api.runner_progress({"phase": "expand", "rowsDone": 42, "step": "add-col"})
    api.finish("expand")
    api.before_status_write = lambda: api.runner_progress({"rowsDone": 43})
    reconciler(api).reconcile_once(NS, "m")
    assert status(api)["progress"]["rowsDone"] == 43
    assert status(api)["phases"]["expand"]["state"] == "Succeeded"
    assert api.reasons().count("PhaseSucceeded") == 1


def test_two_operators_at_once_emit_each_event_once() -> None:
    api = FakeApi(spec())
    first, second = reconciler(api), reconciler(api)
    # The second operator reconciles between the first one's read and its status write.
    api.before_status_write = lambda: second.reconcile_once(NS, "m")
    first.reconcile_once(NS, "m")
    assert list(api.jobs) == ["m-expand-1-uid-1"]
    # The second one recorded the start (it adopted the Job); the first one's write met a 409,
    # and on a fresh read it saw no transition left to announce.
    assert api.reasons() == ["PhaseStarted"]
    api.finish("expand")
    api.before_status_write = lambda: second.reconcile_once(NS, "m")
    first.reconcile_once(NS, "m")
    assert api.reasons() == ["PhaseStarted", "PhaseStarted", "PhaseSucceeded"]
    assert len({e["message"] for e in api.events.values()}) == 3
    assert sorted(
        j["metadata"]["labels"]["datamigration.dev/phase"] for j in api.jobs.values()
    ) == [
        "backfill",
        "expand",
    ]


def test_secret_without_the_key_creates_no_job() -> None:
    api = FakeApi(spec(), secret_keys=("password",))
    reconciler(api).reconcile_once(NS, "m")
    assert api.jobs == {} and status(api)["conditions"][2]["reason"] == "SecretKeyNotFound"


def test_messages_from_pods_are_scrubbed_before_status_and_events() -> None:
    api = FakeApi(spec())
    reconciler(api).reconcile_once(NS, "m")
    api.finish("expand", failed=True, log="connect postgresql://app:s3cr3t@db/shop failed")
    reconciler(api).reconcile_once(NS, "m")
    assert "s3cr3t" not in str(api.migration) and "s3cr3t" not in str(api.events)
    assert "JobFailed" in api.reasons()


def test_invalid_edit_after_success_keeps_succeeded() -> None:
    api = FakeApi(spec())
    api.migration["status"] = {"phase": "Succeeded", "observedGeneration": 1}
    api.migration["spec"] = {"workload": {}}
    api.migration["metadata"]["generation"] = 2
    reconciler(api).reconcile_once(NS, "m")
    assert status(api)["phase"] == "Succeeded" and api.events == {}


def test_merge_patch_never_nulls_unowned_progress_keys() -> None:
    old = {"progress": {"rowsDone": 5, "phase": "backfill"}}
    new = {"progress": {"rowsDone": 5, "phase": "backfill", "summary": "x"}}
    assert merge_patch(old, new) == {"progress": {"summary": "x"}}


# -- reads from the watch caches (controller/cache.py) -----------------------------------------
class CountingApi(FakeApi):
    """A FakeApi that counts the reads made of it (the live API server, for these tests)."""

    def __init__(self, raw_spec: JSON, **kwargs: Any) -> None:
        super().__init__(raw_spec, **kwargs)
        self.reads = 0

    def get_migration(self, namespace: str, name: str) -> JSON | None:
        self.reads += 1
        return super().get_migration(namespace, name)

    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None:
        self.reads += 1
        return super().secret_key_names(namespace, name)


def test_a_side_effect_decided_on_the_cache_is_decided_again_on_live_reads() -> None:
    """The cache still shows the Secret's key; the API server no longer does: no Job."""
    live = CountingApi(spec(), secret_keys=())
    cached = FakeApi(spec())  # the stale view: the key is there
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=cached)
    rec.reconcile_once(NS, "m")
    assert live.job_creates == 0 and cached.job_creates == 0
    assert "SecretKeyNotFound" in live.reasons()
    assert live.reads >= 2  # the migration and the Secret were read again from the API


def test_an_edit_the_cache_has_not_seen_is_observed_again_from_the_live_migration() -> None:
    """The live observation starts from the cached migration while the migration is read again
    beside it; the live migration names another Secret key (generation 2), which the Secret
    lacks: the observation of the cached spec is dropped and no Job is created."""
    live = FakeApi(spec())
    cached = copy.deepcopy(live)  # generation 1: key `url`, which the Secret has
    live.migration["spec"]["database"]["urlFrom"]["secretKeyRef"]["key"] = "password"
    live.migration["metadata"]["generation"] = 2
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=cached)
    rec.reconcile_once(NS, "m")
    assert live.job_creates == 0
    assert "SecretKeyNotFound" in live.reasons()


def test_a_waiting_migration_costs_no_api_read_when_the_cache_shows_nothing_changed() -> None:
    live = CountingApi(spec())
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=live)
    rec.reconcile_once(NS, "m")  # creates the expand Job (live reads, then the write)
    cached = copy.deepcopy(live)  # the cache has caught up with everything
    cached.reads = 0
    live.reads = 0
    rec.reads = cached
    rec.reconcile_once(NS, "m")  # sees its Job running: status only, decided on the cache
    live.reads = 0
    rec.reads = copy.deepcopy(live)
    rec.reconcile_once(NS, "m")  # nothing to do
    assert live.reads == 0 and live.job_creates == 1


def test_a_status_write_on_a_stale_cache_meets_409_and_is_decided_again_live() -> None:
    live = FakeApi(spec())
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=live)
    rec.reconcile_once(NS, "m")
    stale = copy.deepcopy(live)  # before the runner's progress write below
    live.runner_progress({"phase": "expand", "rowsDone": 1})
    rec.reads = stale
    writes = live.status_writes
    rec.reconcile_once(NS, "m")
    assert status(live)["progress"]["rowsDone"] == 1  # the runner's key survived
    assert live.status_writes >= writes


def test_the_echo_of_a_settled_status_write_wakes_nothing_and_others_do() -> None:
    live = FakeApi(spec())
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=live)
    rec.reconcile_once(NS, "m")  # creates the Job, writes Running: the Job's events follow
    rec.reads = copy.deepcopy(live)
    rec.reconcile_once(NS, "m")  # nothing more to do after this write, or no write at all
    written = str(live.migration["metadata"]["resourceVersion"])
    settled = rec.is_own_echo(NS, "m", written)
    live.runner_progress({"rowsDone": 5})  # somebody else's write: always wakes
    assert not rec.is_own_echo(NS, "m", str(live.migration["metadata"]["resourceVersion"]))
    assert settled == (live.status_writes >= 2)


def test_our_write_is_kept_for_later_reads_only_until_the_cache_shows_it() -> None:
    """Read-your-writes: a reconcile on a cache that has not caught up reads our own write
    instead. Once the cache shows it, it is dropped, whether its echo came after the write
    (`is_own_echo`) or before the response did; kept, a migration that waits would hold one
    full object in memory until its next reconcile."""
    live = FakeApi(spec())
    stale = copy.deepcopy(live)
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=stale)
    rec.reconcile_once(NS, "m")  # a Job: decided again live, then Running is written
    assert live.status_writes >= 1
    assert set(rec._written) == {(NS, "m")}  # the cache is behind: kept
    rec.is_own_echo(NS, "m", str(live.migration["metadata"]["resourceVersion"]))  # the echo
    assert rec._written == {}

    early = FakeApi(spec())
    rec = Reconciler(api=early, settings=OperatorSettings(manage_runner_rbac=False), reads=early)
    rec.reconcile_once(NS, "m")  # the cache shows the write before the response is kept
    assert early.status_writes >= 1
    assert rec._written == {}


def after_expand_and_backfill() -> tuple[FakeApi, Reconciler]:
    """An Observe-mode migration whose expand and backfill Jobs have finished: its next
    reconcile enters RollingOut."""
    raw = spec()
    raw["codeRollout"] = {"mode": "Observe", "timeoutSeconds": 600}
    live = FakeApi(raw)
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=live)
    for phase in ("expand", "backfill"):
        rec.reconcile_once(NS, "m")
        live.finish(phase)
    return live, rec


def test_the_echo_of_a_write_that_begins_a_wait_on_the_workload_still_wakes() -> None:
    """Entering RollingOut changes which workload events wake the migration; one the index let
    by before the write (the last old pod leaving) may be the last there will be, so the echo
    of that write must reconcile once more."""
    live, rec = after_expand_and_backfill()
    rec.reconcile_once(NS, "m")  # a status-only write: RollingOut
    assert status(live)["phase"] == "RollingOut"
    written = str(live.migration["metadata"]["resourceVersion"])
    assert not rec.is_own_echo(NS, "m", written)


def test_a_spec_is_validated_once_however_many_reconciles_read_it() -> None:
    rec = reconciler(FakeApi(spec()))
    first = rec._validate(spec())
    assert rec._validate(copy.deepcopy(spec())) is first
    edited = spec()
    edited["paused"] = True
    assert rec._validate(edited) is not first


def test_the_live_reads_side_by_side_observe_what_one_after_another_observes() -> None:
    """Before an action the Jobs, the workload and the Secret are read at once, each part in
    its own order: what is observed must not depend on it."""
    import concurrent.futures

    from datamigration.controller.observe import observe
    from datamigration.validation import validate

    api = FakeApi(spec())
    rec = Reconciler(api=api, settings=OperatorSettings(manage_runner_rbac=False))
    rec.reconcile_once(NS, "m")  # an expand Job exists now, with its pod
    checked = validate(api.migration["spec"])
    body = copy.deepcopy(api.migration)
    one_by_one = observe(api, body, checked)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        side_by_side = observe(api, body, checked, parallel=pool)
    assert side_by_side == one_by_one and len(one_by_one.jobs) == 1
    # With the watch's selector of the workload as a hint, right or stale, the same again.
    selector = label_selector(api.cluster.deployment()["spec"]["selector"])
    for hint in (selector, "app=re-created-with-another"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            hinted = observe(
                api, body, checked, parallel=pool, selector_hints=lambda ns, k, n, h=hint: h
            )
        assert hinted == one_by_one, hint


class PodsFirstApi(FakeApi):
    """The Deployment read answers only once the pods are being read (or a bound passes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pods_asked = threading.Event()
        self.deployment_waited = False

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        if not selector.startswith("datamigration.dev/"):
            self.pods_asked.set()
        return super().list_pods(namespace, selector)

    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        self.deployment_waited = self.pods_asked.wait(10.0)
        return super().get_deployment(namespace, name)


def test_with_the_watched_selector_a_workloads_pods_are_read_beside_the_workload() -> None:
    """One round trip less between a rollout's proof and the contract Job: the pods (and the
    ReplicaSets) are read by the selector the watch showed, at the same time as the workload."""
    import concurrent.futures

    from datamigration.controller.observe import observe
    from datamigration.validation import validate

    api = PodsFirstApi(spec())
    checked = validate(api.migration["spec"])
    selector = label_selector(api.cluster.deployment()["spec"]["selector"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        seen = observe(
            api, api.migration, checked, parallel=pool, selector_hints=lambda ns, k, n: selector
        )
    assert api.deployment_waited, "the pods were read only after the Deployment"
    assert seen.workload is not None and seen.workload.pods


def test_before_acting_the_peers_come_from_the_watch_and_the_rest_from_the_api() -> None:
    """The namespace's migrations come from the ordered watch stream (older peers are always
    there); the migration, its Jobs, the workload and the Secret are read again live."""

    class Listing(CountingApi):
        lists = 0

        def list_migrations(
            self, namespace: str | None = None, workload: str | None = None
        ) -> list[JSON]:
            self.lists += 1
            return super().list_migrations(namespace, workload)

    live = Listing(spec())
    cached = Listing(spec())
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=False), reads=cached)
    rec.reconcile_once(NS, "m")
    assert live.job_creates == 1  # acted, on a live decision...
    assert live.reads >= 2 and live.lists == 0  # ...with live reads, peers from the watch
    assert cached.lists >= 1


def test_a_change_of_rollout_counts_alone_is_written_at_most_once_per_interval() -> None:
    """Each pod event of a rollout changes the counts in status.rollout; with many migrations
    on one Deployment that was a write per migration per pod event. A count-only change right
    after a write waits (the reconcile asks to come back when the interval is over); the
    rollout's proof, a transition, is written at once."""
    live, rec = after_expand_and_backfill()
    rec.reconcile_once(NS, "m")
    assert status(live)["phase"] == "RollingOut"
    live.cluster.rolling("shop-api:2.0", updated=1, available=1)
    rec.reconcile_once(NS, "m")  # a new revision and template hash: written at once
    writes = live.status_writes
    assert status(live)["rollout"]["updatedReplicas"] == 1

    live.cluster.status.update(updatedReplicas=2, availableReplicas=2)  # the same rollout
    delay = rec.reconcile_once(NS, "m")
    assert live.status_writes == writes  # counts only, just after a write: not yet
    assert delay is not None and 0 < delay <= PROGRESS_WRITE_SECONDS

    rec._last_write[(NS, "m")] -= PROGRESS_WRITE_SECONDS  # the interval is over
    rec.reconcile_once(NS, "m")
    assert live.status_writes == writes + 1
    assert status(live)["rollout"]["updatedReplicas"] == 2

    live.cluster.rolled_out("shop-api:2.0")  # proven: a transition, not progress
    rec.reconcile_once(NS, "m")
    assert status(live)["phase"] == "Contracting"
    assert any(
        j["metadata"]["labels"]["datamigration.dev/phase"] == "contract" for j in live.jobs.values()
    )
