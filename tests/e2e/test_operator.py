"""The operator end to end: real control plane, real Job executor, real PostgreSQL.

Issue #4's acceptance scenarios, one test each. The Deployment's pods are simulated by KWOK
(readiness honoured, so rollouts go through the real Deployment and ReplicaSet controllers);
phase Jobs run `datamigration-runner` for real against the test's database.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fixtures import Shop, condition, rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

from datamigration.k8s.client import KubeError

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments/shop-api"


def contract_jobs(kube: Kube, ns: str) -> list[dict[str, Any]]:
    return [
        j
        for j in kube.jobs(ns)
        if j["metadata"]["labels"].get("datamigration.dev/phase") == "contract"
    ]


def wait_phase(kube: Kube, ns: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = kube.migration(ns, "rename-email")
        got = obj.get("status", {}).get("phase")
        if got == "Failed" and phase != "Failed":
            raise AssertionError(f"migration failed: {obj['status'].get('message')}")
        return obj if got == phase else None

    return eventually(reached, timeout=timeout, what=f"phase {phase}")


def assert_renamed(shop: Shop, before: dict[int, str]) -> None:
    assert "email" not in shop.columns() and "email_address" in shop.columns()
    with shop.engine.connect() as c:
        after = {
            r.id: r.email_address for r in c.execute(sa.text("SELECT id, email_address FROM users"))
        }
    assert after == before


def test_rename_column_goes_through_all_four_phases(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=2000)
    before = shop.emails()
    kube.apply(rename_migration(namespace))
    done = wait_phase(kube, namespace, "Succeeded")

    assert_renamed(shop, before)
    phases = done["status"]["phases"]
    assert [phases[p]["state"] for p in ("expand", "backfill", "codeRollout", "contract")] == [
        "Succeeded"
    ] * 4
    assert condition(done, "Ready")["status"] == "True"
    assert condition(done, "RolloutVerified")["status"] == "True"
    pods = kube.pods(namespace, "app=shop-api")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"registry.example/shop-api:2.0"}
    assert len(kube.jobs(namespace)) == 3, "one Job per database phase"
    # Events are posted beside the reconciles (controller/events.py): the last one may follow
    # the status that recorded its transition by a moment.
    eventually(
        lambda: (
            {"PhaseStarted", "PhaseSucceeded", "RolloutProven", "Succeeded"}
            <= set(kube.events(namespace, "rename-email"))
        ),
        timeout=30,
        what="the Events of every transition",
    )


def test_manual_approval_waits_visibly_then_continues(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    before = shop.emails()
    kube.apply(rename_migration(namespace, approval="Manual"))
    waiting = wait_phase(kube, namespace, "AwaitingApproval")
    assert condition(waiting, "AwaitingApproval")["status"] == "True"
    assert "approve" in waiting["status"]["message"]
    assert contract_jobs(kube, namespace) == []
    assert "email" in shop.columns()

    from datamigration.cli.main import main as cli

    assert cli(["-n", namespace, "approve", "rename-email"]) == 0
    wait_phase(kube, namespace, "Succeeded")
    assert_renamed(shop, before)


def test_rollout_that_never_becomes_ready_stops_before_contract(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, progress_deadline=10)
    kube.apply(rename_migration(namespace, mode="Observe"))
    ready = eventually(
        lambda: (
            condition(kube.migration(namespace, "rename-email"), "ReadyForRollout").get("status")
            == "True"
        ),
        timeout=120,
        what="ReadyForRollout",
    )
    assert ready
    # GitOps ships the new code, whose pods never become ready.
    kube.client.merge_patch(
        DEPLOY.format(ns=namespace),
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {"localcluster.datamigration.dev/never-ready": "true"}},
                    "spec": {
                        "containers": [{"name": "api", "image": "registry.example/shop-api:2.0"}]
                    },
                }
            }
        },
    )
    failed = wait_phase(kube, namespace, "Failed", timeout=120)
    assert condition(failed, "Stalled")["reason"] == "RolloutFailed"
    assert "progress deadline" in failed["status"]["message"]
    # The operator posts its Events after the status patch that made the phase Failed.
    eventually(
        lambda: "RolloutFailed" in kube.events(namespace, "rename-email"),
        timeout=30,
        what="the RolloutFailed Event",
    )
    assert contract_jobs(kube, namespace) == []
    assert "email" in shop.columns(), "the old column must survive"


def test_lingering_old_pod_blocks_contract_until_gone(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    before = shop.emails()
    old_pod = kube.pods(namespace, "app=shop-api")[0]["metadata"]["name"]
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{old_pod}"
    kube.client.merge_patch(pod_path, {"metadata": {"finalizers": ["e2e.datamigration.dev/hold"]}})

    kube.apply(rename_migration(namespace))

    def blocked_by_the_old_pod() -> dict[str, Any] | None:
        deploy = kube.client.get(DEPLOY.format(ns=namespace))
        st = deploy.get("status", {})
        rollout_done = (
            deploy["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.0")
            and st.get("updatedReplicas") == 3
            and st.get("availableReplicas") == 3
            and st.get("replicas") == 3
            and st.get("observedGeneration") == deploy["metadata"]["generation"]
        )
        obj = kube.migration(namespace, "rename-email")
        rollout = obj.get("status", {}).get("rollout", {})
        # The operator's verdict on the same state kubectl calls done (its status may lag the
        # Deployment's by one reconcile): the old pod is what blocks, by name.
        named = old_pod in obj.get("status", {}).get("message", "")
        if rollout_done and rollout.get("terminatingPods") == 1 and named:
            return obj
        return None

    obj = eventually(
        blocked_by_the_old_pod,
        timeout=180,
        what="rollout complete per kubectl with the old pod still terminating",
    )
    assert obj["status"]["phase"] == "RollingOut"
    assert old_pod in obj["status"]["message"]
    assert contract_jobs(kube, namespace) == []
    assert "email" in shop.columns()

    kube.client.merge_patch(pod_path, {"metadata": {"finalizers": None}})
    wait_phase(kube, namespace, "Succeeded")
    assert_renamed(shop, before)


def test_invalid_resources_run_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    # Rejected by the API server (CEL rule): Apply mode without an image.
    bad = rename_migration(namespace, image=None)
    with pytest.raises(KubeError) as rejected:
        kube.apply(bad)
    assert "spec.workload.image" in str(rejected.value)

    # Accepted by the schema, refused by the operator: a destructive expand.
    unsafe = rename_migration(namespace)
    unsafe["spec"]["expand"]["steps"] = [
        {"name": "drop-too-early", "sql": "ALTER TABLE users DROP COLUMN email"}
    ]
    kube.apply(unsafe)
    invalid = wait_phase(kube, namespace, "Invalid", timeout=60)
    assert condition(invalid, "Stalled")["reason"] == "InvalidSpec"
    message = invalid["status"]["message"]
    assert "spec.expand" in message and "drop-too-early" in message
    assert kube.jobs(namespace) == []
    assert "email" in shop.columns()

    # A workload that does not exist.
    missing = rename_migration(namespace)
    missing["metadata"]["name"] = "wrong-workload"
    missing["spec"]["workload"]["name"] = "no-such-app"
    kube.apply(missing)
    stalled = eventually(
        lambda: (
            condition(kube.migration(namespace, "wrong-workload"), "Stalled").get("reason")
            == "WorkloadNotFound"
        ),
        timeout=60,
        what="WorkloadNotFound",
    )
    assert stalled and kube.jobs(namespace) == []


def test_operator_killed_during_backfill_finishes_correctly(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=3000)
    before = shop.emails()
    kube.apply(rename_migration(namespace, batch_size=50, pause_ms=40))

    def backfilling() -> bool:
        status = kube.migration(namespace, "rename-email").get("status", {})
        progress = status.get("progress", {})
        return status.get("phase") == "Backfilling" and int(progress.get("rowsDone", 0)) > 0

    eventually(backfilling, timeout=120, what="backfill under way")
    operator.kill()
    operator.start()
    done = wait_phase(kube, namespace, "Succeeded", timeout=240)

    assert_renamed(shop, before)
    jobs = kube.jobs(namespace)
    per_phase = sorted(j["metadata"]["labels"]["datamigration.dev/phase"] for j in jobs)
    assert per_phase == ["backfill", "contract", "expand"], "no duplicate Job"
    assert all(
        done["status"]["phases"][p]["attempts"] == 1 for p in ("expand", "backfill", "contract")
    )
    with shop.engine.connect() as c:
        ledger = c.execute(
            sa.text("SELECT phase, step, state FROM datamigration_ledger ORDER BY phase, step")
        ).all()
    assert [tuple(r) for r in ledger if r.phase != "contract" or r.step == "drop-email"] == [
        ("backfill", "copy-email", "applied"),
        ("contract", "drop-email", "applied"),
        ("expand", "add-email-address", "applied"),
    ]
