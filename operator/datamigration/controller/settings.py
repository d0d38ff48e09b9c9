"""Operator-wide settings, read once from `DATAMIGRATION_*` environment variables at start.

A bad value stops the operator at start with a message naming the variable, rather than
surfacing later as a broken Job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from datamigration import __version__
from datamigration.core.jobs import JobSettings

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the environment variable."""


@dataclass(frozen=True)
class OperatorSettings:
    #: Image of phase Jobs when a DataMigration names none (spec.runner.image).
    runner_image: str = f"ghcr.io/datamigration-operator/datamigration-operator:{__version__}"
    #: ServiceAccount the operator creates in each namespace for phase Jobs.
    runner_service_account: str = "datamigration-runner"
    #: ClusterRole bound to that ServiceAccount (patch datamigrations/status only).
    runner_cluster_role: str = "datamigration-runner"
    #: Whether the operator creates that ServiceAccount and RoleBinding itself.
    manage_runner_rbac: bool = True
    #: Extra labels on phase Job pods (network policies, sidecar opt-outs, the local executor).
    job_pod_labels: Mapping[str, str] = field(default_factory=dict)
    #: Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()

    @property
    def jobs(self) -> JobSettings:
        return JobSettings(
            runner_image=self.runner_image,
            runner_service_account=self.runner_service_account,
            extra_pod_labels=dict(self.job_pod_labels),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        defaults = cls()
        labels: dict[str, str] = {}
        for item in filter(
            None, (s.strip() for s in env.get("DATAMIGRATION_JOB_POD_LABELS", "").split(","))
        ):
            key, sep, value = item.partition("=")
            if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise SettingsError(
                    f"DATAMIGRATION_JOB_POD_LABELS: {item!r} is not a valid key=value label"
                )
            labels[key] = value
        namespaces = tuple(
            filter(None, (s.strip() for s in env.get("DATAMIGRATION_NAMESPACES", "").split(",")))
        )
        for ns in namespaces:
            if not _NAME.match(ns):
                raise SettingsError(f"DATAMIGRATION_NAMESPACES: {ns!r} is not a namespace name")
        manage = env.get("DATAMIGRATION_MANAGE_RUNNER_RBAC", "true").lower()
        if manage not in ("true", "false"):
            raise SettingsError("DATAMIGRATION_MANAGE_RUNNER_RBAC: must be true or false")
        for var in ("DATAMIGRATION_RUNNER_SERVICE_ACCOUNT", "DATAMIGRATION_RUNNER_CLUSTER_ROLE"):
            if var in env and not _NAME.match(env[var]):
                raise SettingsError(f"{var}: {env[var]!r} is not a valid name")
        return cls(
            runner_image=env.get("DATAMIGRATION_RUNNER_IMAGE") or defaults.runner_image,
            runner_service_account=env.get(
                "DATAMIGRATION_RUNNER_SERVICE_ACCOUNT", defaults.runner_service_account
            ),
            runner_cluster_role=env.get(
                "DATAMIGRATION_RUNNER_CLUSTER_ROLE", defaults.runner_cluster_role
            ),
            manage_runner_rbac=manage == "true",
            job_pod_labels=labels,
            namespaces=namespaces,
        )
