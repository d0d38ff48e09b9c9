"""The project's Helm chart, rendered with the pinned helm, for tests and the demo.

So that what they install (the runner's ClusterRole, the CRD) is exactly what the chart ships,
never a hand-written copy.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster.paths import REPO_ROOT

CHART = REPO_ROOT / "charts" / "datamigration-operator"


def render(
    bin_dir: Path, *args: str, release: str = "datamigration-operator"
) -> list[dict[str, Any]]:
    """`helm template` of the chart; the documents it renders."""
    out = subprocess.run(
        [str(bin_dir / "helm"), "template", release, str(CHART), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def runner_cluster_role(bin_dir: Path) -> dict[str, Any]:
    """The ClusterRole phase Jobs are bound to (progress reporting only)."""
    docs = render(bin_dir, "--show-only", "templates/runner-rbac.yaml")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    return role
