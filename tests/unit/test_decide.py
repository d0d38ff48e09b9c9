"""`decide`: every decision of the operator as a table of named scenarios.

Scenarios run `decide` step by step, feeding each decision's status into the next call as the
operator does, against observations built by `factories`. The invariants that matter most:
contract never starts before the rollout is proven and approved; nothing runs twice; invalid or
incomplete input runs nothing; Events only on transitions.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import Cluster, spec, with_contract

from datamigration.core import rules
from datamigration.core.decide import (
    CreateJob,
    Decision,
    DeleteJob,
    EmitEvent,
    Invalid,
    Observed,
    Peer,
    SetWorkloadImage,
    Workload,
    decide,
)
from datamigration.core.jobs import EXIT_PAUSED, JobObservation
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
    assert SetWorkloadImage("api", "shop-api:2.0", name="shop-api") in d.actions
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


def test_contract_job_proves_again_the_image_the_operator_proved() -> None:
    def contract_image(d: Decision) -> list[str | None]:
        return [a.expected_image for a in d.actions if isinstance(a, CreateJob)]

    assert contract_image(rollout_done()) == ["shop-api:2.0"]
    # Observe mode without workload.image: the image of the revision observed, not None.
    observe = spec(
        workload={"name": "shop-api", "container": "api"}, codeRollout={"mode": "Observe"}
    )
    assert contract_image(rollout_done(observe)) == ["shop-api:2.0"]


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
    digest = d.status["contract"]["digest"]
    assert digest.startswith("sha256:") and digest[:19] in d.status["message"]
    approved = with_contract(approval="Manual", approved=True, approvedDigest=digest)
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


# -- abort with rollback: the database goes back to its old shape -------------------------------
UNDO = {
    "steps": [{"name": "drop-new", "sql": "ALTER TABLE users DROP COLUMN IF EXISTS email_address"}]
}
RENAME_OP = [
    {"renameColumn": {"table": "users", "from": "email", "to": "email_address", "type": "text"}}
]


def aborting(**overrides: Any) -> dict[str, Any]:
    return spec(abort=True, rollback=UNDO, **overrides)


def test_abort_after_backfill_runs_the_rollback_job_then_records_what_it_undid() -> None:
    d = run(aborting(), through_backfill(), observed(Cluster(), *DONE_DB))
    assert creates(d) == [("rollback", 1)] and d.status["phase"] == "RollingBack"
    assert d.status["phases"]["rollback"]["state"] == "Running"
    assert "drop-new" in d.status["message"] and cond(d, "Ready")["reason"] == "RollingBack"
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Running")))
    assert creates(d) == [] and d.status["phase"] == "RollingBack"
    assert d.status["phases"]["rollback"]["job"] == "m-rollback-1-abcde"
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Succeeded")))
    rec = d.status["phases"]["rollback"]
    assert d.status["phase"] == "Aborted" and rec["state"] == "Succeeded"
    assert rec["undone"] == ["drop-new"] and rec["finishedAt"] == "2026-11-21T12:00:00Z"
    assert "RolledBack" in events(d) and "rolled back" in d.status["message"]
    later = run(
        aborting(), d.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Succeeded"))
    )
    assert later.actions == ()


def test_the_rollback_of_operations_runs_their_generated_undo() -> None:
    raw = spec(abort=True, operations=RENAME_OP)
    del raw["backfill"], raw["expand"]
    d = run(raw, through_backfill(), observed(Cluster(), *DONE_DB))
    assert creates(d) == [("rollback", 1)]
    d = run(raw, d.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Succeeded")))
    assert d.status["phases"]["rollback"]["undone"] == ["undo-rename-users-email"]


def test_abort_stops_the_running_backfill_and_starts_the_rollback_in_the_same_step() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    running = (job("expand", 1, "Succeeded"), job("backfill", 1, "Running"))
    d = run(aborting(), s, observed(Cluster(), *running))
    assert DeleteJob("m-backfill-1-abcde") in d.actions and creates(d) == [("rollback", 1)]
    assert d.status["phases"]["backfill"]["state"] == "Failed"
    # The deleted backfill Job is still seen while it terminates: the rollback Job is not.
    d = run(aborting(), d.status, observed(Cluster(), *running, job("rollback", 1, "Running")))
    assert DeleteJob("m-backfill-1-abcde") in d.actions
    assert DeleteJob("m-rollback-1-abcde") not in d.actions and creates(d) == []


@pytest.mark.parametrize(
    ("raw", "ran", "why"),
    [
        pytest.param(aborting(), False, "expand never ran", id="before-expand"),
        pytest.param(spec(abort=True), True, "no rollback steps", id="no-rollback-steps"),
    ],
)
def test_abort_with_nothing_to_undo_is_aborted_at_once(
    raw: dict[str, Any], ran: bool, why: str
) -> None:
    if ran:
        d = run(raw, through_backfill(), observed(Cluster(), *DONE_DB))
    else:
        d = run(raw, {}, observed(Cluster()))
    assert creates(d) == [] and d.status["phase"] == "Aborted"
    assert f"nothing to undo ({why})" in d.status["message"]
    assert "rollback" not in d.status["phases"]


def test_a_failed_rollback_stalls_with_its_reason_and_a_retry_runs_it_again() -> None:
    d = run(aborting(), through_backfill(), observed(Cluster(), *DONE_DB))
    failed = job("rollback", 1, "Failed", exit_code=7)
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB, failed))
    assert d.status["phase"] == "Failed" and cond(d, "Stalled")["reason"] == "RollbackFailed"
    assert d.status["phases"]["rollback"]["reason"] == "RollbackFailed"
    assert "boom" in d.status["message"] and "RollbackFailed" in events(d)
    assert rules.failed_phase(d.status) == "rollback"
    same = run(aborting(), d.status, observed(Cluster(), *DONE_DB, failed))
    assert creates(same) == [] and same.status["phase"] == "Failed"
    retried = run(aborting(), d.status, observed(Cluster(), *DONE_DB, failed, retry="t1"))
    assert creates(retried) == [("rollback", 2)] and retried.status["phase"] == "RollingBack"
    assert "Retried" in events(retried)


def test_a_paused_migration_starts_its_rollback_only_on_unpause() -> None:
    paused = aborting(paused=True)
    d = run(paused, through_backfill(), observed(Cluster(), *DONE_DB))
    assert creates(d) == [] and d.status["phase"] == "Paused"
    assert "the rollback (undoing drop-new) waits for spec.paused" in d.status["message"]
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB))
    assert creates(d) == [("rollback", 1)]
    # A rollback runner that stopped for a pause (exit 75) is not a failure: attempt 2 resumes.
    stopped = job("rollback", 1, "Failed", exit_code=EXIT_PAUSED)
    d = run(paused, d.status, observed(Cluster(), *DONE_DB, stopped))
    assert d.status["phase"] == "Paused" and d.status["phases"]["rollback"]["state"] == "Pending"
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB, stopped))
    assert creates(d) == [("rollback", 2)]


def test_a_rollback_once_started_finishes_even_if_abort_is_unset() -> None:
    d = run(aborting(), through_backfill(), observed(Cluster(), *DONE_DB))
    unset = spec(rollback=UNDO)
    later = run(unset, d.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Running")))
    assert creates(later) == [] and later.status["phase"] == "RollingBack"
    done = run(unset, later.status, observed(Cluster(), *DONE_DB, job("rollback", 1, "Succeeded")))
    assert done.status["phase"] == "Aborted"


def test_a_rollback_job_deleted_by_hand_is_recreated_with_the_same_attempt() -> None:
    d = run(aborting(), through_backfill(), observed(Cluster(), *DONE_DB))
    d = run(aborting(), d.status, observed(Cluster(), *DONE_DB))  # the Job is gone
    assert creates(d) == [("rollback", 1)]


def test_a_rollback_job_created_before_a_lost_status_write_is_adopted() -> None:
    d = run(
        aborting(), through_backfill(), observed(Cluster(), *DONE_DB, job("rollback", 1, "Running"))
    )
    assert creates(d) == [] and d.status["phases"]["rollback"]["attempts"] == 1


def test_abort_after_contract_started_is_refused_even_with_rollback_steps() -> None:
    s = rollout_done().status
    proven = Cluster().rolled_out("shop-api:2.0")
    d = run(aborting(), s, observed(proven, *DONE_DB, job("contract", 1, "Running")))
    assert creates(d) == [] and "rollback" not in d.status["phases"]
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


# -- approval bound to content (digest) ----------------------------------------------------------
PROVEN = Cluster().rolled_out("shop-api:2.0")


def awaiting(raw: dict[str, Any]) -> Decision:
    return rollout_done(raw)


def manual(**fields: Any) -> dict[str, Any]:
    return with_contract(approval="Manual", **fields)


def edited_drop(**fields: Any) -> dict[str, Any]:
    return manual(
        steps=[{"name": "drop-old", "sql": "ALTER TABLE users DROP COLUMN name"}], **fields
    )


def test_digest_covers_steps_verify_and_image_not_approval_fields() -> None:
    base = awaiting(manual()).status["contract"]["digest"]
    assert awaiting(edited_drop()).status["contract"]["digest"] != base
    other_verify = manual(verify=[{"name": "copied", "expect": 1, "query": "SELECT 1"}])
    assert awaiting(other_verify).status["contract"]["digest"] != base
    assert awaiting(manual(approved=True)).status["contract"]["digest"] == base
    other_image = manual()
    other_image["workload"] = {**other_image["workload"], "image": "shop-api:3.0"}
    d = rollout_done(other_image, Cluster().rolled_out("shop-api:3.0"))
    assert d.status["contract"]["digest"] != base


@pytest.mark.parametrize(
    ("raw", "reason", "stalled"),
    [
        pytest.param(manual(), "ApprovalRequired", "False", id="not-approved"),
        pytest.param(manual(approved=True), "ApprovalRequired", "False", id="bool-only"),
        pytest.param(
            edited_drop(approvedDigest="sha256:" + "0" * 64), "ApprovalStale", "True", id="stale"
        ),
    ],
)
def test_contract_without_a_matching_approval_never_runs(
    raw: dict[str, Any], reason: str, stalled: str
) -> None:
    d = awaiting(raw)
    assert creates(d) == [] and d.status["phase"] == "AwaitingApproval"
    assert cond(d, "Ready")["reason"] == reason and cond(d, "Stalled")["status"] == stalled
    assert d.status["contract"]["digest"] in d.status["message"]


def test_approve_then_edit_the_contract_is_stale_until_approved_again() -> None:
    digest = awaiting(manual()).status["contract"]["digest"]
    d = awaiting(edited_drop(approvedDigest=digest))
    assert creates(d) == [] and cond(d, "Stalled")["reason"] == "ApprovalStale"
    assert digest[:19] in d.status["message"]
    new = d.status["contract"]["digest"]
    assert new != digest and new[:19] in d.status["message"]
    again = run(edited_drop(approvedDigest=new), d.status, observed(PROVEN, *DONE_DB))
    assert creates(again) == [("contract", 1)]


def test_automatic_approval_with_a_stale_digest_does_not_run() -> None:
    raw = with_contract(approvedDigest="sha256:" + "1" * 64)
    d = rollout_done(raw)
    assert creates(d) == [] and cond(d, "Ready")["reason"] == "ApprovalStale"


def test_observe_mode_without_image_says_when_the_digest_is_known() -> None:
    raw = spec(workload={"name": "shop-api", "container": "api"}, codeRollout={"mode": "Observe"})
    d = run(raw)
    assert "digest" not in d.status["contract"]
    assert "known once the rollout" in d.status["contract"]["message"]


# -- edits detected, never skipped -----------------------------------------------------------------
def edited_expand() -> dict[str, Any]:
    return spec(
        expand={"steps": [{"name": "add-col", "sql": "ALTER TABLE users ADD COLUMN x int"}]}
    )


def test_job_records_the_checksums_of_its_steps() -> None:
    d = run()
    assert set(d.status["phases"]["expand"]["steps"]) == {"add-col"}


def test_edit_of_a_finished_expand_step_stalls_with_spec_changed() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    d = run(edited_expand(), s, observed(Cluster(), job("expand", 1, "Succeeded")))
    assert creates(d) == [] and cond(d, "Stalled")["reason"] == "SpecChanged"
    assert "spec.expand step add-col" in d.status["message"]
    assert "SpecChanged" in events(d)
    reverted = run(spec(), d.status, observed(Cluster(), job("expand", 1, "Succeeded")))
    assert cond(reverted, "Stalled")["status"] == "False"


def test_tuning_knobs_stay_editable() -> None:
    s = through_backfill()
    raw = spec()
    raw["backfill"]["steps"][0]["backfill"]["batchSize"] = 10
    d = run(raw, s, observed(Cluster(), *DONE_DB))
    assert cond(d, "Stalled")["status"] == "False"


def edited_set() -> dict[str, Any]:
    raw = spec()
    raw["backfill"]["steps"][0]["backfill"]["set"] = {"email_address": "lower(email)"}
    return raw


def test_edit_of_a_running_backfill_stops_its_job() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    running = (job("expand", 1, "Succeeded"), job("backfill", 1, "Running"))
    d = run(edited_set(), s, observed(Cluster(), *running))
    assert DeleteJob("m-backfill-1-abcde") in d.actions and creates(d) == []
    assert cond(d, "Stalled")["reason"] == "SpecChanged"
    gone = (job("expand", 1, "Succeeded"),)
    still = run(edited_set(), d.status, observed(Cluster(), *gone))
    assert creates(still) == [] and cond(still, "Stalled")["reason"] == "SpecChanged"


def test_edit_of_a_paused_backfill_stalls_and_accepting_reruns_it() -> None:
    s = through_backfill()
    s["phases"]["backfill"] = {
        "state": "Running",
        "attempts": 1,
        "steps": s["phases"]["backfill"]["steps"],
    }
    interrupted = (job("expand", 1, "Succeeded"), job("backfill", 1, "Failed", 75))
    paused = run(spec(paused=True), s, observed(Cluster(), *interrupted))
    d = run(edited_set(), paused.status, observed(Cluster(), *interrupted))
    assert creates(d) == [] and cond(d, "Stalled")["reason"] == "SpecChanged"
    token = d.status["message"].split("datamigration.dev/accept-change=")[1].split()[0]
    assert token.startswith("backfill/")
    wrong = Observed(
        **{**observed(Cluster(), *interrupted).__dict__, "accept_change": "backfill/0"}
    )
    assert creates(run(edited_set(), d.status, wrong)) == []
    ok = Observed(**{**observed(Cluster(), *interrupted).__dict__, "accept_change": token})
    accepted = run(edited_set(), d.status, ok)
    jobs = [a for a in accepted.actions if isinstance(a, CreateJob)]
    assert [(j.phase, j.attempt, j.allow_checksum_change) for j in jobs] == [("backfill", 2, True)]
    assert "ChangeAccepted" in events(accepted)


# -- status integrity ----------------------------------------------------------------------------
def test_invalid_spec_never_overwrites_a_terminal_phase() -> None:
    s = rollout_done().status
    done = run(status=s, obs=observed(PROVEN, *DONE_DB, job("contract", 1, "Succeeded"))).status
    d = decide(Invalid(("spec.x: bad",)), done, observed(PROVEN), NOW)
    assert d.status["phase"] == "Succeeded" and d.actions == ()


def test_invalid_spec_keeps_observing_a_running_job() -> None:
    s = run().status
    d = decide(Invalid(("spec.x: bad",)), s, observed(Cluster(), job("expand", 1, "Running")), NOW)
    assert d.status["phase"] == "Invalid" and "m-expand-1-abcde" in d.status["message"]
    assert d.status["phases"]["expand"]["state"] == "Running"
    fin = decide(
        Invalid(("spec.x: bad",)), d.status, observed(Cluster(), job("expand", 1, "Succeeded")), NOW
    )
    assert fin.status["phases"]["expand"]["state"] == "Succeeded"


def test_one_failure_keeps_one_reason() -> None:
    s = rollout_done().status
    fail = job("contract", 1, "Failed", 4)
    d = run(status=s, obs=observed(PROVEN, *DONE_DB, fail))
    again = run(status=d.status, obs=observed(PROVEN, *DONE_DB, fail))
    assert cond(again, "Stalled")["reason"] == "VerifyFailed" and events(again) == []


def test_operator_progress_keeps_the_runners_keys() -> None:
    s = run().status
    s["progress"] = {"phase": "expand", "rowsDone": 42, "summary": "x"}
    d = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded")))
    assert d.status["progress"]["rowsDone"] == 42 and d.status["progress"]["phase"] == "backfill"


# -- no silent hangs -------------------------------------------------------------------------------
def test_secret_without_the_key_creates_no_job() -> None:
    d = run(obs=Observed(**{**observed(Cluster()).__dict__, "secret_has_key": False}))
    assert creates(d) == [] and cond(d, "Stalled")["reason"] == "SecretKeyNotFound"
    assert "spec.database.urlFrom.secretKeyRef.key" in d.status["message"]


def waiting_pod(reason: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-expand-1-abcde-xyz"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "runner", "state": {"waiting": {"reason": reason, "message": message}}}
            ],
        },
    }


@pytest.mark.parametrize(
    "reason", ["CreateContainerConfigError", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"]
)
def test_pod_that_cannot_start_stalls_with_its_reason(reason: str) -> None:
    s = run().status
    pod = waiting_pod(reason, "couldn't find key url in Secret x; postgres://u:hunter2@db/x")
    obs = Observed(
        **{
            **observed(Cluster(), job("expand", 1, "Running")).__dict__,
            "job_pods": {"m-expand-1-abcde": [pod]},
        }
    )
    d = run(status=s, obs=obs)
    assert cond(d, "Stalled")["status"] == "True" and cond(d, "Stalled")["reason"] == reason
    assert "m-expand-1-abcde-xyz" in d.status["message"] and "hunter2" not in d.status["message"]
    assert [a.type for a in d.actions if isinstance(a, EmitEvent)] == ["Warning"]


def test_unschedulable_pod_stalls_only_after_the_bound() -> None:
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available",
                    "lastTransitionTime": "2026-11-21T11:59:30Z",
                }
            ],
        },
    }
    s = run().status
    base = observed(Cluster(), job("expand", 1, "Running")).__dict__
    obs = Observed(**{**base, "job_pods": {"m-expand-1-abcde": [pod]}})
    early = run(status=s, obs=obs)
    assert cond(early, "Stalled")["status"] == "False" and early.requeue_after == 30.0
    late = run(status=s, obs=obs, now=NOW + timedelta(seconds=31))
    assert cond(late, "Stalled")["reason"] == "Unschedulable"


# -- pause -----------------------------------------------------------------------------------------
def test_pause_is_enforced_by_deleting_the_backfill_job_after_the_grace() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    running = (job("expand", 1, "Succeeded"), job("backfill", 1, "Running"))
    d = run(spec(paused=True), s, observed(Cluster(), *running))
    assert d.status["phase"] == "Backfilling" and cond(d, "Ready")["reason"] == "Pausing"
    assert not any(isinstance(a, DeleteJob) for a in d.actions)
    assert [a.type for a in d.actions if isinstance(a, EmitEvent)] == ["Normal"]
    late = run(
        spec(paused=True), d.status, observed(Cluster(), *running), NOW + timedelta(seconds=31)
    )
    assert DeleteJob("m-backfill-1-abcde") in late.actions and late.status["phase"] == "Paused"
    assert "stopped Job m-backfill-1-abcde" in late.status["message"]
    resumed = run(spec(), late.status, observed(Cluster(), job("expand", 1, "Succeeded")))
    assert creates(resumed) == [("backfill", 2)]


def runner_pod(job_name: str, phase: str, state: str) -> dict[str, Any]:
    """A runner pod as the API server shows it: `terminating` is Running with a deletion
    timestamp (its process still runs until the pod object goes)."""
    meta: dict[str, Any] = {
        "name": f"{job_name}-x7k2p",
        "labels": {"job-name": job_name, "datamigration.dev/phase": phase},
    }
    if state == "terminating":
        meta["deletionTimestamp"] = "2026-11-21T10:00:40Z"
    return {"metadata": meta, "status": {"phase": "Running" if state != "ended" else "Failed"}}


def test_paused_is_said_only_once_the_deleted_jobs_runner_pod_has_gone() -> None:
    s = run().status
    s = run(status=s, obs=observed(Cluster(), job("expand", 1, "Succeeded"))).status
    name = "m-backfill-1-abcde"
    running = (job("expand", 1, "Succeeded"), job("backfill", 1, "Running"))

    def seen(*jobs: JobObservation, pod: str | None) -> Observed:
        pods = {} if pod is None else {name: [runner_pod(name, "backfill", pod)]}
        return dataclasses.replace(observed(Cluster(), *jobs), job_pods=pods)

    pausing = run(spec(paused=True), s, seen(*running, pod="running"))
    later = NOW + timedelta(seconds=31)
    stopped = run(spec(paused=True), pausing.status, seen(*running, pod="running"), later)
    assert DeleteJob(name) in stopped.actions
    cases = {
        # The Job is deleted but its pod's process may still commit a batch.
        "Job deleted, pod still running": (stopped.status, "running", "Backfilling", "Pausing"),
        "Job gone, pod terminating": (stopped.status, "terminating", "Backfilling", "Pausing"),
        "Job gone, pod ended": (stopped.status, "ended", "Paused", "Paused"),
        "Job gone, pod gone": (stopped.status, None, "Paused", "Paused"),
    }
    assert stopped.status["phase"] == "Backfilling"
    assert cond(stopped, "Ready")["reason"] == "Pausing"
    for case, (status, pod, phase, reason) in cases.items():
        d = run(spec(paused=True), status, seen(job("expand", 1, "Succeeded"), pod=pod), later)
        assert (d.status["phase"], cond(d, "Ready")["reason"]) == (phase, reason), case
        assert creates(d) == [] and cond(d, "Stalled")["status"] == "False", case
        if reason == "Pausing":
            assert f"runner pod {name}-x7k2p of Job {name} is still" in d.status["message"], case
            assert "stopped Job" in d.status["message"], case  # and what happens next
    gone = run(spec(paused=True), stopped.status, seen(job("expand", 1, "Succeeded"), pod=None))
    assert [(a.type, a.reason) for a in gone.actions if isinstance(a, EmitEvent)] == [
        ("Normal", "Paused")
    ]


def test_a_paused_rollback_waits_for_its_runner_pod_too() -> None:
    paused = aborting(paused=True)
    pod = runner_pod("m-rollback-1-abcde", "rollback", "terminating")
    obs = dataclasses.replace(observed(Cluster(), *DONE_DB), job_pods={"m-rollback-1-abcde": [pod]})
    d = run(paused, through_backfill(), obs)
    assert (d.status["phase"], cond(d, "Ready")["reason"]) == ("RollingBack", "Pausing")
    assert "runner pod m-rollback-1-abcde-x7k2p" in d.status["message"]


def test_exit_75_is_paused_never_a_warning() -> None:
    s = through_backfill()
    s["phases"]["backfill"] = {"state": "Running", "attempts": 1}
    interrupted = (job("expand", 1, "Succeeded"), job("backfill", 1, "Failed", 75))
    d = run(spec(paused=True), s, observed(Cluster(), *interrupted))
    assert d.status["phase"] == "Paused" and cond(d, "Stalled")["status"] == "False"
    assert all(a.type == "Normal" for a in d.actions if isinstance(a, EmitEvent))


# -- observe mode retry ----------------------------------------------------------------------------
def test_observe_retry_continues_from_the_rollout_that_completed() -> None:
    raw = spec(workload={"name": "shop-api", "container": "api"}, codeRollout={"mode": "Observe"})
    s = run(raw, through_backfill(), observed(Cluster(), *DONE_DB)).status
    slow = observed(Cluster().rolling("shop-api:2.0", 1, 1), *DONE_DB)
    failed = run(raw, s, slow, NOW + timedelta(seconds=901)).status
    assert failed["phases"]["codeRollout"]["state"] == "Failed"
    done = Observed(**{**observed(PROVEN, *DONE_DB).__dict__, "retry_token": "r1"})
    d = run(raw, failed, done, NOW + timedelta(seconds=1000))
    assert d.status["phases"]["codeRollout"]["state"] == "Succeeded"


# -- one workload, one owner -----------------------------------------------------------------------
def peer(name: str, created: str, image: str = "shop-api:3.0", phase: str = "Backfilling") -> Peer:
    return Peer(name, created, "shop-api", "api", image, phase)


def test_younger_migration_on_the_same_workload_stalls() -> None:
    base = observed(Cluster()).__dict__
    obs = Observed(
        **{
            **base,
            "name": "m",
            "created": "2026-11-21T10:00:00Z",
            "peers": (peer("older", "2026-11-21T09:00:00Z"),),
        }
    )
    d = run(obs=obs)
    assert creates(d) == [] and cond(d, "Stalled")["reason"] == "WorkloadConflict"
    assert "older" in d.status["message"]
    younger = Observed(**{**obs.__dict__, "peers": (peer("younger", "2026-11-21T11:00:00Z"),)})
    assert creates(run(obs=younger)) == [("expand", 1)]
    finished = Observed(
        **{**obs.__dict__, "peers": (peer("older", "2026-11-21T09:00:00Z", phase="Succeeded"),)}
    )
    assert creates(run(obs=finished)) == [("expand", 1)]


# -- contract withdrawn when the proof goes away ---------------------------------------------------
def test_contract_job_not_started_is_withdrawn_on_rollout_regression() -> None:
    s = rollout_done().status
    regressed = Cluster().rolled_out("shop-api:2.0", lingering=1)
    d = run(status=s, obs=observed(regressed, *DONE_DB, job("contract", 1, "Running")))
    assert DeleteJob("m-contract-1-abcde") in d.actions
    assert cond(d, "Stalled")["reason"] == "RolloutRegressed"
    assert "shop-api-aaa" in d.status["message"] or "old" in d.status["message"]
    later = run(status=d.status, obs=observed(regressed, *DONE_DB))
    assert creates(later) == [] and cond(later, "Ready")["reason"] == "RolloutRegressed"
    healed = run(status=later.status, obs=observed(PROVEN, *DONE_DB))
    assert creates(healed) == [("contract", 2)]


def test_contract_exit_8_is_rollout_regressed() -> None:
    s = rollout_done().status
    d = run(status=s, obs=observed(PROVEN, *DONE_DB, job("contract", 1, "Failed", 8)))
    assert cond(d, "Stalled")["reason"] == "RolloutRegressed" and "boom" in d.status["message"]


def test_a_new_stall_gets_its_warning_even_with_another_event() -> None:
    s = run().status
    running = run(status=s, obs=observed(Cluster(), job("expand", 1, "Running"))).status
    d = run(edited_expand(), running, observed(Cluster(), job("expand", 1, "Succeeded")))
    assert "PhaseSucceeded" in events(d) and "SpecChanged" in events(d)
    assert [
        a.type for a in d.actions if isinstance(a, EmitEvent) and a.reason == "SpecChanged"
    ] == ["Warning"]


RUNNING_POD = {"metadata": {"name": "c-pod"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    ("step", "withdrawn"),
    [("copied", True), ("drop-old", False), ("", False)],
    ids=["on-a-verify-query", "on-a-contract-step", "unknown"],
)
def test_a_running_contract_job_is_withdrawn_only_before_its_steps(
    step: str, withdrawn: bool
) -> None:
    s = rollout_done().status
    s["progress"] = {"phase": "contract", "step": step}
    regressed = Cluster().rolled_out("shop-api:2.0", lingering=1)
    base = observed(regressed, *DONE_DB, job("contract", 1, "Running")).__dict__
    obs = Observed(**{**base, "job_pods": {"m-contract-1-abcde": [RUNNING_POD]}})
    d = run(status=s, obs=obs)
    assert (DeleteJob("m-contract-1-abcde") in d.actions) is withdrawn
