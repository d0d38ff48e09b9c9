"""Polling with a deadline: the only way the harness waits (never a fixed sleep).

`wait_for` polls a condition until it holds, and fails early if a `still_possible` check says it
never will (e.g. the process that should become healthy has died), with a message naming what was
awaited and, if given, a diagnostic such as the tail of the component's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


class WaitError(RuntimeError):
    """A condition did not hold in time, or became impossible."""


def wait_for(
    what: str,
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    still_possible: Callable[[], bool] | None = None,
    diagnostics: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # noqa: S110 - not ready yet is an ordinary outcome while polling
            pass
        failed = still_possible is not None and not still_possible()
        if failed or time.monotonic() >= deadline:
            reason = "it can no longer happen" if failed else f"{timeout:.0f}s passed"
            detail = f"\n{diagnostics()}" if diagnostics else ""
            raise WaitError(f"gave up waiting for {what}: {reason}{detail}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)
