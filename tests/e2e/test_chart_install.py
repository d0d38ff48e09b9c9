"""The Helm chart, installed for real, runs a migration with exactly the RBAC it grants.

No container image can be built or run on this machine, so the operator runs as a local process,
but with the credentials a real install gives it: a token of the chart's ServiceAccount, and the
environment of the chart's Deployment. Every API call it makes is authorised by the chart's
(Cluster)Roles, and phase Jobs run under the runner identity the chart's rules let it create.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures import rename_migration, setup_shop
from support import Kube, eventually

from localcluster import chart
from localcluster.chart import CHART
from localcluster.kubeconfig import write_token_kubeconfig
from localcluster.operatorproc import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/datamigrations.datamigration.dev"


def helm(cluster: Any, *args: str) -> str:
    return subprocess.run(
        [str(Path(cluster.bin_dir) / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def adopt_crd(kube: Kube, release: str, namespace: str) -> None:
    """The session installed the CRD; let this release own it (Helm adopts objects that carry
    its ownership metadata), so the chart's own CRD template is what gets applied."""
    kube.client.merge_patch(
        CRD,
        {
            "metadata": {
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {
                    "meta.helm.sh/release-name": release,
                    "meta.helm.sh/release-namespace": namespace,
                },
            }
        },
    )


def operator_identity(
    kube: Kube, cluster: Any, namespace: str, tmp: Path
) -> tuple[Path, dict[str, str]]:
    """A kubeconfig with a token of the chart's ServiceAccount, and the chart's environment."""
    deployment = kube.client.list_items(f"/apis/apps/v1/namespaces/{namespace}/deployments")[0]
    pod = deployment["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    token = kube.client.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    server = kube.client.api_client.configuration.host
    ca = Path(kube.client.api_client.configuration.ssl_ca_cert)
    kubeconfig = write_token_kubeconfig(tmp / "operator.kubeconfig", server, ca, token, namespace)
    env = {e["name"]: e["value"] for e in pod["containers"][0].get("env", []) if "value" in e}
    return kubeconfig, env


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_chart_install_runs_a_migration(  # noqa: PLR0917 - pytest fixtures
    mode: str, cluster: Any, kube: Kube, namespace: str, pg_url: str, tmp_path: Path
) -> None:
    release, system = f"dm-{mode}", f"dm-system-{mode}"
    values = [
        "--set",
        f"runner.clusterRole.name={release}-runner",
        "--set",
        "runner.jobPodLabels.datamigration\\.dev/executor=local",
    ]
    if mode == "namespaced":
        values += ["--set", f"watchNamespaces={{{namespace}}}"]
    adopt_crd(kube, release, system)
    helm(cluster, "install", release, str(CHART), "-n", system, "--create-namespace", *values)
    try:
        kubeconfig, env = operator_identity(kube, cluster, system, tmp_path)
        assert env["DATAMIGRATION_RUNNER_CLUSTER_ROLE"] == f"{release}-runner"
        if mode == "namespaced":
            assert env["DATAMIGRATION_NAMESPACES"] == namespace
        log_path = Path(cluster.logs_dir) / f"operator-{release}.log"
        log_path.unlink(missing_ok=True)  # judge this run's log only
        operator = OperatorProcess(kubeconfig, log_path, env=env).start()
        try:
            shop = setup_shop(kube, namespace, pg_url)
            kube.apply(rename_migration(namespace))

            def phase() -> str:
                status = kube.migration(namespace, "rename-email").get("status", {})
                assert status.get("phase") != "Failed", status.get("message")
                return str(status.get("phase"))

            eventually(lambda: phase() == "Succeeded", timeout=180, what="Succeeded")
            assert "email" not in shop.columns()
            progress = kube.client.get(
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/"
                "datamigration-runner"
            )
            assert progress["roleRef"]["name"] == f"{release}-runner"
            log = log_path.read_text()
            # An RBAC denial reads 'is forbidden: User "..." cannot <verb> ...'. (Other 403s,
            # such as writing into a namespace being deleted by an earlier test, are not RBAC.)
            denials = [
                ln for ln in log.splitlines() if 'is forbidden: User "' in ln and " cannot " in ln
            ]
            assert denials == [], "every call was authorised"
        finally:
            operator.stop()
    finally:
        helm(cluster, "uninstall", release, "-n", system)
        kube.delete_namespace(system)
        # Hand the kept CRD back to the README's release, as the session installed it.
        chart.install_prerequisites(kube.client, Path(cluster.bin_dir), field_manager="e2e")
