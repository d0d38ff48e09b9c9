"""The job-pod executor: a stand-in for a kubelet and a container runtime, for selected pods.

This machine has neither a kubelet nor a container runtime (no Docker, no containerd), and KWOK
only fakes pod statuses. The operator's phase Jobs must really run, though: their pods run
`datamigration-runner` against a real database. So this process watches the pods labelled
`datamigration.dev/executor=local` once they are scheduled (`spec.nodeName` set) and runs each as
local processes (see `localcluster.podworker` for the per-pod lifecycle and what is emulated, and
`localcluster.podenv` for the environment), reporting on `pods/status` what a kubelet would, so the
real Job controller sees the real outcome. KWOK's pod stages skip these pods, deletion included:
a deleted one goes only once its processes have exited (`podworker.remove_pod`).

Watch loop: list, then watch from the list's resourceVersion with bookmarks; a normal end of the
watch resumes from the last resourceVersion seen, an expired one (410) relists, other errors back
off and retry. A pod already Running when this process (re)starts, whose process this process did
not start, is marked Failed with a clear reason: its outcome cannot be known.

Shutdown (SIGTERM/SIGINT): every pod process group gets SIGTERM, then SIGKILL; pod statuses are
left for the next executor to settle. Logs go to stdout (`.local-cluster/logs/executor.log` when
started by `localcluster.cluster`).

Run: `python -m localcluster.executor --state-dir .local-cluster --kubeconfig <admin kubeconfig>`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from localcluster import names
from localcluster.api import Api, ApiError
from localcluster.paths import StatePaths
from localcluster.podworker import (
    ExecutorContext,
    PodWorker,
    mark_lost,
    remove_pod,
    remove_workdir,
)

JSON = dict[str, Any]
LABEL_SELECTOR = f"{names.EXECUTOR_LABEL}={names.EXECUTOR_VALUE}"
FIELD_SELECTOR = "spec.nodeName!="
READY_FILE = "ready"  # written once the first list succeeded; holds this process's pid
TERMINAL = ("Succeeded", "Failed")


def _started_by_someone(pod: JSON) -> bool:
    """True if some container of the pod is (reported) running: an executor ran it."""
    status = pod.get("status", {})
    for entry in status.get("containerStatuses", []) + status.get("initContainerStatuses", []):
        if (entry.get("state") or {}).get("running"):
            return True
    return False


class Executor:
    def __init__(self, ctx: ExecutorContext, ready_file: Path) -> None:
        self.ctx = ctx
        self.ready_file = ready_file
        self.workers: dict[str, PodWorker] = {}
        self.done: set[str] = set()  # uids whose worker finished; stale events must not revive them
        self.stop = threading.Event()
        self.lock = threading.Lock()  # the watch and housekeeping threads share the maps above

    def handle(self, kind: str, pod: JSON) -> None:
        with self.lock:
            self._handle(kind, pod)

    def _handle(self, kind: str, pod: JSON) -> None:
        meta = pod.get("metadata", {})
        uid = meta.get("uid", "")
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.observe_gone(pod)
            else:
                remove_workdir(self.ctx, uid)
            self.done.discard(uid)
            return
        if worker is not None:
            worker.observe(pod)
            worker.remove_if_deleted()  # it may have ended just before the deletion
            return
        if meta.get("deletionTimestamp"):
            # No worker runs it (finished, never started, or started by an executor before this
            # one): stop what may be left of it, then remove it, as a kubelet would.
            if uid not in self.done and _started_by_someone(pod):
                mark_lost(self.ctx, pod)
            self.done.add(uid)
            remove_pod(self.ctx, pod)
            return
        if uid in self.done or pod.get("status", {}).get("phase") in TERMINAL:
            return
        if _started_by_someone(pod):
            self.done.add(uid)
            mark_lost(self.ctx, pod)
            return
        worker = PodWorker(self.ctx, pod)
        self.workers[uid] = worker
        worker.start()

    def reap_workers(self) -> None:
        with self.lock:
            for uid, worker in list(self.workers.items()):
                if worker.finished.is_set():
                    if worker.gone.is_set():
                        remove_workdir(self.ctx, uid)
                    else:
                        self.done.add(uid)
                    del self.workers[uid]

    def list_pods(self) -> str:
        listing = self.ctx.api.get(
            "/api/v1/pods", labelSelector=LABEL_SELECTOR, fieldSelector=FIELD_SELECTOR
        )
        seen = set()
        for pod in listing.get("items", []):
            seen.add(pod["metadata"]["uid"])
            self.handle("SYNC", pod)
        # Pods deleted while we were not watching.
        with self.lock:
            for uid, worker in list(self.workers.items()):
                if uid not in seen:
                    worker.observe_gone({})
            self.done &= seen
        return str(listing["metadata"]["resourceVersion"])

    def watch_forever(self) -> None:
        log = self.ctx.log
        backoff = 0.5
        resource_version = ""
        while not self.stop.is_set():
            try:
                if not resource_version:
                    resource_version = self.list_pods()
                    if not self.ready_file.exists():
                        self.ready_file.write_text(f"{os.getpid()}\n")
                        log.info("executor ready: watching pods with %s", LABEL_SELECTOR)
                for kind, pod in self.ctx.api.watch(
                    "/api/v1/pods",
                    resource_version,
                    labelSelector=LABEL_SELECTOR,
                    fieldSelector=FIELD_SELECTOR,
                ):
                    resource_version = pod["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self.handle(kind, pod)
                    self.reap_workers()
                    if self.stop.is_set():
                        return
                backoff = 0.5
            except ApiError as exc:
                if exc.status == 410:
                    log.info("watch expired (%s): relisting", exc.message)
                    resource_version = ""
                    continue
                log.warning("watch failed: %s; retrying in %.1fs", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                log.warning("watch broken: %r; retrying in %.1fs", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def housekeeping(self) -> None:
        """Forget finished workers even when no watch event arrives."""
        while not self.stop.wait(1.0):
            self.reap_workers()

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown()
        deadline = time.monotonic() + 8.0
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in workers:
            worker.kill_now()


def _server_of(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.executor", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(message)s",
    )
    log = logging.getLogger("executor")
    state = StatePaths(args.state_dir.resolve())
    state.executor.mkdir(parents=True, exist_ok=True)
    ready_file = state.executor / READY_FILE
    ready_file.unlink(missing_ok=True)
    ctx = ExecutorContext(
        api=Api(args.kubeconfig, pool_size=32),
        state_root=state.root,
        pods_dir=state.executor / "pods",
        pod_logs=state.pod_logs,
        server=_server_of(args.kubeconfig),
        ca_cert=state.pki / "ca.crt",
        python_bin=Path(sysconfig.get_path("scripts")),
        log=log,
    )
    log.info(
        "job-pod executor starting (stands in for a kubelet and a container runtime; "
        "images are ignored, commands run in %s)",
        ctx.python_bin,
    )
    executor = Executor(ctx, ready_file)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        executor.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=executor.watch_forever, name="watch", daemon=True).start()
    threading.Thread(target=executor.housekeeping, name="housekeeping", daemon=True).start()
    while not executor.stop.wait(1.0):
        pass
    executor.shutdown()
    ready_file.unlink(missing_ok=True)
    log.info("job-pod executor stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
