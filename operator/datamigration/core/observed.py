"""What `decide` is given: the spec's verdict and the world as observed from the API.

Plain frozen data, filled by `controller/observe.py` (from the API) and by the unit tests (from
factories); shared by `decide` and the gates (`core/gates.py`).
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
    #: The pods of each of the migration's Jobs, by Job name.
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
