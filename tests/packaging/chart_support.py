"""Rendering the Helm chart in tests: the pinned helm binary, `helm template`, and RBAC rules as
sets of single grants, so tests compare what a chart grants with what the code needs."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "datamigration-operator"
CRD_SOURCE = REPO / "crds" / "datamigrations.datamigration.dev.yaml"
CRD_CHART_COPY = CHART / "files" / "crds" / CRD_SOURCE.name
RELEASE, NAMESPACE = "dm", "dm-system"
#: The values of namespaced mode the tests render.
NAMESPACED = ("--set", "watchNamespaces={team-a,team-b}")


@functools.cache
def bin_dir() -> Path:
    """The directory of the pinned helm and kubectl (hack/build-cluster-bins.sh's last line)."""
    script = REPO / "hack" / "build-cluster-bins.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{script} failed ({proc.returncode}); it builds helm and kubectl: {proc.stderr[-2000:]}"
        )
    return Path(lines[-1])


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; with check, a failure raises with helm's own message."""
    proc = subprocess.run(
        [str(bin_dir() / "helm"), *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


@functools.cache
def render_text(*args: str, release: str = RELEASE, namespace: str = NAMESPACE) -> str:
    """`helm template` output for these extra arguments (cached: rendering takes ~0.1 s)."""
    return helm("template", release, str(CHART), "--namespace", namespace, *args).stdout


def render(*args: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The rendered documents, parsed."""
    text = render_text(*args, release=release, namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Any]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> Any:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource (of one API group), optionally on one named object."""

    group: str
    resource: str
    verb: str
    name: str = ""

    def __str__(self) -> str:
        where = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {where}" + (f"/{self.name}" if self.name else "")


def grants(rules: Sequence[Mapping[str, Any]]) -> set[Grant]:
    """A Role's or ClusterRole's rules, expanded into single grants."""
    out: set[Grant] = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    names = rule.get("resourceNames") or [""]
                    out.update(Grant(group, resource, verb, name) for name in names)
    return out


def need(group: str, resource: str, *verbs: str, name: str = "") -> set[Grant]:
    return {Grant(group, resource, verb, name) for verb in verbs}
