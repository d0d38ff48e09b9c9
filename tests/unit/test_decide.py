"""`decide`: every decision of the operator as a table of named scenarios.

Scenarios run `decide` step by step, feeding each decision's status into the next call as the
operator does, against observations built by `factories`. The invariants that matter most:
contract never starts before the rollout is proven and approved; nothing runs twice; invalid or
incomplete input runs nothing; Events only on transitions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import Cluster, spec, with_contract

from datamigration.core.decide import (
    CreateJob,
    Decision,
    DeleteJob,
    EmitEvent,
    Invalid,
    Observed,
    SetWorkloadImage,
    Workload,
    decide,
)
from datamigration.core.jobs import JobObservation
from datamigration.core.spec import parse_spec

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def observed(
    cluster: Cluster | None, *jobs: JobObservation, secret: bool = True, retry: str = ""
) -> Observed:
    workload = None if cluster is None else Workload(cluster.deployment(), cluster.rs, cluster.pods)
    return Observed(
        generation=1, secret_exists=secret, workload=workload, jobs=jobs, retry_token=retry
    )


def job(phase: str, attempt: int, outcome: str, exit_code: int | None = None) -> JobObservation:
    return JobObservation(
        name=f"m-{phase}-{attempt}-abcde",
        phase=phase,
        attempt=attempt,
        outcome=outcome,
        exit_code=exit_code,  # type: ignore[arg-type]
        message="Job failed: BackoffLimitExceeded; exit code 7: boom"
        if outcome == "Failed"
        else "",
    )


def creates(d: Decision) -> list[tuple[str, int]]:
    return [(a.phase, a.attempt) for a in d.actions if isinstance(a, CreateJob)]


def events(d: Decision) -> list[str]:
    return [a.reason for a in d.actions if isinstance(a, EmitEvent)]


def cond(d: Decision, type_: str) -> dict[str, Any]:
    return next(c for c in d.status["conditions"] if c["type"] == type_)


def run(
    raw: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    obs: Observed | None = None,
    now: datetime = NOW,
) -> Decision:
    return decide(parse_spec(raw or spec()), status or {}, obs or observed(Cluster()), now)


def through_backfill() -> dict[str, Any]:
    """Status after expand and backfill succeeded (code-rollout not started)."""
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    return run(
        status=s,
        obs=observed(Cluster(), job("expand", 1, "Succeeded"), job("backfill", 1, "Succeeded")),
    ).status


def rollout_done(raw: dict[str, Any] | None = None, cluster: Cluster | None = None) -> Decision:
    """The reconcile that sees the rollout to shop-api:2.0 finish (after expand and backfill)."""
    s = through_backfill()
    done = [job("expand", 1, "Succeeded"), job("backfill", 1, "Succeeded")]
    s = run(raw, s, observed(Cluster(), *done)).status  # starts code-rollout
    return run(raw, s, observed(cluster or Cluster().rolled_out("shop-api:2.0"), *done))


DONE_DB = (job("expand", 1, "Succeeded"), job("backfill", 1, "Succeeded"))


# -- input problems: nothing runs ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("obs", "phase", "reason"),
    [
        pytest.param(
            observed(Cluster(), secret=False), "Pending", "SecretNotFound", id="no-secret"
        ),
        pytest.param(observed(None), "Pending", "WorkloadNotFound", id="no-deployment"),
    ],
)
def test_missing_dependencies_run_nothing(obs: Observed, phase: str, reason: str) -> None:
    d = run(obs=obs)
    assert creates(d) == [] and d.status["phase"] == phase
    assert cond(d, "Stalled")["status"] == "True" and cond(d, "Stalled")["reason"] == reason


def test_invalid_spec_is_marked_and_runs_nothing() -> None:
    d = decide(Invalid(("spec.workload.image: is required",)), {}, observed(Cluster()), NOW)
    assert d.status["phase"] == "Invalid" and creates(d) == []
    assert cond(d, "Stalled")["reason"] == "InvalidSpec"
    assert "spec.workload.image" in d.status["message"]
    assert events(d) == ["InvalidSpec"]


def test_unknown_container_is_invalid() -> None:
    raw = spec(workload={"name": "shop-api", "container": "web", "image": "x:2"})
    d = run(raw)
    assert d.status["phase"] == "Invalid" and creates(d) == []
    assert "spec.workload.container" in d.status["message"] and "api" in d.status["message"]


# -- database phases ----------------------------------------------------------------------------
def test_fresh_migration_starts_expand_when_workload_is_stable() -> None:
    d = run()
    assert creates(d) == [("expand", 1)]
    assert d.status["phase"] == "Expanding" and d.status["phases"]["expand"]["state"] == "Running"
    assert events(d) == ["PhaseStarted"]


def test_waits_for_a_rollout_in_progress_before_any_job() -> None:
    d = run(obs=observed(Cluster().rolling("shop-api:1.1", 1, 1)))
    assert creates(d) == [] and d.status["phase"] == "Pending"
    assert cond(d, "Ready")["reason"] == "WaitingForWorkload"


def test_running_job_is_not_created_again() -> None:
    s = run().status
    d = run(status=s, obs=observed(Cluster(), job("expand", 1, "Running")))
    assert creates(d) == [] and events(d) == []


def test_operator_restart_adopts_a_job_it_did_not_record() -> None:
    d = run(status={}, obs=observed(Cluster(), job("expand", 1, "Running")))
    assert creates(d) == []
    assert d.status["phases"]["expand"]["attempts"] == 1


def test_expand_success_starts_backfill() -> None:
    s = run().status
    d = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded")))
    assert creates(d) == [("backfill", 1)]
    assert "PhaseSucceeded" in events(d)


def test_failed_job_stops_with_its_message() -> None:
    s = run().status
    d = run(status=s, obs=observed(Cluster(), job("expand", 1, "Failed", 7)))
    assert creates(d) == [] and d.status["phase"] == "Failed"
    assert cond(d, "Stalled")["reason"] == "JobFailed"
    assert "exit code 7: boom" in d.status["message"]
    again = run(status=d.status, obs=observed(Cluster(), job("expand", 1, "Failed", 7)))
    assert creates(again) == [] and events(again) == []


def test_retry_token_starts_a_new_attempt_once() -> None:
    s = run().status
    failed = run(status=s, obs=observed(Cluster(), job("expand", 1, "Failed", 7))).status
    d = run(status=failed, obs=observed(Cluster(), job("expand", 1, "Failed", 7), retry="t1"))
    assert creates(d) == [("expand", 2)] and "Retried" in events(d)
    same = run(
        status=failed | {"retryToken": "t1"},
        obs=observed(Cluster(), job("expand", 1, "Failed", 7), retry="t1"),
    )
    assert creates(same) == []


def test_paused_backfill_resumes_as_a_new_attempt_only_when_unpaused() -> None:
    s = through_backfill()
    s["phases"]["backfill"] = {"state": "Running", "attempts": 1}
    interrupted = (job("expand", 1, "Succeeded"), job("backfill", 1, "Failed", 75))
    paused = run(spec(paused=True), s, observed(Cluster(), *interrupted))
    assert creates(paused) == [] and paused.status["phase"] == "Paused"
    resumed = run(spec(), paused.status, observed(Cluster(), *interrupted))
    assert creates(resumed) == [("backfill", 2)]


# -- code rollout and the contract gate ---------------------------------------------------------
def test_apply_mode_sets_the_image_and_waits() -> None:
    d = run(status=through_backfill(), obs=observed(Cluster(), *DONE_DB))
    assert SetWorkloadImage("api", "shop-api:2.0") in d.actions
    assert d.status["phase"] == "RollingOut" and creates(d) == []
    assert d.requeue_after is not None and d.requeue_after <= 600


def test_observe_mode_never_touches_the_workload() -> None:
    raw = spec(codeRollout={"mode": "Observe"})
    d = run(raw, through_backfill(), observed(Cluster(), *DONE_DB))
    assert not any(isinstance(a, SetWorkloadImage) for a in d.actions)
    assert d.status["phase"] == "RollingOut"


def test_proven_rollout_starts_contract_with_automatic_approval() -> None:
    d = rollout_done()
    assert d.status["phases"]["codeRollout"]["state"] == "Succeeded"
    assert cond(d, "RolloutVerified")["status"] == "True"
    assert creates(d) == [("contract", 1)]


@pytest.mark.parametrize(
    "cluster",
    [
        pytest.param(Cluster().rolled_out("shop-api:2.0", lingering=1), id="terminating-old-pod"),
        pytest.param(Cluster().rolled_out("shop-api:2.0", old_rs_scaled=1), id="old-rs-scaled"),
        pytest.param(Cluster().rolling("shop-api:2.0", 2, 2), id="still-rolling"),
        pytest.param(Cluster(), id="template-not-changed"),
    ],
)
def test_contract_never_starts_before_the_proof(cluster: Cluster) -> None:
    s = through_backfill()
    for _ in range(3):
        d = run(status=s, obs=observed(cluster, *DONE_DB))
        assert creates(d) == []
        s = d.status
    assert s["phases"]["contract"]["state"] == "Pending"


def test_lingering_pod_then_gone_releases_contract() -> None:
    blocked = rollout_done(cluster=Cluster().rolled_out("shop-api:2.0", lingering=1))
    assert creates(blocked) == []
    assert blocked.status["phases"]["codeRollout"]["state"] == "Running"
    assert blocked.status["rollout"]["terminatingPods"] == 1
    d = run(status=blocked.status, obs=observed(Cluster().rolled_out("shop-api:2.0"), *DONE_DB))
    assert creates(d) == [("contract", 1)]


def test_manual_approval_waits_visibly_then_continues() -> None:
    raw = with_contract(approval="Manual")
    d = rollout_done(raw)
    assert creates(d) == [] and d.status["phase"] == "AwaitingApproval"
    assert cond(d, "AwaitingApproval")["status"] == "True"
    assert "ApprovalRequired" in events(d) or "RolloutProven" in events(d)
    still = run(raw, d.status, observed(Cluster().rolled_out("shop-api:2.0"), *DONE_DB))
    assert creates(still) == [] and events(still) == []
    approved = with_contract(approval="Manual", approved=True)
    d2 = run(approved, d.status, observed(Cluster().rolled_out("shop-api:2.0"), *DONE_DB))
    assert creates(d2) == [("contract", 1)]
    assert cond(d2, "AwaitingApproval")["status"] == "False"


def test_rollout_that_exceeds_its_deadline_fails_before_contract() -> None:
    s = through_backfill()
    s = run(status=s, obs=observed(Cluster(), *DONE_DB)).status
    d = run(status=s, obs=observed(Cluster().deadline_exceeded("shop-api:2.0"), *DONE_DB))
    assert d.status["phase"] == "Failed" and creates(d) == []
    assert cond(d, "Stalled")["reason"] == "RolloutFailed" and "RolloutFailed" in events(d)
    later = run(status=d.status, obs=observed(Cluster().rolled_out("shop-api:2.0"), *DONE_DB))
    assert creates(later) == [], "a failed rollout never proceeds to contract by itself"


def test_rollout_timeout() -> None:
    s = through_backfill()
    s = run(status=s, obs=observed(Cluster(), *DONE_DB)).status
    d = run(
        status=s,
        obs=observed(Cluster().rolling("shop-api:2.0", 1, 1), *DONE_DB),
        now=NOW + timedelta(seconds=601),
    )
    assert d.status["phase"] == "Failed" and cond(d, "Stalled")["reason"] == "RolloutTimedOut"


def test_verify_failure_in_contract_is_reported_as_such() -> None:
    s = rollout_done().status
    proven = Cluster().rolled_out("shop-api:2.0")
    d = run(status=s, obs=observed(proven, *DONE_DB, job("contract", 1, "Failed", 4)))
    assert cond(d, "Stalled")["reason"] == "VerifyFailed"


def test_contract_success_finishes_the_migration() -> None:
    s = rollout_done().status
    proven = Cluster().rolled_out("shop-api:2.0")
    d = run(status=s, obs=observed(proven, *DONE_DB, job("contract", 1, "Succeeded")))
    assert d.status["phase"] == "Succeeded" and cond(d, "Ready")["status"] == "True"
    assert "Succeeded" in events(d)
    again = run(status=d.status, obs=observed(proven, *DONE_DB, job("contract", 1, "Succeeded")))
    assert again.actions == ()


# -- abort ---------------------------------------------------------------------------------------
def test_abort_stops_a_running_backfill_and_never_contracts() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    running = (job("expand", 1, "Succeeded"), job("backfill", 1, "Running"))
    d = run(spec(abort=True), s, observed(Cluster(), *running))
    assert DeleteJob("m-backfill-1-abcde") in d.actions and d.status["phase"] == "Aborted"
    later = run(spec(), d.status, observed(Cluster().rolled_out("shop-api:2.0"), *DONE_DB))
    assert creates(later) == [] and later.status["phase"] == "Aborted"


def test_abort_after_contract_started_is_ignored() -> None:
    s = rollout_done().status
    proven = Cluster().rolled_out("shop-api:2.0")
    d = run(spec(abort=True), s, observed(proven, *DONE_DB, job("contract", 1, "Running")))
    assert not any(isinstance(a, DeleteJob) for a in d.actions)
    assert d.status["phase"] == "Contracting"


# -- status hygiene -----------------------------------------------------------------------------
def test_no_event_and_same_transition_time_when_nothing_changes() -> None:
    first = run(obs=observed(Cluster().rolling("x:1", 1, 1)))
    second = run(
        status=first.status,
        obs=observed(Cluster().rolling("x:1", 1, 1)),
        now=NOW + timedelta(minutes=5),
    )
    assert events(second) == []
    assert cond(second, "Ready")["lastTransitionTime"] == cond(first, "Ready")["lastTransitionTime"]
    assert second.status == first.status


def test_ready_for_rollout_condition_after_backfill() -> None:
    d = run(status=through_backfill(), obs=observed(Cluster(), *DONE_DB))
    assert cond(d, "ReadyForRollout")["status"] == "True"


def test_running_phase_whose_job_vanished_is_recreated_with_the_same_attempt() -> None:
    s = run().status
    d = run(status=s, obs=observed(Cluster()))
    assert creates(d) == [("expand", 1)]
