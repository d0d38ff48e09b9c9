"""Fixtures of the operator's end-to-end tests (imported by the test modules that use them).

Each test gets a fresh namespace, a fresh PostgreSQL database with a populated `users` table, a
Secret holding its URL, a 3-replica Deployment simulated by KWOK, and its own operator process
watching only that namespace (so a test can SIGKILL its operator without touching others).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import Kube, OperatorProcess, eventually

from localcluster import chart


@pytest.fixture(scope="session")
def kube(cluster: Any) -> Kube:
    """Admin access to the local cluster, with the CRD and the runner's ClusterRole installed."""
    k = Kube(Path(cluster.kubeconfig))
    chart.install_prerequisites(k.client, Path(cluster.bin_dir), field_manager="e2e")
    return k


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-e2e"
    kube.delete_namespace(name)
    eventually(lambda: _gone(kube, name), timeout=60, what=f"old namespace {name} to go")
    kube.create_namespace(name)
    eventually(
        lambda: kube.client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=30,
        what="the default ServiceAccount",
    )
    yield name
    kube.delete_namespace(name)


def _gone(kube: Kube, name: str) -> bool:
    try:
        kube.client.get(f"/api/v1/namespaces/{name}")
    except Exception as exc:  # KubeError 404
        return getattr(exc, "not_found", False) is True
    return False


@pytest.fixture
def operator(cluster: Any, kube: Kube, namespace: str) -> Iterator[OperatorProcess]:
    log = Path(cluster.logs_dir) / f"operator-{namespace}.log"
    proc = OperatorProcess(
        Path(cluster.kubeconfig), log, env={"DATAMIGRATION_NAMESPACES": namespace}
    ).start()
    yield proc
    proc.stop()


@dataclass
class Shop:
    """The example application: its database, Secret and Deployment."""

    namespace: str
    db_url: str
    engine: sa.Engine
    rows: int

    def emails(self) -> dict[int, str]:
        with self.engine.connect() as c:
            return {r.id: r.email for r in c.execute(sa.text("SELECT id, email FROM users"))}

    def columns(self) -> set[str]:
        with self.engine.connect() as c:
            return {
                r[0]
                for r in c.execute(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name='users'"
                    )
                )
            }


def shop_deployment(
    namespace: str,
    image: str = "registry.example/shop-api:1.0",
    *,
    replicas: int = 3,
    progress_deadline: int = 600,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-api", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": "shop-api"}},
            "template": {
                "metadata": {"labels": {"app": "shop-api"}},
                "spec": {"containers": [{"name": "api", "image": image}]},
            },
        },
    }


def setup_shop(
    kube: Kube, namespace: str, pg_url: str, *, rows: int = 500, progress_deadline: int = 600
) -> Shop:
    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL)"))
        c.execute(
            sa.text(
                "INSERT INTO users (email) SELECT 'user' || i || '@example.com' "
                "FROM generate_series(1, :n) AS i"
            ),
            {"n": rows},
        )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "stringData": {"url": pg_url.replace("postgresql+psycopg://", "postgresql://", 1)},
        }
    )
    kube.apply(shop_deployment(namespace, progress_deadline=progress_deadline))
    eventually(
        lambda: (
            kube.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/shop-api")
            .get("status", {})
            .get("availableReplicas")
            == 3
        ),
        timeout=60,
        what="shop-api v1 to be available",
    )
    return Shop(namespace=namespace, db_url=pg_url, engine=engine, rows=rows)


def rename_migration(
    namespace: str,
    *,
    approval: str = "Automatic",
    mode: str = "Apply",
    batch_size: int = 100,
    pause_ms: int = 0,
    target_ms: int | None = None,
    image: str | None = "registry.example/shop-api:2.0",
) -> dict[str, Any]:
    """Rename users.email to users.email_address, in four phases."""
    workload: dict[str, Any] = {"kind": "Deployment", "name": "shop-api", "container": "api"}
    if image:
        workload["image"] = image
    return {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": "rename-email", "namespace": namespace},
        "spec": {
            "database": {"urlFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}}},
            "workload": workload,
            "expand": {
                "steps": [
                    {
                        "name": "add-email-address",
                        "sql": "ALTER TABLE users ADD COLUMN email_address text",
                    }
                ]
            },
            "backfill": {
                "steps": [
                    {
                        "name": "copy-email",
                        "backfill": {
                            "table": "users",
                            "key": "id",
                            "set": {"email_address": "email"},
                            "where": "email_address IS NULL",
                            "batchSize": batch_size,
                            "pauseMilliseconds": pause_ms,
                            **({"targetBatchMilliseconds": target_ms} if target_ms else {}),
                        },
                    }
                ]
            },
            "codeRollout": {"mode": mode, "timeoutSeconds": 300},
            "contract": {
                "approval": approval,
                "verify": [
                    {
                        "name": "all-copied",
                        "expect": 0,
                        "query": "SELECT count(*) FROM users WHERE email_address IS DISTINCT FROM email",
                    }
                ],
                "steps": [{"name": "drop-email", "sql": "ALTER TABLE users DROP COLUMN email"}],
            },
        },
    }


def phase_of(kube: Kube, namespace: str, name: str = "rename-email") -> str:
    return str(kube.migration(namespace, name).get("status", {}).get("phase", ""))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == type_:
            return dict(c)
    return {}
