"""One executor-labelled pod, run to its end as local processes: the kubelet's job for one pod.

Lifecycle, as a kubelet reports it on `pods/status`:
  Pending (startTime, IPs, containers waiting) → init containers one by one → all containers at
  once, phase Running, Ready → each exits → Succeeded (all exit 0) or Failed, with every
  container's `state.terminated` (real exit code, Completed/Error, times, and the log tail as the
  message under `FallbackToLogsOnError`).
A Secret/ConfigMap/key that is missing and not optional keeps the container waiting with
CreateContainerConfigError, retried with a backoff, as the kubelet does: it never runs half
configured. `restartPolicy: OnFailure`/`Always` restarts a container in place (restartCount,
lastState), `Never` does not.

Identity: a container that mounts a projected service-account token volume (admission adds one to
every container unless `automountServiceAccountToken: false`; a pod may also mount one into some
containers only) gets a token minted with the TokenRequest API, bound to this pod, for its
service account, as a kubeconfig holding it (`$KUBECONFIG`): the process then meets RBAC exactly
as it would in a pod. A container without such a mount gets no credentials.

Ending early: on deletion (deletionTimestamp or the object gone), on `activeDeadlineSeconds`, and
on executor shutdown, every process group gets SIGTERM, then SIGKILL after the grace period
(deletion: the one the delete asked for, at least 2 s like the kubelet; deadline: the pod's
`terminationGracePeriodSeconds`). A deleted pod stays, Terminating, until its last process has
exited; then the executor removes it (`remove_pod`), as the kubelet does: whoever watches the pod
(the operator waiting for a paused runner to stop) sees it go only once nothing of it runs.

Not emulated: the image (the command runs in the project's Python environment), volumes and
mounts, probes, resource limits, `workingDir`, the `terminationMessagePath` file, and any
isolation: it is a plain process of the machine's user, at a lower CPU priority than the
control plane's (`POD_NICENESS`: a worker node's pods do not share the control plane's CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster import podstatus as ps
from localcluster import processes
from localcluster.api import STRATEGIC_MERGE_PATCH, Api, ApiError
from localcluster.kubeconfig import write_token_kubeconfig
from localcluster.podenv import (
    ContainerConfigError,
    Lookup,
    NoCommandError,
    command_line,
    resolve_env,
)
from localcluster.podenv import decode_secret_data as decode

JSON = dict[str, Any]
POD_IP = "127.0.0.1"  # the processes really do share the machine's loopback network
MIN_KILL_GRACE = 2.0  # the kubelet's minimumGracePeriodInSeconds
TOKEN_SECONDS = 3607  # what the kubelet asks for; the apiserver may extend it
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Pod processes run below the control plane's and the operator's CPU priority: in a cluster,
#: workload pods run on worker nodes and never take the API server's or a controller's CPU;
#: on this one machine, twenty runners starting at once (each imports SQLAlchemy) otherwise
#: starve the API server and the operator whose latency the tests and benchmarks measure. Not
#: 19: a runner that slow still commits a batch after its Job is gone and the migration says
#: Paused (tests/e2e/test_safety.py failed once so); at 10, bench-scale's thirty-two runners
#: can make the operator lose its Lease, and the bench restarts it as a Deployment would.
POD_NICENESS = 10


class StartError(Exception):
    """The runtime could not start the process (reported as StartError, exit code 128)."""


@dataclass
class ExecutorContext:
    """What every pod worker shares: the API, where to write, how to reach the apiserver."""

    api: Api
    state_root: Path
    pods_dir: Path
    pod_logs: Path
    server: str
    ca_cert: Path
    python_bin: Path
    log: logging.Logger
    _node_ips: dict[str, str] = field(default_factory=dict)

    def node_ip(self, node: str) -> str:
        if node not in self._node_ips:
            addresses = self.api.get(f"/api/v1/nodes/{node}").get("status", {}).get("addresses")
            internal = [a["address"] for a in addresses or [] if a.get("type") == "InternalIP"]
            self._node_ips[node] = internal[0] if internal else POD_IP
        return self._node_ips[node]

    def service_env(self) -> dict[str, str]:
        """The `kubernetes` Service variables, pointing where the apiserver really listens."""
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
        }


@dataclass
class Run:
    """One container's current process."""

    container: JSON
    proc: subprocess.Popen[bytes] | None
    started_at: str
    log_path: Path
    log_offset: int
    restart_count: int = 0
    last_state: JSON | None = None
    ended: JSON | None = None  # its terminated state, once it exited
    restart_at: float | None = None  # monotonic time of a scheduled restart

    @property
    def name(self) -> str:
        return str(self.container["name"])

    @property
    def container_id(self) -> str:
        return f"local://{self.proc.pid}" if self.proc else ""


class Interrupted(Exception):
    """The pod must stop early: deleted, past its deadline, or the executor is shutting down."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


#: Test-only: images of this registry "cannot be pulled" (see docs/local-cluster.md).
UNPULLABLE_REGISTRY = "unpullable.invalid/"


def _restarts(policy: str, code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and code != 0)


class PodWorker(threading.Thread):
    """Runs one pod; `observe`/`observe_gone`/`shutdown` are called from the watch thread."""

    def __init__(self, ctx: ExecutorContext, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"{meta['namespace']}/{meta['name']}", daemon=True)
        self.ctx, self.pod = ctx, pod
        self.uid, self.namespace, self.pod_name = meta["uid"], meta["namespace"], meta["name"]
        self.workdir = ctx.pods_dir / self.uid
        self.spec: JSON = pod["spec"]
        self.policy = str(self.spec.get("restartPolicy", "Always"))
        self.deleting, self.gone, self.stopping = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.deletion_grace: float | None = None
        self.deadline: float | None = None
        self.finished = threading.Event()
        self.runs: dict[str, Run] = {}
        self.init_statuses: list[JSON] = []
        self.started_at = ps.now()

    # --- called from the watch thread -------------------------------------------------------

    def observe(self, pod: JSON) -> None:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            if self.deletion_grace is None:
                self.deletion_grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            self.deleting.set()

    def observe_gone(self, pod: JSON) -> None:
        self.observe(pod)
        self.gone.set()
        self.deleting.set()

    def shutdown(self) -> None:
        self.stopping.set()

    def kill_now(self) -> None:
        """Last resort at executor exit: SIGKILL every process group of this pod."""
        for run in list(self.runs.values()):  # the worker thread may be replacing entries
            if run.proc is not None and run.proc.poll() is None:
                _killpg(run.proc.pid, signal.SIGKILL)

    # --- the pod's life ----------------------------------------------------------------------

    def run(self) -> None:
        log = self.ctx.log
        try:
            self._live()
        except Interrupted as stop:
            self._stop_processes(stop.why)
            self._report_interrupted(stop.why)
        except Exception as exc:
            log.exception("pod %s: executor error", self.name)
            self._stop_processes("error")
            self._patch(
                {"phase": "Failed", "reason": "ExecutorError", "message": f"local executor: {exc}"}
            )
        finally:
            # Finished first, then the deletion looked at: the watch thread marks the deletion
            # first, then looks at finished (`Executor._handle`), so one of the two always
            # removes a pod deleted as it ended.
            self.finished.set()
            self.remove_if_deleted()

    def remove_if_deleted(self) -> None:
        """Remove the pod if it was deleted and nothing of it runs any more."""
        if self.finished.is_set() and self.deleting.is_set() and not self.gone.is_set():
            remove_pod(self.ctx, self.pod)

    def _live(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.ctx.log
        # A previous executor may have started a process for this pod just before it died.
        processes.stop(processes.read_records(self.workdir / "pids"), grace=2.0)
        image_note = ", ".join(f"{c['name']}={c.get('image', '')}" for c in self._all_containers())
        log.info(
            "pod %s: running on %s as local processes (images ignored: %s)",
            self.name, self.spec.get("nodeName"), image_note,
        )  # fmt: skip
        if self.spec.get("activeDeadlineSeconds") is not None:
            self.deadline = time.monotonic() + float(self.spec["activeDeadlineSeconds"])
        node_ip = self.ctx.node_ip(str(self.spec["nodeName"]))
        self._patch(
            {
                "phase": "Pending",
                "startTime": self.started_at,
                "hostIP": node_ip,
                "hostIPs": [{"ip": node_ip}],
                "podIP": POD_IP,
                "podIPs": [{"ip": POD_IP}],
                "conditions": [
                    ps.condition("PodReadyToStartContainers", True),
                    ps.condition("Initialized", not self.spec.get("initContainers")),
                    ps.condition("Ready", False, "ContainersNotReady"),
                    ps.condition("ContainersReady", False, "ContainersNotReady"),
                ],
                "initContainerStatuses": [
                    ps.container_status(c, ps.waiting("PodInitializing"))
                    for c in self.spec.get("initContainers", [])
                ],
                "containerStatuses": [
                    ps.container_status(c, ps.waiting("ContainerCreating"))
                    for c in self.spec["containers"]
                ],
            }
        )
        self._wait_forever_if_unpullable()
        kubeconfig = self._with_config_retry(self.spec["containers"][0], self._identity)

        for container in self.spec.get("initContainers", []) or []:
            if container.get("restartPolicy") == "Always":
                raise StartError("native sidecar init containers are not emulated")
            if not self._run_init(container, kubeconfig):
                self._finish("Failed", init_failed=True)
                return
        self._run_containers(kubeconfig)

    def _wait_forever_if_unpullable(self) -> None:
        """An image under `UNPULLABLE_REGISTRY` cannot be pulled: the container waits in
        ErrImagePull, then ImagePullBackOff, until the pod is deleted, as with a kubelet."""
        for container in self._all_containers():
            image = str(container.get("image", ""))
            if not image.startswith(UNPULLABLE_REGISTRY):
                continue
            key = (
                "initContainerStatuses"
                if container in (self.spec.get("initContainers") or [])
                else "containerStatuses"
            )
            reason = "ErrImagePull"
            while True:
                message = (
                    f'Back-off pulling image "{image}"'
                    if reason != "ErrImagePull"
                    else (f'failed to pull image "{image}": not found')
                )
                self._patch({key: [ps.container_status(container, ps.waiting(reason, message))]})
                self._sleep(2.0)
                reason = "ImagePullBackOff"

    def _all_containers(self) -> list[JSON]:
        return list(self.spec.get("initContainers", []) or []) + list(self.spec["containers"])

    # --- configuration -----------------------------------------------------------------------

    def _lookup(self, kind: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        try:
            obj = self.ctx.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise ContainerConfigError(f"cannot read {kind} {name!r}: {exc}") from None
        if kind == "secret":
            return decode(obj.get("data"))
        return dict(obj.get("data") or {})

    def _mounts_token(self, container: JSON) -> bool:
        """Whether the container mounts a projected volume holding a service-account token (the
        one admission adds to every container, or one the pod mounts into some only)."""
        token_volumes = {
            volume.get("name")
            for volume in self.spec.get("volumes", []) or []
            for source in (volume.get("projected") or {}).get("sources", []) or []
            if "serviceAccountToken" in source
        }
        return any(m.get("name") in token_volumes for m in container.get("volumeMounts", []) or [])

    def _wants_token(self) -> bool:
        return any(self._mounts_token(c) for c in self._all_containers())

    def _identity(self) -> Path | None:
        if not self._wants_token():
            return None
        account = self.spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            },
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
        try:
            token = self.ctx.api.create(path, request)["status"]["token"]
        except ApiError as exc:
            raise ContainerConfigError(
                f"cannot get a token for service account {self.namespace}/{account}: {exc}"
            ) from None
        return write_token_kubeconfig(
            self.workdir / "kubeconfig", self.ctx.server, self.ctx.ca_cert, token, self.namespace
        )

    def _environment(
        self, container: JSON, kubeconfig: Path | None
    ) -> tuple[list[str], dict[str, str]]:
        lookup: Lookup = self._lookup
        service = self.ctx.service_env()
        resolved = resolve_env(
            self.pod | {"status": self._own_status()}, container, lookup, service
        )
        argv = command_line(container, resolved)
        base = {
            "PATH": f"{self.ctx.python_bin}:{SYSTEM_PATH}",
            "HOME": str(self.workdir),
            "HOSTNAME": str(self.spec.get("hostname") or self.pod_name),
        }
        if kubeconfig is not None and self._mounts_token(container):
            base["KUBECONFIG"] = str(kubeconfig)
        return argv, base | resolved

    def _own_status(self) -> JSON:
        node_ip = self.ctx.node_ip(str(self.spec["nodeName"]))
        return {
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
        }

    def _with_config_retry(self, container: JSON, resolve: Any) -> Any:
        """`resolve()`, retried with a backoff while it raises ContainerConfigError."""
        backoff = 1.0
        while True:
            self._check_interrupted()
            try:
                return resolve()
            except ContainerConfigError as exc:
                self.ctx.log.warning("pod %s: CreateContainerConfigError: %s", self.name, exc)
                key = (
                    "initContainerStatuses"
                    if container in self.spec.get("initContainers", [])
                    else "containerStatuses"
                )
                self._patch(
                    {
                        key: [
                            ps.container_status(
                                container, ps.waiting("CreateContainerConfigError", str(exc))
                            )
                        ]
                    }
                )
                self._sleep(backoff)
                backoff = min(backoff * 2, 20.0)

    # --- processes ---------------------------------------------------------------------------

    def _log_path(self, container: JSON) -> Path:
        return self.ctx.pod_logs / f"{self.namespace}_{self.pod_name}_{container['name']}.log"

    def _start(self, container: JSON, kubeconfig: Path | None, previous: Run | None) -> Run:
        log_path = self._log_path(container)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0
        run = Run(container, None, ps.now(), log_path, offset)
        if previous is not None:
            run.restart_count = previous.restart_count + 1
            run.last_state = previous.ended
        try:
            argv, env = self._with_config_retry(
                container, lambda: self._environment(container, kubeconfig)
            )
        except NoCommandError as exc:
            run.ended = ps.terminated(
                128, run.started_at, ps.now(), reason="StartError", message=str(exc)
            )
            self.ctx.log.warning("pod %s: container %s: %s", self.name, run.name, exc)
            return run
        try:
            _, run.proc = processes.spawn(
                str(container["name"]),
                argv,
                log_path=log_path,
                pid_dir=self.workdir / "pids",
                state_dir=self.ctx.state_root,
                env=env,
                cwd=self.workdir,
                niceness=POD_NICENESS,
            )
        except OSError as exc:
            message = f'exec: "{argv[0]}": {exc.strerror or exc}'
            if isinstance(exc, FileNotFoundError):
                message = f'exec: "{argv[0]}": executable file not found in $PATH'
            run.ended = ps.terminated(
                128, run.started_at, ps.now(), reason="StartError", message=message
            )
            self.ctx.log.warning("pod %s: container %s: %s", self.name, run.name, message)
            return run
        self.ctx.log.info(
            "pod %s: container %s started, pid %d: %s (log %s)",
            self.name, run.name, run.proc.pid, argv, log_path,
        )  # fmt: skip
        return run

    def _reap(self, run: Run) -> bool:
        """True once the run's process has exited (its terminated state is then recorded)."""
        if run.ended is not None:
            return True
        assert run.proc is not None
        code = run.proc.poll()
        if code is None:
            return False
        exit_code = ps.exit_code(code)
        message = ps.termination_message(run.container, exit_code, run.log_path, run.log_offset)
        run.ended = ps.terminated(exit_code, run.started_at, ps.now(), message=message)
        self.ctx.log.info("pod %s: container %s exited with %d", self.name, run.name, exit_code)
        return True

    def _status_of(self, run: Run, *, ready: bool = False) -> JSON:
        if run.ended is not None and run.restart_at is None:
            state = run.ended
        elif run.ended is not None:
            state = ps.waiting(
                "CrashLoopBackOff", f"back-off restarting failed container {run.name}"
            )
        else:
            state = ps.running(run.started_at)
        last = run.ended if run.restart_at is not None else run.last_state
        return ps.container_status(
            run.container,
            state,
            ready=ready and run.ended is None,
            restart_count=run.restart_count,
            last_state=last,
            container_id=run.container_id,
        )

    def _run_init(self, container: JSON, kubeconfig: Path | None) -> bool:
        previous: Run | None = None
        backoff = 10.0
        while True:
            run = self._start(container, kubeconfig, previous)
            self.runs = {run.name: run}
            self._patch({"initContainerStatuses": [self._status_of(run)]})
            while not self._reap(run):
                self._check_interrupted()
                time.sleep(0.1)
            self.init_statuses.append(self._status_of(run))
            self._patch({"initContainerStatuses": [self._status_of(run)]})
            code = run.ended["terminated"]["exitCode"] if run.ended else 1
            if code == 0:
                return True
            if self.policy == "Never":
                return False
            previous = run
            self._sleep(backoff)
            backoff = min(backoff * 2, 300.0)

    def _run_containers(self, kubeconfig: Path | None) -> None:
        self.runs = {}
        for container in self.spec["containers"]:
            self.runs[container["name"]] = self._start(container, kubeconfig, None)
        self._report_running()
        backoff: dict[str, float] = {}
        while True:
            changed = False
            for name, run in list(self.runs.items()):
                if run.restart_at is not None:
                    if time.monotonic() >= run.restart_at:
                        self.runs[name] = self._start(run.container, kubeconfig, run)
                        changed = True
                    continue
                if run.ended is not None or not self._reap(run):
                    continue
                changed = True
                code = run.ended["terminated"]["exitCode"] if run.ended else 1
                if _restarts(self.policy, code):
                    delay = backoff.get(name, 10.0)
                    backoff[name] = min(delay * 2, 300.0)
                    run.restart_at = time.monotonic() + delay
            if all(r.ended is not None and r.restart_at is None for r in self.runs.values()):
                self._finish("Succeeded" if self._all_succeeded() else "Failed")
                return
            if changed:
                self._report_running()
            self._check_interrupted()
            time.sleep(0.1)

    def _all_succeeded(self) -> bool:
        codes = [r.ended["terminated"]["exitCode"] for r in self.runs.values() if r.ended]
        return bool(codes) and len(codes) == len(self.runs) and all(c == 0 for c in codes)

    # --- interruption ------------------------------------------------------------------------

    def _check_interrupted(self) -> None:
        if self.stopping.is_set():
            raise Interrupted("shutdown")
        if self.deleting.is_set():
            raise Interrupted("deleted")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Interrupted("deadline")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_interrupted()
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _stop_processes(self, why: str) -> None:
        live = [r for r in self.runs.values() if r.proc is not None and r.proc.poll() is None]
        if not live:
            return
        if why == "deleted":
            grace = max(MIN_KILL_GRACE, self.deletion_grace or 0.0)
        elif why == "deadline":
            grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        else:
            grace = 5.0
        self.ctx.log.info(
            "pod %s: %s: SIGTERM to %s, SIGKILL after %.0fs",
            self.name, why, [r.name for r in live], grace,
        )  # fmt: skip
        for run in live:
            assert run.proc is not None
            _killpg(run.proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for run in live:
            assert run.proc is not None
            try:
                run.proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
            # Anything the process left behind in its group goes too.
            _killpg(run.proc.pid, signal.SIGKILL)
        for run in live:
            self._reap(run)

    def _report_interrupted(self, why: str) -> None:
        if why == "shutdown" or self.gone.is_set():
            return
        for run in self.runs.values():
            run.restart_at = None
            if run.ended is None:
                now = ps.now()
                run.ended = ps.terminated(137, run.started_at, now, reason="Error")
        if why == "deadline":
            self.ctx.log.info("pod %s: active deadline exceeded", self.name)
            self._finish(
                "Failed",
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
        else:
            self._finish("Succeeded" if self._all_succeeded() else "Failed")

    # --- status ------------------------------------------------------------------------------

    def _report_running(self) -> None:
        statuses = [self._status_of(r, ready=True) for r in self.runs.values()]
        all_ready = all(s["ready"] for s in statuses)
        reason = "" if all_ready else "ContainersNotReady"
        self._patch(
            {
                "phase": "Running",
                "conditions": [
                    ps.condition("Initialized", True),
                    ps.condition("Ready", all_ready, reason),
                    ps.condition("ContainersReady", all_ready, reason),
                ],
                "containerStatuses": statuses,
            }
        )

    def _finish(
        self, phase: str, *, reason: str = "", message: str = "", init_failed: bool = False
    ) -> None:
        status: JSON = {
            "phase": phase,
            "conditions": [
                ps.condition("Initialized", not init_failed),
                ps.condition("Ready", False, "PodCompleted"),
                ps.condition("ContainersReady", False, "PodCompleted"),
            ],
        }
        if init_failed:
            status["initContainerStatuses"] = self.init_statuses
            status["containerStatuses"] = [
                ps.container_status(c, ps.waiting("PodInitializing"))
                for c in self.spec["containers"]
            ]
        else:
            status["containerStatuses"] = [
                self._status_of(self.runs[c["name"]]) if c["name"] in self.runs else _never_ran(c)
                for c in self.spec["containers"]
            ]
        if reason:
            status |= {"reason": reason, "message": message}
        self._patch(status)
        self.ctx.log.info("pod %s: %s%s", self.name, phase, f" ({reason})" if reason else "")

    def _patch(self, status: JSON) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status"
        body = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self.ctx.api.patch(path, body, content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 404 or self.gone.is_set():
                self.ctx.log.info("pod %s: gone, status not updated", self.name)
            else:
                self.ctx.log.error("pod %s: status update failed: %s", self.name, exc)


def _never_ran(container: JSON) -> JSON:
    # The kubelet's wording for a container of a pod that ended before it could start.
    now = ps.now()
    message = "The container could not be located when the pod was terminated"
    state = ps.terminated(137, now, now, reason="ContainerStatusUnknown", message=message)
    return ps.container_status(container, state)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def mark_lost(ctx: ExecutorContext, pod: JSON) -> None:
    """A pod a previous executor started: stop what is left of it and report it Failed."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    name = f"{meta['namespace']}/{meta['name']}"
    leftovers = processes.read_records(ctx.pods_dir / meta["uid"] / "pids")
    processes.stop(leftovers, grace=5.0)
    message = (
        "The local job-pod executor restarted while this container was running; its process "
        "was stopped and its outcome is unknown"
    )
    now = ps.now()

    def lost(container: JSON, previous: list[JSON]) -> JSON:
        old = next((s for s in previous if s.get("name") == container["name"]), {})
        state = old.get("state", {})
        if state.get("terminated"):
            return ps.container_status(container, state, restart_count=old.get("restartCount", 0))
        started = (state.get("running") or {}).get("startedAt") or now
        ended = ps.terminated(137, started, now, reason="ContainerStatusUnknown", message=message)
        return ps.container_status(container, ended, restart_count=old.get("restartCount", 0))

    body: JSON = {
        "metadata": {"uid": meta["uid"]},
        "status": {
            "phase": "Failed",
            "reason": "ExecutorRestarted",
            "message": message,
            "conditions": [
                ps.condition("Ready", False, "PodCompleted"),
                ps.condition("ContainersReady", False, "PodCompleted"),
            ],
            "containerStatuses": [
                lost(c, status.get("containerStatuses", [])) for c in spec["containers"]
            ],
            "initContainerStatuses": [
                lost(c, status.get("initContainerStatuses", []))
                for c in spec.get("initContainers", []) or []
            ],
        },
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
    try:
        ctx.api.patch(path, body, content_type=STRATEGIC_MERGE_PATCH)
        ctx.log.warning("pod %s: process lost across an executor restart: marked Failed", name)
    except ApiError as exc:
        ctx.log.error("pod %s: could not mark it Failed: %s", name, exc)


def remove_workdir(ctx: ExecutorContext, uid: str) -> None:
    """A deleted pod's working directory (its token kubeconfig included) is not kept."""
    shutil.rmtree(ctx.pods_dir / uid, ignore_errors=True)


def remove_pod(ctx: ExecutorContext, pod: JSON) -> None:
    """The kubelet's last word on a deleted pod whose processes have all exited: delete it for
    good (grace 0), this incarnation only (uid precondition)."""
    meta = pod["metadata"]
    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
    try:
        ctx.api.delete(path, grace_seconds=0, uid=meta["uid"])
        ctx.log.info("pod %s/%s: no process left: removed", meta["namespace"], meta["name"])
    except ApiError as exc:
        if exc.status not in (404, 409):  # gone already, or a namesake
            ctx.log.error(
                "pod %s/%s: could not remove it: %s", meta["namespace"], meta["name"], exc
            )
