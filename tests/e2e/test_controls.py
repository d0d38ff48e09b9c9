"""Pause, resume, abort and retry, end to end: what users do to a migration in flight."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fixtures import condition, rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

from datamigration.cli.main import main as cli
from datamigration.k8s.client import migration_path

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
NAME = "rename-email"


def status(kube: Kube, ns: str) -> dict[str, Any]:
    return dict(kube.migration(ns, NAME).get("status", {}))


def backfill_under_way(kube: Kube, ns: str) -> bool:
    st = status(kube, ns)
    return st.get("phase") == "Backfilling" and int(st.get("progress", {}).get("rowsDone", 0)) > 0


def copied(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return int(
            c.execute(
                sa.text("SELECT count(*) FROM users WHERE email_address IS NOT NULL")
            ).scalar()
            or 0
        )


def test_pause_stops_a_backfill_at_a_checkpoint_and_resume_finishes_it(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=20000)
    kube.apply(rename_migration(namespace, batch_size=50, pause_ms=100, target_ms=2))
    eventually(lambda: backfill_under_way(kube, namespace), timeout=120, what="backfill")

    assert cli(["-n", namespace, "pause", NAME]) == 0
    paused = eventually(
        lambda: status(kube, namespace).get("phase") == "Paused", timeout=60, what="Paused"
    )
    assert paused
    done_when_paused = copied(shop.engine)
    assert 0 < done_when_paused < 20000, "paused part-way"
    assert condition(kube.migration(namespace, NAME), "Progressing")["reason"] == "Paused"
    assert copied(shop.engine) == done_when_paused, "nothing runs while paused"

    assert cli(["-n", namespace, "resume", NAME]) == 0
    eventually(
        lambda: status(kube, namespace).get("phase") == "Succeeded",
        timeout=240,
        what="Succeeded after resume",
    )
    st = status(kube, namespace)
    assert st["phases"]["backfill"]["attempts"] == 2, "resumed as a new attempt"
    with shop.engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT state, rows_done FROM datamigration_ledger WHERE phase = 'backfill'")
        ).one()
    assert rows.state == "applied" and rows.rows_done == 20000, "no row done twice, none skipped"


def test_abort_stops_before_contract_for_good(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=3000)
    kube.apply(rename_migration(namespace, batch_size=50, pause_ms=40))
    eventually(lambda: backfill_under_way(kube, namespace), timeout=120, what="backfill")

    assert cli(["-n", namespace, "abort", NAME, "--yes"]) == 0
    eventually(
        lambda: status(kube, namespace).get("phase") == "Aborted", timeout=60, what="Aborted"
    )
    eventually(
        lambda: (
            not [
                j
                for j in kube.jobs(namespace)
                if j["metadata"]["labels"]["datamigration.dev/phase"] == "backfill"
            ]
        ),
        timeout=60,
        what="the backfill Job to be deleted",
    )
    kube.client.merge_patch(migration_path(namespace, NAME), {"spec": {"abort": False}})
    st = eventually(
        lambda: (
            status(kube, namespace).get("observedGeneration")
            == kube.migration(namespace, NAME)["metadata"]["generation"]
            and status(kube, namespace)
        ),
        timeout=60,
        what="the un-abort observed",
    )
    assert st["phase"] == "Aborted", "aborted is final"
    assert "email" in shop.columns()
    assert not [
        j
        for j in kube.jobs(namespace)
        if j["metadata"]["labels"]["datamigration.dev/phase"] == "contract"
    ]


def test_failed_phase_reports_why_and_retry_runs_it_again(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    migration = rename_migration(namespace)
    migration["spec"]["expand"]["steps"].append(
        {"name": "audit-column", "sql": "ALTER TABLE audit ADD COLUMN email_address text"}
    )
    kube.apply(migration)
    failed = eventually(
        lambda: status(kube, namespace).get("phase") == "Failed" and status(kube, namespace),
        timeout=120,
        what="Failed",
    )
    assert condition(kube.migration(namespace, NAME), "Stalled")["reason"] == "JobFailed"
    assert "audit" in failed["message"] and "exit code 7" in failed["message"]
    # The Event follows the status write that recorded the failure (act.py's order).
    eventually(lambda: "JobFailed" in kube.events(namespace, NAME), timeout=30, what="JobFailed")
    assert "password" not in failed["message"].lower()

    with shop.engine.begin() as c:  # the operator fixes the cause...
        c.execute(sa.text("CREATE TABLE audit (id bigserial PRIMARY KEY)"))
    assert cli(["-n", namespace, "retry", NAME]) == 0  # ...and retries
    done = eventually(
        lambda: status(kube, namespace).get("phase") == "Succeeded" and status(kube, namespace),
        timeout=240,
        what="Succeeded after retry",
    )
    assert done["phases"]["expand"]["attempts"] == 2
    with shop.engine.connect() as c:
        ledger = dict(
            c.execute(
                sa.text("SELECT step, attempts FROM datamigration_ledger WHERE phase = 'expand'")
            ).all()
        )
    assert ledger["add-email-address"] == 1, "the step that applied was not run again"
