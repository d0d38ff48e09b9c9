"""A container's environment and command line, resolved the way the kubelet resolves them.

Order and rules follow the kubelet (`makeEnvironmentVariables`, `ExpandContainerCommandAndArgs`):
the `kubernetes` Service variables first, then `envFrom` (Secrets and ConfigMaps, with `prefix`),
then `env` in order (`value` with `$(VAR)` expansion against what is defined so far,
`valueFrom.secretKeyRef` / `configMapKeyRef` / `fieldRef`), and finally `$(VAR)` expansion of
`command` and `args` against the result. `$$` escapes, an undefined `$(VAR)` stays as written.

Guarantee: a missing Secret, ConfigMap or key that is not `optional` raises `ContainerConfigError`
with the kubelet's wording, and the container must not run (the kubelet reports
CreateContainerConfigError and retries). Nothing here talks to the API directly: objects come
through a `Lookup`, which keeps this module pure and easy to reason about.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

JSON = dict[str, Any]
# (kind, name) -> the object's decoded data, or None if it does not exist. kind: secret/configmap.
Lookup = Callable[[str, str], dict[str, str] | None]


class ContainerConfigError(Exception):
    """The container's configuration cannot be resolved (CreateContainerConfigError)."""


class NoCommandError(Exception):
    """The container has no `command`: its image's entrypoint would run, which we cannot know."""


def expand(text: str, *mappings: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":  # escaped operator
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:  # incomplete reference: kept as is
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    value = next((m[name] for m in mappings if name in m), f"$({name})")
                    out.append(value)
                    advance = close + 1
            else:  # a lone operator
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def decode_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """Secret `data` values (base64) as strings; undecodable bytes survive as surrogates."""
    return {
        k: base64.b64decode(v).decode("utf-8", "surrogateescape") for k, v in (data or {}).items()
    }


_KIND_WORDS = {"secret": "Secret", "configmap": "ConfigMap"}


def _source(lookup: Lookup, kind: str, name: str, optional: bool) -> dict[str, str] | None:
    data = lookup(kind, name)
    if data is None and not optional:
        raise ContainerConfigError(f'{kind} "{name}" not found')
    return data


def _label_map(values: Mapping[str, str]) -> str:
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: JSON, field_path: str) -> str:
    """A `fieldRef` value: the downward API fields the kubelet supports for env vars."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        return _label_map(meta.get(field_path.split(".")[1], {}) or {})
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


def resolve_env(
    pod: JSON, container: JSON, lookup: Lookup, base: Mapping[str, str]
) -> dict[str, str]:
    """The container's variables (`base` holds the Service variables, defined first)."""
    namespace = pod["metadata"]["namespace"]
    defined: dict[str, str] = dict(base)

    for source in container.get("envFrom", []) or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _source(lookup, kind, ref["name"], bool(ref.get("optional")))
            for name, value in (data or {}).items():
                if "=" not in prefix + name:
                    defined[prefix + name] = value

    for var in container.get("env", []) or []:
        name = var["name"]
        if "valueFrom" not in var:
            defined[name] = expand(var.get("value", ""), defined)
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            defined[name] = field_value(pod, value_from["fieldRef"]["fieldPath"])
            continue
        for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = value_from.get(key)
            if ref is None:
                continue
            optional = bool(ref.get("optional"))
            data = _source(lookup, kind, ref["name"], optional)
            if data is None:
                break
            if ref["key"] not in data:
                if optional:
                    break
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {_KIND_WORDS[kind]} "
                    f"{namespace}/{ref['name']}"
                )
            defined[name] = data[ref["key"]]
            break
        else:
            unsupported = ", ".join(sorted(value_from))
            raise ContainerConfigError(
                f"env {name}: valueFrom {unsupported} is not emulated by the local executor"
            )
    return defined


def command_line(container: JSON, env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded; the image's entrypoint is unknown here."""
    command = [expand(part, env) for part in container.get("command", []) or []]
    args = [expand(part, env) for part in container.get("args", []) or []]
    if not command:
        raise NoCommandError(
            "the local executor ignores images, so it needs an explicit `command` "
            "(the image's entrypoint is not known here)"
        )
    return command + args
