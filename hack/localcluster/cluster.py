"""Bring the local cluster up, tell whether it is up, and take it down: the API tests use.

`ensure_up()` returns a `Cluster` handle once the whole cluster works: every component healthy
(`/readyz`, `/healthz`), the fake Nodes Ready and untainted, the `default` ServiceAccount present
in `default` (pods there can be admitted) and the job-pod executor watching. It is idempotent: a
running, healthy cluster is returned as is; a partly dead one is stopped and started afresh (fresh
etcd data; the PKI is kept). `down()` stops every process of ours, by pid, and verifies that none
is left. A file lock serialises `ensure_up`/`down` across processes sharing a state directory.

The state directory layout is in `paths.StatePaths`; the component command lines in
`controlplane`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import controlplane as cp
from localcluster import nodes, paths, pki, postgres, processes
from localcluster.api import Api, ApiError
from localcluster.kubeconfig import write_cert_kubeconfig
from localcluster.waiting import WaitError, log_tail, wait_for

# Start order (`down` stops them in reverse, see STOP_TIERS).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
EXECUTOR = "executor"
ALL_PROCESSES = (*COMPONENTS, EXECUTOR)
EXECUTOR_READY_FILE = "ready"
STOP_TIERS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((EXECUTOR,), 15.0),  # it ends its pods' processes itself first
    (("kwok", "kube-scheduler", "kube-controller-manager"), 10.0),
    (("kube-apiserver",), 10.0),
    (("etcd",), 10.0),
)


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message says why and where to look."""


@dataclass(frozen=True)
class Cluster:
    """A running local cluster."""

    kubeconfig: Path
    bin_dir: Path
    state_dir: Path
    logs_dir: Path
    server: str
    ports: dict[str, int]


@contextlib.contextmanager
def _locked(state: paths.StatePaths) -> Iterator[None]:
    state.root.mkdir(parents=True, exist_ok=True)
    with state.lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(state: paths.StatePaths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state.state_file.read_text())
    except (OSError, ValueError):
        return None
    return data


def _handle(state: paths.StatePaths, data: dict[str, Any]) -> Cluster:
    return Cluster(
        kubeconfig=state.kubeconfig,
        bin_dir=Path(data["bin_dir"]),
        state_dir=state.root,
        logs_dir=state.logs,
        server=str(data["server"]),
        ports={k: int(v) for k, v in data["ports"].items()},
    )


def _process_status(state: paths.StatePaths) -> dict[str, bool]:
    records = {r.name: r for r in processes.read_records(state.pids)}
    return {name: name in records and processes.is_alive(records[name]) for name in ALL_PROCESSES}


def _is_up(state: paths.StatePaths) -> bool:
    data = _read_state(state)
    if data is None or not all(_process_status(state).values()):
        return False
    lay = cp.Layout(Path(data["bin_dir"]), state, pki.Pki(state.pki), cp.Ports(**data["ports"]))
    try:
        return cp.apiserver_ready(lay)
    except OSError:
        return False


def is_up() -> bool:
    """True if every process of the cluster runs and the apiserver is ready."""
    return _is_up(paths.state_paths())


def ensure_up(*, timeout: float = 240.0) -> Cluster:
    """The running cluster, started (afresh) unless it is already up and healthy."""
    state = paths.state_paths()
    with _locked(state):
        data = _read_state(state)
        if data is not None and _is_up(state):
            link_tools(state, Path(data["bin_dir"]))
            return _handle(state, data)
        _stop_all(state)
        bin_dir = paths.bin_dir()
        link_tools(state, bin_dir)
        for attempt in (1, 2):
            try:
                return _start(state, bin_dir, timeout)
            except ClusterError as exc:
                _stop_all(state)
                # A random port can be taken between picking it and binding it: retry once.
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")


def link_tools(state: paths.StatePaths, bin_dir: Path) -> None:
    """`<state>/bin`: kubectl and helm from `bin_dir` and the `kubectl-datamigration` plugin of the
    Python environment running this, as symlinks, so that one PATH entry gives a user all three
    (`export PATH="$PWD/.local-cluster/bin:$PATH"`). Idempotent; a stale link is replaced."""
    state.tools.mkdir(parents=True, exist_ok=True)
    targets = {
        "kubectl": bin_dir / "kubectl",
        "helm": bin_dir / "helm",
        "kubectl-datamigration": Path(sysconfig.get_path("scripts")) / "kubectl-datamigration",
    }
    for name, target in targets.items():
        link = state.tools / name
        if link.is_symlink() and link.readlink() == target:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def env_lines(state: paths.StatePaths | None = None) -> str:
    """The shell lines that give a user the cluster's kubectl, helm, plugin and kubeconfig."""
    state = state or paths.state_paths()
    return f'export PATH="{state.tools}:$PATH" KUBECONFIG="{state.kubeconfig}"'


def down() -> None:
    """Stop every process of the cluster (and the PostgreSQL `make example-NN` keeps running);
    raises `ClusterError` if any survives."""
    state = paths.state_paths()
    if not state.root.exists():
        return
    with _locked(state):
        _stop_all(state)
        postgres.stop_persistent(state.postgres)


def restart_executor(*, kill: bool = False) -> None:
    """Replace the running job-pod executor with a fresh one (SIGKILL first if `kill`).

    For working on the executor, and for testing that a new executor settles the pods its
    predecessor was running. The rest of the cluster is left alone.
    """
    state = paths.state_paths()
    with _locked(state):
        data = _read_state(state)
        if data is None or not _is_up(state):
            raise ClusterError("the local cluster is not up")
        old = [r for r in processes.read_records(state.pids) if r.name == EXECUTOR]
        if kill:
            for record in old:
                processes.kill(record)
        if processes.stop(old, grace=15.0):
            raise ClusterError("the old executor survived SIGKILL")
        lay = cp.Layout(Path(data["bin_dir"]), state, pki.Pki(state.pki), cp.Ports(**data["ports"]))
        _await_executor(state, _launch_executor(state, lay), timeout=60.0)


def status() -> str:
    """A human summary: each process alive or not, the apiserver address, the kubeconfig."""
    state = paths.state_paths()
    data = _read_state(state)
    lines = [f"state dir: {state.root}"]
    if data is not None:
        lines += [f"server: {data['server']}", f"kubeconfig: {state.kubeconfig}"]
        lines.append(f"bin dir: {data['bin_dir']}")
    records = {r.name: r for r in processes.read_records(state.pids)}
    for name, alive in _process_status(state).items():
        pid = f"pid {records[name].pid}" if name in records else "no pid file"
        lines.append(f"  {name:<24} {'running' if alive else 'NOT running'} ({pid})")
    lines.append("cluster is " + ("UP" if _is_up(state) else "DOWN"))
    return "\n".join(lines)


def _stop_all(state: paths.StatePaths) -> None:
    records = processes.read_records(state.pids)
    left: list[processes.ProcessRecord] = []
    # Reverse dependency order: each tier exits cleanly while what it talks to still runs (an
    # apiserver whose etcd is gone, or an etcd with live clients, stalls its own shutdown).
    for tier, grace in STOP_TIERS:
        left += processes.stop([r for r in records if r.name in tier], grace=grace)
    left += processes.stop([r for r in records if not any(r.name in t for t, _ in STOP_TIERS)])
    # Whatever a pid file missed (a crash between start and record, a pod process whose executor
    # died): anything still carrying our owner mark.
    strays = processes.sweep(state.root)
    left += processes.stop(strays)
    left += processes.sweep(state.root)
    if left:
        pids = ", ".join(f"{r.name} ({r.pid})" for r in left)
        raise ClusterError(f"processes of the local cluster survived SIGKILL: {pids}")
    processes.wait_reaped([*records, *strays])
    for pid_file in state.pids.glob("*.pid") if state.pids.is_dir() else ():
        pid_file.unlink()
    state.state_file.unlink(missing_ok=True)


def _fresh_state(state: paths.StatePaths) -> None:
    """A clean slate for a new cluster; the previous run's logs are kept in `logs.previous`."""
    previous = state.root / "logs.previous"
    if state.logs.exists():
        shutil.rmtree(previous, ignore_errors=True)
        state.logs.rename(previous)
    for stale in (state.etcd_data, state.pids, state.executor, state.kubeconfigs):
        shutil.rmtree(stale, ignore_errors=True)
    state.pod_logs.mkdir(parents=True)
    state.etcd_data.mkdir(mode=0o700)


def _component_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)  # every component gets its kubeconfig by flag, never implicitly
    return env


def _start(state: paths.StatePaths, bin_dir: Path, timeout: float) -> Cluster:
    began = time.monotonic()
    _fresh_state(state)
    lay = cp.Layout(bin_dir, state, pki.ensure_pki(state.pki), cp.Ports.allocate())
    server = cp.apiserver_url(lay.ports)
    write_cert_kubeconfig(
        state.kubeconfig,
        server,
        lay.pki.ca_cert,
        lay.pki.client_cert(pki.ADMIN),
        lay.pki.client_key(pki.ADMIN),
    )
    for component, who in (
        ("controller-manager", pki.CONTROLLER_MANAGER),
        ("scheduler", pki.SCHEDULER),
    ):
        write_cert_kubeconfig(
            lay.kubeconfig_of(component),
            server,
            lay.pki.ca_cert,
            lay.pki.client_cert(who),
            lay.pki.client_key(who),
        )

    def remaining() -> float:
        return max(1.0, timeout - (time.monotonic() - began))

    def launch(
        name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> processes.ProcessRecord:
        return processes.start(
            name,
            argv,
            log_path=state.logs / f"{name}.log",
            pid_dir=state.pids,
            state_dir=state.root,
            env=env or _component_env(),
            cwd=paths.REPO_ROOT,
        )

    def await_healthy(
        name: str, record: processes.ProcessRecord, check: Callable[[], bool], what: str = ""
    ) -> None:
        try:
            wait_for(
                what or f"{name} to become healthy",
                check,
                timeout=remaining(),
                still_possible=lambda: processes.is_alive(record),
                diagnostics=lambda: log_tail(state.logs / f"{name}.log"),
            )
        except WaitError as exc:
            raise ClusterError(str(exc)) from None

    etcd = launch("etcd", cp.etcd_argv(lay))
    await_healthy("etcd", etcd, lambda: cp.etcd_healthy(lay))
    apiserver = launch("kube-apiserver", cp.apiserver_argv(lay))
    await_healthy("kube-apiserver", apiserver, lambda: cp.apiserver_ready(lay))
    kcm = launch("kube-controller-manager", cp.controller_manager_argv(lay))
    scheduler = launch("kube-scheduler", cp.scheduler_argv(lay))
    kwok = launch("kwok", cp.kwok_argv(lay))
    executor = _launch_executor(state, lay)
    await_healthy("kube-controller-manager", kcm, lambda: cp.controller_manager_healthy(lay))
    await_healthy("kube-scheduler", scheduler, lambda: cp.scheduler_healthy(lay))
    await_healthy("kwok", kwok, lambda: cp.kwok_healthy(lay))
    _await_executor(state, executor, remaining())

    api = Api(state.kubeconfig)
    try:
        nodes.create_nodes(api)
        await_healthy(
            "kwok", kwok, lambda: nodes.all_ready(api), "the fake nodes to be Ready and untainted"
        )
        await_healthy(
            "kube-controller-manager",
            kcm,
            lambda: _has_default_service_account(api),
            "the `default` ServiceAccount in namespace `default`",
        )
    finally:
        api.close()

    data = {"bin_dir": str(bin_dir), "server": server, "ports": lay.ports.as_dict()}
    state.state_file.write_text(json.dumps(data, indent=2) + "\n")
    return _handle(state, data)


def _launch_executor(state: paths.StatePaths, lay: cp.Layout) -> processes.ProcessRecord:
    env = _component_env()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(paths.REPO_ROOT / "hack"), env.get("PYTHONPATH", "")) if p
    )
    return processes.start(
        EXECUTOR,
        cp.executor_argv(lay),
        log_path=state.logs / f"{EXECUTOR}.log",
        pid_dir=state.pids,
        state_dir=state.root,
        env=env,
        cwd=paths.REPO_ROOT,
    )


def _await_executor(
    state: paths.StatePaths, record: processes.ProcessRecord, timeout: float
) -> None:
    ready_file = state.executor / EXECUTOR_READY_FILE
    try:
        wait_for(
            "the job-pod executor to watch pods",
            lambda: ready_file.read_text().strip() == str(record.pid),
            timeout=timeout,
            still_possible=lambda: processes.is_alive(record),
            diagnostics=lambda: log_tail(state.logs / f"{EXECUTOR}.log"),
        )
    except WaitError as exc:
        raise ClusterError(str(exc)) from None


def _has_default_service_account(api: Api) -> bool:
    try:
        api.get("/api/v1/namespaces/default/serviceaccounts/default")
    except ApiError:
        return False
    return True
