"""The chart against a real API server (the local cluster): its manifests pass server-side
validation, including the restricted Pod Security Standard, and its RBAC, applied for real and
queried by impersonating the operator's ServiceAccount, grants what the code needs and no more.

Everything created here is named after a random suffix and deleted at the end; the CRD and the
shared runner ClusterRole are only ever dry-run, never written, so that other tests' objects of
the same names are left alone.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, CRD_SOURCE, REPO, Grant, helm
from rbac_needs import KOPF_CLUSTER_NEEDS, RUNNER_NEEDS, lease_needs, operator_needs

from localcluster.waiting import wait_for

pytestmark = pytest.mark.e2e

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(cluster: Any) -> Kubectl:
    binary = Path(cluster.bin_dir) / "kubectl"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(binary), *args], input=stdin, capture_output=True, text=True, env=env, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}:\n{proc.stdout}{proc.stderr}")
        return proc

    return run


@dataclass(frozen=True)
class Names:
    release: str
    namespace: str  # the release's
    watched: tuple[str, str]
    runner_role: str

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.release}-datamigration-operator"


@pytest.fixture(scope="module")
def names(kubectl: Kubectl) -> Iterator[Names]:
    suffix = secrets.token_hex(3)
    found = Names(
        release=f"pkg{suffix}",
        namespace=f"pkg{suffix}-system",
        watched=(f"pkg{suffix}-a", f"pkg{suffix}-b"),
        runner_role=f"pkg{suffix}-runner",
    )
    namespaces = [found.namespace, *found.watched]
    for namespace in namespaces:
        kubectl("create", "namespace", namespace)
        kubectl(
            "label", "namespace", namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )  # fmt: skip
    try:
        yield found
    finally:
        kubectl("delete", "namespace", *namespaces, "--wait=false", check=False)


def _render(names: Names, *args: str) -> str:
    return helm("template", names.release, str(CHART), "--namespace", names.namespace, *args).stdout


def _namespaced(names: Names) -> tuple[str, ...]:
    return ("--set", f"watchNamespaces={{{','.join(names.watched)}}}")


LAYOUTS: dict[str, Callable[[Names], tuple[str, ...]]] = {
    "cluster-wide": lambda n: (),
    "namespaced": _namespaced,
    "locked-down": lambda n: (
        *_namespaced(n),
        "--values",
        str(CHART / "ci" / "locked-down-values.yaml"),
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_server_side_dry_run(
    kubectl: Kubectl, names: Names, layout: Callable[[Names], tuple[str, ...]]
) -> None:
    manifests = _render(names, *layout(names))
    # Server-side apply: validated by the API server like a real install, and indifferent to
    # how earlier tests created the shared CRD (no last-applied annotation warnings).
    proc = kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=dry-run-test",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=manifests,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. "would violate PodSecurity"
    assert "deployment.apps/" in proc.stdout and "(server dry run)" in proc.stdout


def _can(kubectl: Kubectl, who: str, grant: Grant, namespace: str | None) -> bool:
    """Ask the API server (a SubjectAccessReview, as the authorizer sees the ServiceAccount),
    which needs no discovery, so it answers for datamigrations even with no CRD installed."""
    resource, _, subresource = grant.resource.partition("/")
    attributes = {"verb": grant.verb, "group": grant.group, "resource": resource}
    attributes |= {"subresource": subresource} if subresource else {}
    attributes |= {"name": grant.name} if grant.name else {}
    attributes |= {"namespace": namespace} if namespace else {}
    account_namespace = who.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": who,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    out = kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)).stdout
    allowed: bool = json.loads(out)["status"].get("allowed", False)
    return allowed


@pytest.fixture(scope="module")
def namespaced_rbac(kubectl: Kubectl, names: Names) -> Iterator[list[dict[str, Any]]]:
    """The namespaced layout's ServiceAccount and RBAC, applied for real (no CRD, no Deployment,
    no aggregation into the built-in roles, a runner ClusterRole of this test's own)."""
    manifests = _render(
        names,
        *_namespaced(names),
        "--set", "crds.enabled=false",
        "--set", "rbac.aggregateToDefaultRoles=false",
        "--set", f"runner.clusterRole.name={names.runner_role}",
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(manifests) if d and d["kind"] != "Deployment"]
    text = yaml.safe_dump_all(docs)
    kubectl("apply", "-f", "-", stdin=text)
    try:
        yield docs
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text, check=False)


def test_operator_may_do_what_it_needs_in_watched_namespaces_only(
    kubectl: Kubectl, names: Names, namespaced_rbac: list[dict[str, Any]]
) -> None:
    who = names.service_account
    needs = operator_needs(runner_role=names.runner_role)
    for namespace in names.watched:
        missing = [str(g) for g in sorted(needs) if not _can(kubectl, who, g, namespace)]
        assert not missing, f"{namespace}: the operator may not {missing}"
    for grant in sorted(KOPF_CLUSTER_NEEDS):
        assert _can(kubectl, who, grant, None), grant
    # The release namespace holds the leader election's Lease (and its Events), nothing else.
    lease = lease_needs(f"{names.release}-datamigration-operator")
    missing = [str(g) for g in sorted(lease) if not _can(kubectl, who, g, names.namespace)]
    assert not missing, f"the operator may not {missing} on its Lease"
    assert not _can(
        kubectl, who, Grant("coordination.k8s.io", "leases", "update", "other"), names.namespace
    ), "update on a Lease that is not the release's"
    unwatched = [str(g) for g in sorted(needs - lease) if _can(kubectl, who, g, names.namespace)]
    assert not unwatched, f"the operator may {unwatched} in a namespace it does not serve"
    # Secrets may be listed and watched in a served namespace (a migration waiting for its
    # Secret is woken by its event; the cache keeps key names only), never elsewhere.
    assert not _can(kubectl, who, Grant("", "secrets", "watch"), names.namespace)
    for forbidden in (
        Grant("", "namespaces", "list"),
        Grant("datamigration.dev", "datamigrations", "patch"),
        Grant("rbac.authorization.k8s.io", "clusterroles", "bind", "admin"),
    ):
        assert not _can(kubectl, who, forbidden, names.watched[0]), forbidden


def test_operator_can_bind_the_runner_role_and_no_other(
    kubectl: Kubectl, names: Names, namespaced_rbac: list[dict[str, Any]]
) -> None:
    """The RBAC escalation check, as ClusterApi.ensure_runner_identity meets it: a RoleBinding to
    the runner ClusterRole is allowed by `bind` on that name (granted in a Role), one to `admin`
    is not."""
    namespace = names.watched[0]

    def bind(cluster_role: str) -> subprocess.CompletedProcess[str]:
        return kubectl(
            "create", "rolebinding", "datamigration-runner", f"--clusterrole={cluster_role}",
            f"--serviceaccount={namespace}:datamigration-runner", "--namespace", namespace,
            "--dry-run=server", f"--as={names.service_account}",
            check=False,
        )  # fmt: skip

    allowed = bind(names.runner_role)
    assert allowed.returncode == 0, allowed.stderr
    refused = bind("admin")
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr


def test_runner_may_report_progress_and_nothing_else(
    kubectl: Kubectl, names: Names, namespaced_rbac: list[dict[str, Any]]
) -> None:
    namespace = names.watched[1]
    kubectl(
        "create", "serviceaccount", "datamigration-runner", "--namespace", namespace
    )  # fmt: skip
    kubectl(
        "create", "rolebinding", "datamigration-runner", f"--clusterrole={names.runner_role}",
        f"--serviceaccount={namespace}:datamigration-runner", "--namespace", namespace,
    )  # fmt: skip
    runner = f"system:serviceaccount:{namespace}:datamigration-runner"
    for grant in sorted(RUNNER_NEEDS):
        assert _can(kubectl, runner, grant, namespace), grant
        assert not _can(kubectl, runner, grant, names.watched[0]), f"{grant} outside its namespace"
    for forbidden in (
        Grant("datamigration.dev", "datamigrations", "list"),
        Grant("datamigration.dev", "datamigrations", "patch"),
        Grant("", "secrets", "get"),
    ):
        assert not _can(kubectl, runner, forbidden, namespace), forbidden


@pytest.fixture(scope="module")
def private_crd(kubectl: Kubectl, names: Names) -> Iterator[str]:
    """The DataMigration CRD under an API group of this test's own (the same schema, CEL rules
    and all), so the API server validates examples without the shared CRD being touched."""
    group = f"{names.release}.test"
    crd = yaml.safe_load(CRD_SOURCE.read_text())
    crd["metadata"]["name"] = f"datamigrations.{group}"
    crd["spec"]["group"] = group
    crd["spec"]["names"].pop("shortNames", None)  # `dm` and `all` stay the real CRD's
    crd["spec"]["names"].pop("categories", None)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(crd))
    try:
        # Polled, not `kubectl wait`: that fails on a CRD whose conditions are not written yet.
        established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
        wait_for(
            f"CRD {crd['metadata']['name']} to be established",
            lambda: (
                kubectl("get", f"crd/{crd['metadata']['name']}", "-o", established).stdout == "True"
            ),
            timeout=60,
        )
        yield group
    finally:
        kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", check=False)


def test_argocd_example_app_is_valid(kubectl: Kubectl, names: Names, private_crd: str) -> None:
    docs = []
    for path in sorted((REPO / "examples" / "argocd" / "shop").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "DataMigration":
                doc["apiVersion"] = f"{private_crd}/v1alpha1"
            docs.append(doc)
    assert {d["kind"] for d in docs} == {"Secret", "DataMigration", "Deployment"}
    waves = {
        d["kind"]: int(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for d in docs
    }
    assert waves["Secret"] < waves["DataMigration"] < waves["Deployment"]
    proc = kubectl(
        "apply", "--dry-run=server", "--validate=strict", "--namespace", names.watched[0],
        "-f", "-", stdin=yaml.safe_dump_all(docs), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
