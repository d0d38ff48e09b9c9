"""Events posted beside the reconciles (controller/events.py): a reconcile does not wait for its
Events; they are posted in the order they were emitted, only while this process leads, and one
that fails does not stop the others."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from test_controller import NS, FakeApi, spec, status

from datamigration.controller.events import EventPoster
from datamigration.controller.reconciler import Reconciler
from datamigration.controller.settings import OperatorSettings
from datamigration.k8s.client import KubeError

WAIT = 10.0  # a bound on every wait below, so a regression fails instead of hanging


class Recorder:
    """`post_event` of an API server: records the reasons; `gate` holds each post until set;
    the reasons in `failing` answer 500."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.posted: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a post has begun (past the fence)
        self.failing = failing

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        if reason in self.failing:
            raise KubeError(500, "InternalError", "the API server failed")
        self.posted.append(reason)


MIGRATION = {"metadata": {"namespace": NS, "name": "m", "uid": "u1"}}


def poster(api: Any, fence: Any = lambda: True) -> EventPoster:
    return EventPoster(api, fence)


def test_events_are_posted_in_the_order_they_were_emitted() -> None:
    api = Recorder()
    events = poster(api)
    api.gate.clear()  # the first post waits: the others queue behind it
    reasons = [f"Reason{i:02d}" for i in range(50)]
    for reason in reasons:
        events.post_event(MIGRATION, "Normal", reason, "message")
    assert events.pending == 50
    api.gate.set()
    assert events.drain(WAIT)
    assert api.posted == reasons and events.pending == 0


def test_a_reconcile_goes_on_while_its_event_waits_to_be_posted() -> None:
    api = FakeApi(spec())
    held = threading.Event()
    post = api.post_event

    def slow_post(*args: Any, **kwargs: Any) -> None:
        assert held.wait(WAIT)
        post(*args, **kwargs)

    api.post_event = slow_post  # type: ignore[method-assign]
    reconciler = Reconciler(api=api, settings=OperatorSettings(manage_runner_rbac=False))
    reconciler.events = poster(api)
    reconciler.reconcile_once(NS, "m")  # returns with its Event not posted yet
    assert status(api)["phases"]["expand"]["state"] == "Running"
    assert api.reasons() == [] and reconciler.events.pending == 1
    held.set()
    assert reconciler.events.drain(WAIT)
    assert api.reasons() == ["PhaseStarted"]


def test_an_event_is_not_posted_once_this_process_no_longer_leads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, leads = Recorder(), threading.Event()
    leads.set()
    events = poster(api, leads.is_set)
    api.gate.clear()
    events.post_event(MIGRATION, "Normal", "PhaseStarted", "started")
    events.post_event(MIGRATION, "Normal", "PhaseSucceeded", "done")
    assert api.entered.wait(WAIT)
    leads.clear()  # the lead is lost while the first post is under way
    with caplog.at_level(logging.INFO, logger="datamigration.controller.events"):
        api.gate.set()
        assert events.drain(WAIT)
    assert api.posted == ["PhaseStarted"]
    assert "Event PhaseSucceeded not posted: this process no longer leads" in caplog.text


def test_a_failed_post_is_logged_and_the_next_events_are_still_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = Recorder(failing=("JobFailed",))
    events = poster(api)
    with caplog.at_level(logging.WARNING, logger="datamigration.controller.events"):
        for reason in ("PhaseStarted", "JobFailed", "Stalled"):
            events.post_event(MIGRATION, "Warning", reason, "message")
        assert events.drain(WAIT)
    assert api.posted == ["PhaseStarted", "Stalled"]
    assert f"{NS}/m: could not post Event JobFailed" in caplog.text


def test_drain_says_when_events_are_still_pending() -> None:
    api = Recorder()
    events = poster(api)
    api.gate.clear()
    events.post_event(MIGRATION, "Normal", "PhaseStarted", "started")
    assert not events.drain(0.05)
    assert events.pending == 1
    api.gate.set()
    assert events.drain(WAIT) and api.posted == ["PhaseStarted"]
