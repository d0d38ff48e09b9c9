"""What the operator's end-to-end tests share: API access, the operator process, fixtures' data.

Synchronisation is always on observable state (`eventually` polls a predicate against the API
until a deadline), never on a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import config as kube_config

from datamigration.k8s.client import KubeClient, KubeError, migration_path
from datamigration.k8s.cluster import ClusterApi
from localcluster.operatorproc import OperatorProcess

__all__ = ["OperatorProcess"]
REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "datamigrations.datamigration.dev.yaml"
T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except KubeError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Kube:
    """The test's own API access (admin kubeconfig)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.client = KubeClient(kube_config.new_client_from_config(config_file=str(kubeconfig)))
        self.api = ClusterApi(self.client)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, as `kubectl apply --server-side` does."""
        return self.client.server_side_apply(resource_path(manifest), manifest, field_manager="e2e")

    def create_namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def delete_namespace(self, name: str) -> None:
        try:
            self.client.delete(f"/api/v1/namespaces/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise

    def namespace_has(self, namespace: str, tail: str = "") -> bool:
        """Whether the namespace exists (or, with `tail` such as "/serviceaccounts/default",
        that object in it)."""
        try:
            self.client.get(f"/api/v1/namespaces/{namespace}{tail}")
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def migration(self, namespace: str, name: str) -> dict[str, Any]:
        return self.client.get(migration_path(namespace, name))

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.client.list_items(f"/apis/batch/v1/namespaces/{namespace}/jobs")

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.client.list_items(
            f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector
        )

    def events(self, namespace: str, name: str) -> list[str]:
        return [e.get("reason", "") for e in self.api.list_events(namespace, name)]


def resource_path(manifest: dict[str, Any]) -> str:
    """The API path of a manifest (the kinds the tests use)."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    meta = manifest["metadata"]
    ns, name = meta.get("namespace"), meta["name"]
    plural = {
        "Namespace": "namespaces",
        "Secret": "secrets",
        "Deployment": "deployments",
        "DataMigration": "datamigrations",
        "ClusterRole": "clusterroles",
        "CustomResourceDefinition": "customresourcedefinitions",
        "ServiceAccount": "serviceaccounts",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "ConfigMap": "configmaps",
    }[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/namespaces/{ns}/{plural}/{name}" if ns else f"{base}/{plural}/{name}"


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
