"""The Argo CD health check and resource actions of DataMigration, run as Argo CD runs them.

The cases are Argo CD's own test files (health_test.yaml, actions/action_test.yaml), evaluated by
argo_lua.py in Argo CD's restricted Lua environment (no string/math library). Beyond the cases,
the properties the sync-wave design rests on (docs/gitops-argocd.md) are checked over every
phase: once ReadyForRollout is True only a failure keeps a DataMigration from Healthy.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_lua import ArgoLua, LuaScriptError, load_yaml
from chart_support import CRD_SOURCE, REPO

from datamigration.core import reasons

CUSTOM = REPO / "argocd" / "datamigration.dev" / "DataMigration"
HEALTH = CUSTOM / "health.lua"
ACTIONS = CUSTOM / "actions"
DISCOVERY = ACTIONS / "discovery.lua"

HEALTH_TESTS: list[dict[str, Any]] = load_yaml(CUSTOM / "health_test.yaml")["tests"]
ACTION_TESTS: dict[str, list[dict[str, Any]]] = load_yaml(ACTIONS / "action_test.yaml")
PHASES: list[str] = yaml.safe_load(CRD_SOURCE.read_text())["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]["properties"]["status"]["properties"]["phase"]["enum"]


@pytest.fixture(scope="module")
def lua() -> ArgoLua:
    return ArgoLua()


# -- Argo CD's test files ------------------------------------------------------------------------
@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_health(lua: ArgoLua, case: dict[str, Any]) -> None:
    obj = load_yaml(CUSTOM / case["inputPath"])
    assert lua.health(HEALTH, obj) == case["healthStatus"]


DISCOVERY_TESTS = ACTION_TESTS["discoveryTests"]


@pytest.mark.parametrize("case", DISCOVERY_TESTS, ids=[t["inputPath"] for t in DISCOVERY_TESTS])
def test_action_discovery(lua: ArgoLua, case: dict[str, Any]) -> None:
    found = lua.discovery(DISCOVERY, load_yaml(ACTIONS / case["inputPath"]))
    expected = {a["name"]: {k: v for k, v in a.items() if k != "name"} for a in case["result"]}
    assert found == expected


ACTION_CASES = ACTION_TESTS["actionTests"]


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}:{t['inputPath']}" for t in ACTION_CASES]
)
def test_action(lua: ArgoLua, case: dict[str, Any]) -> None:
    obj = load_yaml(ACTIONS / case["inputPath"])
    result = lua.action(ACTIONS / case["action"] / "action.lua", obj)
    assert result == load_yaml(ACTIONS / case["expectedOutputPath"])


def test_approve_refuses_without_a_known_digest(lua: ArgoLua) -> None:
    """An approval names the digest it approves: with none known there is nothing to approve."""
    obj = load_yaml(ACTIONS / "testdata" / "awaiting_approval.yaml")
    del obj["status"]["contract"]
    with pytest.raises(LuaScriptError, match="digest is not known"):
        lua.action(ACTIONS / "approve" / "action.lua", obj)
    assert lua.discovery(DISCOVERY, obj)["approve"]["disabled"] is True


def test_every_action_is_discovered_and_tested(lua: ArgoLua) -> None:
    directories = {p.parent.name for p in ACTIONS.glob("*/action.lua")}
    discovered = set(lua.discovery(DISCOVERY, {"spec": {}}))
    assert directories == discovered == {"approve", "pause", "resume", "abort", "retry"}
    assert {t["action"] for t in ACTION_CASES} == directories
    for case in DISCOVERY_TESTS:
        assert {a["name"] for a in case["result"]} == directories, case["inputPath"]


def test_every_testdata_file_is_used() -> None:
    used = {t["inputPath"] for t in HEALTH_TESTS}
    assert {f"testdata/{p.name}" for p in (CUSTOM / "testdata").glob("*.yaml")} == used
    used = {t["inputPath"] for t in DISCOVERY_TESTS} | {
        path for t in ACTION_CASES for path in (t["inputPath"], t["expectedOutputPath"])
    }
    assert {f"testdata/{p.name}" for p in (ACTIONS / "testdata").glob("*.yaml")} == used


def test_testdata_are_valid_datamigrations() -> None:
    """Each object's spec satisfies the CRD's structural basics (the fields the Lua reads)."""
    for path in itertools.chain(
        (CUSTOM / "testdata").glob("*.yaml"), (ACTIONS / "testdata").glob("*.yaml")
    ):
        obj = load_yaml(path)
        assert obj["apiVersion"] == "datamigration.dev/v1alpha1", path
        assert obj["kind"] == "DataMigration", path
        status = obj.get("status", {})
        assert status.get("phase", "Pending") in PHASES, path


# -- the design's properties, over every phase ---------------------------------------------
def _obj(
    phase: str,
    *,
    ready_for_rollout: bool,
    paused: bool = False,
    stalled: bool = False,
    awaiting: bool = False,
) -> dict[str, Any]:
    def condition(type_: str, value: bool) -> dict[str, str]:
        return {"type": type_, "status": "True" if value else "False", "reason": "X", "message": ""}

    return {
        "metadata": {"name": "m", "namespace": "n", "generation": 3},
        "spec": {"paused": paused},
        "status": {
            "observedGeneration": 3,
            "phase": phase,
            "message": "m",
            "conditions": [
                condition("Ready", phase == "Succeeded"),
                condition("Stalled", stalled),
                condition("AwaitingApproval", awaiting),
                condition("ReadyForRollout", ready_for_rollout),
            ],
        },
    }


FAILED = {"Failed", "Invalid", "Aborted", "RollingBack"}


@pytest.mark.parametrize("phase", PHASES)
def test_after_ready_for_rollout_only_a_failure_is_not_healthy(lua: ArgoLua, phase: str) -> None:
    """The no-deadlock rule: a wave holding the DataMigration must advance to the workload's wave
    once expand and backfill are done, whatever the migration then waits for (the rollout that
    wave starts, an approval, a pause): Progressing or Suspended would wait forever."""
    for paused, awaiting in itertools.product((False, True), repeat=2):
        health = lua.health(
            HEALTH, _obj(phase, ready_for_rollout=True, paused=paused, awaiting=awaiting)
        )
        assert health is not None
        expected = "Degraded" if phase in FAILED else "Healthy"
        assert health["status"] == expected, (phase, paused, awaiting, health)


@pytest.mark.parametrize("phase", PHASES)
def test_before_ready_for_rollout(lua: ArgoLua, phase: str) -> None:
    """Before expand and backfill are done the new code must wait: never Healthy (except a
    finished migration), Suspended exactly when paused, Degraded on failures and Stalled."""
    for paused in (False, True):
        health = lua.health(HEALTH, _obj(phase, ready_for_rollout=False, paused=paused))
        assert health is not None
        if phase in FAILED:
            assert health["status"] == "Degraded"
        elif phase == "Succeeded":
            assert health["status"] == "Healthy"
        elif paused or phase == "Paused":
            assert health["status"] == "Suspended", (phase, health)
        else:
            assert health["status"] == "Progressing", (phase, health)
        stalled = lua.health(HEALTH, _obj(phase, ready_for_rollout=False, stalled=True))
        assert stalled is not None
        if phase != "Succeeded":
            assert stalled["status"] == "Degraded"


def test_an_unobserved_spec_is_progressing_whatever_the_old_status_says(lua: ArgoLua) -> None:
    for phase in PHASES:
        obj = _obj(phase, ready_for_rollout=True)
        obj["metadata"]["generation"] = 4
        assert lua.health(HEALTH, obj) == {
            "status": "Progressing",
            "message": "Waiting for the operator to observe generation 4",
        }


def test_lua_names_only_phases_and_conditions_that_exist() -> None:
    """A renamed phase or condition in the operator must not silently change the health."""
    conditions = {
        value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)
    }
    for script in (HEALTH, DISCOVERY):
        source = script.read_text()
        for phase in re.findall(r'phase [=~]= "(\w+)"', source):
            assert phase in PHASES, f"{script.name}: unknown phase {phase}"
        for condition in re.findall(r'(?:isTrue|condition)\((?:status, )?"(\w+)"\)', source):
            assert condition in conditions, f"{script.name}: unknown condition {condition}"
    assert re.findall(r'phase [=~]= "(\w+)"', HEALTH.read_text())


# -- the harness itself behaves like Argo CD's sandbox -----------------------------------------
def test_sandbox_has_no_string_library(lua: ArgoLua) -> None:
    with pytest.raises(LuaScriptError, match="string"):
        lua.run("return string.upper('x')", {})
    with pytest.raises(LuaScriptError, match="attempt to index"):
        lua.run("local s = 'x'; return s:upper()", {})
    assert ArgoLua(open_libs=True).run("return string.upper('x')", {}) == "X"
    assert ArgoLua(open_libs=True).run("local s = 'x'; return s:upper()", {}) == "X"


def test_sandbox_gives_table_and_safe_os_only(lua: ArgoLua) -> None:
    assert lua.run("return table.concat({'a', 'b'}, '-')", {}) == "a-b"
    assert lua.run("return os.date('!%Y-%m-%dT%H:%M:%SZ')", {}) == "2026-01-02T03:04:05Z"
    assert lua.run("return require('os').time()", {}) == 1767323045
    for forbidden in ("math", "io", "debug", "string", "loadfile", "dofile"):
        assert lua.run(f"return {forbidden} == nil", {}) is True, forbidden
    assert lua.run("return os.execute == nil and os.getenv == nil", {}) is True


def test_invalid_health_status_becomes_unknown(lua: ArgoLua) -> None:
    assert lua.health("return {status = 'Fine'}", {}) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }


def test_empty_objects_survive_an_action(lua: ArgoLua) -> None:
    obj: dict[str, Any] = {"metadata": {"annotations": {}}, "spec": {"runner": {}}}
    assert lua.action("obj.spec.paused = true; return obj", obj) == {
        "metadata": {"annotations": {}},
        "spec": {"runner": {}, "paused": True},
    }


def test_scripts_compile_as_lua51() -> None:
    """gopher-lua implements Lua 5.1 (plus goto): each script must compile on PUC Lua 5.1 too,
    not only on LuaJIT, which accepts some later syntax."""
    import lupa.lua51

    compile_error = lupa.lua51.LuaRuntime().eval(
        "function(source) local _, err = loadstring(source); return err end"
    )
    for script in [HEALTH, DISCOVERY, *ACTIONS.glob("*/action.lua")]:
        assert compile_error(script.read_text()) is None, script


# -- the argocd-cm entries users copy ----------------------------------------------------------
ARGOCD_CM = REPO / "examples" / "argocd" / "argocd-cm.yaml"
KEY = "datamigration.dev_DataMigration"


def argocd_cm() -> str:
    """examples/argocd/argocd-cm.yaml, made from the scripts (Argo CD's argocd-cm layout)."""

    def block(text: str, indent: int) -> str:
        return "".join(
            " " * indent + line if line.strip() else "\n" for line in text.splitlines(True)
        )

    actions = sorted(ACTIONS.glob("*/action.lua"), key=lambda p: p.parent.name)
    lines = [
        "# Argo CD settings for DataMigration, generated from argocd/datamigration.dev/DataMigration",
        "# (tests/packaging/test_argocd_lua.py checks they match; `python",
        "# tests/packaging/test_argocd_lua.py` rewrites this file). Merge into Argo CD's ConfigMap:",
        "#   kubectl -n argocd patch configmap argocd-cm --patch-file examples/argocd/argocd-cm.yaml",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "  namespace: argocd",
        "  labels:",
        "    app.kubernetes.io/name: argocd-cm",
        "    app.kubernetes.io/part-of: argocd",
        "data:",
        f"  resource.customizations.health.{KEY}: |",
        block(HEALTH.read_text(), 4).rstrip("\n"),
        f"  resource.customizations.actions.{KEY}: |",
        "    discovery.lua: |",
        block(DISCOVERY.read_text(), 6).rstrip("\n"),
        "    definitions:",
    ]
    for action in actions:
        lines += [
            f"      - name: {action.parent.name}",
            "        action.lua: |",
            block(action.read_text(), 10).rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


def test_argocd_cm_example_carries_the_scripts_verbatim() -> None:
    assert ARGOCD_CM.read_text() == argocd_cm(), f"regenerate: python {Path(__file__).name}"
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert data[f"resource.customizations.health.{KEY}"] == HEALTH.read_text()
    actions = yaml.safe_load(data[f"resource.customizations.actions.{KEY}"])
    assert actions["discovery.lua"] == DISCOVERY.read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        p.parent.name: p.read_text() for p in ACTIONS.glob("*/action.lua")
    }


if __name__ == "__main__":
    ARGOCD_CM.write_text(argocd_cm())
