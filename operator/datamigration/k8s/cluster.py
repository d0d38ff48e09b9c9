"""The operator's and the CLI's operations on the cluster, each one API call or a tight group.

Every call the product makes to Kubernetes is here (the runner's progress patch included), so
RBAC can be audited against one file: each function says which verb on which resource it needs.
Idempotent at the edge: creating what exists and deleting what is gone are not errors.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from datamigration.k8s.client import JSON, KubeClient, KubeError, migration_path

COMPONENT = "datamigration-operator"
#: Seconds during which a namespace's runner identity, once made sure of, is not created again:
#: when a rollout releases many contract Jobs of one namespace at once, two creates per Job
#: (each a 409) sat on the path to every Job. Short, so that an identity deleted by hand comes
#: back with the next Job after it.
RUNNER_IDENTITY_TTL = 60.0


ROLLOUT_GROUP_VERSION = "argoproj.io/v1alpha1"
_COLLECTIONS = {
    "Deployment": "/apis/apps/v1/namespaces/{}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{}/statefulsets",
    "DaemonSet": "/apis/apps/v1/namespaces/{}/daemonsets",
    "CronJob": "/apis/batch/v1/namespaces/{}/cronjobs",
    "Rollout": f"/apis/{ROLLOUT_GROUP_VERSION}/namespaces/{{}}/rollouts",
}


class ApiNotServed(Exception):
    """The cluster does not serve a workload kind at all (a CRD that is not installed)."""


def workload_collection(namespace: str, kind: str) -> str:
    """The API path of a workload kind's collection in a namespace."""
    return _COLLECTIONS[kind].format(namespace)


def label_selector(selector: Mapping[str, Any]) -> str:
    """A `metav1.LabelSelector` as the query-string form the API accepts."""
    parts = [f"{k}={v}" for k, v in sorted(selector.get("matchLabels", {}).items())]
    for expr in selector.get("matchExpressions", []) or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _selector_terms(selector: str) -> Iterator[str]:
    """The comma-separated terms of a selector string; commas inside `in (...)` do not split."""
    depth, start = 0, 0
    for at, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield selector[start:at].strip()
            start = at + 1
    yield selector[start:].strip()


def secret_keys(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The key names of a Secret. Its values are dropped here, never kept nor logged."""
    names = set(body.get("data") or {}) | set(body.get("stringData") or {})
    return tuple(sorted(names))


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether labels match a selector in the query-string form `label_selector` writes (and
    the API server reads): `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`. The
    empty selector matches everything, as on the API server. Raises `ValueError` on a term it
    does not know, so that a caller never treats an unknown form as a match."""
    for term in _selector_terms(selector):
        if not term:
            continue
        if " notin " in term or " in " in term:
            negate = " notin " in term
            key, _, rest = term.partition(" notin " if negate else " in ")
            values = {v.strip() for v in rest.strip().strip("()").split(",") if v.strip()}
            present = key.strip() in labels and labels[key.strip()] in values
            if present == negate:
                return False
        elif "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term.replace("-", "").replace(".", "").replace("/", "").replace("_", "").isalnum():
            if term not in labels:
                return False
        else:
            raise ValueError(f"unsupported label selector term {term!r}")
    return True


class ClusterApi:
    """Typed verbs over `KubeClient`, in plain JSON."""

    def __init__(self, kube: KubeClient | None = None) -> None:
        self.kube = kube or KubeClient()
        #: When each namespace's runner identity was last made sure of (`ensure_runner_identity`).
        self._identity_ensured: dict[tuple[str, str, str], float] = {}
        self._identity_locks: dict[tuple[str, str, str], threading.Lock] = {}

    # -- DataMigrations (get/list/patch datamigrations, patch datamigrations/status) ----------
    # The operator lists its namespace's migrations to find another owner of the workload.
    def get_migration(self, namespace: str, name: str) -> JSON | None:
        try:
            return self.kube.get(migration_path(namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list_migrations(
        self, namespace: str | None = None, workload: str | None = None
    ) -> list[JSON]:
        """All DataMigrations (of a namespace); with `workload`, only those whose
        spec.workload.name is that (a server-side field selector: the CRD's selectableFields)."""
        path = (
            migration_path(namespace)
            if namespace
            else "/apis/datamigration.dev/v1alpha1/datamigrations"
        )
        if not workload:
            return self.kube.list_items(path)
        try:
            return self.kube.list_items(path, fieldSelector=f"spec.workload.name={workload}")
        except KubeError as exc:
            if exc.status != 400:
                raise
        # A CRD installed before selectableFields: the same answer, filtered here.
        return [
            item
            for item in self.kube.list_items(path)
            if (item.get("spec") or {}).get("workload", {}).get("name") == workload
        ]

    def patch_migration(self, namespace: str, name: str, patch: JSON) -> JSON:
        return self.kube.merge_patch(migration_path(namespace, name), patch)

    def patch_migration_status(
        self, namespace: str, name: str, status: JSON, resource_version: str | None = None
    ) -> JSON:
        """Merge-patch the status. With `resource_version`, only if the object is still at that
        version: a concurrent write (the runner's progress, a second operator) answers 409 and
        raises `KubeError` with `conflict`, so the caller re-reads and decides again."""
        body: JSON = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.kube.merge_patch(migration_path(namespace, name, "status"), body)

    # -- Jobs (create/list/delete jobs; list pods for their exit codes) ----------------------
    def list_jobs(self, namespace: str, selector: str) -> list[JSON]:
        return self.kube.list_items(
            f"/apis/batch/v1/namespaces/{namespace}/jobs", labelSelector=selector
        )

    def create_job(self, manifest: JSON) -> JSON:
        namespace = manifest["metadata"]["namespace"]
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        try:
            return self.kube.create(path, manifest)
        except KubeError as exc:
            if exc.conflict:  # created before a crash or by a concurrent reconcile: adopt it
                return self.kube.get(f"{path}/{manifest['metadata']['name']}")
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.kube.delete(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        return self.kube.list_items(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)

    # -- Workloads (get/patch deployments, statefulsets, daemonsets, cronjobs, rollouts; list
    # replicasets, controllerrevisions)
    def get_deployment(self, namespace: str, name: str) -> JSON | None:
        try:
            return self.kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]:
        return self.kube.list_items(
            f"/apis/apps/v1/namespaces/{namespace}/replicasets", labelSelector=selector
        )

    def set_container_image(
        self, namespace: str, name: str, container: str, image: str, kind: str = "Deployment"
    ) -> None:
        """Roll the new code out: the same change as `kubectl set image`, on the pod template
        of a Deployment, StatefulSet, DaemonSet, CronJob (its jobTemplate) or Argo Rollout (its
        `spec.template`, never Argo's status or internal fields)."""
        path = f"{workload_collection(namespace, kind)}/{name}"
        if kind == "Rollout":
            # A custom resource takes no strategic merge: replace the one container's image by
            # index, guarded by a test of its name (a reordered list fails, it is not misapplied).
            rollout = self.kube.get(path)
            names = [
                c.get("name") for c in rollout["spec"]["template"]["spec"].get("containers", [])
            ]
            at = f"/spec/template/spec/containers/{names.index(container)}"
            ops = [
                {"op": "test", "path": f"{at}/name", "value": container},
                {"op": "replace", "path": f"{at}/image", "value": image},
            ]
            self.kube.request("PATCH", path, body=ops, content_type="application/json-patch+json")
            return
        containers = [{"name": container, "image": image}]
        template = {"spec": {"template": {"spec": {"containers": containers}}}}
        patch = {"spec": {"jobTemplate": template}} if kind == "CronJob" else template
        self.kube.request(
            "PATCH", path, body=patch, content_type="application/strategic-merge-patch+json"
        )

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None:
        """A StatefulSet, DaemonSet, CronJob or Argo Rollout (None: no such object). Raises
        `ApiNotServed` when the cluster does not serve the kind at all (no Rollout CRD)."""
        try:
            return self.kube.get(f"{workload_collection(namespace, kind)}/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise
        if kind == "Rollout" and not self._served(ROLLOUT_GROUP_VERSION, "rollouts"):
            raise ApiNotServed(
                f"the cluster does not serve {ROLLOUT_GROUP_VERSION} rollouts (is Argo Rollouts "
                "installed?)"
            )
        return None

    def _served(self, group_version: str, resource: str) -> bool:
        try:
            found = self.kube.get(f"/apis/{group_version}")
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return any(r.get("name") == resource for r in found.get("resources", []))

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]:
        return self.kube.list_items(
            f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions", labelSelector=selector
        )

    # -- Secrets (get secrets; only key names leave this function, never a value) ------------
    # (list and watch secrets: kopf's watch, controller/cache.py keeps key names only)
    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None:
        """The Secret's key names, sorted (None: no such Secret). The Secret is read, but only
        its key names are returned: the values are dropped here, never logged or kept."""
        try:
            secret = self.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        names = secret_keys(secret)
        del secret
        return names

    # -- Runner identity (create serviceaccounts, rolebindings; bind the runner ClusterRole) --
    def ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None:
        """The runner's ServiceAccount and its binding to the ClusterRole that lets it report
        progress (patch datamigrations/status) in this namespace only."""
        key = (namespace, account, cluster_role)
        # One check at a time per identity: the reconciles that a rollout releases together
        # wait for the one in flight instead of each sending the same two creates.
        with self._identity_locks.setdefault(key, threading.Lock()):
            ensured = self._identity_ensured.get(key)
            if ensured is not None and time.monotonic() - ensured < RUNNER_IDENTITY_TTL:
                return  # made sure of moments ago (many Jobs of one namespace start together)
            self._ensure_runner_identity(namespace, account, cluster_role)
            self._identity_ensured[key] = time.monotonic()

    def _ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None:
        labels = {"app.kubernetes.io/managed-by": COMPONENT}
        objects: list[tuple[str, JSON]] = [
            (
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": account, "labels": labels},
                },
            ),
            (
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": account, "labels": labels},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": cluster_role,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": account, "namespace": namespace}
                    ],
                },
            ),
        ]
        for path, body in objects:
            try:
                self.kube.create(path, body)
            except KubeError as exc:
                if not exc.conflict:
                    raise

    # -- Events (create events) ---------------------------------------------------------------
    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        """Create an Event. With a deterministic `name`, a second create of the same Event (a
        retry, a second operator process) answers 409 and is a no-op."""
        meta = involved.get("metadata", {})
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        naming = {"name": name} if name else {"generateName": f"{meta.get('name')}."}
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {**naming, "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("POD_NAME") or socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(f"/api/v1/namespaces/{meta.get('namespace')}/events", body)
        except KubeError as exc:
            if not (exc.conflict and name):
                raise

    def watch_migration(
        self, namespace: str, name: str, resource_version: str = "", timeout_seconds: int = 300
    ) -> Iterator[tuple[str, JSON]]:
        """An API watch of one DataMigration (see `KubeClient.watch`)."""
        return self.kube.watch(
            migration_path(namespace),
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            fieldSelector=f"metadata.name={name}",
        )

    def watch_events(
        self, namespace: str, name: str, resource_version: str = "", timeout_seconds: int = 300
    ) -> Iterator[tuple[str, JSON]]:
        """An API watch of the Events of one DataMigration (see `KubeClient.watch`)."""
        return self.kube.watch(
            f"/api/v1/namespaces/{namespace}/events",
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            fieldSelector=f"involvedObject.name={name},involvedObject.kind=DataMigration",
        )

    def list_events(self, namespace: str, name: str) -> list[JSON]:
        return self.kube.list_items(
            f"/api/v1/namespaces/{namespace}/events",
            fieldSelector=f"involvedObject.name={name},involvedObject.kind=DataMigration",
        )

    # -- Connection (no API call: the CLI's --kubeconfig and --context) ----------------------
    @classmethod
    def from_kubeconfig(cls, config_file: str, context: str | None = None) -> ClusterApi:
        """A ClusterApi on explicit kubeconfig file(s) (`:`-separated, as $KUBECONFIG) and an
        explicit context, as kubectl's --kubeconfig and --context choose them."""
        from kubernetes import config

        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=context, persist_config=False
        )
        return cls(KubeClient(api_client))


class ClusterLeaseApi:
    """The leader election's Lease calls (`datamigration.k8s.leader.LeaseApi`), in the release
    namespace only, each bounded by a short timeout so a dead API fails a renew in time."""

    # -- Leases (get/update the one named Lease; create leases) -------------------------------
    def __init__(self, kube: KubeClient | None = None, *, timeout: float = 5.0) -> None:
        self.kube = kube or KubeClient()
        self.timeout = timeout

    @staticmethod
    def _path(namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        try:
            return self.kube.request("GET", self._path(namespace, name), timeout=self.timeout)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def create_lease(self, namespace: str, body: JSON) -> JSON:
        return self.kube.request("POST", self._path(namespace), body=body, timeout=self.timeout)

    def replace_lease(self, namespace: str, name: str, body: JSON) -> JSON:
        """PUT: with the resourceVersion the Lease was read at, 409 if anyone wrote it since."""
        return self.kube.request(
            "PUT", self._path(namespace, name), body=body, timeout=self.timeout
        )

    # -- Connection (GET /version: public to every authenticated client, no RBAC) -------------
    def ping(self) -> None:
        """One cheap request: raises if the API server does not answer."""
        self.kube.request("GET", "/version", timeout=self.timeout)

    def post_lease_event(
        self, lease_namespace: str, lease_name: str, reason: str, message: str
    ) -> None:
        """An Event on the Lease (create events in the release namespace): who leads now."""
        involved = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease_name, "namespace": lease_namespace},
        }
        ClusterApi(self.kube).post_event(involved, "Normal", reason, message)
