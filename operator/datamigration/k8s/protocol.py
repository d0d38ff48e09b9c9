"""The operator's view of the API adapter, as a Protocol.

Why: the controller (observe, act, the reconciler) is typed against this, not against
`ClusterApi`, so its unit tests run against a fake of exactly these calls (tests/unit/
test_controller.py) while e2e tests run the real adapter against a real API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

JSON = dict[str, Any]


class EventSink(Protocol):
    """Where a migration's Events go: the API server (`OperatorApi`), or the operator's queue
    in front of it (`controller.events.EventPoster`)."""

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None: ...


class OperatorApi(EventSink, Protocol):
    """Every call the operator makes; `ClusterApi` implements it against the API server."""

    def get_migration(self, namespace: str, name: str) -> JSON | None: ...

    def list_migrations(
        self, namespace: str | None = None, workload: str | None = None
    ) -> list[JSON]: ...

    def patch_migration_status(
        self, namespace: str, name: str, status: JSON, resource_version: str | None = None
    ) -> JSON: ...

    def list_jobs(self, namespace: str, selector: str) -> list[JSON]: ...

    def create_job(self, manifest: JSON) -> JSON: ...

    def delete_job(self, namespace: str, name: str) -> None: ...

    def list_pods(self, namespace: str, selector: str) -> list[JSON]: ...

    def get_deployment(self, namespace: str, name: str) -> JSON | None: ...

    def list_replicasets(self, namespace: str, selector: str) -> list[JSON]: ...

    def set_container_image(
        self, namespace: str, name: str, container: str, image: str, kind: str = "Deployment"
    ) -> None: ...

    def get_workload(self, namespace: str, kind: str, name: str) -> JSON | None: ...

    def list_controller_revisions(self, namespace: str, selector: str) -> list[JSON]: ...

    def secret_key_names(self, namespace: str, name: str) -> tuple[str, ...] | None: ...

    def ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None: ...
