"""`make demo`: the whole product on one machine, from nothing to a finished migration.

Brings up the local cluster and a throwaway PostgreSQL, starts the operator, deploys the
example application (3 replicas of shop-api 1.0) with 5,000 users, applies
examples/01-rename-column, and shows the migration moving through expand, backfill,
code-rollout, the approval of the contract (`kubectl datamigration approve`, as a person would)
and contract to Succeeded; then the table as it ends up.

The cluster stays up afterwards (`make cluster-down` stops it) with the CRD and the runner's
ClusterRole installed so that the README's `helm install` adopts them; the operator and PostgreSQL
stop with the demo, and the demo's namespace is deleted (`--keep-namespace` keeps it), so a rerun
or the README's "Use it" starts from a clean cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from datamigration.k8s.client import KubeClient, KubeError, migration_path  # noqa: E402
from localcluster import chart  # noqa: E402
from localcluster import cluster as local_cluster  # noqa: E402
from localcluster.operatorproc import OperatorProcess  # noqa: E402
from localcluster.postgres import PostgresServer  # noqa: E402
from localcluster.waiting import wait_for  # noqa: E402

EXAMPLE = REPO / "examples" / "01-rename-column"
TERMINAL = ("Succeeded", "Failed", "Aborted", "Invalid")


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def show_table(engine: sa.Engine) -> None:
    with engine.connect() as c:
        columns = [
            r[0]
            for r in c.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
                    "ORDER BY ordinal_position"
                )
            )
        ]
        rows = c.execute(sa.text(f"SELECT {', '.join(columns)} FROM users ORDER BY id LIMIT 5"))
        total = c.execute(sa.text("SELECT count(*) FROM users")).scalar()
        print(f"\n  users ({total} rows), columns: {', '.join(columns)}")
        for row in rows:
            print("   ", " | ".join(str(v) for v in row))
        print("    ...\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", default="demo")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep-namespace", action="store_true", help="do not delete it at the end")
    args = parser.parse_args()
    ns, started = args.namespace, time.monotonic()

    say("starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, KWOK)")
    handle = local_cluster.ensure_up()
    os.environ["KUBECONFIG"] = str(handle.kubeconfig)
    kube = KubeClient()

    say("starting a throwaway PostgreSQL 15 on 127.0.0.1")
    with PostgresServer.start() as pg:
        url = pg.create_database("shop")
        engine = sa.create_engine(url)
        with engine.begin() as c:
            c.exec_driver_sql((EXAMPLE / "setup.sql").read_text())
        show_table(engine)

        say("installing the CRD and the runner's ClusterRole")
        chart.install_prerequisites(kube, Path(handle.bin_dir), field_manager="demo")

        say(f"deploying shop-api 1.0 (3 replicas) and its database Secret in namespace {ns}")
        kube.server_side_apply(
            f"/api/v1/namespaces/{ns}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            field_manager="demo",
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": ns},
            "stringData": {"url": url.replace("postgresql+psycopg://", "postgresql://", 1)},
        }
        kube.server_side_apply(
            f"/api/v1/namespaces/{ns}/secrets/shop-db", secret, field_manager="demo"
        )
        (app,) = yaml.safe_load_all((REPO / "examples" / "app" / "shop-api.yaml").read_text())
        app["metadata"]["namespace"] = ns
        kube.server_side_apply(
            f"/apis/apps/v1/namespaces/{ns}/deployments/shop-api", app, field_manager="demo"
        )
        wait_for(
            "shop-api 1.0 to be available",
            lambda: (
                kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/shop-api")["status"].get(
                    "availableReplicas"
                )
                == 3
            ),
            timeout=60,
        )

        say("starting datamigration-operator")
        operator = OperatorProcess(
            handle.kubeconfig,
            Path(handle.logs_dir) / "operator-demo.log",
            env={"DATAMIGRATION_NAMESPACES": ns},
        ).start()
        try:
            (migration,) = yaml.safe_load_all((EXAMPLE / "datamigration.yaml").read_text())
            migration["metadata"]["namespace"] = ns
            name = migration["metadata"]["name"]
            try:
                kube.delete(migration_path(ns, name))
                wait_for(
                    "the previous demo migration to go", lambda: _absent(kube, ns, name), timeout=60
                )
            except KubeError:
                pass
            say(
                f"applying {EXAMPLE.relative_to(REPO)}/datamigration.yaml "
                f"(kubectl get dm -n {ns} -w)"
            )
            kube.server_side_apply(migration_path(ns, name), migration, field_manager="demo")
            phase = watch(kube, ns, name, args.timeout)
            if phase == "AwaitingApproval":
                say(f"approving the contract: kubectl datamigration approve -n {ns} {name}")
                cli(["-n", ns, "approve", name])
                phase = watch(kube, ns, name, args.timeout, stop_at_approval=False)
            show_table(engine)
            cli(["-n", ns, "status", name])
        finally:
            operator.stop()
            engine.dispose()
            if not args.keep_namespace:
                delete_namespace(kube, ns)

    elapsed = time.monotonic() - started
    say(
        f"demo finished: {name} {phase} in {elapsed:.0f}s total. The cluster is still up; "
        f'use it as the README\'s "Use it" says ({local_cluster.env_lines()}); '
        "stop it with make cluster-down"
    )
    return 0 if phase == "Succeeded" else 1


def cli(argv: list[str]) -> int:
    """`kubectl datamigration ...`, in this process."""
    from datamigration.cli.main import main as cli_main

    return cli_main(argv)


def delete_namespace(kube: KubeClient, ns: str) -> None:
    say(f"deleting namespace {ns} (--keep-namespace keeps it)")
    try:
        kube.delete(f"/api/v1/namespaces/{ns}")
    except KubeError as exc:
        if not exc.not_found:
            raise
    wait_for(f"namespace {ns} to be deleted", lambda: _ns_absent(kube, ns), timeout=120)


def _ns_absent(kube: KubeClient, ns: str) -> bool:
    try:
        kube.get(f"/api/v1/namespaces/{ns}")
    except KubeError as exc:
        return exc.not_found
    return False


def _absent(kube: KubeClient, ns: str, name: str) -> bool:
    try:
        kube.get(migration_path(ns, name))
    except KubeError as exc:
        return exc.not_found
    return False


def watch(
    kube: KubeClient, ns: str, name: str, timeout: float, *, stop_at_approval: bool = True
) -> str:
    """Print a line whenever the phase or progress changes, like `kubectl get dm -w`, until the
    migration ends or waits for approval; returns that phase."""
    print(f"  {'ELAPSED':>8}  {'PHASE':<17} {'PROGRESS':<45} MESSAGE")
    start, last, phase = time.monotonic(), ("", ""), ""
    while time.monotonic() - start < timeout:
        status = kube.get(migration_path(ns, name)).get("status", {})
        phase = status.get("phase", "")
        line = (phase, status.get("progress", {}).get("summary", ""))
        if line != last and phase:
            message = status.get("message", "")[:70]
            print(
                f"  {time.monotonic() - start:7.1f}s  {line[0]:<17} {line[1]:<45} {message}",
                flush=True,
            )
            last = line
        if phase in TERMINAL or (stop_at_approval and phase == "AwaitingApproval"):
            return phase
        time.sleep(0.25)  # a display refresh rate, not synchronisation
    return phase or "TimedOut"


if __name__ == "__main__":
    sys.exit(main())
