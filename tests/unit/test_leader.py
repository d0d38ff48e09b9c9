"""Leader election against a fake Lease API (the adapter boundary) and a fake clock.

The fake keeps the API server's rules that matter: a PUT with a stale resourceVersion and a
create of an existing Lease answer 409. What it shows: one of several candidates leads; a
standby takes over only after the lease duration on its own clock; a leader whose renews fail
closes its fence at the renew deadline (before anyone can take over) and reports the loss; a
leader paused past its lease finds another holder and never acts again.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from datamigration.k8s.client import KubeError
from datamigration.k8s.leader import LeaderElector, LeaseConfig, new_identity

JSON = dict[str, Any]


class FakeLeases:
    def __init__(self) -> None:
        self.leases: dict[str, JSON] = {}
        self.rv = 0
        self.down = False  # the API server is unreachable
        self.transport_error = False  # the client library's own exception, not a KubeError
        self.writes = 0
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.transport_error:
            raise TimeoutError("read timed out")  # as urllib3 raises past the client
        if self.down:
            raise KubeError(0, "ConnectionRefused", "the API server is gone")

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        self._check()
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease else None

    def create_lease(self, namespace: str, body: JSON) -> JSON:
        self._check()
        name = body["metadata"]["name"]
        if name in self.leases:
            raise KubeError(409, "AlreadyExists", "exists")
        self.rv += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[name] = stored
        self.writes += 1
        return copy.deepcopy(stored)

    def replace_lease(self, namespace: str, name: str, body: JSON) -> JSON:
        self._check()
        current = self.leases[name]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        self.rv += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[name] = stored
        self.writes += 1
        return copy.deepcopy(stored)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


WALL = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
CONFIG = LeaseConfig(namespace="dm-system")


def candidate(api: FakeLeases, clock: Clock, identity: str, events: list[str]) -> LeaderElector:
    return LeaderElector(
        api,
        LeaseConfig(namespace="dm-system", identity=identity),
        clock=clock,
        wall_clock=lambda: WALL,
        on_started=lambda: events.append(f"{identity} started"),
        on_lost=lambda: events.append(f"{identity} lost"),
    )


def test_one_of_three_leads_and_renews_keep_the_others_out() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a, b, c = (candidate(api, clock, n, events) for n in "abc")
    assert [a.step(), b.step(), c.step()] == [True, False, False]
    for _ in range(30):  # a minute of renews every 2 s: nobody else ever gets it
        clock.t += 2
        assert [a.step(), b.step(), c.step()] == [True, False, False]
        assert a.fence_ok() and not b.fence_ok() and not c.fence_ok()
    assert events == ["a started"]
    assert api.leases["datamigration-operator"]["spec"]["holderIdentity"] == "a"
    assert api.leases["datamigration-operator"]["spec"]["leaseTransitions"] == 0


def test_a_standby_takes_over_only_after_the_lease_duration_on_its_own_clock() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a, b = candidate(api, clock, "a", events), candidate(api, clock, "b", events)
    assert a.step() and not b.step()
    # a dies (SIGKILL): no more renews. b saw a's last renew at t=1000.
    for _ in range(7):
        clock.t += 2
        assert not b.step(), f"took over after {clock.t - 1000} s"
    clock.t = 1000 + CONFIG.lease_duration
    assert b.step() and b.fence_ok()
    spec = api.leases["datamigration-operator"]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert b.transitions == 1
    assert events == ["a started", "b started"]


def test_expiry_ignores_the_holders_wall_clock_timestamps() -> None:
    """A renewTime from a node whose clock is an hour behind does not make the lease look
    expired: expiry is judged from when *we* saw the record change."""
    api, clock, events = FakeLeases(), Clock(), list[str]()
    skewed = LeaderElector(
        api,
        LeaseConfig(namespace="dm-system", identity="a"),
        clock=clock,
        wall_clock=lambda: WALL - dt.timedelta(hours=1),
    )
    b = candidate(api, clock, "b", events)
    assert skewed.step()
    clock.t += 2
    assert not b.step()


def test_a_leader_that_cannot_renew_closes_its_fence_before_anyone_can_take_over() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a, b = candidate(api, clock, "a", events), candidate(api, clock, "b", events)
    assert a.step() and not b.step()
    api.down = True
    clock.t += 2
    assert not a.step() and a.fence_ok()  # still inside the renew deadline
    clock.t = 1000 + CONFIG.renew_deadline
    assert not a.fence_ok(), "the fence must close at the renew deadline"
    assert not a.step()
    assert a.lost and events == ["a started", "a lost"]
    api.down = False
    clock.t = 1000 + CONFIG.lease_duration - 0.1
    assert not b.step(), "b may not take over before the lease duration"
    clock.t = 1000 + CONFIG.lease_duration
    assert b.step()
    clock.t += 2
    assert not a.step() and not a.fence_ok(), "a lost leader never leads again"


def test_a_leader_renews_with_one_request_and_a_foreign_write_makes_it_step_down() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a = candidate(api, clock, "a", events)
    assert a.step()
    clock.t += 2
    calls = api.calls
    assert a.step() and api.calls == calls + 1, "a renew is one PUT, no GET"
    # Someone else writes the Lease (an admin, a takeover a paused leader slept through).
    lease = api.get_lease("dm-system", "datamigration-operator")
    assert lease is not None
    api.replace_lease(
        "dm-system",
        "datamigration-operator",
        {**lease, "spec": {**lease["spec"], "holderIdentity": "z"}},
    )
    clock.t += 2
    assert not a.step(), "the 409 is followed by a read that finds another holder"
    assert a.lost and not a.fence_ok() and events == ["a started", "a lost"]


def test_transport_errors_are_failed_attempts_and_the_deadline_still_holds() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a = candidate(api, clock, "a", events)
    assert a.step()
    api.transport_error = True
    clock.t += 2
    assert not a.step() and a.fence_ok()
    clock.t = 1000 + CONFIG.renew_deadline
    assert not a.step() and a.lost and events == ["a started", "a lost"]


def test_a_leader_paused_past_its_lease_finds_another_holder_and_stops() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a, b = candidate(api, clock, "a", events), candidate(api, clock, "b", events)
    assert a.step() and not b.step()
    clock.t += 20  # a is SIGSTOPped; b takes over
    assert b.step()
    assert not a.fence_ok(), "after resuming, a's fence is closed before it renews"
    writes = api.writes
    assert not a.step()
    assert api.writes == writes, "a wrote the Lease after resuming"
    assert a.lost and events == ["a started", "b started", "a lost"]


def test_a_late_renew_that_succeeds_still_ends_leadership() -> None:
    """Paused past the renew deadline with nobody to take over: the fence was closed in the
    meantime, so the process steps down (and exits) rather than silently resuming."""
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a = candidate(api, clock, "a", events)
    assert a.step()
    clock.t += CONFIG.renew_deadline + 1
    writes = api.writes
    assert not a.step() and a.lost and not a.fence_ok()
    assert api.writes == writes, "a leader past its deadline does not renew"


def test_concurrent_acquire_is_decided_by_the_resource_version() -> None:
    api, clock, events = FakeLeases(), Clock(), list[str]()
    a, b = candidate(api, clock, "a", events), candidate(api, clock, "b", events)
    assert a.step()
    clock.t += 30  # a is gone; both b and c see an expired lease
    c = candidate(api, clock, "c", events)
    assert not b.step() and not c.step()  # first sight of the record: its clock starts now
    clock.t += CONFIG.lease_duration
    stale = api.get_lease("dm-system", "datamigration-operator")
    assert b.step()
    # c read the lease before b's write: its PUT carries the stale resourceVersion
    body = {**(stale or {}), "spec": {**(stale or {})["spec"], "holderIdentity": "c"}}
    with pytest.raises(KubeError) as exc:
        api.replace_lease("dm-system", "datamigration-operator", body)
    assert exc.value.conflict
    assert not c.step()
    assert api.leases["datamigration-operator"]["spec"]["holderIdentity"] == "b"


def test_bad_timings_are_refused_and_identities_are_unique() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseConfig(namespace="x", lease_duration=10, renew_deadline=10)
    assert new_identity("op-0") != new_identity("op-0")
    assert new_identity("op-0").startswith("op-0_")


def test_a_failing_on_started_callback_does_not_stop_the_election() -> None:
    api, clock = FakeLeases(), Clock()

    def boom() -> None:
        raise TimeoutError("the Event could not be posted")

    a = LeaderElector(
        api, LeaseConfig(namespace="dm-system", identity="a"), clock=clock, on_started=boom
    )
    assert a.step() and a.fence_ok()
    clock.t += 2
    assert a.step() and a.fence_ok()
