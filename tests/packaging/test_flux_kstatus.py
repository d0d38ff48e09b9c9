"""How Flux's kustomize-controller judges a DataMigration, by the real libraries it runs.

hack/kstatus (a small Go program built from the Go module proxy, cached outside the repo by
hack/build-go-tool.sh) evaluates each object with sigs.k8s.io/cli-utils kstatus `Compute`, with
the fork of it kustomize-controller runs (github.com/fluxcd/cli-utils), and with the
`healthCheckExprs` of examples/flux/kustomizations.yaml through Flux's own CEL evaluator
(github.com/fluxcd/pkg/runtime/cel). The objects are the recorded DataMigrations of every state in
argocd/.../testdata (the same ones the Argo CD health check is tested on).
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_support import REPO

from datamigration.core.decide import Invalid
from datamigration.validation import validate

STATES = REPO / "argocd" / "datamigration.dev" / "DataMigration" / "testdata"
FLUX = REPO / "examples" / "flux"
KUSTOMIZATIONS = FLUX / "kustomizations.yaml"

# What the shipped healthCheckExprs must say, per recorded state: Current once expand and backfill
# are done (ReadyForRollout) or Succeeded, so the app's Kustomization may roll the new code out;
# Failed when the operator stalled (a person must act); InProgress otherwise; an error (Flux polls
# again) while there is no status at all.
CEL_EXPECTED = {
    "no_status.yaml": "Error",
    "generation_not_observed.yaml": "InProgress",
    "pending_waiting_for_workload.yaml": "InProgress",
    "secret_not_found.yaml": "Failed",
    "expanding.yaml": "InProgress",
    "backfilling.yaml": "InProgress",
    "pausing_backfill.yaml": "InProgress",
    "paused_before_backfill.yaml": "InProgress",
    "rolling_out.yaml": "Current",
    "awaiting_approval.yaml": "Current",
    "paused_before_contract.yaml": "Current",
    "contracting.yaml": "Current",
    "succeeded.yaml": "Current",
    "failed_backfill.yaml": "Failed",
    "failed_contract_verify.yaml": "Failed",
    "failed_without_message.yaml": "Failed",
    "rollout_timed_out.yaml": "Failed",
    "invalid.yaml": "Failed",
    "aborted.yaml": "Failed",
    "rolling_back.yaml": "Failed",  # an abort undoing expand: the new code must not roll out
}
TERMINAL_OK = {"succeeded.yaml"}
#: Stalled=True: kstatus says Failed. The rollback is not stalled (it works): kstatus says
#: InProgress, and the shipped healthCheckExprs fail it by its phase.
STALLED = {k for k, v in CEL_EXPECTED.items() if v == "Failed"} - {"rolling_back.yaml"}


@functools.cache
def kstatus_tool() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build-go-tool.sh"), str(REPO / "hack" / "kstatus")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


def evaluate(files: list[Path]) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        [str(kstatus_tool()), "-exprs", str(KUSTOMIZATIONS), *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}


def test_every_recorded_state_is_judged() -> None:
    assert {p.name for p in STATES.glob("*.yaml")} == set(CEL_EXPECTED)


def test_the_shipped_health_check_exprs_as_flux_evaluates_them() -> None:
    results = evaluate(sorted(STATES.glob("*.yaml")))
    got = {name: r["cel"] for name, r in results.items()}
    assert got == CEL_EXPECTED


@pytest.mark.parametrize("name", sorted(CEL_EXPECTED))
def test_kstatus_rules_on_the_operators_conditions(name: str) -> None:
    """kstatus (and Flux's fork): Current only for Succeeded (Ready=True, observedGeneration ==
    generation), Failed when Stalled=True, InProgress while working or waiting (Ready=False).
    The one exception is an object the operator has not written a status to yet: kstatus calls
    it Current (no conditions at all), which is why examples/flux uses healthCheckExprs."""
    r = evaluate([STATES / name])[name]
    if name in TERMINAL_OK or name == "no_status.yaml":
        expected = "Current"
    elif name in STALLED:
        expected = "Failed"
    else:
        expected = "InProgress"
    assert (r["kstatus"], r["flux"]) == (expected, expected), r


def test_health_check_exprs_never_call_a_migration_without_status_current() -> None:
    """Flux's CEL evaluation of an object without `status` is an error: kustomize-controller
    reports it and polls again (until its timeout) rather than proceeding."""
    r = evaluate([STATES / "no_status.yaml"])["no_status.yaml"]
    assert r["cel"] == "Error" and "status" in r["celError"], r


def test_the_flux_example_migration_is_valid() -> None:
    docs = [d for d in yaml.safe_load_all((FLUX / "kustomizations.yaml").read_text()) if d]
    assert [d["metadata"]["name"] for d in docs] == ["shop-migrations", "shop-app"]
    assert docs[1]["spec"]["dependsOn"] == [{"name": "shop-migrations"}]
    (migration,) = yaml.safe_load_all(
        (FLUX / "shop" / "10-migrations" / "rename-email.yaml").read_text()
    )
    assert migration["spec"]["codeRollout"]["mode"] == "Observe"
    assert not isinstance(validate(migration["spec"]), Invalid)
