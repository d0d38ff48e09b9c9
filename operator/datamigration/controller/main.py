"""`datamigration-operator`: run the operator against the current kubeconfig or in-cluster.

Several replicas may run (the chart runs two): they elect a leader on a Lease
(controller/leadership.py) and only the leader acts; the others keep their watches warm. kopf
runs standalone (no kopf peering: our own election fences every write instead). /metrics,
/livez and /readyz are served on DATAMIGRATION_METRICS_PORT (controller/metrics.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from datamigration import __version__
from datamigration.controller import gcpolicy, kopf_scale, metrics
from datamigration.controller.settings import OperatorSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datamigration-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--liveness",
        default="",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings.from_env()  # fail fast, before connecting anywhere
    except SettingsError as exc:
        print(f"datamigration-operator: {exc}", file=sys.stderr)
        return 2

    import datamigration.controller.handlers  # noqa: F401  (registers the handlers)
    from datamigration.k8s.cluster import ClusterLeaseApi

    metrics.install()
    memo = kopf.Memo()
    if settings.metrics_port:
        health = metrics.Health(settings.api_liveness_bound, ClusterLeaseApi(timeout=5.0).ping)
        metrics.serve(settings.metrics_port, health)
        memo["health"] = health

    kopf.configure(verbose=args.verbose, log_prefix=False)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every handler and index call on every event at INFO ("Handler ... succeeded"):
        # thousands of lines a minute with many migrations, and no news. Failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf_scale.install()  # before kopf creates its toggle sets
    kopf_scale.lean_bodies()
    gcpolicy.after_imports()
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=args.liveness or None,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
