"""The rollout gate of every workload kind besides the Deployment, as tables of situations.

The StatefulSet, DaemonSet, CronJob and pod objects below have the shape the real controllers of
kube-controller-manager write (field names and labels as in a `kubectl get -o yaml`; the e2e
tests exercise the same gates against the real controllers). The Argo Rollouts `Rollout` objects
are hand-recorded shapes of a Rollout's status as the Argo Rollouts controller (v1.6+) writes it
(`phase`, `stableRS`, `currentPodHash`, `rollouts-pod-template-hash` labels), NOT captured from a
live controller: none runs on this machine.

Each case names the situation; a gate may say Complete only when every pod, terminating ones
included, is on the newest revision and runs the expected image.
"""

from __future__ import annotations

from typing import Any

import pytest

from datamigration.core.workloads import (
    evaluate_argo_rollout,
    evaluate_cronjob,
    evaluate_daemonset,
    evaluate_pods,
    evaluate_statefulset,
    evaluate_workload,
    newest_controller_revision,
    template_containers,
    template_image,
)

OLD, NEW = "shop-api:1.0", "shop-api:2.0"
UID = "0b6f1f7e-uid"


def pod(
    name: str,
    image: str,
    labels: dict[str, str] | None = None,
    *,
    terminating: bool = False,
    phase: str = "Running",
    owner: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "labels": dict(labels or {})}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "api", "image": image}]},
        "status": {"phase": phase},
    }


# -- StatefulSet ---------------------------------------------------------------------------------
def sts(
    *,
    image: str = NEW,
    replicas: int = 3,
    updated: int = 3,
    ready: int = 3,
    current: str = "db-7c9",
    update: str = "db-7c9",
    generation: int = 2,
    observed: int = 2,
    partition: int | None = None,
    strategy: str = "RollingUpdate",
) -> dict[str, Any]:
    update_strategy: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        update_strategy["rollingUpdate"] = {"partition": partition or 0}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": UID, "generation": generation},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "db"}},
            "serviceName": "db",
            "updateStrategy": update_strategy,
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "api", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": replicas if current == update else replicas - updated,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update,
            "collisionCount": 0,
        },
    }


def sts_pods(*hashes: str, image: str = NEW, terminating: int = -1) -> list[dict[str, Any]]:
    return [
        pod(
            f"db-{i}",
            image if h == "db-7c9" else OLD,
            {"app": "db", "controller-revision-hash": h},
            terminating=i == terminating,
        )
        for i, h in enumerate(hashes)
    ]


ALL_NEW = ("db-7c9", "db-7c9", "db-7c9")
STS_CASES = [
    ("complete", sts(), sts_pods(*ALL_NEW), "Complete", "run revision db-7c9"),
    (
        "generation not observed",
        sts(generation=3),
        sts_pods(*ALL_NEW),
        "InProgress",
        "spec update to be observed",
    ),
    (
        "partitioned rollout is not complete",
        sts(partition=1, current="db-5f4", updated=2),
        sts_pods("db-5f4", "db-7c9", "db-7c9"),
        "InProgress",
        "partition 1",
    ),
    (
        "partition set, no rollout pending: every pod on the one revision",
        sts(partition=1),
        sts_pods(*ALL_NEW),
        "Complete",
        "revision db-7c9",
    ),
    (
        "partition set, no rollout pending, but a pod of another revision",
        sts(partition=1),
        sts_pods("db-5f4", "db-7c9", "db-7c9"),
        "InProgress",
        "not on revision db-7c9",
    ),
    (
        "replicas not updated",
        sts(updated=1, current="db-5f4"),
        sts_pods("db-5f4", "db-5f4", "db-7c9"),
        "InProgress",
        "1 of 3",
    ),
    ("replica not ready", sts(ready=2), sts_pods(*ALL_NEW), "InProgress", "2 of 3"),
    (
        "currentRevision not moved yet",
        sts(current="db-5f4"),
        sts_pods(*ALL_NEW),
        "InProgress",
        "currentRevision db-5f4",
    ),
    (
        "terminating pod of the old revision",
        sts(),
        [*sts_pods(*ALL_NEW), *sts_pods("db-5f4", terminating=0)],
        "InProgress",
        "1 terminating",
    ),
    (
        "template runs another image",
        sts(image="shop-api:2.1"),
        sts_pods(*ALL_NEW),
        "InProgress",
        "template runs shop-api:2.1",
    ),
    (
        "OnDelete: old pod not yet deleted (counters say nothing moved)",
        sts(strategy="OnDelete", current="db-5f4", updated=3),
        sts_pods("db-7c9", "db-7c9", "db-5f4"),
        "InProgress",
        "not on revision db-7c9",
    ),
    (
        "OnDelete: every pod on updateRevision",
        sts(strategy="OnDelete", current="db-5f4"),
        sts_pods(*ALL_NEW),
        "Complete",
        "revision db-7c9",
    ),
]


@pytest.mark.parametrize(
    ("obj", "pods", "state", "message"),
    [c[1:] for c in STS_CASES],
    ids=[c[0] for c in STS_CASES],
)
def test_statefulset_gate(
    obj: dict[str, Any], pods: list[dict[str, Any]], state: str, message: str
) -> None:
    verdict = evaluate_statefulset(obj, pods, container="api", expected_image=NEW)
    assert verdict.state == state
    assert message in verdict.message


def test_statefulset_counts_old_and_terminating_pods() -> None:
    pods = [*sts_pods("db-7c9", "db-7c9"), *sts_pods("db-5f4", terminating=0)]
    verdict = evaluate_statefulset(sts(), pods, container="api", expected_image=NEW)
    assert (verdict.old_pods, verdict.terminating_pods, verdict.replicas) == (1, 1, 3)
    assert verdict.revision == "db-7c9"


# -- DaemonSet -----------------------------------------------------------------------------------
def ds(
    *, image: str = NEW, desired: int = 3, updated: int = 3, available: int = 3, observed: int = 2
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "shop", "uid": UID, "generation": 2},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "api", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": observed,
            "currentNumberScheduled": desired,
            "desiredNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": available,
            "numberAvailable": available,
            "numberUnavailable": desired - available,
            "updatedNumberScheduled": updated,
        },
    }


def revision(hash_: str, number: int, owner_uid: str = UID) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"agent-{hash_}",
            "labels": {"app": "agent", "controller-revision-hash": hash_},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": owner_uid}
            ],
        },
        "revision": number,
        "data": {},
    }


REVISIONS = [revision("6d8f", 1), revision("84b7", 2), revision("ffff", 9, owner_uid="other")]


def ds_pods(*hashes: str, terminating: int = -1) -> list[dict[str, Any]]:
    return [
        pod(
            f"agent-{i}",
            NEW if h == "84b7" else OLD,
            {"app": "agent", "controller-revision-hash": h},
            terminating=i == terminating,
        )
        for i, h in enumerate(hashes)
    ]


DS_CASES = [
    ("complete", ds(), ds_pods("84b7", "84b7", "84b7"), "Complete", "revision 84b7"),
    ("not observed", ds(observed=1), ds_pods("84b7"), "InProgress", "to be observed"),
    ("not all updated", ds(updated=2), ds_pods("84b7", "84b7", "6d8f"), "InProgress", "2 of 3"),
    ("unavailable", ds(available=2), ds_pods("84b7", "84b7", "84b7"), "InProgress", "unavailable"),
    (
        "terminating pod of the older revision",
        ds(),
        [*ds_pods("84b7", "84b7", "84b7"), *ds_pods("6d8f", terminating=0)],
        "InProgress",
        "1 terminating",
    ),
    (
        "pods on the newest revision but the wrong image",
        ds(image="shop-api:2.1"),
        ds_pods("84b7", "84b7", "84b7"),
        "InProgress",
        "template runs shop-api:2.1",
    ),
]


@pytest.mark.parametrize(
    ("obj", "pods", "state", "message"),
    [c[1:] for c in DS_CASES],
    ids=[c[0] for c in DS_CASES],
)
def test_daemonset_gate(
    obj: dict[str, Any], pods: list[dict[str, Any]], state: str, message: str
) -> None:
    verdict = evaluate_daemonset(obj, REVISIONS, pods, container="api", expected_image=NEW)
    assert verdict.state == state
    assert message in verdict.message


def test_newest_controller_revision_is_the_highest_owned_one() -> None:
    newest = newest_controller_revision(ds(), REVISIONS)
    assert newest is not None and newest["metadata"]["name"] == "agent-84b7"


def test_daemonset_without_revisions_is_not_proven() -> None:
    verdict = evaluate_daemonset(ds(), [], ds_pods("84b7"), container="api", expected_image=NEW)
    assert not verdict.complete


# -- CronJob -------------------------------------------------------------------------------------
def cronjob(image: str = NEW) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop", "uid": UID},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "api", "image": image}],
                        }
                    }
                }
            },
        },
        "status": {"lastScheduleTime": "2026-12-02T00:00:00Z"},
    }


def job(name: str, image: str, *, done: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"active": 0 if done else 1}
    if done:
        status["conditions"] = [{"type": "Complete", "status": "True"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "uid": f"{name}-uid",
            "ownerReferences": [{"kind": "CronJob", "name": "report", "uid": UID}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}},
        "status": status,
    }


def job_pod(job_name: str, image: str, **kw: Any) -> dict[str, Any]:
    return pod(f"{job_name}-x7k2p", image, {"job-name": job_name}, **kw)


CRON_CASES = [
    ("only new jobs", cronjob(), [job("report-1", NEW)], [job_pod("report-1", NEW)], "Complete"),
    ("template still old", cronjob(OLD), [], [], "InProgress"),
    (
        "old job still running",
        cronjob(),
        [job("report-0", OLD), job("report-1", NEW)],
        [job_pod("report-0", OLD), job_pod("report-1", NEW)],
        "InProgress",
    ),
    (
        "old job's pod terminating",
        cronjob(),
        [job("report-0", OLD)],
        [job_pod("report-0", OLD, terminating=True)],
        "InProgress",
    ),
    (
        "old job finished: its pod ran to completion",
        cronjob(),
        [job("report-0", OLD, done=True)],
        [job_pod("report-0", OLD, phase="Succeeded")],
        "Complete",
    ),
    (
        "old job deleted, its pod still terminating",
        cronjob(),
        [],
        [job_pod("report-29301", OLD, terminating=True)],
        "InProgress",
    ),
    (
        "another CronJob's pod is not ours",
        cronjob(),
        [],
        [job_pod("nightly-29301", OLD)],
        "Complete",
    ),
    (
        "old job active, its pod not created yet",
        cronjob(),
        [job("report-0", OLD)],
        [],
        "InProgress",
    ),
]


@pytest.mark.parametrize(
    ("obj", "jobs", "pods", "state"),
    [c[1:] for c in CRON_CASES],
    ids=[c[0] for c in CRON_CASES],
)
def test_cronjob_gate(
    obj: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]], state: str
) -> None:
    verdict = evaluate_cronjob(obj, jobs, pods, container="api", expected_image=NEW)
    assert verdict.state == state, verdict.message


def test_cronjob_names_the_old_pod() -> None:
    verdict = evaluate_cronjob(
        cronjob(),
        [job("report-0", OLD)],
        [job_pod("report-0", OLD)],
        container="api",
        expected_image=NEW,
    )
    assert "report-0-x7k2p" in verdict.message and verdict.old_pods == 1


# -- Argo Rollouts -------------------------------------------------------------------------------
def rollout(
    *,
    image: str = NEW,
    phase: str = "Healthy",
    stable: str = "5b9d8",
    current: str = "5b9d8",
    observed: str = "4",
    paused: bool = False,
    abort: bool = False,
) -> dict[str, Any]:
    """A hand-recorded shape of an argoproj.io/v1alpha1 Rollout (canary strategy)."""
    status: dict[str, Any] = {
        "observedGeneration": observed,  # Argo writes it as a string
        "phase": phase,
        "stableRS": stable,
        "currentPodHash": current,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "conditions": [{"type": "Healthy", "status": "True" if phase == "Healthy" else "False"}],
        "canary": {},
    }
    if paused:
        status["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": "x"}]
    if abort:
        status["abort"] = True
        status["message"] = "RolloutAborted: Rollout aborted update to revision 3"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "generation": 4},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "api", "image": image}]},
            },
        },
        "status": status,
    }


def rs(hash_: str, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{hash_}",
            "labels": {"app": "web", "rollouts-pod-template-hash": hash_},
            "ownerReferences": [{"kind": "Rollout", "name": "web", "uid": UID}],
        },
        "spec": {"replicas": replicas},
    }


def ro_pods(*hashes: str) -> list[dict[str, Any]]:
    return [
        pod(
            f"web-{h}-{i}",
            NEW if h == "5b9d8" else OLD,
            {"app": "web", "rollouts-pod-template-hash": h},
        )
        for i, h in enumerate(hashes)
    ]


STABLE = ro_pods("5b9d8", "5b9d8", "5b9d8")
RO_CASES = [
    ("healthy", rollout(), [rs("5b9d8", 3), rs("7f6c4", 0)], STABLE, "Complete"),
    (
        "canary in progress",
        rollout(phase="Progressing", stable="7f6c4"),
        [rs("5b9d8", 1), rs("7f6c4", 3)],
        ro_pods("7f6c4", "7f6c4", "5b9d8"),
        "InProgress",
    ),
    ("paused at a canary step", rollout(paused=True, phase="Paused"), [], STABLE, "InProgress"),
    ("aborted", rollout(abort=True, phase="Degraded"), [], STABLE, "Failed"),
    ("generation not observed", rollout(observed="3"), [], STABLE, "InProgress"),
    ("stableRS behind currentPodHash", rollout(stable="7f6c4"), [], STABLE, "InProgress"),
    (
        "preview ReplicaSet still scaled",
        rollout(),
        [rs("5b9d8", 3), rs("9a1e2", 1)],
        STABLE,
        "InProgress",
    ),
    (
        "pod of an older hash left",
        rollout(),
        [rs("5b9d8", 3)],
        [*STABLE, *ro_pods("7f6c4")],
        "InProgress",
    ),
    ("template runs another image", rollout(image="shop-api:2.1"), [], STABLE, "InProgress"),
]


@pytest.mark.parametrize(
    ("obj", "replicasets", "pods", "state"),
    [c[1:] for c in RO_CASES],
    ids=[c[0] for c in RO_CASES],
)
def test_argo_rollout_gate(
    obj: dict[str, Any],
    replicasets: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    state: str,
) -> None:
    verdict = evaluate_argo_rollout(obj, replicasets, pods, container="api", expected_image=NEW)
    assert verdict.state == state, verdict.message


# -- Pods selector -------------------------------------------------------------------------------
POD_CASES = [
    ("every pod new", [pod("a", NEW), pod("b", NEW)], "Complete"),
    ("no pod matches", [], "Complete"),
    ("unowned pod on the old image", [pod("a", NEW), pod("legacy", OLD)], "InProgress"),
    ("terminating old pod", [pod("legacy", OLD, terminating=True)], "InProgress"),
    ("finished old pod runs nothing", [pod("legacy", OLD, phase="Succeeded")], "Complete"),
]


@pytest.mark.parametrize(
    ("pods", "state"), [c[1:] for c in POD_CASES], ids=[c[0] for c in POD_CASES]
)
def test_pods_gate(pods: list[dict[str, Any]], state: str) -> None:
    verdict = evaluate_pods("app=shop", pods, container="api", expected_image=NEW)
    assert verdict.state == state, verdict.message


def test_pods_gate_names_the_old_pod() -> None:
    verdict = evaluate_pods(
        "app=shop", [pod("legacy", OLD, terminating=True)], container="api", expected_image=NEW
    )
    assert "legacy" in verdict.message and "1 terminating" in verdict.message


# -- dispatch and templates ----------------------------------------------------------------------
def test_evaluate_workload_dispatches_by_kind() -> None:
    assert evaluate_workload(
        "StatefulSet", sts(), [], sts_pods(*ALL_NEW), container="api", expected_image=NEW
    ).complete
    assert not evaluate_workload(
        "Pods", {}, [], [pod("x", OLD)], container="api", expected_image=NEW, selector="a=b"
    ).complete
    with pytest.raises(ValueError, match="Job"):
        evaluate_workload("Job", {}, [], [], container="api", expected_image=NEW)


def test_template_image_and_containers_per_kind() -> None:
    assert template_image("CronJob", cronjob(OLD), "api") == OLD
    assert template_image("StatefulSet", sts(), "nope") is None
    assert template_containers("Rollout", rollout()) == ["api"]
    assert template_containers("Pods", {}) == []
