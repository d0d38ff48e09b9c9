"""Wires the leader election (`k8s.leader`) into the running operator.

What it guarantees: the reconciler's fence is the elector's `fence_ok`, so a standby and a
leader past its renew deadline write nothing; becoming the leader enqueues every migration (a
full resync, so those that waited while another process led are picked up); losing the lease
exits the process at once with status 1, so Kubernetes restarts it as a fresh standby. Who leads
is visible in the operator's log, the `datamigration_leader` metric and an Event on the Lease
(`LeaderElected`); the DataMigrations' status shows nothing of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from datamigration.controller import metrics
from datamigration.controller.reconciler import Reconciler
from datamigration.controller.settings import OperatorSettings
from datamigration.k8s.cluster import ClusterLeaseApi
from datamigration.k8s.leader import LeaderElector, LeaseConfig, new_identity

log = logging.getLogger(__name__)
EXIT_LOST_LEASE = 1


def start(
    reconciler: Reconciler,
    settings: OperatorSettings,
    loop: asyncio.AbstractEventLoop,
    health: metrics.Health | None = None,
) -> LeaderElector | None:
    """Start electing (None: leader election is off, this process always acts)."""
    if not settings.leader_election:
        metrics.LEADER.set(1)
        if health is not None:
            health.leader = lambda: True
        return None
    # Each Lease call is bounded well inside the renew deadline: a hung API fails a renew in
    # time rather than holding the elector past it.
    leases = ClusterLeaseApi(timeout=settings.renew_deadline / 4)
    config = LeaseConfig(
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=new_identity(os.environ.get("POD_NAME")),
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
    )

    def started() -> None:
        metrics.LEADERSHIP_ACQUIRED.inc()
        asyncio.run_coroutine_threadsafe(reconciler.resync(), loop)
        try:
            leases.post_lease_event(
                config.namespace,
                config.name,
                "LeaderElected",
                f"{elector.identity} became the leader (lease transitions: {elector.transitions})",
            )
        except Exception as exc:  # a courtesy: the log and the metric say it too
            log.warning("could not post the LeaderElected Event: %s", exc)

    def lost() -> None:
        # Nothing more is written by this process: the fence is already closed. No Event
        # either (the next leader's LeaderElected says it); exit so Kubernetes restarts us.
        log.error(
            "leader election: %s lost the lease; exiting with status %d",
            elector.identity,
            EXIT_LOST_LEASE,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_LOST_LEASE)

    elector = LeaderElector(leases, config, on_started=started, on_lost=lost)
    reconciler.fence = elector.fence_ok
    metrics.LEADER.set_function(lambda: 1.0 if elector.fence_ok() else 0.0)
    metrics.LEASE_TRANSITIONS.set_function(lambda: float(elector.transitions))
    if health is not None:
        health.leader = elector.fence_ok
    log.info(
        "leader election on Lease %s/%s as %s (lease %gs, renew deadline %gs, retry %gs)",
        config.namespace,
        config.name,
        elector.identity,
        config.lease_duration,
        config.renew_deadline,
        config.retry_period,
    )
    elector.start()
    return elector
