"""Builders of API objects (as plain dicts) for the pure-core tests.

They produce what the API server serves: a Deployment with its status, its ReplicaSets named
`<deployment>-<hash>` with revision annotations, and pods owned by them.
"""

from __future__ import annotations

import copy
from typing import Any

DEPLOY_UID = "dep-uid-1"


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid rename-column spec; `overrides` replace top-level keys."""
    base: dict[str, Any] = {
        "database": {"urlFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}}},
        "workload": {
            "kind": "Deployment",
            "name": "shop-api",
            "container": "api",
            "image": "shop-api:2.0",
        },
        "expand": {
            "steps": [{"name": "add-col", "sql": "ALTER TABLE users ADD COLUMN email_address text"}]
        },
        "backfill": {
            "steps": [
                {
                    "name": "copy",
                    "backfill": {"table": "users", "key": "id", "set": {"email_address": "email"}},
                }
            ]
        },
        "codeRollout": {"mode": "Apply", "timeoutSeconds": 600},
        "contract": {
            "approval": "Automatic",
            "verify": [
                {
                    "name": "copied",
                    "expect": 0,
                    "query": "SELECT count(*) FROM users WHERE email_address IS DISTINCT FROM email",
                }
            ],
            "steps": [{"name": "drop-old", "sql": "ALTER TABLE users DROP COLUMN email"}],
        },
    }
    base.update(overrides)
    return base


def with_contract(**fields: Any) -> dict[str, Any]:
    s = spec()
    s["contract"] = {**s["contract"], **fields}
    return s


def replicaset(hash_: str, revision: int, replicas: int, image: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"shop-api-{hash_}",
            "labels": {"app": "shop", "pod-template-hash": hash_},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"kind": "Deployment", "name": "shop-api", "uid": DEPLOY_UID}],
        },
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "api", "image": image}]}},
        },
    }


def pod(hash_: str, image: str, index: int, *, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"shop-api-{hash_}-{index}",
        "labels": {"app": "shop", "pod-template-hash": hash_},
        "ownerReferences": [{"kind": "ReplicaSet", "name": f"shop-api-{hash_}"}],
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-11-21T10:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "api", "image": image}]}}


class Cluster:
    """A Deployment's world at one moment: what the Deployment controller would show."""

    def __init__(self, image: str = "shop-api:1.0", replicas: int = 3) -> None:
        self.replicas = replicas
        self.revision = 1
        self.template_image = image
        self.rs = [replicaset("aaa", 1, replicas, image)]
        self.pods = [pod("aaa", image, i) for i in range(replicas)]
        self.status: dict[str, Any] = self._settled()
        self.generation = 1

    def _settled(self) -> dict[str, Any]:
        n = self.replicas
        return {
            "observedGeneration": 1,
            "replicas": n,
            "updatedReplicas": n,
            "availableReplicas": n,
            "readyReplicas": n,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ],
        }

    def deployment(self) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "shop-api",
                "uid": DEPLOY_UID,
                "generation": self.generation,
                "annotations": {"deployment.kubernetes.io/revision": str(self.revision)},
            },
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {
                    "spec": {"containers": [{"name": "api", "image": self.template_image}]}
                },
            },
            "status": copy.deepcopy(self.status),
        }

    def rolled_out(self, image: str, *, lingering: int = 0, old_rs_scaled: int = 0) -> Cluster:
        """The rollout to `image` finished; `lingering` old pods are still terminating."""
        self.generation += 1
        self.revision += 1
        self.template_image = image
        self.status = self._settled()
        self.status["observedGeneration"] = self.generation
        self.rs = [
            replicaset("aaa", 1, old_rs_scaled, "shop-api:1.0"),
            replicaset("bbb", self.revision, self.replicas, image),
        ]
        self.pods = [pod("bbb", image, i) for i in range(self.replicas)]
        self.pods += [pod("aaa", "shop-api:1.0", i, terminating=True) for i in range(lingering)]
        return self

    def rolling(self, image: str, updated: int, available: int) -> Cluster:
        self.rolled_out(image)
        self.status.update(
            updatedReplicas=updated,
            availableReplicas=available,
            replicas=self.replicas + (self.replicas - updated),
        )
        return self

    def deadline_exceeded(self, image: str) -> Cluster:
        self.rolling(image, updated=1, available=0)
        self.status["conditions"] = [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]
        return self
