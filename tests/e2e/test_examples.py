"""Every example in examples/ applied for real, as a user would, and checked by its check.sql.

Each example directory holds `datamigration.yaml` (what the user applies), `setup.sql` (the
database before: the old schema and data) and `check.sql` (one boolean: the change is complete
and no data was lost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support import REPO, Kube, OperatorProcess, eventually, load_documents

from datamigration.k8s.client import migration_path

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
EXAMPLES = sorted(p.parent for p in (REPO / "examples").glob("[0-9]*/datamigration.yaml"))


def libpq_url(sqlalchemy_url: str) -> str:
    """The URL a Secret holds: plain libpq form, usable by psql and by the runner alike."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def in_namespace(doc: dict[str, Any], ns: str) -> dict[str, Any]:
    doc["metadata"]["namespace"] = ns
    return doc


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example(
    example: Path, kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.exec_driver_sql((example / "setup.sql").read_text())
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "stringData": {"url": libpq_url(pg_url)},
        }
    )
    for doc in load_documents(REPO / "examples" / "app" / "shop-api.yaml"):
        kube.apply(in_namespace(doc, namespace))
    (migration,) = load_documents(example / "datamigration.yaml")
    kube.apply(in_namespace(migration, namespace))
    name = migration["metadata"]["name"]

    def phase() -> str:
        status = kube.migration(namespace, name).get("status", {})
        if status.get("phase") in ("Failed", "Invalid"):
            raise AssertionError(f"{name}: {status.get('phase')}: {status.get('message')}")
        return str(status.get("phase", ""))

    if migration["spec"].get("contract", {}).get("approval") == "Manual":
        eventually(lambda: phase() == "AwaitingApproval", timeout=180, what="AwaitingApproval")
        digest = kube.migration(namespace, name)["status"]["contract"]["digest"]
        kube.client.merge_patch(
            migration_path(namespace, name),
            {"spec": {"contract": {"approved": True, "approvedDigest": digest}}},
        )
    eventually(lambda: phase() == "Succeeded", timeout=240, what=f"{name} Succeeded")
    with engine.connect() as c:
        assert c.exec_driver_sql((example / "check.sql").read_text()).scalar() is True
