"""Leader election on a `coordination.k8s.io/v1` Lease, and the fence every side effect passes.

Why our own and not `kubernetes.leaderelection`: the official client's elector runs callbacks
from a thread it owns, exposes no "is my lease still fresh *now*" check to fence a write with,
judges expiry from the Lease's wall-clock `renewTime` (clock skew between nodes decides who
leads), and keeps retrying after the renew deadline instead of stopping. What this module
guarantees, with controller-runtime's defaults (lease 15 s, renew deadline 10 s, retry 2 s):

- Acquire and renew are read-modify-write of the Lease with its `resourceVersion` as a
  precondition (a PUT of the object as read): of two candidates, one wins, the other gets 409.
  A leader renews with one PUT of the Lease as its last write returned it (no read first); a 409
  there means someone else wrote it, and a read decides. Past the renew deadline, no renew.
- Expiry of someone else's lease is judged on *our* monotonic clock, from the moment we first
  saw its current record (client-go's "observed time"), never from its timestamps.
- `fence_ok()` is true only while we hold the lease and our last successful renew *started*
  less than `renew_deadline` ago. Another candidate can take over no sooner than
  `lease_duration` after it last saw that renew, so between `renew_deadline` and
  `lease_duration` no two processes act (5 s of margin for a write already under way).
- A leader that cannot renew within the deadline reports the loss (`on_lost`); the operator
  exits on it, so Kubernetes restarts it as a fresh standby.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from datamigration.k8s.client import KubeError

log = logging.getLogger(__name__)
JSON = dict[str, Any]


class LeaseApi(Protocol):
    """The three Lease calls an elector makes (`ClusterLeaseApi` against the API server)."""

    def get_lease(self, namespace: str, name: str) -> JSON | None: ...

    def create_lease(self, namespace: str, body: JSON) -> JSON: ...

    def replace_lease(self, namespace: str, name: str, body: JSON) -> JSON: ...


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "datamigration-operator"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election: need lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} > {self.renew_deadline} > {self.retry_period}"
            )


def new_identity(pod_name: str | None = None) -> str:
    """Pod name (or host name) plus a random suffix: a restarted container is a new candidate."""
    return f"{pod_name or socket.gethostname()}_{secrets.token_hex(4)}"


def _micro_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: JSON | None) -> tuple[Any, ...]:
    """What changes on every write of the Lease (its resourceVersion does, whatever the clocks)."""
    spec = (lease or {}).get("spec") or {}
    return (
        spec.get("holderIdentity"),
        ((lease or {}).get("metadata") or {}).get("resourceVersion"),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseTransitions"),
    )


class LeaderElector:
    """One candidate. `step()` is one acquire-or-renew attempt; `run()` loops it in a thread."""

    def __init__(
        self,
        api: LeaseApi,
        config: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_started: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.api, self.config = api, config
        self.identity = config.identity or new_identity()
        self.clock, self.wall_clock = clock, wall_clock
        self.on_started, self.on_lost = on_started, on_lost
        self.transitions = 0  # leaseTransitions as last seen on the Lease
        self.lost = False
        self._leading = False
        self._last_renew = float("-inf")  # monotonic start of our last successful write
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = float("-inf")
        self._written: JSON | None = None  # the Lease as our last successful write returned it
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- the fence ------------------------------------------------------------------------------
    def fence_ok(self) -> bool:
        """True only while we lead and our last renew started less than the deadline ago."""
        with self._lock:
            return (
                self._leading
                and not self.lost
                and self.clock() - self._last_renew < self.config.renew_deadline
            )

    # -- one attempt ----------------------------------------------------------------------------
    def step(self) -> bool:
        """Try to acquire or renew once; True if we hold the lease after it. Never raises: any
        failure (an API error, a refused connection, a timeout: the client raises urllib3's own
        exceptions for those) is a failed attempt, so the loop and its deadline keep running."""
        started = self.clock()
        try:
            held = self._try(started)
        except Exception as exc:  # every failure is a failed attempt (see above)
            log.warning("leader election: %s: %s", type(exc).__name__, exc)
            held = False
        return self._settle(held, started)

    def _try(self, started: float) -> bool:
        cfg = self.config
        if self._leading and started - self._last_renew >= cfg.renew_deadline:
            return False  # too late to renew (paused, cut off): write nothing, step down
        now = _micro_time(self.wall_clock())
        own = self._written if self._leading else None
        if own is not None:
            # A leader renews the Lease as it last wrote it, without reading it first (one
            # request per renew, not two): the PUT carries our last resourceVersion, so if anyone
            # wrote the Lease since, it answers 409 and we read it and judge as below.
            spec = {**(own.get("spec") or {}), "renewTime": now}
            try:
                updated = self.api.replace_lease(cfg.namespace, cfg.name, {**own, "spec": spec})
            except KubeError as exc:
                if not exc.conflict:
                    raise
                self._written = None
            else:
                self._observe(updated, started)
                self._written = updated
                return True
        lease = self.api.get_lease(cfg.namespace, cfg.name)
        if lease is None:
            body: JSON = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": round(cfg.lease_duration),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = self.api.create_lease(cfg.namespace, body)
            except KubeError as exc:
                if exc.conflict:  # someone created it first
                    return False
                raise
            self._observe(created, started)
            self._written = created
            return True
        self._observe(lease, started)
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or ""
        expired = started - self._observed_at >= cfg.lease_duration
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now
        spec.update(
            holderIdentity=self.identity,
            renewTime=now,
            leaseDurationSeconds=round(cfg.lease_duration),
        )
        # The object as read (metadata.resourceVersion included): a PUT that answers 409 if
        # anyone wrote the Lease since.
        body = {**lease, "spec": spec}
        try:
            updated = self.api.replace_lease(cfg.namespace, cfg.name, body)
        except KubeError as exc:
            if exc.conflict:
                return False
            raise
        self._observe(updated, started)
        self._written = updated
        return True

    def _observe(self, lease: JSON, at: float) -> None:
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, at
        self.transitions = int(((lease.get("spec") or {}).get("leaseTransitions")) or 0)

    def _settle(self, held: bool, started: float) -> bool:
        started_leading = lost = False
        with self._lock:
            if self.lost:
                return False
            if self._leading:
                late = started - self._last_renew >= self.config.renew_deadline
                taken = (
                    not held
                    and self._observed is not None
                    and (self._observed[0] not in (None, "", self.identity))
                )
                stale = not held and self.clock() - self._last_renew >= self.config.renew_deadline
                # Past the deadline, even a renew that succeeds comes too late: the fence was
                # closed meanwhile and we promised to stop. Someone else holding it: at once.
                if late or taken or stale:
                    self.lost = lost = True
                    self._leading = False
            if held and not lost:
                self._last_renew = started
                if not self._leading:
                    self._leading = started_leading = True
        if started_leading:
            log.info("leader election: %s became leader", self.identity)
            try:
                self.on_started()
            except Exception:  # the election loop must outlive a failing callback
                log.exception("leader election: the on_started callback failed")
        if lost:
            log.error("leader election: %s lost the lease; acting stops now", self.identity)
            self.on_lost()
        return held and not lost

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Acquire, then renew every retry period until lost or stopped."""
        while not self._stop.is_set() and not self.lost:
            self.step()
            if self.lost:
                return
            self._stop.wait(self.config.retry_period)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """On a clean shutdown: stop, and hand the Lease back (holderIdentity emptied) so a
        standby takes over at its next retry instead of after the lease duration."""
        self.stop()
        if not self.fence_ok():
            return
        with self._lock:
            self._leading = False
        cfg = self.config
        try:
            lease = self.api.get_lease(cfg.namespace, cfg.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            self.api.replace_lease(cfg.namespace, cfg.name, {**lease, "spec": spec})
            log.info("leader election: %s released the lease", self.identity)
        except Exception as exc:  # best effort: the lease expires by itself anyway
            log.warning("leader election: could not release the lease: %s", exc)
