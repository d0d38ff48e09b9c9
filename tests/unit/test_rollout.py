"""The rollout gate: kubectl's rollout-status algorithm plus the pod-level proof.

Each case names the situation; the gate must say Complete only when every pod the Deployment
selects, terminating ones included, runs the newest ReplicaSet and the expected image.
"""

from __future__ import annotations

import pytest
from factories import Cluster, pod, replicaset

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


# -- the counts at every stage of one rollout ----------------------------------------------------
# shop-api, 3 replicas, maxSurge 1, maxUnavailable 0, from ReplicaSet aaa (1.0) to bbb (2.0), as
# the Deployment and ReplicaSet controllers move it. `old_pods` counts every pod not of bbb,
# terminating ones included, at every stage; the newest ReplicaSet's hash is known as soon as
# that ReplicaSet exists.


def stage(
    *,
    observed: bool,
    rs: list[tuple[str, int, int]],
    pods: list[tuple[str, bool]],
    updated: int,
    available: int,
    replicas: int,
) -> Cluster:
    """`rs`: (hash, revision, spec.replicas); `pods`: (hash, terminating)."""
    c = Cluster()
    c.generation, c.revision, c.template_image = 2, 2 if observed else 1, "shop-api:2.0"
    image = {"aaa": "shop-api:1.0", "bbb": "shop-api:2.0"}
    c.rs = [replicaset(h, rev, n, image[h]) for h, rev, n in rs]
    c.pods = [pod(h, image[h], i, terminating=t) for i, (h, t) in enumerate(pods)]
    c.status.update(
        observedGeneration=2 if observed else 1,
        updatedReplicas=updated,
        availableReplicas=available,
        replicas=replicas,
    )
    return c


OLD3 = [("aaa", False)] * 3
STAGES = [
    pytest.param(
        stage(observed=False, rs=[("aaa", 1, 3)], pods=OLD3, updated=3, available=3, replicas=3),
        3,
        0,
        "",
        "spec update to be observed",
        id="0-template-changed-not-observed",
    ),
    pytest.param(
        stage(
            observed=True,
            rs=[("aaa", 1, 3), ("bbb", 2, 1)],
            pods=[*OLD3, ("bbb", False)],
            updated=1,
            available=3,
            replicas=4,
        ),
        3,
        0,
        "bbb",
        "1 of 3 new replicas have been updated",
        id="1-surge-pod-created",
    ),
    pytest.param(
        stage(
            observed=True,
            rs=[("aaa", 1, 2), ("bbb", 2, 1)],
            pods=[("aaa", False), ("aaa", False), ("aaa", True), ("bbb", False)],
            updated=1,
            available=3,
            replicas=3,
        ),
        3,
        1,
        "bbb",
        "1 of 3 new replicas have been updated",
        id="2-first-old-pod-terminating",
    ),
    pytest.param(
        stage(
            observed=True,
            rs=[("aaa", 1, 0), ("bbb", 2, 3)],
            pods=[("aaa", True), ("bbb", False), ("bbb", False), ("bbb", False)],
            updated=3,
            available=3,
            replicas=3,
        ),
        1,
        1,
        "bbb",
        "1 pod(s) of an older ReplicaSet still exist (1 terminating)",
        id="3-last-old-pod-terminating",
    ),
    pytest.param(
        stage(
            observed=True,
            rs=[("aaa", 1, 0), ("bbb", 2, 3)],
            pods=[("bbb", False)] * 3,
            updated=3,
            available=3,
            replicas=3,
        ),
        0,
        0,
        "bbb",
        "all 3 pods run ReplicaSet bbb",
        id="4-complete",
    ),
]


@pytest.mark.parametrize(("cluster", "old", "terminating", "hash_", "message"), STAGES)
def test_old_pods_are_counted_at_every_stage(
    cluster: Cluster, old: int, terminating: int, hash_: str, message: str
) -> None:
    v = verdict(cluster)
    assert (v.old_pods, v.terminating_pods, v.pod_template_hash) == (old, terminating, hash_)
    assert message in v.message
    assert v.complete == (old == 0)


def test_newest_replicaset_is_found_by_template_before_the_revision_moves() -> None:
    """A rollback to 1.0: the template matches ReplicaSet aaa again before the controller has
    observed it; then bbb's pods are the old ones."""
    c = Cluster().rolled_out("shop-api:2.0")
    c.generation += 1
    c.template_image = "shop-api:1.0"
    v = evaluate_rollout(
        c.deployment(), c.rs, c.pods, container="api", expected_image="shop-api:1.0"
    )
    assert (v.pod_template_hash, v.old_pods, v.state) == ("aaa", 3, "InProgress")
