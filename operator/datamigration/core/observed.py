"""What `decide` is given: the spec's verdict and the world as observed from the API.

Plain frozen data, filled by `controller/observe.py` (from the API) and by the unit tests (from
factories); shared by `decide` and the gates (`core/gates.py`). `peer_from` reads another
migration's raw object into a `Peer` (the watch cache keeps one per migration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datamigration.core.jobs import JobObservation


@dataclass(frozen=True)
class Invalid:
    """A spec that failed validation: each problem names its field."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class Workload:
    """A workload as listed from the API: the object, what it owns, its pods.

    `deployment` is the workload object of any kind (the name is kept from when only
    Deployments were supported; `{}` for kind Pods); `replicasets` what its gate needs besides
    pods: ReplicaSets (Deployment, Rollout), ControllerRevisions (DaemonSet), Jobs (CronJob)."""

    deployment: Mapping[str, Any]
    replicasets: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    kind: str = "Deployment"
    #: Why the workload could not be read at all (an API the cluster does not serve), if so.
    unreadable: str = ""


@dataclass(frozen=True)
class Target:
    """One container of one workload a migration sets or waits for, and the image."""

    kind: str
    name: str
    container: str
    image: str | None


@dataclass(frozen=True)
class Peer:
    """Another DataMigration of the namespace, as far as workload ownership is concerned."""

    name: str
    created: str  # metadata.creationTimestamp
    workload: str
    container: str
    image: str | None
    phase: str
    #: Every (kind, name, container, image) it names; empty: just `workload`/`container`.
    targets: tuple[Target, ...] = ()

    @property
    def all_targets(self) -> tuple[Target, ...]:
        return self.targets or (Target("Deployment", self.workload, self.container, self.image),)


@dataclass(frozen=True)
class Observed:
    generation: int
    secret_exists: bool
    workload: Workload | None  # None: the Deployment does not exist
    jobs: Sequence[JobObservation] = ()
    retry_token: str = ""
    secret_has_key: bool = True
    #: The pods of the migration's Jobs, by Job name (the pods of a deleted Job that have not
    #: gone yet included: they may still run).
    job_pods: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    #: The `datamigration.dev/accept-change` annotation.
    accept_change: str = ""
    name: str = ""
    created: str = ""
    peers: Sequence[Peer] = ()
    #: One entry per `spec.workloads` entry, in order (None: it does not exist); empty means
    #: `(workload,)` (the single-workload shorthand).
    workloads: Sequence[Workload | None] = ()

    def workload_list(self) -> Sequence[Workload | None]:
        return self.workloads or (self.workload,)


def _targets(spec: Mapping[str, Any]) -> tuple[Target, ...]:
    """What another migration sets or waits for, read leniently from its raw spec (it may be
    invalid; then it names nothing)."""
    single, many = spec.get("workload"), spec.get("workloads")
    entries = [single] if isinstance(single, Mapping) else many if isinstance(many, list) else []
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("kind") == "Pods":
            continue
        containers = entry.get("containers")
        names = containers if isinstance(containers, list) else [entry.get("container", "")]
        image = entry.get("image")
        for container in names:
            found.append(
                Target(
                    str(entry.get("kind") or "Deployment"),
                    str(entry.get("name", "")),
                    str(container),
                    str(image) if image else None,
                )
            )
    return tuple(found)


def peer_from(obj: Mapping[str, Any]) -> Peer | None:
    """Another migration as `workload_owner` sees it, read leniently from the raw object (its
    spec may be invalid; then it names nothing and is no peer)."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    targets = _targets(spec) if isinstance(spec, Mapping) else ()
    if not targets:
        return None
    first = targets[0]
    return Peer(
        name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        workload=first.name,
        container=first.container,
        image=first.image,
        phase=str((obj.get("status") or {}).get("phase") or "Pending"),
        targets=targets,
    )
