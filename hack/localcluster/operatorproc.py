"""`datamigration-operator` as a real process against the local cluster (tests, bench, demo).

Runs the operator exactly as a user or the chart would (the console script, a kubeconfig, the
`DATAMIGRATION_*` settings), labelling phase-Job pods for the local job-pod executor, and waits
on its liveness endpoint rather than on a guess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from localcluster.processes import free_port
from localcluster.waiting import wait_for

EXECUTOR_LABEL = "datamigration.dev/executor=local"


class OperatorProcess:
    """Start, SIGKILL, restart and stop one operator process; its log goes to `log_path`."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.kubeconfig, self.log_path, self.extra_env = kubeconfig, log_path, env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 60.0) -> OperatorProcess:
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DATAMIGRATION_JOB_POD_LABELS": EXECUTOR_LABEL,
            "DATAMIGRATION_RUNNER_IMAGE": "datamigration-operator:dev",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "datamigration-operator"),
                    "--verbose",
                    f"--liveness=http://127.0.0.1:{port}/healthz",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return bool(r.status == 200)

        wait_for(
            "the operator's liveness endpoint",
            healthy,
            timeout=timeout,
            still_possible=lambda: self.process is not None and self.process.poll() is None,
            diagnostics=lambda: f"see {self.log_path}",
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a node failure or an OOM kill would do."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float:
        """Resident memory of the operator process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")
