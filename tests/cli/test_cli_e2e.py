"""The CLI against a real API server: the verbs really patch, `status` shows the real object.

No operator runs: each test creates a DataMigration in a fresh namespace and writes a status by
hand through the status subresource (as the operator would), then runs the CLI (`main([...])` in
process, and once as the kubectl plugin) and reads the object back with the pinned kubectl.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cli_docs as d
import pytest
from kubernetes import config as kube_config

from datamigration.cli.main import main
from datamigration.k8s.client import KubeClient
from localcluster import chart

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


class Kubectl:
    """The pinned kubectl on the test cluster's admin kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


@pytest.fixture(scope="session")
def kubectl(cluster: Any) -> Kubectl:
    """kubectl with the chart's prerequisites (the CRD among them) installed and served.

    Not `kubectl wait --for condition=established` right after creating the CRD: until the API
    server has written the CRD's first conditions, kubectl fails instead of waiting."""
    client = KubeClient(kube_config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    chart.install_prerequisites(client, Path(cluster.bin_dir), field_manager="e2e")
    return Kubectl(Path(cluster.bin_dir) / "kubectl", Path(cluster.kubeconfig))


@pytest.fixture
def ns(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "cli-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=60s")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def shifted(status: dict[str, Any]) -> dict[str, Any]:
    """A status document of `cli_docs` with its times moved so that `d.NOW` is now."""
    delta = datetime.now(UTC) - d.NOW
    text = json.dumps(status)

    def move(match: re.Match[str]) -> str:
        moment = datetime.strptime(match.group(0), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return rfc3339(moment + delta)

    moved: dict[str, Any] = json.loads(re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", move, text))
    return moved


def create(
    kubectl: Kubectl, ns: str, status: dict[str, Any] | None, **spec_args: Any
) -> dict[str, Any]:
    """Create the migration, then write `status` through the status subresource."""
    kubectl("apply", "-f", "-", stdin=json.dumps(d.manifest(namespace=ns, **spec_args)))
    if status is not None:
        kubectl(
            "patch",
            "datamigration",
            "rename-email",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": shifted(status)}),
        )
    obj: dict[str, Any] = kubectl.json("get", "datamigration", "rename-email", "-n", ns)
    return obj


def post_event(kubectl: Kubectl, obj: dict[str, Any], reason: str, message: str, n: int) -> None:
    meta = obj["metadata"]
    now = rfc3339(datetime.now(UTC))
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"rename-email.e2e-{n}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": "datamigration.dev/v1alpha1",
            "kind": "DataMigration",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": "Normal",
        "reason": reason,
        "message": message,
        "source": {"component": "datamigration-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    kubectl("create", "-f", "-", stdin=json.dumps(event))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def spec_of(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl.json("get", "datamigration", "rename-email", "-n", ns)
    return obj


# -- status, list -------------------------------------------------------------------------------
def test_status_renders_the_real_object_and_its_events(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = create(kubectl, ns, d.AWAITING)
    post_event(kubectl, obj, "RolloutProven", "all 3 pods run registry.example/shop-api:2.0", 1)
    post_event(kubectl, obj, "ApprovalRequired", "contract awaits approval", 2)
    code, out, err = cli(capsys, "status", "rename-email", "-n", ns)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == [
        "Name:       rename-email",
        f"Namespace:  {ns}",
        "Phase:      AwaitingApproval",
    ]
    assert f"Next:       kubectl datamigration approve rename-email -n {ns}" in lines
    assert "Rollout:    revision 2, image registry.example/shop-api:2.0, verified" in lines
    events = out.split("Events:\n", 1)[1].splitlines()
    assert [row.split()[2] for row in events[1:]] == ["RolloutProven", "ApprovalRequired"]


def test_list_shows_the_printer_columns_and_reason(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.BACKFILLING)
    code, out, _ = cli(capsys, "list", "-n", ns)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "WORKLOAD", "REASON", "AGE"]
    assert row.split()[:3] == ["rename-email", "Backfilling", "backfill"]
    assert "PhaseRunning" in row
    code, out, _ = cli(capsys, "list", "-A")
    assert code == 0
    assert any(line.split()[:2] == [ns, "rename-email"] for line in out.splitlines())


def test_not_found_and_wrong_namespace_are_clear(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.BACKFILLING)
    code, out, err = cli(capsys, "status", "rename-email", "-n", "default")
    assert (code, out) == (1, "")
    error, hint = err.splitlines()  # other tests' namespaces may still be terminating
    assert error == 'error: datamigration "rename-email" not found in namespace "default"'
    assert re.fullmatch(r"hint: it exists in namespaces? [-a-z0-9, ]+: add -n [-a-z0-9]+", hint)
    assert ns in hint
    code, _, err = cli(capsys, "approve", "no-such-migration", "-n", ns)
    assert code == 1
    assert err.startswith(f'error: datamigration "no-such-migration" not found in namespace "{ns}"')


# -- the verbs patch ----------------------------------------------------------------------------
def test_approve_patches_spec_contract_approved(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.AWAITING)
    code, out, _ = cli(capsys, "approve", "rename-email", "-n", ns)
    assert code == 0, out
    assert spec_of(kubectl, ns)["spec"]["contract"]["approved"] is True
    assert spec_of(kubectl, ns)["spec"]["contract"]["approvedDigest"] == d.DIGEST
    code, out, _ = cli(capsys, "approve", "rename-email", "-n", ns)
    assert (code, "already approved" in out) == (0, True)


def test_approve_is_refused_for_automatic_approval(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.AWAITING, approval="Automatic")
    code, _, err = cli(capsys, "approve", "rename-email", "-n", ns)
    assert code == 1
    assert "spec.contract.approval is Automatic" in err
    assert spec_of(kubectl, ns)["spec"]["contract"]["approved"] is False


def test_pause_and_resume_patch_spec_paused(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.BACKFILLING)
    assert cli(capsys, "pause", "rename-email", "-n", ns)[0] == 0
    assert spec_of(kubectl, ns)["spec"]["paused"] is True
    assert cli(capsys, "resume", "rename-email", "-n", ns)[0] == 0
    assert spec_of(kubectl, ns)["spec"]["paused"] is False


def test_abort_patches_spec_abort_and_needs_confirmation(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create(kubectl, ns, d.BACKFILLING)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal
    code, _, err = cli(capsys, "abort", "rename-email", "-n", ns)
    assert code == 1
    assert "refusing to abort without confirmation" in err
    assert spec_of(kubectl, ns)["spec"]["abort"] is False
    code, out, _ = cli(capsys, "abort", "rename-email", "-n", ns, "--yes")
    assert code == 0, out
    assert spec_of(kubectl, ns)["spec"]["abort"] is True


def test_abort_is_refused_once_the_contract_started(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.CONTRACTING)
    code, _, err = cli(capsys, "abort", "rename-email", "-n", ns, "--yes")
    assert code == 1
    assert "its contract has already started (state Running" in err
    assert spec_of(kubectl, ns)["spec"]["abort"] is False


def test_retry_sets_a_fresh_annotation_only_when_failed(
    kubectl: Kubectl, ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(kubectl, ns, d.FAILED)
    assert cli(capsys, "retry", "rename-email", "-n", ns)[0] == 0
    first = spec_of(kubectl, ns)["metadata"]["annotations"]["datamigration.dev/retry"]
    assert cli(capsys, "retry", "rename-email", "-n", ns)[0] == 0
    second = spec_of(kubectl, ns)["metadata"]["annotations"]["datamigration.dev/retry"]
    assert first != second
    kubectl(
        "patch",
        "datamigration",
        "rename-email",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Backfilling"}}),
    )
    code, _, err = cli(capsys, "retry", "rename-email", "-n", ns)
    assert code == 1
    assert "is Backfilling, not Failed" in err


# -- as a kubectl plugin ------------------------------------------------------------------------
def test_kubectl_finds_the_plugin(kubectl: Kubectl, ns: str) -> None:
    create(kubectl, ns, d.FAILED)
    scripts = Path(sys.executable).parent
    assert (scripts / "kubectl-datamigration").exists(), "pip install -e . installs the script"
    kubectl.env["PATH"] = f"{scripts}{os.pathsep}{kubectl.env.get('PATH', '')}"
    out = kubectl("datamigration", "status", "rename-email", "-n", ns)
    assert "Phase:      Failed" in out
    assert f"kubectl datamigration retry rename-email -n {ns}" in out
