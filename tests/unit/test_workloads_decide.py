"""Several workloads in one migration (`spec.workloads`): every one proven in the same
observation before contract, Apply in list order, the digest and the contract Job's gate covering
every one, conflicts per entry. Observations are built from real-shaped objects (factories and
test_workload_gates); the API is faked only at the adapter boundary (the runner gate's reader).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import Cluster, spec
from test_decide import DONE_DB, NOW, through_backfill
from test_workload_gates import pod, sts, sts_pods

from datamigration.core.decide import CreateJob, Decision, SetWorkloadImage, decide
from datamigration.core.digest import contract_digest
from datamigration.core.errors import SpecError
from datamigration.core.jobs import JobObservation, Owner, runner_plan
from datamigration.core.observed import Observed, Peer, Target, Workload
from datamigration.core.spec import parse_spec
from datamigration.runner.errors import RolloutRegressed
from datamigration.runner.gate import check_rollout
from datamigration.runner.plan import parse_plan

NEW = "shop-api:2.0"
LEGACY = {"kind": "Pods", "selector": {"matchLabels": {"app": "legacy"}}, "container": "api"}
WEB = {"kind": "Deployment", "name": "shop-api", "container": "api", "image": NEW}
DB = {"kind": "StatefulSet", "name": "db", "container": "api", "image": NEW}


def multi(*entries: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    raw = spec()
    del raw["workload"]
    raw["workloads"] = [dict(e) for e in entries]
    raw["codeRollout"] = {**raw["codeRollout"], **rollout}
    return raw


def obs(*workloads: Workload | None, jobs: tuple[JobObservation, ...] = DONE_DB) -> Observed:
    return Observed(
        generation=1,
        secret_exists=True,
        workload=workloads[0],
        workloads=workloads,
        jobs=jobs,
        name="m",
        created="2026-11-21T10:00:00Z",
    )


def web(cluster: Cluster) -> Workload:
    return Workload(cluster.deployment(), cluster.rs, cluster.pods)


def legacy(*images: str) -> Workload:
    return Workload(
        {},
        (),
        [pod(f"legacy-{i}", im, {"app": "legacy"}) for i, im in enumerate(images)],
        kind="Pods",
    )


def step(raw: dict[str, Any], status: dict[str, Any], seen: Observed) -> Decision:
    return decide(parse_spec(raw), status, seen, NOW)


def test_contract_waits_for_every_workload_and_names_the_one_not_proven() -> None:
    raw = multi(WEB, {**LEGACY, "image": NEW})
    status = step(raw, through_backfill(), obs(web(Cluster()), legacy(NEW))).status
    rolled = web(Cluster().rolled_out(NEW))
    d = step(raw, status, obs(rolled, legacy("shop-api:1.0")))
    assert not [a for a in d.actions if isinstance(a, CreateJob)]
    rollout = d.status["rollout"]
    assert rollout["verified"] is False
    assert [(w["kind"], w["verified"]) for w in rollout["workloads"]] == [
        ("Deployment", True),
        ("Pods", False),
    ]
    assert "legacy-0" in rollout["workloads"][1]["message"]
    assert "Pods app=legacy" in d.status["message"]
    assert d.requeue_after is not None and d.requeue_after <= 10  # no watch sees those pods
    # The old pod is gone: proven, and the contract starts in a later reconcile.
    d = step(raw, d.status, obs(rolled, legacy()))
    assert d.status["phases"]["codeRollout"]["state"] == "Succeeded"
    d = step(raw, d.status, obs(rolled, legacy()))
    assert [a.phase for a in d.actions if isinstance(a, CreateJob)] == ["contract"]


def test_apply_rolls_out_in_list_order_unless_together() -> None:
    old_db = Workload(sts(image="shop-api:1.0", current="db-5f4", update="db-5f4"), (), [])
    seen = obs(old_db, web(Cluster()))
    d = step(multi(DB, WEB), through_backfill(), seen)
    sets = [a for a in d.actions if isinstance(a, SetWorkloadImage)]
    assert sets == [SetWorkloadImage("api", NEW, kind="StatefulSet", name="db")]
    d = step(multi(DB, WEB, together=True), through_backfill(), seen)
    sets = [a for a in d.actions if isinstance(a, SetWorkloadImage)]
    assert [(a.kind, a.name) for a in sets] == [("StatefulSet", "db"), ("Deployment", "shop-api")]


def test_second_workload_is_set_once_the_first_is_proven() -> None:
    proven_db = Workload(sts(), (), sts_pods("db-7c9", "db-7c9", "db-7c9"))
    d = step(multi(DB, WEB), through_backfill(), obs(proven_db, web(Cluster())))
    sets = [a for a in d.actions if isinstance(a, SetWorkloadImage)]
    assert sets == [SetWorkloadImage("api", NEW, kind="Deployment", name="shop-api")]


def test_digest_covers_every_workload_image() -> None:
    one = parse_spec(spec())
    assert contract_digest(one, [NEW]) == contract_digest(one, NEW)  # old approvals hold
    both = parse_spec(multi(WEB, DB))
    assert contract_digest(both, [NEW, NEW]) != contract_digest(both, [NEW, "shop-api:2.1"])
    assert contract_digest(both, [NEW, None]) is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**spec(), "workloads": [WEB]}, "spec.workloads"),
        (multi({**LEGACY, "image": NEW, "mode": "Apply"}), "spec.workloads[0].mode"),
        (multi({**DB, "image": None}), "spec.workloads[0].image"),
        (multi(WEB, WEB), "spec.workloads[1]"),
        (multi({**LEGACY, "image": NEW, "selector": {}}), "spec.workloads[0].selector"),
        (multi({**DB, "containers": ["api"]}), "spec.workloads[0].containers"),
        (multi({**DB, "kind": "Job"}), "spec.workloads[0].kind"),
    ],
)
def test_bad_workloads_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    clean = json.loads(json.dumps(raw))
    for entry in clean.get("workloads", []):
        if entry.get("image") is None:
            entry.pop("image", None)
    with pytest.raises(SpecError) as err:
        parse_spec(clean)
    assert str(err.value).startswith(field)


def test_workload_conflict_covers_every_entry() -> None:
    peer = Peer(
        name="a-older",
        created="2026-11-21T09:00:00Z",
        workload="other",
        container="api",
        image="x",
        phase="RollingOut",
        targets=(Target("StatefulSet", "db", "api", "shop-api:3.0"),),
    )
    seen = Observed(
        generation=1,
        secret_exists=True,
        workload=web(Cluster()),
        workloads=(web(Cluster()), Workload(sts(), (), [], kind="StatefulSet")),
        name="m",
        created="2026-11-21T10:00:00Z",
        peers=(peer,),
    )
    d = step(multi(WEB, DB), {}, seen)
    assert d.status["conditions"][2]["reason"] == "WorkloadConflict"
    assert "StatefulSet db" in d.status["message"]


def test_a_missing_rollout_api_stalls_naming_the_field() -> None:
    ro = {"kind": "Rollout", "name": "web", "container": "api", "image": NEW}
    unreadable = Workload({}, kind="Rollout", unreadable="the cluster does not serve rollouts")
    d = step(multi(ro), {}, obs(unreadable, jobs=()))
    assert "spec.workloads[0].kind" in d.status["message"]
    assert "does not serve" in d.status["message"]


class Reader:
    """The runner gate's reads, for one moment of the cluster (the adapter boundary)."""

    def __init__(self, cluster: Cluster, statefulset: dict[str, Any], pods: list[Any]) -> None:
        self.cluster, self.sts, self.sts_pods = cluster, statefulset, pods

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.deployment()

    def get_workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        return self.sts

    def list_replicasets(self, namespace: str, selector: str) -> list[Any]:
        return self.cluster.rs

    def list_controller_revisions(self, namespace: str, selector: str) -> list[Any]:
        return []

    def list_jobs(self, namespace: str, selector: str) -> list[Any]:
        return []

    def list_pods(self, namespace: str, selector: str) -> list[Any]:
        if selector.startswith("datamigration.dev/migration-uid="):
            return []  # no Job has run
        return self.sts_pods if selector == "app=db" else self.cluster.pods


def test_contract_job_gate_proves_every_workload_again() -> None:
    owner = Owner(namespace="shop", name="m", uid="0123456789")
    plan = parse_plan(
        json.loads(json.dumps(runner_plan(owner, parse_spec(multi(WEB, DB)), "contract")))
    )
    assert [(g.kind, g.name, g.expected_image) for g in plan.rollout_gates] == [
        ("Deployment", "shop-api", NEW),
        ("StatefulSet", "db", NEW),
    ]
    cluster = Cluster().rolled_out(NEW)
    good = Reader(cluster, sts(), sts_pods("db-7c9", "db-7c9", "db-7c9"))
    assert "db-7c9" in check_rollout(plan.rollout_gates[1], good)
    regressed = Reader(cluster, sts(), sts_pods("db-7c9", "db-7c9", "db-5f4"))
    with pytest.raises(RolloutRegressed, match=r"StatefulSet shop/db.*db-2"):
        check_rollout(plan.rollout_gates[1], regressed)


# -- proof from the database's side ----------------------------------------------------------------
SESSIONS = {
    "applicationNamePattern": r"shop-api:1\.",
    "role": "shop",
    "olderThanRolloutProof": True,
}


def test_old_sessions_exit_waits_visibly_then_tries_a_new_attempt() -> None:
    from datetime import timedelta

    from factories import with_contract
    from test_decide import rollout_done

    raw = with_contract(databaseSessions=SESSIONS)
    d = rollout_done(raw)
    (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
    assert create.phase == "contract" and create.rollout_proven_at == "2026-11-21T12:00:00Z"
    owner = Owner(namespace="shop", name="m", uid="0123456789")
    plan = runner_plan(owner, parse_spec(raw), "contract", None, create.rollout_proven_at)
    assert plan["databaseSessions"] == {
        "applicationNamePattern": r"shop-api:1\.",
        "role": "shop",
        "olderThan": "2026-11-21T12:00:00Z",
    }
    rolled = web(Cluster().rolled_out(NEW))
    failed = JobObservation(
        name="m-contract-1-abcde",
        phase="contract",
        attempt=1,
        outcome="Failed",
        exit_code=10,
        message="FAILED exit=10: the destructive step was not run: 1 database session(s) of the "
        "old code are connected: pid 4242 application_name 'shop-api:1.0' client 10.0.0.7",
    )
    d = step(raw, d.status, obs(rolled, jobs=(*DONE_DB, failed)))
    contract = d.status["phases"]["contract"]
    assert (contract["state"], contract["reason"]) == ("Pending", "OldSessionsConnected")
    stalled = next(c for c in d.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "OldSessionsConnected"
    assert "pid 4242" in d.status["message"] and "10.0.0.7" in d.status["message"]
    assert not [a for a in d.actions if isinstance(a, CreateJob)]
    assert d.requeue_after is not None and d.requeue_after <= 15
    later = decide(
        parse_spec(raw), d.status, obs(rolled, jobs=(*DONE_DB, failed)), NOW + timedelta(seconds=16)
    )
    assert [(a.phase, a.attempt) for a in later.actions if isinstance(a, CreateJob)] == [
        ("contract", 2)
    ]


def test_database_sessions_spec_is_checked_and_in_the_digest() -> None:
    from factories import with_contract

    with pytest.raises(SpecError, match=r"^spec.contract.databaseSessions.role"):
        parse_spec(
            with_contract(
                databaseSessions={"applicationNamePattern": "x", "olderThanRolloutProof": True}
            )
        )
    with pytest.raises(SpecError, match="applicationNamePattern"):
        parse_spec(with_contract(databaseSessions={"applicationNamePattern": "(unclosed"}))
    plain, gated = parse_spec(spec()), parse_spec(with_contract(databaseSessions=SESSIONS))
    assert contract_digest(plain, NEW) != contract_digest(gated, NEW)
