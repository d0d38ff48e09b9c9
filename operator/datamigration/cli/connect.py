"""Which cluster, context and namespace a CLI command talks to, resolved the way kubectl does.

Why not leave it to the Kubernetes client: the CLI needs the context's *namespace* as the default
for `-n` (the client does not expose it), and it must fail with one clear line when there is no
kubeconfig or the context does not exist, before any client code raises its own exceptions.
So the kubeconfig files are read here (YAML only, nothing is contacted) with kubectl's merge rules:
`--kubeconfig` alone, else every existing file in `$KUBECONFIG`, else `~/.kube/config`; the first
file that sets `current-context` wins, and so does the first definition of a context name.

The connection itself is made by `ClusterApi.from_kubeconfig` (the one adapter that imports the
client). Credentials are never read into this module's messages: errors name files, contexts
and servers only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from datamigration.cli.errors import CliError

if TYPE_CHECKING:
    from datamigration.k8s.cluster import ClusterApi

DEFAULT_KUBECONFIG = "~/.kube/config"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Target:
    """Where commands go: kubeconfig files (empty: in-cluster), context, namespace, server."""

    files: tuple[Path, ...]
    context: str | None
    namespace: str
    server: str = ""

    @property
    def where(self) -> str:
        """`the API server at <url> (context "x")`, for error messages."""
        text = f"the Kubernetes API server at {self.server}" if self.server else "the cluster"
        return f'{text} (context "{self.context}")' if self.context else text


def kubeconfig_files(flag: str | None, env: Mapping[str, str]) -> tuple[list[Path], str]:
    """The kubeconfig files to merge, and how they were chosen (for the error message)."""
    if flag:
        return [Path(flag).expanduser()], f"--kubeconfig {flag}"
    listed = env.get("KUBECONFIG", "")
    if listed:
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        return paths, f"KUBECONFIG={listed}"
    return [Path(DEFAULT_KUBECONFIG).expanduser()], DEFAULT_KUBECONFIG


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        # Only the problem and the line: the YAML snippet could contain a credential.
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise CliError(f"cannot read kubeconfig {path}: {problem}{line}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise CliError(f"cannot read kubeconfig {path}: not a kubeconfig (expected a mapping)")
    return data


def _named(entries: object) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            body = entry.get("context") or entry.get("cluster") or {}
            found.setdefault(entry["name"], body if isinstance(body, Mapping) else {})
    return found


def _public_url(server: str) -> str:
    """The server URL without any `user:password@` part."""
    try:
        parts = urlsplit(server)
    except ValueError:
        return ""
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def resolve(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    env: Mapping[str, str],
) -> Target:
    """The target of a command from its global flags and the environment."""
    candidates, origin = kubeconfig_files(kubeconfig, env)
    files = [p for p in candidates if p.is_file()]
    if not files:
        if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST") and not context:
            return Target((), None, namespace or _service_account_namespace())
        raise CliError(
            f"no kubeconfig: {origin} does not exist",
            "point KUBECONFIG or --kubeconfig at the kubeconfig of your cluster",
        )
    current: str | None = None
    contexts: dict[str, Mapping[str, Any]] = {}
    clusters: dict[str, Mapping[str, Any]] = {}
    for path in files:
        data = _read(path)
        if current is None and data.get("current-context"):
            current = str(data["current-context"])
        for name, body in _named(data.get("contexts")).items():
            contexts.setdefault(name, body)
        for name, body in _named(data.get("clusters")).items():
            clusters.setdefault(name, body)
    chosen = context or current
    if not chosen:
        raise CliError(
            f"no current context in {', '.join(map(str, files))}",
            "pass --context NAME or run `kubectl config use-context NAME`",
        )
    if chosen not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise CliError(f'context "{chosen}" not found in kubeconfig (contexts: {known})')
    body = contexts[chosen]
    server = str((clusters.get(str(body.get("cluster"))) or {}).get("server") or "")
    return Target(
        files=tuple(files),
        context=chosen,
        namespace=namespace or str(body.get("namespace") or "default"),
        server=_public_url(server),
    )


def _service_account_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def connect(target: Target) -> ClusterApi:
    """A `ClusterApi` for the target; a kubeconfig the client rejects is one `CliError` line."""
    from datamigration.k8s.cluster import ClusterApi

    try:
        if not target.files:
            return ClusterApi()
        return ClusterApi.from_kubeconfig(os.pathsep.join(map(str, target.files)), target.context)
    except Exception as exc:  # the client raises its own ConfigException and friends
        raise CliError(f"cannot use the kubeconfig: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*(.+?)['\")]*$")


def unreachable(target: Target, exc: BaseException) -> CliError:
    """The one line for a network failure (refused, timeout, TLS, DNS) talking to the API."""
    reason: object = getattr(exc, "reason", None) or exc
    text = " ".join(str(reason).split()) or type(exc).__name__
    errno = _ERRNO.search(text)
    if errno:
        text = errno.group(1)
    elif "timed out" in text.lower():
        text = "timed out"
    elif "certificate" in text.lower():
        text = "TLS certificate verification failed"
    return CliError(f"cannot reach {target.where}: {text}")
