"""The operator's Prometheus metrics, and the one HTTP server for /metrics, /livez and /readyz.

Why here and not in each module: every metric is defined once, with its help text, and
docs/reference.md ("Metrics") lists exactly these names (a unit test reads them from this
module). The values come from what the reconciler already decided and wrote (`record`), from
every API request (`k8s.client.REQUEST_OBSERVERS`) and from the leader election; no metric costs
an API call of its own. Migration metrics are reported by the leader (standbys reconcile
nothing); the API, leader and process metrics by every replica.

Liveness: the process is live while the API server answered a request less than
`api_liveness_bound` seconds ago (the leader election reads the Lease every retry period, so a
healthy process always has a recent answer; without election a probe asks `/version`).
Readiness: the operator has started (its watches are set up); a standby is ready.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from datamigration.core.rules import TERMINAL
from datamigration.k8s import client as kube_client

log = logging.getLogger(__name__)
Key = tuple[str, str]

MIGRATIONS = Gauge(
    "datamigration_migrations", "DataMigrations by phase (as last reconciled).", ["phase"]
)
PHASE_DURATION = Histogram(
    "datamigration_phase_duration_seconds",
    "Duration of finished phases (startedAt to finishedAt).",
    ["phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
STALLS = Counter(
    "datamigration_stalls_total", "Transitions into Stalled, by the condition's reason.", ["reason"]
)
BACKFILL_ROWS_DONE = Gauge(
    "datamigration_backfill_rows_done", "Rows the backfill has done.", ["namespace", "name"]
)
BACKFILL_ROWS_PER_SECOND = Gauge(
    "datamigration_backfill_rows_per_second", "The backfill's rate.", ["namespace", "name"]
)
BACKFILL_ROWS_REMAINING = Gauge(
    "datamigration_backfill_rows_remaining",
    "Rows estimated minus rows done (from the runner's status.progress).",
    ["namespace", "name"],
)
RECONCILE_DURATION = Histogram(
    "datamigration_reconcile_duration_seconds",
    "Duration of one observe/decide/act reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("datamigration_queue_depth", "Migrations with a reconcile running or pending.")
API_REQUESTS = Counter(
    "datamigration_api_requests_total",
    "Kubernetes API requests by verb and HTTP code (0: no answer).",
    ["verb", "code"],
)
LEADER = Gauge("datamigration_leader", "1 while this process holds the Lease and may act.")
LEASE_TRANSITIONS = Gauge(
    "datamigration_lease_transitions", "leaseTransitions of the Lease, as this process saw it."
)
LEADERSHIP_ACQUIRED = Counter(
    "datamigration_leadership_acquired_total", "Times this process became the leader."
)

_lock = threading.Lock()
_phases: dict[Key, str] = {}
#: How many migrations are in each phase, kept as `_phases` changes (counting them all on every
#: reconcile was quadratic in the number of migrations); a phase left empty stays, at 0.
_phase_counts: dict[str, int] = {}
#: The migrations with backfill series, removed when their backfill ends (`_forget_backfill`).
_backfill_keys: set[Key] = set()
_last_api_answer = {"at": time.monotonic()}


def _on_request(verb: str, code: int) -> None:
    API_REQUESTS.labels(verb=verb, code=str(code)).inc()
    if code:
        _last_api_answer["at"] = time.monotonic()


def install() -> None:
    """Count API requests (once per process)."""
    if _on_request not in kube_client.REQUEST_OBSERVERS:
        kube_client.REQUEST_OBSERVERS.append(_on_request)


def seconds_since_api_answer() -> float:
    return time.monotonic() - _last_api_answer["at"]


def _time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _stalled_reason(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return str(condition.get("reason") or "")
    return None


def record(key: Key, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """What one reconcile changed: phase counts, finished phases, new stalls, backfill rows.
    `before` is the status as read, `after` as written (the same when nothing changed)."""
    _set_phase(key, str(after.get("phase") or "Pending"))
    old_phases = before.get("phases") or {}
    for name, info in (after.get("phases") or {}).items():
        if not isinstance(info, Mapping) or (old_phases.get(name) or {}).get("finishedAt"):
            continue
        start, end = _time(info.get("startedAt")), _time(info.get("finishedAt"))
        if start and end:
            PHASE_DURATION.labels(phase=name).observe(max(0.0, (end - start).total_seconds()))
    reason = _stalled_reason(after)
    if reason is not None and reason != _stalled_reason(before):
        STALLS.labels(reason=reason).inc()
    # The runner owns most progress keys; the operator's decision carries only some of them.
    progress = {**(before.get("progress") or {}), **(after.get("progress") or {})}
    backfill_over = bool(((after.get("phases") or {}).get("backfill") or {}).get("finishedAt"))
    if backfill_over or after.get("phase") in TERMINAL:
        # A backfill's series end with it (as kube-state-metrics' end with their object): a
        # finished one's last rate is no rate, and a thousand finished migrations would keep
        # three series each.
        _forget_backfill(key)
    elif progress.get("phase") == "backfill" and "rowsDone" in progress:
        done = float(progress.get("rowsDone") or 0)
        with _lock:
            _backfill_keys.add(key)
        BACKFILL_ROWS_DONE.labels(*key).set(done)
        BACKFILL_ROWS_PER_SECOND.labels(*key).set(float(progress.get("rowsPerSecond") or 0))
        estimated = float(progress.get("rowsEstimated") or 0)
        BACKFILL_ROWS_REMAINING.labels(*key).set(max(0.0, estimated - done))


def _set_phase(key: Key, phase: str | None) -> None:
    """Move one migration to `phase` (None: forget it) and publish the two counts it changes."""
    with _lock:
        old = _phases.pop(key, None)
        if phase is not None:
            _phases[key] = phase
        if old == phase:
            return
        changed = {}
        for name, step in ((old, -1), (phase, 1)):
            if name is not None:
                _phase_counts[name] = _phase_counts.get(name, 0) + step
                changed[name] = _phase_counts[name]
    for name, count in changed.items():
        MIGRATIONS.labels(phase=name).set(count)


def forget(key: Key) -> None:
    _set_phase(key, None)
    _forget_backfill(key)


def _forget_backfill(key: Key) -> None:
    with _lock:
        if key not in _backfill_keys:
            return
        _backfill_keys.discard(key)
    for gauge in (BACKFILL_ROWS_DONE, BACKFILL_ROWS_PER_SECOND, BACKFILL_ROWS_REMAINING):
        with contextlib.suppress(KeyError):
            gauge.remove(*key)


# -- the HTTP server -----------------------------------------------------------------------------
class Health:
    """What the probes report; the operator fills it in as it starts and elects."""

    def __init__(self, api_liveness_bound: float, ping: Callable[[], None]) -> None:
        self.api_liveness_bound = api_liveness_bound
        self.ping = ping
        self.started = False
        self.leader: Callable[[], bool] = lambda: False

    def live(self) -> tuple[bool, str]:
        if seconds_since_api_answer() < self.api_liveness_bound:
            return True, "ok"
        try:  # quiet for a while (no election traffic): ask the API server once
            self.ping()
        except Exception as exc:
            return (
                False,
                f"no answer from the API server for {seconds_since_api_answer():.0f}s: {exc}",
            )
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self.started else (False, "starting")


def serve(
    port: int,
    health: Health,
    host: str = "0.0.0.0",  # noqa: S104  (in a pod: the kubelet and Prometheus use the pod IP)
) -> ThreadingHTTPServer:
    """/metrics, /livez and /readyz on `port`, from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                return
            probes = {"/livez": health.live, "/readyz": health.ready}
            if self.path not in probes:
                self._send(404, b"not found\n", "text/plain")
                return
            ok, why = probes[self.path]()
            body = json.dumps({"ok": ok, "reason": why, "leader": health.leader()}).encode()
            self._send(200 if ok else 503, body, "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the operator's log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("serving /metrics, /livez and /readyz on port %d", server.server_address[1])
    return server
