"""Progress the operator can show, and the pause signal it carries back.

Why: a backfill of a big table runs for minutes or hours; `kubectl get datamigration` should say
how far it is, and a person must be able to stop it at a safe point. The runner merge-patches the
DataMigration's status subresource with `{"status": {"progress": {...}}}` (field names declared by
the CRD) at most every `interval` seconds and at the end of every step. The API answers with the
whole object; if its `spec.paused` is true the caller stops after the batch it just committed.

Reporting is best effort and never slows the batches down: patches go out on a background thread,
an API error is one warning line and the work goes on. No `report` target in the plan means
log-only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from datamigration.runner.plan import ReportTarget

log = logging.getLogger(__name__)

#: Default minimum seconds between two progress patches (the end of a step always reports).
DEFAULT_INTERVAL_SECONDS = 2.0
#: Timeout of one patch request.
PATCH_TIMEOUT_SECONDS = 5.0
#: How long a forced report (start, end of a step) may hold the runner.
FORCED_WAIT_SECONDS = 10.0
#: While reports keep failing, at most one warning line per this many seconds.
WARN_EVERY_SECONDS = 60.0

JSON = dict[str, Any]
Patcher = Callable[[str, JSON], JSON]


@dataclass(frozen=True)
class Progress:
    """A snapshot of the phase's progress; `to_status()` is the CRD's `status.progress`."""

    phase: str
    step: str
    step_index: int  # 1-based
    step_count: int
    rows_done: int = 0
    rows_estimated: int = 0
    percent: int = 0
    rows_per_second: int = 0
    batch_size: int = 0
    summary: str = ""
    lock_retries: int = 0  # lock-timeout retries in this run (all steps so far)

    def to_status(self, now: datetime) -> JSON:
        return {
            "phase": self.phase,
            "step": self.step,
            "stepIndex": self.step_index,
            "stepCount": self.step_count,
            "rowsDone": self.rows_done,
            "rowsEstimated": self.rows_estimated,
            "percent": max(0, min(100, self.percent)),
            "rowsPerSecond": self.rows_per_second,
            "batchSize": self.batch_size,
            "summary": self.summary,
            "lockRetries": self.lock_retries,
            "updatedAt": rfc3339(now),
        }


def rfc3339(moment: datetime) -> str:
    """UTC, second precision, `Z` suffix: what Kubernetes itself writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def step_summary(phase: str, step_index: int, step_count: int) -> str:
    return f"{phase} step {step_index}/{step_count}"


def backfill_summary(phase: str, percent: int, rows_done: int, rows_estimated: int) -> str:
    return f"{phase} {percent}% {rows_done}/{rows_estimated} rows"


class Reporter(Protocol):
    def report(self, progress: Progress, *, force: bool = False) -> bool:
        """Publish `progress` (throttled unless `force`); True when the migration is paused."""
        ...

    def close(self) -> None:
        """Deliver what is in flight (bounded wait)."""
        ...


class LogOnlyReporter:
    """No report target: progress lives in the log only, and nothing can pause the run."""

    def report(self, progress: Progress, *, force: bool = False) -> bool:
        del progress, force
        return False

    def close(self) -> None:
        pass


class StatusReporter:
    """Merge-patches `status.progress` of one DataMigration; reads `spec.paused` back.

    The batch loop never waits for the API: a throttled report is sent on a background thread,
    and skipped if the previous one is still in flight. Forced reports (the start, the end of
    each step) wait for delivery, at most `FORCED_WAIT_SECONDS`. The pause flag is the one from
    the latest answer. Failures log one warning, then at most one per `WARN_EVERY_SECONDS` while
    they last.
    """

    def __init__(
        self,
        target: ReportTarget,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        patcher: Patcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.interval = interval
        self._patcher = patcher
        self._clock = clock
        self._last_sent: float | None = None
        self._in_flight: threading.Thread | None = None
        self._paused = False
        self._disabled = False
        self._failing_since_warning: float | None = None
        self._failures = 0

    def report(self, progress: Progress, *, force: bool = False) -> bool:
        if self._disabled:
            return False
        now = self._clock()
        busy = self._in_flight is not None and self._in_flight.is_alive()
        if not force and (
            busy or (self._last_sent is not None and now - self._last_sent < self.interval)
        ):
            return self._paused
        if force:
            self._wait_in_flight()
        self._last_sent = now
        body = {"status": {"progress": progress.to_status(datetime.now(UTC))}}
        thread = threading.Thread(target=self._send, args=(body,), daemon=True)
        self._in_flight = thread
        thread.start()
        if force:
            self._wait_in_flight()
        return self._paused

    def close(self) -> None:
        self._wait_in_flight()

    def _wait_in_flight(self) -> None:
        thread = self._in_flight
        if thread is not None:
            thread.join(FORCED_WAIT_SECONDS)
            if thread.is_alive():
                log.warning("progress report is taking long; the runner goes on without it")

    def _send(self, body: JSON) -> None:
        """Runs on the reporting thread."""
        try:
            patcher = self._patcher or self._connect()
            response = patcher(self._path(), body)
        except _ClientUnavailable as exc:
            self._disabled = True
            log.warning("progress reporting disabled: no Kubernetes credentials (%s)", exc)
            return
        except Exception as exc:  # best effort: any API or network error is a warning
            self._failed(exc)
            return
        if self._failures:
            log.info("progress reports work again after %d failure(s)", self._failures)
        self._failures, self._failing_since_warning = 0, None
        spec = response.get("spec") if isinstance(response, dict) else None
        self._paused = bool(isinstance(spec, dict) and spec.get("paused") is True)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        now = self._clock()
        last = self._failing_since_warning
        if last is None or now - last >= WARN_EVERY_SECONDS:
            self._failing_since_warning = now
            log.warning(
                "progress report to %s/%s failed (work continues): %s",
                self.target.namespace,
                self.target.name,
                _one_line(exc),
            )

    def _path(self) -> str:
        from datamigration.k8s.client import migration_path

        return migration_path(self.target.namespace, self.target.name, "status")

    def _connect(self) -> Patcher:
        from datamigration.k8s.client import KubeClient

        try:
            client = KubeClient()
        except Exception as exc:  # the kubernetes client raises its own config errors
            raise _ClientUnavailable(_one_line(exc)) from None

        def merge_patch(path: str, body: JSON) -> JSON:
            # KubeClient.merge_patch with a short timeout: a slow API must not hold the runner.
            return client.request(
                "PATCH",
                path,
                body=body,
                content_type="application/merge-patch+json",
                timeout=PATCH_TIMEOUT_SECONDS,
            )

        self._patcher = merge_patch
        return merge_patch


class _ClientUnavailable(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
