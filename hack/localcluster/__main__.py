"""`python -m localcluster up|down|status|env`: the local cluster from the command line.

`up` prints how to use the cluster (the `export PATH=... KUBECONFIG=...` line that puts its
kubectl, helm and the `kubectl datamigration` plugin in a shell) and exits 0 once it works (it
returns at once if it already does); `env` prints only that line; `down` exits 0 once no process
of ours is left; `status` exits 0 only if the cluster is up.
Failures print the reason (and where the logs are) and exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time

from localcluster import cluster
from localcluster.paths import MissingBinariesError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            began = time.monotonic()
            handle = cluster.ensure_up()
            print(f"local cluster up in {time.monotonic() - began:.1f}s: {handle.server}")
            print("  kubectl, helm and kubectl-datamigration for this shell (also `make env`):")
            print(f"  {cluster.env_lines()}")
            print(f"  logs: {handle.logs_dir}   binaries: {handle.bin_dir}")
            return 0
        if args.command == "env":
            print(cluster.env_lines())
            return 0
        if args.command == "down":
            cluster.down()
            print("local cluster down: no process of ours left")
            return 0
        print(cluster.status())
        return 0 if cluster.is_up() else 1
    except (MissingBinariesError, cluster.ClusterError) as exc:
        print(f"localcluster {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
