"""The Helm chart: it lints, renders in both modes, refuses bad values with a clear message, ships
exactly the repository's CRD, and deploys the operator with the invariants the code relies on."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    CRD_CHART_COPY,
    CRD_SOURCE,
    NAMESPACED,
    REPO,
    find,
    helm,
    one,
    render,
    render_text,
)

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint(values: Any) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda v: v.name)
def test_ci_values_render(values: Any) -> None:
    assert one(render("--values", str(values)), "Deployment")


# -- values.schema.json refuses bad values, naming the offending key ---------------------------
BAD_VALUES = {
    "negative-replicas": (["--set", "replicaCount=-1"], "/replicaCount", "minimum"),
    "lease-name": (
        ["--set", "leaderElection.leaseName=Bad_Name"],
        "/leaderElection/leaseName",
        "does not match pattern",
    ),
    "metrics-port": (["--set", "metrics.port=0"], "/metrics/port", "minimum"),
    "unknown-top-level-key": (["--set", "replicas=1"], "''", "'replicas' not allowed"),
    "unknown-nested-key": (["--set", "image.name=x"], "/image", "'name' not allowed"),
    "bad-pull-policy": (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy", "one of"),
    "bad-digest": (["--set", "image.digest=md5:abc"], "/image/digest", "does not match pattern"),
    "namespace-not-a-dns-label": (
        ["--set", "watchNamespaces={Team_A}"],
        "/watchNamespaces/0",
        "does not match pattern",
    ),
    "duplicate-namespaces": (
        ["--set", "watchNamespaces={a,a}"],
        "/watchNamespaces",
        "items at 0 and 1 are equal",
    ),
    "string-for-bool": (["--set-string", "crds.enabled=yes"], "/crds/enabled", "want boolean"),
    "label-value-too-long": (
        ["--set", "runner.jobPodLabels.team=" + "x" * 64],
        "/runner/jobPodLabels/team",
        "maxLength",
    ),
    "label-key-with-comma": (
        ["--set", "runner.jobPodLabels.a\\,b=c"],
        "/runner/jobPodLabels",
        "invalid propertyName",
    ),
    "bad-quantity": (
        ["--set", "resources.limits.memory=lots"],
        "/resources/limits/memory",
        "does not match pattern",
    ),
    "bad-seccomp-type": (
        ["--set", "podSecurityContext.seccompProfile.type=Off"],
        "/podSecurityContext/seccompProfile/type",
        "one of",
    ),
}


@pytest.mark.parametrize(("args", "where", "why"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(args: list[str], where: str, why: str) -> None:
    proc = helm("template", "dm", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"accepted: {args}"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert f"at {where}" in proc.stderr or f"at '{where}'" in proc.stderr, proc.stderr
    assert why in proc.stderr, proc.stderr


def _object_schemas(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object" or (
            isinstance(node.get("type"), list) and "object" in node["type"]
        ):
            found.append((path, node))
        for key, value in node.items():
            found.extend(_object_schemas(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_object_schemas(value, f"{path}/{i}"))
    return found


# Objects left open on purpose: Helm's `global` (set for parent charts) and the deep core/v1
# affinity types, which the API server validates.
OPEN_OBJECTS = {
    "#/properties/global",
    "#/properties/affinity/properties/nodeAffinity",
    "#/properties/affinity/properties/podAffinity",
    "#/properties/affinity/properties/podAntiAffinity",
}


def test_schema_is_draft7_and_closed_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects = {
        path
        for path, node in _object_schemas(schema)
        if node.get("additionalProperties") is not False
        and not isinstance(node.get("additionalProperties"), dict)  # a typed map
    }
    assert open_objects == OPEN_OBJECTS
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) | {"global"} == set(schema["properties"]), "values.yaml vs schema keys"


# -- values.yaml documents every key (helm-docs `# --` comments) ------------------------------
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):")


def test_every_value_is_documented() -> None:
    """Each key has its own `# --` comment, unless it lies inside a key whose comment documents
    its whole default value (a key none of whose children have a comment, helm-docs style)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, str, bool]] = []  # indent, dotted path, documented
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            if lines[above].strip().startswith("# --"):
                break
            above -= 1
        has_comment = above >= 0 and lines[above].strip().startswith("# --")
        keys.append((indent, path, has_comment))
    documented = {path for _, path, doc in keys if doc}
    has_documented_child = {p.rsplit(".", 1)[0] for p in documented if "." in p}
    undocumented = []
    for _, path, doc in keys:
        if doc:
            continue
        parts = path.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        covered = any(a in documented and a not in has_documented_child for a in ancestors)
        if not covered:
            undocumented.append(path)
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


# -- the CRD: one source ---------------------------------------------------------------------
def test_chart_crd_is_the_repository_crd_byte_for_byte() -> None:
    assert CRD_CHART_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"{CRD_CHART_COPY} differs from {CRD_SOURCE}: copy it (cp {CRD_SOURCE} {CRD_CHART_COPY})"
    )
    assert not (CHART / "crds").exists(), "the CRD is a gated template, not Helm's crds/ dir"


def test_rendered_crd_is_the_source_document_plus_labels_and_keep() -> None:
    source = yaml.safe_load(CRD_SOURCE.read_text())
    rendered = one(render(), "CustomResourceDefinition")
    meta = rendered.pop("metadata")
    assert rendered == {k: v for k, v in source.items() if k != "metadata"}
    assert meta["name"] == source["metadata"]["name"]
    assert source["metadata"]["labels"].items() <= meta["labels"].items()
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert meta["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false",
    }


def test_crd_gates() -> None:
    assert not find(render("--set", "crds.enabled=false"), "CustomResourceDefinition")
    crd = one(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]


# -- the operator Deployment ----------------------------------------------------------------
def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment_runs_two_electing_replicas_with_probes() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = _container(docs)
    assert container["command"] == ["datamigration-operator"]
    assert "args" not in container
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    env = _env(container)
    assert env["DATAMIGRATION_LEADER_ELECTION"] == "true"
    assert (
        env["DATAMIGRATION_LEASE_DURATION"],
        env["DATAMIGRATION_RENEW_DEADLINE"],
        env["DATAMIGRATION_RETRY_PERIOD"],
    ) == ("15", "10", "2")
    assert env["DATAMIGRATION_LEASE_NAMESPACE"] == "dm-system"
    assert env["DATAMIGRATION_METRICS_PORT"] == "9090"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
        }
    ]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert _container(render("--set", "verbose=true"))["args"] == ["--verbose"]


def test_pod_disruption_budget_only_with_more_than_one_replica() -> None:
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == (one(render(), "Deployment")["spec"]["selector"]["matchLabels"])
    )
    assert not find(render("--set", "replicaCount=1"), "PodDisruptionBudget")
    assert not find(render("--set", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_several_replicas_without_leader_election_are_refused() -> None:
    result = helm(
        "template", "dm", str(CHART), "--set", "leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "leaderElection.enabled=true" in result.stderr
    single = render("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    assert _env(_container(single))["DATAMIGRATION_LEADER_ELECTION"] == "false"


def test_metrics_service_and_optional_service_monitor() -> None:
    docs = render()
    service = one(docs, "Service", "dm-datamigration-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not find(docs, "ServiceMonitor")
    monitored = render(
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=prom",
    )  # fmt: skip
    monitor = one(monitored, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )


def test_deployment_environment() -> None:
    env = _env(_container(render()))
    image = "ghcr.io/datamigration-operator/datamigration-operator:0.1.0"
    assert env["DATAMIGRATION_RUNNER_IMAGE"] == image
    assert _container(render())["image"] == image
    assert env["DATAMIGRATION_RUNNER_SERVICE_ACCOUNT"] == "datamigration-runner"
    assert env["DATAMIGRATION_RUNNER_CLUSTER_ROLE"] == "datamigration-runner"
    assert env["DATAMIGRATION_MANAGE_RUNNER_RBAC"] == "true"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "DATAMIGRATION_NAMESPACES" not in env
    assert "DATAMIGRATION_JOB_POD_LABELS" not in env

    env = _env(_container(render(*NAMESPACED)))
    assert env["DATAMIGRATION_NAMESPACES"] == "team-a,team-b"

    env = _env(
        _container(
            render(
                "--set", "runner.jobPodLabels.tier=db",
                "--set-string", "runner.jobPodLabels.sidecar\\.istio\\.io/inject=false",
                "--set", "runner.image=registry.example/runner:1",
                "--set", "runner.manageRbac=false",
            )
        )
    )  # fmt: skip
    assert env["DATAMIGRATION_JOB_POD_LABELS"] == "sidecar.istio.io/inject=false,tier=db"
    assert env["DATAMIGRATION_RUNNER_IMAGE"] == "registry.example/runner:1"
    assert env["DATAMIGRATION_MANAGE_RUNNER_RBAC"] == "false"


def test_image_digest_pins_operator_and_runner() -> None:
    digest = "sha256:" + "a" * 64
    container = _container(render("--set", f"image.digest={digest}", "--set", "image.tag=0.2.0"))
    expected = f"ghcr.io/datamigration-operator/datamigration-operator:0.2.0@{digest}"
    assert container["image"] == expected
    assert _env(container)["DATAMIGRATION_RUNNER_IMAGE"] == expected


def test_secure_defaults() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(docs)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in _container(docs)["volumeMounts"]


def test_names_are_at_most_63_characters() -> None:
    long_release = "r" * 53  # Helm's own maximum
    docs = render(release=long_release)
    for doc in docs:
        if doc["kind"] in ("Deployment", "ServiceAccount"):
            assert len(doc["metadata"]["name"]) <= 63
    labels = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert all(len(v) <= 63 for v in labels.values())


def _notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it: `helm install --dry-run` needs a cluster, so a
    copy of the chart renders it through `tpl` into a ConfigMap that `helm template` prints."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files" / "NOTES.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}}\n'
    )
    out = helm("template", "dm", str(chart), "--namespace", "dm-system", *args).stdout
    notes: str = one([d for d in yaml.safe_load_all(out) if d], "ConfigMap", "notes")["data"][
        "notes"
    ]
    return notes


def test_notes_say_what_was_installed_and_what_to_do(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert "is installed in namespace dm-system" in notes
    assert "all namespaces (cluster-wide mode)" in notes
    assert "kubectl -n dm-system rollout status deployment/dm-datamigration-operator" in notes
    assert "kubectl -n <namespace> apply -f examples/01-rename-column/datamigration.yaml" in notes
    assert "kubectl get dm -A" in notes
    assert "<no value>" not in notes
    example = yaml.safe_load((REPO / "examples/01-rename-column/datamigration.yaml").read_text())
    assert example["metadata"]["name"] == "rename-email"  # the name NOTES.txt goes on with
    assert "kubectl -n <namespace> describe dm rename-email" in notes
    notes = _notes(tmp_path / "namespaced", *NAMESPACED)
    assert "namespaces team-a, team-b (namespaced mode)" in notes


def test_template_output_is_plain_yaml() -> None:
    text = render_text()
    assert "{{" not in text and "<no value>" not in text


def test_deployment_sets_every_operator_setting_and_only_known_flags() -> None:
    """Every DATAMIGRATION_* variable controller/settings.py reads is settable from values, and
    every flag the chart passes exists in controller/main.py."""
    controller = REPO / "operator" / "datamigration" / "controller"
    wanted = set(re.findall(r'"(DATAMIGRATION_[A-Z_]+)"', (controller / "settings.py").read_text()))
    assert wanted
    rendered: set[str] = set()
    for args in ((), (*NAMESPACED, "--set", "runner.jobPodLabels.a=b")):
        rendered |= set(_env(_container(render(*args))))
    assert wanted <= rendered, f"not settable from values: {sorted(wanted - rendered)}"
    flags = {a.split("=")[0] for a in _container(render("--set", "verbose=true"))["args"]}
    known = set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', (controller / "main.py").read_text()))
    assert flags <= known, f"unknown flags: {sorted(flags - known)}"
