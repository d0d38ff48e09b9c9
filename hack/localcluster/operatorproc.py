"""`datamigration-operator` as a real process against the local cluster (tests, bench, demo).

Runs the operator exactly as a user or the chart would (the console script, a kubeconfig, the
`DATAMIGRATION_*` settings), labelling phase-Job pods for the local job-pod executor, and waits
on its liveness endpoint rather than on a guess.

Several processes may run at once (tests/e2e/test_ha.py, bench/ha.py): each gets its own metrics
port and `POD_NAME` (so its Events name it as `reportingInstance`); processes started with the
same `DATAMIGRATION_NAMESPACES` share one Lease (in `default`, named after those namespaces)
unless the caller names another, so they elect one leader among themselves.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from localcluster.processes import free_port
from localcluster.waiting import WaitError, wait_for

EXECUTOR_LABEL = "datamigration.dev/executor=local"
_SERIAL = itertools.count()


def lease_name_for(namespaces: str) -> str:
    """The Lease shared by the processes that serve these namespaces (a valid object name)."""
    tail = namespaces.replace(",", "-").replace(".", "-")[:40].strip("-") or "all"
    return f"dm-operator-{tail}"


class OperatorProcess:
    """Start, SIGKILL, restart and stop one operator process; its log goes to `log_path`."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        verbose: bool = True,
    ) -> None:
        """`verbose`: debug logging, which tests read when they fail; benchmarks that measure
        the operator's own cost run it as the chart does by default, without."""
        self.kubeconfig, self.log_path, self.extra_env = kubeconfig, log_path, env or {}
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.pod_name = self.extra_env.get("POD_NAME") or f"operator-{os.getpid()}-{next(_SERIAL)}"
        self.metrics_port = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 60.0) -> OperatorProcess:
        """Start the process and wait until its liveness endpoint answers.

        A port probed free can still be taken before the operator binds it; a start that fails
        with "Address already in use" is retried on other ports (twice), any other failure is
        raised with the end of the log.
        """
        for attempt in range(3):
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                return self._start_once(timeout, log_offset)
            except WaitError:
                port_taken = "address already in use" in self._log_since(log_offset).lower()
                if attempt == 2 or self.running or not port_taken:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float, log_offset: int) -> OperatorProcess:
        """One start; `log_offset`: where this start's lines begin in the (appended) log."""
        port = free_port()
        self.metrics_port = free_port()
        namespaces = self.extra_env.get("DATAMIGRATION_NAMESPACES", "")
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "DATAMIGRATION_JOB_POD_LABELS": EXECUTOR_LABEL,
            "DATAMIGRATION_RUNNER_IMAGE": "datamigration-operator:dev",
            "DATAMIGRATION_LEASE_NAMESPACE": "default",
            "DATAMIGRATION_LEASE_NAME": lease_name_for(namespaces),
            **self.extra_env,
            # Several processes on one machine: each its own port and name.
            "DATAMIGRATION_METRICS_PORT": str(self.metrics_port),
            "POD_NAME": self.pod_name,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "datamigration-operator"),
                    *(["--verbose"] if self.verbose else []),
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

        def diagnostics() -> str:
            exit_code = self.process.poll() if self.process else None
            ended = f"exit code {exit_code}; " if exit_code is not None else ""
            tail = "\n".join(self._log_since(log_offset).splitlines()[-30:])
            return f"{ended}see {self.log_path}; its last lines:\n{tail}"

        wait_for(
            "the operator's liveness endpoint",
            healthy,
            timeout=timeout,
            still_possible=lambda: self.running,
            diagnostics=diagnostics,
        )
        return self

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def health(self, probe: str = "readyz", timeout: float = 1.0) -> dict[str, Any]:
        """The JSON of /readyz or /livez (`leader`: whether it holds the Lease and may act)."""
        url = f"http://127.0.0.1:{self.metrics_port}/{probe}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body

    def is_leader(self) -> bool:
        try:
            return self.running and bool(self.health().get("leader"))
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (a long GC pause, a throttled or suspended VM)."""
        if self.process:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a node failure or an OOM kill would do."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)  # a paused one could not hear SIGTERM
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
