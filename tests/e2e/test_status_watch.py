"""`kubectl datamigration status --watch` follows API watches; the rollout figures are honest
mid-rollout.

The watch test gives the CLI a polling interval of an hour: a polling loop would draw one screen
and then sleep through the whole migration, a watch draws every change as it happens and ends
at Succeeded. The rollout test slows the Deployment down (`minReadySeconds`) so the rollout has
stages to look at, and checks what the operator writes in `status.rollout` while old pods exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures import rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

from datamigration.k8s.client import migration_path

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
CLI = Path(sys.executable).parent / "kubectl-datamigration"


def test_status_watch_draws_every_change_without_polling(  # noqa: PLR0917 - pytest fixtures
    cluster: Any, kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str, tmp_path: Path
) -> None:
    setup_shop(kube, namespace, pg_url)
    kube.apply(rename_migration(namespace, approval="Manual"))
    log = tmp_path / "watch.log"
    with log.open("w") as sink:
        watcher = subprocess.Popen(
            [str(CLI), "status", "rename-email", "-n", namespace, "--watch", "--interval", "3600"],
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(
            lambda: "Phase:      AwaitingApproval" in log.read_text(),
            timeout=180,
            what="the watching CLI to show AwaitingApproval",
        )
        digest = kube.migration(namespace, "rename-email")["status"]["contract"]["digest"]
        kube.client.merge_patch(  # the GitOps form of an approval: the digest approved
            migration_path(namespace, "rename-email"),
            {"spec": {"contract": {"approved": True, "approvedDigest": digest}}},
        )
        assert watcher.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGTERM)
            watcher.wait(timeout=10)
    out = log.read_text()
    assert out.count("\n--- ") >= 3, "a screen for each change, not one per hour"
    for phase in ("Expanding", "Backfilling", "AwaitingApproval", "Succeeded"):
        assert f"Phase:      {phase}" in out, phase


def test_rollout_counts_old_pods_mid_rollout(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    setup_shop(kube, namespace, pg_url)
    # Each new pod must stay Ready 4 s before it counts as available: a rollout in stages.
    kube.client.merge_patch(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/shop-api",
        {"spec": {"minReadySeconds": 4}},
    )
    kube.apply(rename_migration(namespace, approval="Manual"))
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = kube.migration(namespace, "rename-email").get("status", {})
        if status.get("phase") == "RollingOut" and status.get("rollout"):
            seen.append(status["rollout"] | {"summary": status.get("progress", {}).get("summary")})
        if status.get("phase") in ("AwaitingApproval", "Failed"):
            break
        time.sleep(0.2)  # sampling the status, not synchronising on it
    assert status.get("phase") == "AwaitingApproval", status
    mid = [r for r in seen if r["updatedReplicas"] < r["replicas"] or r["oldPods"] > 0]
    assert mid, f"no mid-rollout status observed: {seen}"
    for r in mid:
        assert r["podTemplateHash"], r
    # While not every replica is updated, the old ReplicaSet's pods are still there.
    assert all(r["oldPods"] >= 1 for r in mid if r["updatedReplicas"] < r["replicas"]), mid
    assert any(f"{r['oldPods']} old pods" in (r["summary"] or "") for r in mid if r["oldPods"]), mid
