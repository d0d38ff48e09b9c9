"""The README's "Use it" section, run verbatim on the local cluster, command by command.

The commands are parsed from README.md itself (the local-cluster block, the "Then" block and the
"start over" block), and each runs in bash from the repository root with nothing but what the
README tells a user to set: a PATH without this test run's virtualenv or the build cache (so
kubectl, helm and the `kubectl datamigration` plugin must come from where the README says), no
KUBECONFIG until the README's `export` line sets it. A command that does not end (`kubectl get dm
-w`) runs in the background, as in the second terminal the README suggests, and is stopped at the
end. The migration must reach Succeeded through the README's own approve and wait commands; the
"start over" block then removes what the README created, so a rerun on the same cluster passes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO, Kube

from localcluster import chart

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
README = REPO / "README.md"
TOOLS = ("kubectl", "helm", "kubectl-datamigration")
COMMAND_TIMEOUT = 900  # the README's own waits carry their timeouts; this only bounds a hang


def use_it_blocks() -> dict[str, list[str]]:
    """The ```sh blocks of "## Use it", keyed by the paragraph that introduces each."""
    text = README.read_text()
    section = text.split("\n## Use it\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for match in re.finditer(r"```sh\n(?P<body>.*?)```", section, re.S):
        intro = section[: match.start()].rstrip().rsplit("\n\n", 1)[-1].strip()
        lines = [ln for ln in match["body"].splitlines() if ln.strip() and not ln.startswith("#")]
        blocks[intro] = lines
    return blocks


def block(blocks: dict[str, list[str]], starts: str) -> list[str]:
    (found,) = [lines for intro, lines in blocks.items() if intro.startswith(starts)]
    return found


def user_environment() -> dict[str, str]:
    """A shell as a user has it in a fresh terminal: none of this test run's settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTHONPATH")}
    env = {k: v for k, v in env.items() if not k.startswith(("LOCALCLUSTER_", "DATAMIGRATION_"))}
    env.pop("VIRTUAL_ENV", None)
    keep = [p for p in env["PATH"].split(":") if ".venv" not in p and "datamigration" not in p]
    env["PATH"] = ":".join(keep)
    return env


class Shell:
    """Runs README lines in bash from the repository root; `export` lines change its env."""

    def __init__(self) -> None:
        self.env = user_environment()
        self.background: list[tuple[str, subprocess.Popen[str], Path]] = []
        self.transcript: list[str] = []

    def run(self, line: str, tmp: Path) -> None:
        self.transcript.append(f"$ {line}")
        if line.startswith("export "):
            out = subprocess.run(
                ["bash", "-c", f"{line}\nenv -0"],
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            self.env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
            return
        if re.search(r"\s(-w|--watch)(\s|$)", line.split("#", maxsplit=1)[0]):
            log = tmp / f"background-{len(self.background)}.log"
            with log.open("w") as sink:
                proc = subprocess.Popen(
                    ["bash", "-c", line],
                    cwd=REPO,
                    env=self.env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            self.background.append((line, proc, log))
            return
        began = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        self.transcript.append(
            (result.stdout + result.stderr).rstrip() + f"\n  [{time.monotonic() - began:.1f}s]"
        )
        assert result.returncode == 0, (
            f"README command failed (exit {result.returncode}): {line}\n" + self.log()
        )

    def stop_background(self) -> dict[str, str]:
        outputs = {}
        for line, proc, log in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
                proc.wait(timeout=15)
            outputs[line] = log.read_text()
        self.background.clear()
        return outputs

    def log(self) -> str:
        return "\n".join(self.transcript)[-6000:]


@pytest.fixture
def readme_state(cluster: Any, kube: Kube) -> Iterator[None]:
    """The cluster as `make test` leaves it (CRD and runner ClusterRole adoptable by the README's
    release), with nothing of an earlier, interrupted run of the README; restored afterwards."""
    state = Path(cluster.state_dir).resolve()
    assert state == REPO / ".local-cluster", (
        f"the README's commands use $PWD/.local-cluster; this session's cluster is in {state}"
    )
    helm = [str(Path(cluster.bin_dir) / "helm"), "--kubeconfig", str(cluster.kubeconfig)]
    releases = subprocess.run(
        [*helm, "list", "-n", chart.RELEASE_NAMESPACE, "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if chart.RELEASE in releases:
        subprocess.run(
            [*helm, "uninstall", chart.RELEASE, "-n", chart.RELEASE_NAMESPACE, "--wait"],
            check=True,
            capture_output=True,
        )
    kube.delete_namespace(chart.RELEASE_NAMESPACE)
    chart.install_prerequisites(kube.client, Path(cluster.bin_dir), field_manager="e2e")
    yield
    # The README's uninstall took the runner ClusterRole with the release: put back what the
    # session's other tests rely on.
    chart.install_prerequisites(kube.client, Path(cluster.bin_dir), field_manager="e2e")


def test_readme_use_it_runs_verbatim_to_succeeded(
    readme_state: None, kube: Kube, tmp_path: Path
) -> None:
    blocks = use_it_blocks()
    local = block(blocks, "**On the local cluster**")
    then = block(blocks, "**Then, on either**")
    start_over = block(blocks, "To start over")
    assert any(line.startswith("helm install") for line in local)
    assert any("approve" in line for line in then)

    shell = Shell()
    succeeded = False
    try:
        for line in local + then:
            shell.run(line, tmp_path)
        migration = kube.migration("default", "rename-email")
        assert migration["status"]["phase"] == "Succeeded", migration["status"]
        succeeded = True
        # The tools the README used are the ones it names (not some kubectl of the machine's).
        found = subprocess.run(
            ["bash", "-c", "command -v kubectl helm kubectl-datamigration"],
            env=shell.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert found == [str(REPO / ".local-cluster" / "bin" / t) for t in TOOLS], found
        # The operator that did the work is the chart's, run from the chart's own pod.
        (pod,) = kube.pods(chart.RELEASE_NAMESPACE, "app.kubernetes.io/name=datamigration-operator")
        assert pod["status"]["phase"] == "Running", pod["status"]
        log = REPO / ".local-cluster" / "logs" / "pods"
        log /= f"{chart.RELEASE_NAMESPACE}_{pod['metadata']['name']}_operator.log"
        assert "rename-email" in log.read_text()
    finally:
        watched = shell.stop_background()
        if succeeded:
            for line in start_over:
                shell.run(line, tmp_path)
    (watch_output,) = watched.values()
    assert re.search(r"^rename-email\s+AwaitingApproval\s", watch_output, re.M), watch_output
    assert re.search(r"^rename-email\s+Succeeded\s", watch_output, re.M), watch_output
    assert "datamigration-system" not in {
        ns["metadata"]["name"] for ns in kube.client.list_items("/api/v1/namespaces")
    }, "the start-over block removes the operator's namespace"
