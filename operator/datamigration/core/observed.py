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
    """The workload as listed from the API: the Deployment, its ReplicaSets, its pods."""

    deployment: Mapping[str, Any]
    replicasets: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Peer:
    """Another DataMigration of the namespace, as far as workload ownership is concerned."""

    name: str
    created: str  # metadata.creationTimestamp
    workload: str
    container: str
    image: str | None
    phase: str


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
