"""Kubeconfig files for the cluster's clients: certificate users and service-account tokens.

Credentials are embedded (`*-data`), so a kubeconfig stays valid when copied elsewhere; each file
is written atomically with mode 0600, since it holds a private key or a token.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "localcluster"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write(path: Path, server: str, ca_cert: Path, user: dict[str, Any], namespace: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    tmp.replace(path)
    return path


def write_cert_kubeconfig(
    path: Path, server: str, ca_cert: Path, client_cert: Path, client_key: Path
) -> Path:
    """A kubeconfig authenticating with a client certificate."""
    user = {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)}
    return _write(path, server, ca_cert, user, "default")


def write_token_kubeconfig(
    path: Path, server: str, ca_cert: Path, token: str, namespace: str
) -> Path:
    """A kubeconfig authenticating with a bearer token, defaulting to `namespace`."""
    return _write(path, server, ca_cert, {"token": token}, namespace)
