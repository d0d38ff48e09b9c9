"""Every example says what it needs (table, Secret, Deployment) and how to set it up."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_support import REPO

EXAMPLES = sorted(p.parent for p in (REPO / "examples").glob("[0-9]*/datamigration.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_readme_names_what_it_needs(example: Path) -> None:
    readme = (example / "README.md").read_text()
    (migration,) = yaml.safe_load_all((example / "datamigration.yaml").read_text())
    spec = migration["spec"]
    secret = spec["database"]["urlFrom"]["secretKeyRef"]
    assert f"`{secret['name']}`" in readme and f"key `{secret['key']}`" in readme
    assert f"`{spec['workload']['name']}`" in readme
    assert f"container `{spec['workload']['container']}`" in readme
    assert "[setup.sql](setup.sql)" in readme
    number = example.name[:2]
    assert f"make example-{number}" in readme
    assert f"kubectl apply -f examples/{example.name}/datamigration.yaml" in readme
    name = migration["metadata"]["name"]
    manual = spec.get("contract", {}).get("approval") == "Manual"
    assert (f"kubectl datamigration approve {name}" in readme) == manual
    # The make target the README names exists (dry run: nothing is executed).
    dry = subprocess.run(
        ["make", "-n", f"example-{number}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert re.search(rf"hack/example\.py {number}\b", dry.stdout), dry.stdout
