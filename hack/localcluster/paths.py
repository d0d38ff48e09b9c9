"""Where the local cluster keeps its state, and where its binaries come from.

Everything the cluster writes lives under one state directory (default `<repo>/.local-cluster/`,
git-ignored; `LOCALCLUSTER_STATE_DIR` overrides it so a second, independent cluster can run
beside the first). The binaries live outside the repo, in the cache that
`hack/build-cluster-bins.sh` fills, keyed by their pinned versions.

Guarantee: resolving the bin dir never builds anything. Missing binaries are an error that says to
run `make cluster-bins`; building is the Makefile's job, done before `up`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-cluster-bins.sh"
PACKAGE_DIR = Path(__file__).resolve().parent
STAGES_FILE = PACKAGE_DIR / "stages.yaml"

STATE_DIR_ENV = "LOCALCLUSTER_STATE_DIR"
BIN_DIR_ENV = "LOCALCLUSTER_BIN_DIR"

REQUIRED_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)


class MissingBinariesError(RuntimeError):
    """The cluster's binaries are not built (or not where the override points)."""


@dataclass(frozen=True)
class StatePaths:
    """The layout of one cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pod_logs(self) -> Path:
        return self.logs / "pods"

    @property
    def executor(self) -> Path:
        """The executor's per-pod working directories and process records."""
        return self.root / "executor"

    @property
    def kubeconfigs(self) -> Path:
        """Component kubeconfigs (controller-manager, scheduler); the admin one is `kubeconfig`."""
        return self.root / "kubeconfigs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def tools(self) -> Path:
        """`bin/`: links to the kubectl and helm the project builds and to the
        `kubectl-datamigration` plugin, for a user's PATH (see `cluster.link_tools`)."""
        return self.root / "bin"

    @property
    def postgres(self) -> Path:
        """The PostgreSQL kept running for `make example-NN` (stopped by `down`)."""
        return self.root / "postgres"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"


def state_paths() -> StatePaths:
    override = os.environ.get(STATE_DIR_ENV)
    root = Path(override).resolve() if override else REPO_ROOT / ".local-cluster"
    return StatePaths(root)


def bin_dir() -> Path:
    """The directory holding every required binary, or `MissingBinariesError` saying what to do."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        directory = Path(override).resolve()
    else:
        try:
            out = subprocess.run(
                [str(BUILD_SCRIPT), "--print-bin-dir"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise MissingBinariesError(
                f"cannot locate the cluster binaries ({BUILD_SCRIPT} --print-bin-dir failed: "
                f"{exc}); run `make cluster-bins`"
            ) from None
        directory = Path(out.strip().splitlines()[-1])
    missing = [name for name in REQUIRED_BINARIES if not os.access(directory / name, os.X_OK)]
    if missing:
        hint = f"${BIN_DIR_ENV} points to {directory}" if override else "run `make cluster-bins`"
        raise MissingBinariesError(
            f"local cluster binaries missing in {directory}: {', '.join(missing)}; {hint}"
        )
    return directory
