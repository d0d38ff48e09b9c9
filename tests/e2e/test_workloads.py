"""Several workloads of every common kind, and proof from the database's side, end to end.

Real control plane: kube-controller-manager's Deployment, StatefulSet, DaemonSet, CronJob and Job
controllers move the objects; KWOK plays the pods on 3 fake nodes; phase Jobs run the runner for
real against the test's PostgreSQL. Each test fails on a main without `spec.workloads`, the kinds,
or `contract.databaseSessions` (the CRD refuses the migration there).
"""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fixtures import Shop, rename_migration, setup_shop
from support import Kube, OperatorProcess, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
OLD, NEW = "registry.example/shop-api:1.0", "registry.example/shop-api:2.0"
APPS = "/apis/apps/v1/namespaces/{ns}/{plural}"


def create(kube: Kube, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return kube.client.request("POST", path, body=manifest)


def template(app: str, image: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app, **labels}},
        "spec": {"containers": [{"name": "api", "image": image}]},
    }


def deployment(name: str, image: str = OLD, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, image),
        },
    }


def migration(ns: str, workloads: list[dict[str, Any]], **contract: Any) -> dict[str, Any]:
    m = rename_migration(ns, mode="Observe")
    del m["spec"]["workload"]
    m["spec"]["workloads"] = workloads
    m["spec"]["contract"].update(contract)
    return m


def status(kube: Kube, ns: str) -> dict[str, Any]:
    return dict(kube.migration(ns, "rename-email").get("status", {}))


def contract_jobs(kube: Kube, ns: str) -> list[str]:
    return [
        j["metadata"]["name"]
        for j in kube.jobs(ns)
        if j["metadata"].get("labels", {}).get("datamigration.dev/phase") == "contract"
    ]


def verdict(kube: Kube, ns: str, kind: str, name: str) -> dict[str, Any]:
    for w in status(kube, ns).get("rollout", {}).get("workloads", []):
        if (w.get("kind"), w.get("name")) == (kind, name):
            return dict(w)
    return {}


def blocked_on(kube: Kube, ns: str, kind: str, name: str, text: str) -> dict[str, Any]:
    """Wait until the contract provably waits for that workload: expand and backfill done,
    the workload's verdict unproven with `text` in it, and no contract Job."""

    def waiting() -> dict[str, Any] | None:
        s = status(kube, ns)
        if s.get("phase") in ("Failed", "Succeeded"):
            raise AssertionError(f"unexpected phase {s.get('phase')}: {s.get('message')}")
        w = verdict(kube, ns, kind, name)
        done = s.get("phases", {}).get("backfill", {}).get("state") == "Succeeded"
        if done and w and not w["verified"] and text in w["message"]:
            return s
        return None

    s = eventually(waiting, timeout=180, what=f"contract to wait for {kind} {name} ({text})")
    assert contract_jobs(kube, ns) == []
    return s


def succeeded(kube: Kube, ns: str, shop: Shop) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = status(kube, ns)
        if s.get("phase") == "Failed":
            raise AssertionError(f"migration failed: {s.get('message')}")
        return s if s.get("phase") == "Succeeded" else None

    s = eventually(done, timeout=240, what="the migration to succeed")
    assert "email" not in shop.columns()
    return s


def ready_for_rollout(kube: Kube, ns: str) -> None:
    """Expand and backfill are done: the new code may roll out (as a real rollout would wait)."""
    eventually(
        lambda: status(kube, ns).get("phases", {}).get("backfill", {}).get("state") == "Succeeded",
        timeout=180,
        what="expand and backfill to succeed",
    )


def set_image(kube: Kube, ns: str, kind: str, name: str, image: str) -> None:
    kube.api.set_container_image(ns, name, "api", image, kind=kind)


def test_contract_waits_for_every_deployment_and_names_the_one_left_behind(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)  # shop-api: the web tier, 3 pods on 1.0
    create(kube, APPS.format(ns=namespace, plural="deployments"), deployment("worker"))
    web = {"kind": "Deployment", "name": "shop-api", "container": "api", "image": NEW}
    worker = {"kind": "Deployment", "name": "worker", "container": "api", "image": NEW}
    kube.apply(migration(namespace, [web, worker]))
    ready_for_rollout(kube, namespace)
    set_image(kube, namespace, "Deployment", "shop-api", NEW)
    eventually(
        lambda: verdict(kube, namespace, "Deployment", "shop-api").get("verified"),
        timeout=180,
        what="web to be proven",
    )
    s = blocked_on(kube, namespace, "Deployment", "worker", "not registry.example/shop-api:2.0")
    assert "Deployment worker" in s["message"]
    assert s["phases"]["contract"]["state"] == "Pending"
    set_image(kube, namespace, "Deployment", "worker", NEW)
    s = succeeded(kube, namespace, shop)
    assert [w["verified"] for w in s["rollout"]["workloads"]] == [True, True]


def test_a_partitioned_statefulset_holds_contract_until_every_pod_is_updated(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            "template": template("db", OLD),
        },
    }
    create(kube, APPS.format(ns=namespace, plural="statefulsets"), sts)
    path = APPS.format(ns=namespace, plural="statefulsets") + "/db"
    eventually(
        lambda: kube.client.get(path).get("status", {}).get("readyReplicas") == 3,
        timeout=120,
        what="db on 1.0",
    )
    entry = {"kind": "StatefulSet", "name": "db", "container": "api", "image": NEW}
    kube.apply(migration(namespace, [entry]))
    ready_for_rollout(kube, namespace)
    set_image(kube, namespace, "StatefulSet", "db", NEW)
    eventually(
        lambda: (
            {
                p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
                for p in kube.pods(namespace, "app=db")
            }
            == {"db-0": OLD, "db-1": NEW, "db-2": NEW}
        ),
        timeout=180,
        what="db-1 and db-2 updated, db-0 held back by the partition",
    )
    blocked_on(kube, namespace, "StatefulSet", "db", "partition 1")
    kube.client.request(
        "PATCH",
        path,
        body={"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}},
        content_type="application/merge-patch+json",
    )
    s = succeeded(kube, namespace, shop)
    update = kube.client.get(path)["status"]["updateRevision"]
    pods = kube.pods(namespace, "app=db")
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {update}
    assert s["rollout"]["workloads"][0]["verified"] is True


def test_a_daemonset_across_the_nodes_is_proven_on_every_node(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": template("agent", OLD),
        },
    }
    create(kube, APPS.format(ns=namespace, plural="daemonsets"), ds)
    path = APPS.format(ns=namespace, plural="daemonsets") + "/agent"
    eventually(
        lambda: kube.client.get(path).get("status", {}).get("numberAvailable") == 3,
        timeout=120,
        what="one agent pod on each of the 3 nodes",
    )
    entry = {"kind": "DaemonSet", "name": "agent", "container": "api", "image": NEW}
    kube.apply(migration(namespace, [entry]))
    blocked_on(kube, namespace, "DaemonSet", "agent", "template runs registry.example/shop-api:1.0")
    set_image(kube, namespace, "DaemonSet", "agent", NEW)
    s = succeeded(kube, namespace, shop)
    pods = kube.pods(namespace, "app=agent")
    assert len({p["spec"]["nodeName"] for p in pods}) == 3
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {NEW}
    assert s["rollout"]["workloads"][0]["replicas"] == 3


def test_a_cronjob_run_of_the_old_template_blocks_contract_until_it_ends(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    job_template = {
        "spec": {
            "template": {
                # KWOK keeps never-ready pods running: a long report run.
                **template("report", OLD, **{"localcluster.datamigration.dev/never-ready": "true"}),
            }
        }
    }
    job_template["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    cron = create(
        kube,
        f"/apis/batch/v1/namespaces/{namespace}/cronjobs",
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "report"},
            "spec": {"schedule": "0 0 1 1 *", "jobTemplate": job_template},
        },
    )
    # `kubectl create job report-manual-1 --from=cronjob/report`: the old template, owned.
    run = copy.deepcopy(job_template)
    run.update(
        apiVersion="batch/v1",
        kind="Job",
        metadata={
            "name": "report-manual-1",
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": "report",
                    "uid": cron["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
    )
    create(kube, f"/apis/batch/v1/namespaces/{namespace}/jobs", run)
    eventually(
        lambda: [
            p for p in kube.pods(namespace, "job-name=report-manual-1")
            if p.get("status", {}).get("phase") == "Running"
        ],
        timeout=60,
        what="the old report run to be running",
    )  # fmt: skip
    set_image(kube, namespace, "CronJob", "report", NEW)
    entry = {"kind": "CronJob", "name": "report", "container": "api", "image": NEW}
    kube.apply(migration(namespace, [entry]))
    blocked_on(kube, namespace, "CronJob", "report", "report-manual-1-")
    kube.client.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{namespace}/jobs/report-manual-1",
        body={"propagationPolicy": "Background"},
    )
    succeeded(kube, namespace, shop)


def test_an_unowned_pod_on_the_old_image_blocks_contract_until_deleted(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    create(
        kube,
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "legacy-debug", "labels": {"app": "legacy"}},
            "spec": template("legacy", OLD)["spec"],
        },
    )
    web = {
        "kind": "Deployment",
        "name": "shop-api",
        "container": "api",
        "image": NEW,
        "mode": "Apply",
    }
    pods = {
        "kind": "Pods",
        "selector": {"matchLabels": {"app": "legacy"}},
        "container": "api",
        "image": NEW,
    }
    kube.apply(migration(namespace, [web, pods]))
    blocked_on(kube, namespace, "Pods", "app=legacy", "legacy-debug")
    eventually(  # web rolled out by the operator (Apply): only the legacy pod is left
        lambda: "Pods app=legacy" in status(kube, namespace).get("message", ""),
        timeout=120,
        what="the status to name the pod selector",
    )
    assert contract_jobs(kube, namespace) == []
    kube.client.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/legacy-debug")
    succeeded(kube, namespace, shop)


def test_an_open_session_of_the_old_version_blocks_contract_until_it_disconnects(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    shop = setup_shop(kube, namespace, pg_url)
    url = sa.make_url(pg_url)
    old = psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database, application_name="shop-api:1.0 shop-api-7c9f-x2", autocommit=True,
    )  # fmt: skip
    try:
        old.execute("SELECT 'secret-query-text' AS q")
        pid = old.info.backend_pid
        web = {"kind": "Deployment", "name": "shop-api", "container": "api", "image": NEW}
        m = migration(
            namespace, [web], databaseSessions={"applicationNamePattern": r"shop-api:1\."}
        )
        m["spec"]["codeRollout"]["mode"] = "Apply"
        kube.apply(m)

        def listed() -> dict[str, Any] | None:
            s = status(kube, namespace)
            stalled = [
                c for c in s.get("conditions", [])
                if c["type"] == "Stalled" and c["reason"] == "OldSessionsConnected"
            ]  # fmt: skip
            return s if stalled and f"pid {pid}" in s.get("message", "") else None

        s = eventually(listed, timeout=240, what="contract to refuse the old session")
        assert "shop-api:1.0 shop-api-7c9f-x2" in s["message"]
        assert "secret-query-text" not in str(s)
        assert "email" in shop.columns()
    finally:
        old.close()
    succeeded(kube, namespace, shop)
