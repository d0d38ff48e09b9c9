"""The cluster's fake Nodes: plain API objects that KWOK keeps Ready (status and Lease).

They carry no taint of their own, so every pod the product creates schedules without
tolerations; the apiserver adds `node.kubernetes.io/not-ready` on creation and the
controller-manager's node-lifecycle controller lifts it once KWOK reports the node Ready, which is
why `wait_ready` waits for both conditions.
"""

from __future__ import annotations

from typing import Any

from localcluster import names
from localcluster.api import Api, ApiError


def node_manifest(index: int) -> dict[str, Any]:
    name = names.NODE_NAMES[index]
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    addresses = [
        {"type": "InternalIP", "address": f"{names.NODE_IP_PREFIX}{10 + index}"},
        {"type": "Hostname", "address": name},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                names.KWOK_NODE_ANNOTATION: names.KWOK_NODE_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources, "addresses": addresses},
    }


def create_nodes(api: Api) -> None:
    for index in range(len(names.NODE_NAMES)):
        try:
            api.create("/api/v1/nodes", node_manifest(index))
        except ApiError as exc:
            if exc.status != 409:
                raise


def is_ready_and_untainted(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and not node.get("spec", {}).get("taints")


def all_ready(api: Api) -> bool:
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes").get("items", [])}
    return all(name in nodes and is_ready_and_untainted(nodes[name]) for name in names.NODE_NAMES)
