"""The rollout gate: kubectl's rollout-status algorithm plus the pod-level proof.

Each case names the situation; the gate must say Complete only when every pod the Deployment
selects, terminating ones included, runs the newest ReplicaSet and the expected image.
"""

from __future__ import annotations

import pytest
from factories import Cluster, pod

from datamigration.core.rollout import evaluate_rollout, owning_deployment


def verdict(c: Cluster, image: str | None = "shop-api:2.0"):  # type: ignore[no-untyped-def]
    return evaluate_rollout(c.deployment(), c.rs, c.pods, container="api", expected_image=image)


CASES = [
    pytest.param(Cluster().rolled_out("shop-api:2.0"), "Complete", "", id="rolled-out-and-proven"),
    pytest.param(Cluster(), "InProgress", "template runs shop-api:1.0", id="template-not-updated"),
    pytest.param(
        Cluster().rolling("shop-api:2.0", 1, 1), "InProgress", "1 of 3 new replicas", id="updating"
    ),
    pytest.param(
        Cluster().rolling("shop-api:2.0", 3, 2),
        "InProgress",
        "2 of 3 updated replicas are available",
        id="updated-not-available",
    ),
    pytest.param(
        Cluster().rolled_out("shop-api:2.0", lingering=1),
        "InProgress",
        "1 pod(s) of an older ReplicaSet still exist (1 terminating)",
        id="old-pod-terminating-blocks",
    ),
    pytest.param(
        Cluster().rolled_out("shop-api:2.0", old_rs_scaled=1),
        "InProgress",
        "still scaled to 1",
        id="old-replicaset-still-scaled",
    ),
    pytest.param(
        Cluster().deadline_exceeded("shop-api:2.0"),
        "Failed",
        "progress deadline",
        id="progress-deadline-exceeded-fails",
    ),
]


@pytest.mark.parametrize(("cluster", "state", "message"), CASES)
def test_gate(cluster: Cluster, state: str, message: str) -> None:
    v = verdict(cluster)
    assert v.state == state, v.message
    assert message in v.message


def test_generation_not_observed_is_in_progress() -> None:
    c = Cluster().rolled_out("shop-api:2.0")
    c.status["observedGeneration"] = c.generation - 1
    assert verdict(c).message.startswith("waiting for Deployment shop-api spec update")


def test_pod_running_other_image_blocks() -> None:
    c = Cluster().rolled_out("shop-api:2.0")
    c.pods[0] = pod("bbb", "shop-api:1.9", 0)
    v = verdict(c)
    assert v.state == "InProgress" and "do not run shop-api:2.0" in v.message


def test_stability_without_an_expected_image() -> None:
    assert verdict(Cluster(), image=None).complete
    assert not verdict(Cluster().rolling("x:2", 1, 1), image=None).complete


def test_counts_are_reported() -> None:
    v = verdict(Cluster().rolled_out("shop-api:2.0", lingering=2))
    assert (v.old_pods, v.terminating_pods, v.pod_template_hash) == (2, 2, "bbb")


@pytest.mark.parametrize(
    ("owner", "labels", "expected"),
    [
        pytest.param("shop-api-7d9f", {"pod-template-hash": "7d9f"}, "shop-api", id="replicaset"),
        pytest.param("shop-api-7d9f", {}, None, id="no-hash-label"),
        pytest.param("other-name", {"pod-template-hash": "7d9f"}, None, id="not-a-deployment-rs"),
    ],
)
def test_owning_deployment(owner: str, labels: dict[str, str], expected: str | None) -> None:
    p = {"metadata": {"labels": labels, "ownerReferences": [{"kind": "ReplicaSet", "name": owner}]}}
    assert owning_deployment(p) == expected
