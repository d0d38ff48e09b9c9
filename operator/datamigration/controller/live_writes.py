"""Writes straight to the API server, for the adapters that wrap it for reads.

Why: the watch caches (`cache.CachedApi`) and the shared live reads
(`shared_reads.SharedReads`) each answer reads their own way, but neither ever changes a write:
both pass every write to the `live` API they wrap. One base keeps that passing-through in one
place, so an `OperatorApi` write added later reaches the API server from both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datamigration.k8s.protocol import JSON, OperatorApi


class LiveWrites:
    """Every write of `OperatorApi`, to `live`."""

    def __init__(self, live: OperatorApi) -> None:
        self.live = live

    def patch_migration_status(
        self, namespace: str, name: str, status: JSON, resource_version: str | None = None
    ) -> JSON:
        return self.live.patch_migration_status(namespace, name, status, resource_version)

    def create_job(self, manifest: JSON) -> JSON:
        return self.live.create_job(manifest)

    def delete_job(self, namespace: str, name: str) -> None:
        self.live.delete_job(namespace, name)

    def set_container_image(
        self, namespace: str, name: str, container: str, image: str, kind: str = "Deployment"
    ) -> None:
        self.live.set_container_image(namespace, name, container, image, kind)

    def ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None:
        self.live.ensure_runner_identity(namespace, account, cluster_role)

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        self.live.post_event(involved, type_, reason, message, name)
