"""The safety promises of issue 9 that the operator keeps, end to end: a real local cluster, the
job-pod executor running the runner as local processes, and real PostgreSQL.

Each test is one acceptance item: an approval binds to the contract it approved; an edit of a
step that ran is detected, never skipped; a Secret without the key creates no Job; a phase pod
that cannot start stalls with its own reason within seconds; a pause is a pause (no Warning, and
enforced by the operator when the runner cannot hear it); two operator processes at once do
nothing twice; two migrations on one workload do not both act.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from fixtures import condition, rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

from datamigration.cli.main import main as cli
from datamigration.k8s.client import migration_path

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
NAME = "rename-email"


def status(kube: Kube, ns: str, name: str = NAME) -> dict[str, Any]:
    return dict(kube.migration(ns, name).get("status", {}))


def stalled(kube: Kube, ns: str, reason: str, name: str = NAME) -> dict[str, Any] | None:
    obj = kube.migration(ns, name)
    cond = condition(obj, "Stalled")
    return obj if cond.get("status") == "True" and cond.get("reason") == reason else None


def phase_jobs(kube: Kube, ns: str, phase: str, name: str = NAME) -> list[dict[str, Any]]:
    return [
        j
        for j in kube.jobs(ns)
        if j["metadata"]["labels"].get("datamigration.dev/phase") == phase
        and j["metadata"]["labels"].get("datamigration.dev/migration") == name
    ]


def events(kube: Kube, ns: str, name: str = NAME) -> list[dict[str, Any]]:
    return kube.api.list_events(ns, name)


def columns(engine: sa.Engine) -> set[str]:
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT column_name FROM information_schema.columns WHERE table_name='users'")
        )
        return {r[0] for r in rows}


def count(engine: sa.Engine, where: str) -> int:
    """Rows matching `where`; 0 while expand has not added the columns it names."""
    try:
        with engine.connect() as c:
            query = sa.text(f"SELECT count(*) FROM users WHERE {where}")
            return int(c.execute(query).scalar() or 0)
    except sa.exc.ProgrammingError:
        return 0


def test_approve_then_edit_the_contract_runs_nothing_until_approved_again(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    with shop.engine.begin() as c:
        c.execute(sa.text("ALTER TABLE users ADD COLUMN nickname text"))
    kube.apply(rename_migration(namespace, approval="Manual"))
    eventually(
        lambda: status(kube, namespace).get("contract", {}).get("digest"),
        timeout=60,
        what="the contract digest in status",
    )
    assert cli(["-n", namespace, "approve", NAME]) == 0
    approved = kube.migration(namespace, NAME)["spec"]["contract"]["approvedDigest"]
    # Then the contract is edited to drop another column: that statement was never approved.
    kube.client.merge_patch(
        migration_path(namespace, NAME),
        {
            "spec": {
                "contract": {
                    "steps": [
                        {"name": "drop-email", "sql": "ALTER TABLE users DROP COLUMN nickname"}
                    ]
                }
            }
        },
    )
    stale = eventually(
        lambda: stalled(kube, namespace, "ApprovalStale"), timeout=180, what="ApprovalStale"
    )
    new = stale["status"]["contract"]["digest"]
    assert new != approved
    assert approved[:19] in stale["status"]["message"] and new[:19] in stale["status"]["message"]
    assert stale["status"]["phase"] == "AwaitingApproval"
    assert phase_jobs(kube, namespace, "contract") == []
    assert {"nickname", "email"} <= columns(shop.engine), "the edited statement did not run"
    eventually(
        lambda: any(
            e["reason"] == "ApprovalStale" and e["type"] == "Warning"
            for e in events(kube, namespace)
        ),
        timeout=10,
        what="an ApprovalStale Warning",
    )

    assert cli(["-n", namespace, "approve", NAME]) == 0
    eventually(
        lambda: status(kube, namespace).get("phase") == "Succeeded", timeout=120, what="Succeeded"
    )
    assert "nickname" not in columns(shop.engine) and "email" in columns(shop.engine)


def test_edit_of_a_finished_expand_step_stalls_with_spec_changed(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    setup_shop(kube, namespace, pg_url)
    kube.apply(rename_migration(namespace, approval="Manual"))
    eventually(
        lambda: (
            status(kube, namespace).get("phases", {}).get("expand", {}).get("state") == "Succeeded"
        ),
        timeout=120,
        what="expand Succeeded",
    )
    edited = rename_migration(namespace, approval="Manual")
    edited["spec"]["expand"]["steps"][0]["sql"] = "ALTER TABLE users ADD COLUMN email_addr text"
    kube.apply(edited)
    obj = eventually(
        lambda: stalled(kube, namespace, "SpecChanged"), timeout=60, what="SpecChanged"
    )
    assert "spec.expand step add-email-address" in obj["status"]["message"]
    assert "datamigration.dev/accept-change=expand/" in obj["status"]["message"]
    eventually(
        lambda: any(
            e["reason"] == "SpecChanged" and e["type"] == "Warning" for e in events(kube, namespace)
        ),
        timeout=10,
        what="a SpecChanged Warning",
    )
    assert obj["status"]["phase"] != "Succeeded"


def test_edit_of_a_paused_backfill_stalls_and_no_rows_get_mixed(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=20000)
    kube.apply(
        rename_migration(namespace, approval="Manual", batch_size=50, pause_ms=100, target_ms=2)
    )
    eventually(
        lambda: count(shop.engine, "email_address IS NOT NULL") > 0, timeout=120, what="backfill"
    )
    assert cli(["-n", namespace, "pause", NAME]) == 0
    eventually(
        lambda: (
            status(kube, namespace).get("phase") == "Paused"
            and all(j.get("status", {}).get("active", 0) == 0 for j in kube.jobs(namespace))
        ),
        timeout=90,
        what="Paused with no Job running",
    )
    edited = rename_migration(
        namespace, approval="Manual", batch_size=50, pause_ms=100, target_ms=2
    )
    edited["spec"]["backfill"]["steps"][0]["backfill"]["set"] = {"email_address": "upper(email)"}
    edited["spec"]["paused"] = False  # resumed together with the edit
    kube.apply(edited)
    obj = eventually(
        lambda: stalled(kube, namespace, "SpecChanged"), timeout=60, what="SpecChanged"
    )
    assert "spec.backfill step copy-email" in obj["status"]["message"]
    done = count(shop.engine, "email_address IS NOT NULL")
    assert len(phase_jobs(kube, namespace, "backfill")) == 1, "no new backfill Job"
    assert count(shop.engine, "email_address = upper(email)") == 0, "the new set never ran"

    kube.apply(
        rename_migration(namespace, approval="Manual", batch_size=50, pause_ms=100, target_ms=2)
    )  # revert
    eventually(
        lambda: status(kube, namespace).get("phase") == "AwaitingApproval",
        timeout=300,
        what="backfill done (AwaitingApproval)",
    )
    assert done > 0 and count(shop.engine, "email_address IS NULL") == 0
    with shop.engine.connect() as c:
        mixed = c.execute(sa.text("SELECT count(*) FROM users WHERE email_address <> email"))
        assert mixed.scalar() == 0, "every row written by one definition"


def test_secret_without_the_key_creates_no_job(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    setup_shop(kube, namespace, pg_url)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "other-db", "namespace": namespace},
            "stringData": {"uri": "postgresql://nobody@127.0.0.1:1/x"},
        }
    )
    migration = rename_migration(namespace)
    migration["spec"]["database"]["urlFrom"]["secretKeyRef"]["name"] = "other-db"
    kube.apply(migration)
    obj = eventually(
        lambda: stalled(kube, namespace, "SecretKeyNotFound"),
        timeout=60,
        what="SecretKeyNotFound",
    )
    assert "spec.database.urlFrom.secretKeyRef.key" in obj["status"]["message"]
    assert kube.jobs(namespace) == []
    assert "nobody" not in str(obj["status"])


def test_phase_pod_that_cannot_start_stalls_with_its_reason_within_seconds(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    setup_shop(kube, namespace, pg_url)
    migration = rename_migration(namespace)
    migration["spec"]["runner"] = {"image": "unpullable.invalid/runner:1"}
    kube.apply(migration)
    eventually(lambda: phase_jobs(kube, namespace, "expand"), timeout=60, what="the expand Job")
    created = time.monotonic()
    obj = eventually(
        lambda: (
            stalled(kube, namespace, "ErrImagePull") or stalled(kube, namespace, "ImagePullBackOff")
        ),
        timeout=30,
        what="Stalled with the pod's reason",
    )
    assert time.monotonic() - created < 10.0
    assert "unpullable.invalid/runner:1" in obj["status"]["message"]
    eventually(
        lambda: any(
            e["type"] == "Warning" and e["reason"] in ("ErrImagePull", "ImagePullBackOff")
            for e in events(kube, namespace)
        ),
        timeout=10,
        what="a Warning with the pod's reason",
    )


def test_pause_is_enforced_when_the_runner_cannot_hear_it_and_is_never_a_warning(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=60000)
    # A runner identity without rights: its progress reports (and so spec.paused) never arrive.
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "deaf-runner", "namespace": namespace},
        }
    )
    migration = rename_migration(namespace, batch_size=50, pause_ms=100, target_ms=2)
    migration["spec"]["runner"] = {"serviceAccountName": "deaf-runner"}
    kube.apply(migration)
    eventually(
        lambda: count(shop.engine, "email_address IS NOT NULL") > 0, timeout=120, what="backfill"
    )
    # The backfill must still run when the 30 s grace after the pause ends, however fast this
    # machine is (its batches grow while they take under 2 ms: one CI run did all 60,000 rows
    # in 24 s): the second half of the table stays locked until the operator has stopped the
    # Job. The runner waits on the lock, deaf to the pause, as a runner in a long batch would.
    locker = shop.engine.connect()
    try:
        locker.begin()
        locker.execute(sa.text("SELECT id FROM users WHERE id > 30000 FOR UPDATE"))
        assert count(shop.engine, "email_address IS NOT NULL") < 30000
        assert cli(["-n", namespace, "pause", NAME]) == 0
        eventually(
            lambda: condition(kube.migration(namespace, NAME), "Ready").get("reason") == "Pausing",
            timeout=30,
            what="Pausing (the Job still runs)",
        )
        eventually(
            lambda: not phase_jobs(kube, namespace, "backfill"),
            timeout=60,
            what="the operator to delete the backfill Job (30 s after the pause)",
        )
    finally:
        locker.rollback()  # the batch that waited commits; its runner was told to stop
        locker.close()
    # Paused is written only once the runner's pod has ended: wait for it.
    stopped = eventually(
        lambda: status(kube, namespace).get("phase") == "Paused" and status(kube, namespace),
        timeout=90,
        what="the operator to say Paused once the runner's pod has ended",
    )
    assert stopped["phase"] == "Paused"
    assert "stopped Job" in stopped["phases"]["backfill"]["message"]
    # Paused only once the runner's pod has ended or gone (its process could commit before).
    job = stopped["phases"]["backfill"]["job"]
    pods = kube.pods(namespace, f"job-name={job}")
    assert [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")] == []
    frozen = count(shop.engine, "email_address IS NOT NULL")
    assert 0 < frozen < 60000
    assert [e for e in events(kube, namespace) if e["type"] == "Warning"] == []
    assert count(shop.engine, "email_address IS NOT NULL") == frozen, "nothing runs while paused"


def test_two_operators_at_once_do_nothing_twice(
    cluster: Any, kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    from pathlib import Path

    second = OperatorProcess(
        Path(cluster.kubeconfig),
        Path(cluster.logs_dir) / f"operator-{namespace}-second.log",
        env={"DATAMIGRATION_NAMESPACES": namespace},
    ).start()
    try:
        shop = setup_shop(kube, namespace, pg_url, rows=5000)
        started = time.monotonic()
        kube.apply(rename_migration(namespace, batch_size=100, pause_ms=20))
        eventually(
            lambda: status(kube, namespace).get("phase") == "Succeeded",
            timeout=300,
            what="Succeeded",
        )
        # Both stay up for at least 60 s in all, and nothing more happens afterwards.
        eventually(lambda: time.monotonic() - started >= 60, timeout=90, what="60 s", interval=1)
    finally:
        second.stop()
    jobs = kube.jobs(namespace)
    assert sorted(j["metadata"]["labels"]["datamigration.dev/phase"] for j in jobs) == [
        "backfill",
        "contract",
        "expand",
    ]
    with shop.engine.connect() as c:
        attempts = c.execute(sa.text("SELECT step, attempts FROM datamigration_ledger")).all()
    assert attempts and all(a == 1 for _, a in attempts), attempts
    seen = [(e["reason"], e["message"]) for e in events(kube, namespace)]
    assert len(seen) == len(set(seen)), sorted(seen)
    assert all(int(e.get("count") or 1) == 1 for e in events(kube, namespace))


def test_two_migrations_on_one_workload_the_younger_stalls(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    kube.apply(rename_migration(namespace, approval="Manual"))
    # creationTimestamp has one-second resolution: the second one is created visibly later.
    eventually(
        lambda: (
            status(kube, namespace).get("phases", {}).get("expand", {}).get("state") == "Succeeded"
        ),
        timeout=120,
        what="the first migration under way",
    )
    second = rename_migration(namespace, image="registry.example/shop-api:3.0")
    second["metadata"]["name"] = "other"
    second["spec"]["expand"]["steps"][0] = {
        "name": "add-col",
        "sql": "ALTER TABLE users ADD COLUMN other_col text",
    }
    kube.apply(second)
    obj = eventually(
        lambda: stalled(kube, namespace, "WorkloadConflict", "other"),
        timeout=60,
        what="WorkloadConflict",
    )
    assert NAME in obj["status"]["message"]
    assert [j for j in kube.jobs(namespace) if "other" in j["metadata"]["name"]] == []
    assert "other_col" not in columns(shop.engine)
