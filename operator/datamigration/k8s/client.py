"""Synchronous access to the Kubernetes API in plain JSON, for every caller in the project.

Why plain dicts: the pure core decides on the objects exactly as the API serves them, and the
client's generated models cost memory and CPU for no gain. Why synchronous: the runner and the
CLI are synchronous programs; the operator calls this from worker threads.

Guarantees: errors surface as `KubeError` carrying the HTTP status and the API's own `reason`
and message (which never contain credentials); the kubeconfig or service-account token is read
once, at construction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP = "datamigration.dev"
VERSION = "v1alpha1"
PLURAL = "datamigrations"

JSON = dict[str, Any]

#: Called once per API request with (verb, HTTP status; 0 when no answer came): the operator's
#: metrics count requests here (controller/metrics.py), the one place every request passes.
REQUEST_OBSERVERS: list[Callable[[str, int], None]] = []


def _observe(method: str, status: int) -> None:
    for observer in REQUEST_OBSERVERS:
        observer(method, status)


@dataclass
class KubeError(Exception):
    """An API call that failed, with the API's status code and message."""

    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _error(exc: ApiException) -> KubeError:
    reason, message = str(exc.reason or ""), ""
    try:
        raw = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
        body = json.loads(raw or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or ""
    except (TypeError, ValueError):
        message = ""
    return KubeError(status=int(exc.status or 0), reason=reason, message=message)


def load_api_client(connections: int | None = None) -> client.ApiClient:
    """An ApiClient from $KUBECONFIG (or ~/.kube/config), else the pod's service account.

    `connections`: how many connections the pool keeps for reuse; callers with more threads
    than the client's default (5 per core) pass their thread count, or every request above it
    would pay a new TLS handshake."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        # Passed explicitly: the client reads $KUBECONFIG once, when it is imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    if connections is not None:
        configuration.connection_pool_maxsize = max(
            connections, configuration.connection_pool_maxsize
        )
    return client.ApiClient(configuration)


class KubeClient:
    """Raw JSON calls against the API server: get, list, create, patch, delete."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_api_client()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        """One API call; returns the decoded JSON response."""
        method, url, headers, payload, post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(
                method,
                url,
                header_params=headers,
                body=payload,
                post_params=post,
                _request_timeout=timeout,
            )
            raw = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:  # transport-level failures
            _observe(method, int(exc.status or 0))
            raise _error(exc) from None
        except Exception:
            _observe(method, 0)
            raise
        _observe(method, int(response.status))
        if not 200 <= int(response.status) <= 299:
            raise _error(ApiException(status=response.status, reason=response.reason, body=raw))
        decoded: JSON = json.loads(raw) if raw else {}
        return decoded

    def get(self, path: str, **query: str) -> JSON:
        return self.request("GET", path, query=query or None)

    def list_items(self, path: str, **query: str) -> list[JSON]:
        items: list[JSON] = self.request("GET", path, query=query or None).get("items", [])
        return items

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def server_side_apply(self, path: str, body: JSON, *, field_manager: str) -> JSON:
        """`kubectl apply --server-side --force-conflicts`: create or update what `body` names."""
        return self.request(
            "PATCH",
            path,
            body=body,
            query={"fieldManager": field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    def watch(
        self, path: str, *, resource_version: str = "", timeout_seconds: int = 300, **query: str
    ) -> Iterator[tuple[str, JSON]]:
        """One API watch of a collection: (type, object) for each change the server sends, from
        `resource_version` (empty: the current objects first, as ADDED), with bookmarks, until
        the server ends it after `timeout_seconds`. A watch error the server reports (410 Gone
        when `resource_version` is too old) is raised as `KubeError`."""
        params = {**query, "watch": "true", "allowWatchBookmarks": "true"}
        params["timeoutSeconds"] = str(timeout_seconds)
        if resource_version:
            params["resourceVersion"] = resource_version
        method, url, headers, payload, post = self.api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list(params.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(
                method,
                url,
                header_params=headers,
                body=payload,
                post_params=post,
                _request_timeout=(30.0, timeout_seconds + 30.0),
            )
        except ApiException as exc:
            raise _error(exc) from None
        if not 200 <= int(response.status) <= 299:
            raw = response.read()  # type: ignore[no-untyped-call]
            raise _error(ApiException(status=response.status, reason=response.reason, body=raw))
        stream = response.response  # urllib3's response, not preloaded: read as it arrives
        buffer = b""
        try:
            for chunk in stream.stream(None):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj: JSON = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise KubeError(
                            status=int(obj.get("code") or 500),
                            reason=str(obj.get("reason") or ""),
                            message=str(obj.get("message") or ""),
                        )
                    yield str(event.get("type")), obj
        finally:
            stream.release_conn()

    def delete(self, path: str, *, propagation: str = "Background") -> JSON:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        return self.request("DELETE", path, body=body)


def migration_path(namespace: str, name: str = "", subresource: str = "") -> str:
    """The API path of DataMigrations in a namespace, one of them, or its subresource."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path
