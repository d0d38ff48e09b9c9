"""The contract Job's own rollout gate (runner/gate.py), against a fake of the API adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import Cluster, spec

from datamigration.core.jobs import Owner, runner_plan
from datamigration.core.spec import parse_spec
from datamigration.k8s.client import KubeError
from datamigration.runner.errors import ExitCode, InvalidInput, RolloutRegressed
from datamigration.runner.gate import check_rollout
from datamigration.runner.main import main
from datamigration.runner.plan import RolloutGate, parse_plan

JSON = dict[str, Any]
GATE = RolloutGate(
    kind="Deployment",
    namespace="shop",
    name="shop-api",
    container="api",
    expected_image="shop-api:2.0",
)


class FakeApi:
    """What ClusterApi would answer for one moment of the cluster (the adapter boundary)."""

    def __init__(self, cluster: Cluster | None, error: KubeError | None = None) -> None:
        self.cluster, self.error = cluster, error
        self.calls: list[str] = []

    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        self.calls.append(f"get deployments {namespace}/{name}")
        if self.error is not None:
            raise self.error
        return self.cluster.deployment() if self.cluster else None

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]:
        self.calls.append(f"list replicasets {namespace} {selector}")
        assert self.cluster is not None
        return self.cluster.rs

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        self.calls.append(f"list pods {namespace} {selector}")
        assert self.cluster is not None
        return self.cluster.pods


def test_plan_built_by_the_operator_parses_into_the_gate() -> None:
    owner = Owner(namespace="shop", name="rename-email", uid="0123456789")
    plan = parse_plan(json.loads(json.dumps(runner_plan(owner, parse_spec(spec()), "contract"))))
    assert plan.rollout_gate == GATE
    assert parse_plan(runner_plan(owner, parse_spec(spec()), "expand")).rollout_gate is None


@pytest.mark.parametrize(
    ("gate", "field"),
    [
        ({"workload": {"kind": "ReplicaSet", "namespace": "shop", "name": "a"}}, "kind"),
        ({"workload": {"kind": "Deployment", "namespace": "Shop!", "name": "a"}}, "namespace"),
        (
            {
                "workload": {"kind": "Deployment", "namespace": "shop", "name": "a"},
                "container": "api",
                "expectedImage": "",
            },
            "expectedImage",
        ),
    ],
)
def test_a_bad_gate_in_the_plan_is_refused_naming_the_field(gate: JSON, field: str) -> None:
    document = {"migration": "shop/m", "phase": "contract", "steps": [], "rolloutGate": gate}
    with pytest.raises(InvalidInput, match=rf"plan\.rolloutGate\.[a-z.]*{field}"):
        parse_plan(document)


def test_a_proven_rollout_lets_the_step_run_after_three_reads() -> None:
    api = FakeApi(Cluster().rolled_out("shop-api:2.0"))
    assert "all 3 pods" in check_rollout(GATE, api)
    assert api.calls == [
        "get deployments shop/shop-api",
        "list replicasets shop app=shop",
        "list pods shop app=shop",
    ]


def test_rollout_undo_stops_the_step_naming_the_old_pods() -> None:
    # `kubectl rollout undo`: a new revision with the old image, rolling out.
    cluster = Cluster().rolled_out("shop-api:2.0").rolling("shop-api:1.0", updated=1, available=1)
    cluster.pods[0]["spec"]["containers"][0]["image"] = "shop-api:1.0"
    with pytest.raises(RolloutRegressed) as caught:
        check_rollout(GATE, FakeApi(cluster))
    assert caught.value.exit_code == ExitCode.ROLLOUT_REGRESSED == 8
    assert "Deployment shop/shop-api is no longer proven" in caught.value.message
    assert "3 pod(s) break it" in caught.value.message  # every pod of the undone revision
    assert "shop-api-bbb-0 (shop-api:1.0)" in caught.value.message
    assert "the destructive step was not run" in caught.value.message


def test_a_completed_undo_is_caught_by_the_image() -> None:
    cluster = Cluster().rolled_out("shop-api:2.0").rolled_out("shop-api:1.0")
    with pytest.raises(RolloutRegressed, match=r"template runs shop-api:1\.0, not shop-api:2\.0"):
        check_rollout(GATE, FakeApi(cluster))


def test_a_lingering_old_pod_stops_the_step_even_while_terminating() -> None:
    cluster = Cluster().rolled_out("shop-api:2.0", lingering=1)
    with pytest.raises(RolloutRegressed, match=r"shop-api-aaa-0 \(shop-api:1\.0, terminating\)"):
        check_rollout(GATE, FakeApi(cluster))


def test_without_an_image_old_revision_pods_still_stop_the_step() -> None:
    cluster = Cluster().rolled_out("shop-api:2.0", lingering=2)
    gate = RolloutGate("Deployment", "shop", "shop-api", "api", expected_image=None)
    with pytest.raises(RolloutRegressed, match=r"2 pod\(s\) break it: shop-api-aaa-0"):
        check_rollout(gate, FakeApi(cluster))


def test_a_workload_that_cannot_be_read_is_not_proven() -> None:
    with pytest.raises(RolloutRegressed, match="Deployment shop/shop-api no longer exists"):
        check_rollout(GATE, FakeApi(None))
    denied = KubeError(403, "Forbidden", 'deployments.apps "shop-api" is forbidden')
    with pytest.raises(RolloutRegressed, match=r"cannot re-prove the rollout.*403 Forbidden"):
        check_rollout(GATE, FakeApi(Cluster(), error=denied))


def test_the_gate_command_refuses_a_plan_without_a_gate(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"migration": "shop/m", "phase": "contract", "steps": []}))
    assert main(["gate", "--plan", str(plan)]) == ExitCode.INVALID_INPUT
