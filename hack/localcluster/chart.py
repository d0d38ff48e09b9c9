"""The project's Helm chart, rendered with the pinned helm, for tests and the demo.

So that what they install (the runner's ClusterRole, the CRD) is exactly what the chart ships,
never a hand-written copy; and so that a later `helm install` of the chart, as the README does it
(release `datamigration-operator` in `datamigration-system`), adopts those objects instead of
failing with "exists and cannot be imported into the current release": they carry the ownership
metadata Helm 3 checks before it adopts an existing object.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from datamigration.k8s.client import KubeClient
from localcluster.paths import REPO_ROOT
from localcluster.waiting import wait_for

CHART = REPO_ROOT / "charts" / "datamigration-operator"
CRD_NAME = "datamigrations.datamigration.dev"
CRD = REPO_ROOT / "crds" / f"{CRD_NAME}.yaml"
# The release the README installs; pre-installed objects are marked as belonging to it.
RELEASE, RELEASE_NAMESPACE = "datamigration-operator", "datamigration-system"


def adoptable(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the labels and annotations by which Helm 3 adopts an existing object into the
    README's release (`app.kubernetes.io/managed-by: Helm`, `meta.helm.sh/release-name` and
    `-namespace`)."""
    meta = doc.setdefault("metadata", {})
    meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": RELEASE_NAMESPACE}
    )
    return doc


def render(
    bin_dir: Path, *args: str, release: str = "datamigration-operator"
) -> list[dict[str, Any]]:
    """`helm template` of the chart; the documents it renders."""
    out = subprocess.run(
        [str(bin_dir / "helm"), "template", release, str(CHART), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def runner_cluster_role(bin_dir: Path) -> dict[str, Any]:
    """The ClusterRole phase Jobs are bound to (progress reporting only)."""
    docs = render(bin_dir, "--show-only", "templates/runner-rbac.yaml")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    return role


def runner_admission_policy(bin_dir: Path) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding that keep phase Jobs to status.progress."""
    return render(bin_dir, "--show-only", "templates/runner-admission-policy.yaml")


def install_prerequisites(kube: KubeClient, bin_dir: Path, *, field_manager: str) -> None:
    """What a chart install puts in place before any operator runs: the CRD (from `crds/`, the
    single source), the runner's ClusterRole and the admission policy that keeps the runner to
    status.progress (as the chart renders them), each `adoptable` by the README's `helm install`.
    Waits until the DataMigration API is served and the policy is compiled. Calling it again
    restores that state (for example after a test installed the chart under another release)."""
    for doc in yaml.safe_load_all(CRD.read_text()):
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}"
        kube.server_side_apply(path, adoptable(doc), field_manager=field_manager)
    role = runner_cluster_role(bin_dir)
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}"
    kube.server_side_apply(path, adoptable(role), field_manager=field_manager)
    policies = []
    for doc in runner_admission_policy(bin_dir):
        plural = {
            "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
            "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
        }[doc["kind"]]
        path = f"/apis/admissionregistration.k8s.io/v1/{plural}/{doc['metadata']['name']}"
        applied = kube.server_side_apply(path, adoptable(doc), field_manager=field_manager)
        if doc["kind"] == "ValidatingAdmissionPolicy":
            policies.append((path, applied["metadata"]["generation"]))

    def checked() -> bool:  # the API server compiled and type-checked the policy's CEL
        return all(
            kube.get(path).get("status", {}).get("observedGeneration") == generation
            for path, generation in policies
        )

    wait_for("the runner admission policy to be compiled", checked, timeout=60)

    def served() -> bool:
        crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
        conditions = crd.get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for("the DataMigration CRD to be established", served, timeout=60)
