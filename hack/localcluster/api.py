"""A small JSON client for the local cluster's apiserver, built from an explicit kubeconfig.

Test infrastructure talks to the API in plain dicts through the `kubernetes` client's transport,
independent of the product's adapter (so the harness keeps working while the product evolves) and
without touching the process-wide default configuration.

Guarantees: API errors surface as `ApiError` with the HTTP status, reason and message; `watch`
yields `(type, object)` pairs from one watch request and ends when the server closes it; a 410
(expired resourceVersion) surfaces as `ApiError(status=410)` so callers can relist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclass
class ApiError(Exception):
    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"


def _error(exc: ApiException) -> ApiError:
    reason, message = str(exc.reason or ""), str(exc.body or "")
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or message
    except (TypeError, ValueError):
        pass
    return ApiError(int(exc.status or 0), reason, message)


class Api:
    """Raw JSON calls: `get`, `create`, `patch`, `delete`, `watch`."""

    def __init__(self, kubeconfig: Path, *, pool_size: int = 8) -> None:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = pool_size
        self.api_client = client.ApiClient(configuration)

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = 30.0,
    ) -> Any:
        """The raw urllib3 response of a successful call (content not read yet)."""
        _, url, headers, serialized, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(
                method, url, header_params=headers, body=serialized, _request_timeout=timeout
            )
        except ApiException as exc:
            raise _error(exc) from None
        if not 200 <= int(response.status) < 300:
            raw = response.response.data or b""
            raise _error(
                ApiException(status=response.status, reason=response.reason, body=raw.decode())
            )
        return response.response

    def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        raw = self._call(method, path, **kwargs).data
        decoded: JSON = json.loads(raw) if raw else {}
        return decoded

    def get(self, path: str, **query: str) -> JSON:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: JSON, *, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(
        self, path: str, *, grace_seconds: int | None = None, uid: str | None = None
    ) -> JSON:
        body: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if uid is not None:  # only this incarnation of the object, never a namesake
            body["preconditions"] = {"uid": uid}
        return self.request("DELETE", path, body=body)

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300, **query: str
    ) -> Iterator[tuple[str, JSON]]:
        """One watch request from `resource_version`; yields events until the server ends it."""
        params = query | {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        response = self._call("GET", path, query=params, timeout=(10.0, timeout_seconds + 30.0))
        try:
            buffer = b""
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object", {})
                        raise ApiError(
                            int(status.get("code", 500)),
                            str(status.get("reason", "")),
                            str(status.get("message", "")),
                        )
                    yield str(event["type"]), event["object"]
        finally:
            response.release_conn()
