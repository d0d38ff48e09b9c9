"""`make demo` is a contract with new users: run it as they would and check what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from support import REPO

from datamigration.k8s.client import KubeClient, KubeError

pytestmark = [pytest.mark.e2e, pytest.mark.pg]


def test_demo_runs_the_rename_to_succeeded(cluster: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "demo.py"), "--namespace", "demo-e2e"],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # The watch table's rows: "  <elapsed>s  <PHASE>  <PROGRESS>  <MESSAGE>".
    phases = re.findall(r"^\s+[\d.]+s\s+(\w+)", out, flags=re.MULTILINE)
    for phase in ("Expanding", "Backfilling", "AwaitingApproval", "Contracting", "Succeeded"):
        assert phase in phases, out
    # The contract waited for a person, and the demo approved it the way the README says.
    assert phases.index("AwaitingApproval") < phases.index("Contracting"), out
    assert 'datamigration "rename-email" approved: contract sha256:' in out
    assert "columns: id, email_address" in out
    assert "rename-email Succeeded" in out
    # It removes what it created, so a rerun (or the README's "Use it") starts clean.
    with pytest.raises(KubeError) as gone:
        KubeClient().get("/api/v1/namespaces/demo-e2e")
    assert gone.value.not_found
