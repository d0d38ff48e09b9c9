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
MAX_WORKERS = 256


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
    #: Leader election on a Lease (several replicas, one acting). Off: this process always acts.
    leader_election: bool = True
    #: The Lease: its namespace (the release namespace) and name.
    lease_namespace: str = "default"
    lease_name: str = "datamigration-operator"
    #: controller-runtime's defaults, in seconds.
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    #: Port of /metrics, /livez and /readyz (0: none).
    metrics_port: int = 9090
    #: Seconds without any answer from the API server after which the process is not live.
    api_liveness_bound: float = 60.0
    #: Reconciles that may run at once (worker threads, and API connections to match). A
    #: reconcile mostly waits on the API server, so this is above the core count: a rollout
    #: that unblocks many migrations at once gets their contract Jobs created side by side.
    workers: int = 32

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
        election = env.get("DATAMIGRATION_LEADER_ELECTION", "true").lower()
        if election not in ("true", "false"):
            raise SettingsError("DATAMIGRATION_LEADER_ELECTION: must be true or false")
        lease_namespace = env.get("DATAMIGRATION_LEASE_NAMESPACE") or _own_namespace()
        lease_name = env.get("DATAMIGRATION_LEASE_NAME") or defaults.lease_name
        for var, value in (
            ("DATAMIGRATION_LEASE_NAMESPACE", lease_namespace),
            ("DATAMIGRATION_LEASE_NAME", lease_name),
        ):
            if not _NAME.match(value):
                raise SettingsError(f"{var}: {value!r} is not a valid name")
        timings = {
            var: _seconds(env, var, default)
            for var, default in (
                ("DATAMIGRATION_LEASE_DURATION", defaults.lease_duration),
                ("DATAMIGRATION_RENEW_DEADLINE", defaults.renew_deadline),
                ("DATAMIGRATION_RETRY_PERIOD", defaults.retry_period),
                ("DATAMIGRATION_API_LIVENESS_BOUND", defaults.api_liveness_bound),
            )
        }
        duration = timings["DATAMIGRATION_LEASE_DURATION"]
        deadline = timings["DATAMIGRATION_RENEW_DEADLINE"]
        retry = timings["DATAMIGRATION_RETRY_PERIOD"]
        if not duration > deadline > retry:
            raise SettingsError(
                "DATAMIGRATION_RENEW_DEADLINE: must be below DATAMIGRATION_LEASE_DURATION and "
                f"above DATAMIGRATION_RETRY_PERIOD (got {duration} > {deadline} > {retry})"
            )
        port_text = env.get("DATAMIGRATION_METRICS_PORT", str(defaults.metrics_port))
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SettingsError(
                f"DATAMIGRATION_METRICS_PORT: {port_text!r} is not a port (0-65535)"
            )
        workers_text = env.get("DATAMIGRATION_WORKERS", str(defaults.workers))
        if not workers_text.isdigit() or not 1 <= int(workers_text) <= MAX_WORKERS:
            raise SettingsError(
                f"DATAMIGRATION_WORKERS: {workers_text!r} is not a number from 1 to {MAX_WORKERS}"
            )
        return cls(
            workers=int(workers_text),
            leader_election=election == "true",
            lease_namespace=lease_namespace,
            lease_name=lease_name,
            lease_duration=duration,
            renew_deadline=deadline,
            retry_period=retry,
            metrics_port=int(port_text),
            api_liveness_bound=timings["DATAMIGRATION_API_LIVENESS_BOUND"],
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


_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace() -> str:
    """In a pod: its namespace ($POD_NAMESPACE, else the service account's); else `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _seconds(env: Mapping[str, str], var: str, default: float) -> float:
    text = env.get(var)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingsError(f"{var}: {text!r} is not a positive number of seconds")
    return value
