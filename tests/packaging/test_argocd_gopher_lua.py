"""The Argo CD health check and actions, run in gopher-lua: the Lua runtime Argo CD itself uses.

tests/packaging/test_argocd_lua.py runs the scripts on LuaJIT in an emulation of Argo CD's
environment; this runs them in the real thing. hack/argo-lua is a small Go program (built from
the Go module proxy, cached outside the repo by hack/build-go-tool.sh) that sets gopher-lua up as
Argo CD does (util/lua: only the package, base and table libraries and the safe os; `obj` as a
global; gopher-json for the returned table; cleanReturnedObj for actions) and runs every case of
health_test.yaml and actions/action_test.yaml, whatever they hold.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from chart_support import CRD_SOURCE, REPO

CUSTOM = REPO / "argocd" / "datamigration.dev" / "DataMigration"


@functools.cache
def argo_lua() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build-go-tool.sh"), str(REPO / "hack" / "argo-lua")],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(argo_lua()), str(directory)], capture_output=True, text=True, check=False, timeout=120
    )


def test_every_health_and_action_case_passes_in_gopher_lua() -> None:
    result = run(CUSTOM)
    assert result.returncode == 0, result.stdout + result.stderr
    health = yaml.safe_load((CUSTOM / "health_test.yaml").read_text())["tests"]
    actions = yaml.safe_load((CUSTOM / "actions" / "action_test.yaml").read_text())
    cases = len(health) + len(actions["discoveryTests"]) + len(actions["actionTests"])
    assert f": {cases} passed, 0 failed" in result.stdout, result.stdout
    ran = set(re.findall(r"^ok {3}action (\w+) ", result.stdout, re.M))
    assert ran == {p.parent.name for p in (CUSTOM / "actions").glob("*/action.lua")}


def test_every_phase_has_a_health_case() -> None:
    schema = yaml.safe_load(CRD_SOURCE.read_text())["spec"]["versions"][0]["schema"]
    phases = set(schema["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"])
    covered = set()
    for case in yaml.safe_load((CUSTOM / "health_test.yaml").read_text())["tests"]:
        obj = yaml.safe_load((CUSTOM / case["inputPath"]).read_text())
        covered.add((obj.get("status") or {}).get("phase"))
    assert phases <= covered, f"phases without a health case: {sorted(phases - covered)}"


def test_the_runtime_is_argo_cds_restricted_one(tmp_path: Path) -> None:
    """What LuaJIT with open libraries would accept and Argo CD's gopher-lua setup does not: the
    string library (method syntax too) is absent; an unknown status becomes Unknown."""
    custom = tmp_path / "custom"
    shutil.copytree(CUSTOM, custom)
    case = yaml.safe_load((custom / "health_test.yaml").read_text())["tests"][0]
    for body, expected in [
        ('return {status = string.upper("healthy")}', "attempt to index a non-table object"),
        ('local s = "healthy"\nreturn {status = s:upper()}', "FAIL health"),
    ]:
        (custom / "health.lua").write_text(body)
        result = run(custom)
        assert result.returncode == 1 and expected in result.stdout, result.stdout
    (custom / "health.lua").write_text('return {status = "Fine", message = "x"}')
    (custom / "health_test.yaml").write_text(
        yaml.safe_dump(
            {
                "tests": [
                    {
                        "inputPath": case["inputPath"],
                        "healthStatus": {
                            "status": "Unknown",
                            "message": "Lua returned an invalid health status",
                        },
                    }
                ]
            }
        )
    )
    result = run(custom)
    assert "ok   health" in result.stdout, result.stdout
