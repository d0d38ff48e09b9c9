"""Labels and annotations with a meaning in the local cluster, and its fixed network layout.

The test-only ones live under `localcluster.datamigration.dev/`: nothing in the product may set
them. `datamigration.dev/executor` is the product's own opt-in for its phase Jobs' pods.
"""

from __future__ import annotations

# Pods with this label are run by the job-pod executor (value "local"), never by KWOK's pod stages.
EXECUTOR_LABEL = "datamigration.dev/executor"
EXECUTOR_VALUE = "local"

# Running, containers running, but never Ready: a rollout of such a template never completes.
NEVER_READY_LABEL = "localcluster.datamigration.dev/never-ready"

# Deleted only when the grace period ends (at .metadata.deletionTimestamp), not at once.
HONOR_GRACE_PERIOD_ANNOTATION = "localcluster.datamigration.dev/honor-grace-period"

# Fake nodes KWOK manages: selected by this annotation.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
NODE_NAMES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")
NODE_IP_PREFIX = "172.31.0."  # node i has InternalIP 172.31.0.(10+i): distinct, never routed

HOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
