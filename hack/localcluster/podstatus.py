"""Pod status fragments as a kubelet reports them, for strategic-merge patches of `pods/status`.

Container `state` is a struct that a strategic merge would merge field by field, so every state
written here names all three members, the unused ones as null: a container is never left both
running and terminated.

The termination message follows `terminationMessagePolicy: FallbackToLogsOnError`: when the
container failed, the tail of its log (at most 80 lines and 2 KiB), as the kubelet does.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

MESSAGE_MAX_LINES = 80
MESSAGE_MAX_BYTES = 2048


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """A process's exit as a container runtime reports it: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _state(kind: str, detail: JSON) -> JSON:
    state: JSON = {"waiting": None, "running": None, "terminated": None}
    state[kind] = detail
    return state


def waiting(reason: str, message: str = "") -> JSON:
    detail = {"reason": reason} | ({"message": message} if message else {})
    return _state("waiting", detail)


def running(started_at: str) -> JSON:
    return _state("running", {"startedAt": started_at})


def terminated(
    code: int, started_at: str, finished_at: str, *, reason: str = "", message: str = ""
) -> JSON:
    detail: JSON = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if message:
        detail["message"] = message
    return _state("terminated", detail)


def container_status(
    container: JSON,
    state: JSON,
    *,
    ready: bool = False,
    restart_count: int = 0,
    last_state: JSON | None = None,
    container_id: str = "",
) -> JSON:
    status: JSON = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": state.get("running") is not None,
        "restartCount": restart_count,
        "state": state,
        "lastState": last_state or {"waiting": None, "running": None, "terminated": None},
    }
    if container_id:
        status["containerID"] = container_id
    return status


def condition(kind: str, true: bool, reason: str = "", message: str = "") -> JSON:
    cond: JSON = {"type": kind, "status": "True" if true else "False", "lastTransitionTime": now()}
    cond["reason"] = reason or None
    cond["message"] = message or None
    return cond


def log_tail_message(log_path: Path, offset: int) -> str:
    """The tail of what the container wrote since `offset`: the fallback termination message."""
    try:
        with log_path.open("rb") as log:
            # The answer is a suffix of at most MESSAGE_MAX_BYTES: read no more than that.
            log.seek(max(offset, log.seek(0, 2) - MESSAGE_MAX_BYTES))
            data = log.read()
    except OSError:
        return ""
    lines = data.splitlines(keepends=True)[-MESSAGE_MAX_LINES:]
    tail = b"".join(lines)[-MESSAGE_MAX_BYTES:]
    return tail.decode("utf-8", "replace")


def termination_message(container: JSON, code: int, log_path: Path, offset: int) -> str:
    if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        return log_tail_message(log_path, offset)
    return ""
