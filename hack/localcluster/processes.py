"""Starting, finding and stopping the cluster's long-running processes, by pid, never by name.

Each process starts in its own session (so it outlives `python -m localcluster up` and its group can
be signalled as a whole), writes stdout and stderr to one log file, and is recorded in a pid file
as `<pid> <start time>`: the start time (from /proc) guards against a recycled pid, so we never
signal a process that is not ours. Every process also carries `LOCALCLUSTER_OWNER=<state dir>` in
its environment (inherited by what it spawns, e.g. the executor's pod processes), which lets
`sweep` find ours even when a pid file is lost, and only ours.

Guarantee of `stop`: SIGTERM to each process group, a bounded wait, SIGKILL to what is left, then a
check that nothing is left; what survives SIGKILL is reported, not ignored.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OWNER_ENV = "LOCALCLUSTER_OWNER"

# Popen objects of the processes this Python process started, so they are reaped, not zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """One process we started: its name (pid-file stem), pid and kernel start time."""

    name: str
    pid: int
    start_time: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def start_time_of(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _reap(pid: int) -> None:
    # Only processes registered by `start`: reaping any other child (say, a pod process the
    # executor waits for, under a recycled pid) would steal its exit status.
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def is_alive(record: ProcessRecord) -> bool:
    """True if the recorded process still runs (a zombie or a recycled pid counts as gone)."""
    _reap(record.pid)
    fields = _stat_fields(record.pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == record.start_time


def owner_env(state_dir: Path) -> dict[str, str]:
    return {OWNER_ENV: str(state_dir)}


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_dir: Path,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    niceness: int = 0,
) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start `argv` in a new session, logging to `log_path`; record it in `<pid_dir>/<name>.pid`.
    A `niceness` above 0 lowers its CPU priority (and its children's) by that much.

    Raises OSError (e.g. FileNotFoundError) if the program cannot be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_dir.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ if env is None else env) | owner_env(state_dir)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    if niceness:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
    started = start_time_of(proc.pid)
    record = ProcessRecord(name, proc.pid, started if started is not None else -1)
    (pid_dir / f"{name}.pid").write_text(f"{record.pid} {record.start_time}\n")
    return record, proc


def start(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_dir: Path,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """`spawn` a long-running component; this Python process reaps it when it is stopped."""
    record, proc = spawn(
        name, argv, log_path=log_path, pid_dir=pid_dir, state_dir=state_dir, env=env, cwd=cwd
    )
    _children[proc.pid] = proc
    return record


def read_records(pid_dir: Path) -> list[ProcessRecord]:
    """Every process recorded in `pid_dir`, in start order."""
    records = []
    for path in pid_dir.glob("*.pid") if pid_dir.is_dir() else ():
        try:
            pid, started = path.read_text().split()
            records.append(ProcessRecord(path.stem, int(pid), int(started)))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: r.start_time)


def sweep(state_dir: Path) -> list[ProcessRecord]:
    """Every live process whose environment names `state_dir` as its owner (see module doc)."""
    marker = f"{OWNER_ENV}={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pid = int(entry.name)
            started = start_time_of(pid)
            if started is not None:
                record = ProcessRecord(f"pid-{pid}", pid, started)
                if is_alive(record):
                    found.append(record)
    return found


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    if not is_alive(record):
        return
    try:
        # Our processes lead their own session; signal the whole group so helpers go too.
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def kill(record: ProcessRecord) -> None:
    """SIGKILL at once (the process gets no chance to clean up)."""
    _signal(record, signal.SIGKILL)


def _wait_gone(records: Sequence[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    deadline = time.monotonic() + timeout
    while True:
        left = [r for r in records if is_alive(r)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def stop(records: Iterable[ProcessRecord], *, grace: float = 10.0) -> list[ProcessRecord]:
    """SIGTERM, wait up to `grace` seconds, SIGKILL; returns the processes still alive (none)."""
    records = list(records)
    for record in records:
        _signal(record, signal.SIGTERM)
    left = _wait_gone(records, grace)
    for record in left:
        _signal(record, signal.SIGKILL)
    return _wait_gone(left, 5.0)


def wait_reaped(records: Iterable[ProcessRecord], timeout: float = 10.0) -> list[ProcessRecord]:
    """Wait until dead processes have left the process table; returns the lingering zombies.

    A process whose starter has exited is reaped by init, which may take a moment: until then it
    shows up in `ps`/`pgrep` as <defunct>, though it runs no more.
    """
    records = list(records)
    deadline = time.monotonic() + timeout
    while True:
        for record in records:
            _reap(record.pid)
        left = [r for r in records if start_time_of(r.pid) == r.start_time]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, below the kernel's ephemeral range.

    A port the OS picks for `bind(0)` comes from the ephemeral range, the same range every
    outgoing connection takes its local port from: in the second or two before a server started
    on it binds, one of the suite's many client connections can take it (the operator then exits
    with "Address already in use"). Ports below that range are never given to outgoing
    connections, so only another listener can race us, and a random pick makes that rare.
    """
    low = _ephemeral_low()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # all taken: let the OS pick
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen


# Ports free_port gave to this process: two servers started back to back get two different ones.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
