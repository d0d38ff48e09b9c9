"""`make example-NN`: what an example in examples/ expects, set up on the local cluster.

Every example migrates the `shop-api` Deployment (examples/app/shop-api.yaml, container `api`,
3 replicas of image 1.0) and reads its database URL from the Secret `shop-db` (key `url`); its
`setup.sql` creates the tables as they are before the migration. This script puts exactly that
in place, from scratch each time, so an example can be applied (again) as the README says:

1. the local cluster must be up (`make cluster-up`, which the make target runs first);
2. a PostgreSQL 15 kept running in `.local-cluster/postgres/` (started if needed; it stops with
   `make cluster-down`), with a fresh database `example_NN` holding the example's `setup.sql`;
3. in the namespace (default: `default`), the previous run's DataMigration of this example is
   deleted (and awaited), then the Secret `shop-db` and the Deployment `shop-api` are recreated
   at image 1.0 and awaited available with no pod of another image left.

It prints the commands that come next. It never installs the operator: that is the README's
`helm install ... -f hack/local-values.yaml`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from datamigration.k8s.client import KubeClient, KubeError, migration_path  # noqa: E402
from localcluster import cluster as local_cluster  # noqa: E402
from localcluster import paths  # noqa: E402
from localcluster.postgres import start_persistent  # noqa: E402
from localcluster.waiting import wait_for  # noqa: E402

APP = REPO / "examples" / "app" / "shop-api.yaml"
SECRET, DEPLOYMENT = "shop-db", "shop-api"


def example_dir(number: str) -> Path:
    found = sorted(p for p in (REPO / "examples").glob(f"{number}-*") if p.is_dir())
    if len(found) != 1:
        known = sorted(p.name[:2] for p in (REPO / "examples").glob("[0-9][0-9]-*"))
        raise SystemExit(f"example {number!r}: no such example (known: {', '.join(known)})")
    return found[0]


def postgres_dir() -> Path:
    """Where the local cluster's PostgreSQL lives (stopped by `localcluster down`)."""
    return paths.state_paths().root / "postgres"


def _absent(kube: KubeClient, path: str) -> bool:
    try:
        kube.get(path)
    except KubeError as exc:
        if exc.not_found:
            return True
        raise
    return False


def delete_and_wait(kube: KubeClient, path: str, what: str) -> None:
    try:
        kube.delete(path, propagation="Foreground")
    except KubeError as exc:
        if not exc.not_found:
            raise
        return
    wait_for(f"{what} to be deleted", lambda: _absent(kube, path), timeout=120)


def fresh_database(database: str, setup_sql: str) -> str:
    """A new database holding `setup_sql`; its libpq URL (what the Secret holds)."""
    server = start_persistent(postgres_dir())
    with server.connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    with psycopg.connect(server.url_for(database).replace("+psycopg", "")) as conn:
        conn.execute(setup_sql)
    return server.url_for(database).replace("postgresql+psycopg://", "postgresql://", 1)


def app_ready(kube: KubeClient, namespace: str, image: str) -> bool:
    """shop-api rolled out: 3 available, and every pod of the app runs `image`."""
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{DEPLOYMENT}")
    status = deployment.get("status", {})
    if status.get("availableReplicas") != 3 or status.get("updatedReplicas") != 3:
        return False
    pods = kube.list_items(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=shop-api")
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    return images == {image}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/example.py", description=__doc__)
    parser.add_argument("number", help="the example's number, e.g. 01")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    example, ns = example_dir(args.number), args.namespace
    if not local_cluster.is_up():
        raise SystemExit("the local cluster is not up: run `make cluster-up` first")
    os.environ["KUBECONFIG"] = str(paths.state_paths().kubeconfig)
    kube = KubeClient()
    rel = example.relative_to(REPO)
    (migration,) = [
        d for d in yaml.safe_load_all((example / "datamigration.yaml").read_text()) if d
    ]
    name = migration["metadata"]["name"]

    print(f"==> {rel}: deleting what a previous run left in namespace {ns}")
    # (Not found also when the CRD is not installed yet: nothing to delete then either.)
    delete_and_wait(kube, migration_path(ns, name), f"datamigration {name}")
    delete_and_wait(
        kube, f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}", "deployment shop-api"
    )

    database = f"example_{args.number}"
    print(f"==> PostgreSQL 15 ({postgres_dir()}): database {database} from {rel}/setup.sql")
    url = fresh_database(database, (example / "setup.sql").read_text())

    print(f"==> Secret {SECRET} (key url: the database URL) and Deployment {DEPLOYMENT} (1.0)")
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": ns},
        "stringData": {"url": url},
    }
    kube.server_side_apply(
        f"/api/v1/namespaces/{ns}/secrets/{SECRET}", secret, field_manager="example"
    )
    (app,) = [d for d in yaml.safe_load_all(APP.read_text()) if d]
    app["metadata"]["namespace"] = ns
    image = app["spec"]["template"]["spec"]["containers"][0]["image"]
    kube.server_side_apply(
        f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}", app, field_manager="example"
    )
    wait_for(f"shop-api ({image}) to be available", lambda: app_ready(kube, ns, image), timeout=90)

    flag = "" if ns == "default" else f" -n {ns}"
    print(
        f"ready: now apply the migration and follow it:\n"
        f"  kubectl{flag} apply -f {rel}/datamigration.yaml\n"
        f"  kubectl{flag} get dm -w"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
