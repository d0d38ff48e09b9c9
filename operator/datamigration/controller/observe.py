"""Observe: read from the API everything `decide` needs about one DataMigration.

Always from the API server, never from memory, so that a restarted operator sees exactly what
a running one would: the migration's Jobs by the migration's uid label, the workload with its
ReplicaSets and pods (terminating ones included), and whether the database Secret exists.
"""

from __future__ import annotations

from typing import Any

from datamigration.core.decide import Invalid, Observed, Workload
from datamigration.core.jobs import LABEL_MIGRATION_UID, observe_job, true_condition
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.cluster import ClusterApi, label_selector


def observe(api: ClusterApi, body: dict[str, Any], spec: MigrationSpec | Invalid) -> Observed:
    meta = body["metadata"]
    namespace, generation = meta["namespace"], int(meta.get("generation", 0))
    retry_token = str(meta.get("annotations", {}).get("datamigration.dev/retry", ""))
    if isinstance(spec, Invalid):
        return Observed(generation=generation, secret_exists=False, workload=None)

    jobs = []
    for job in api.list_jobs(namespace, f"{LABEL_MIGRATION_UID}={meta['uid']}"):
        failed = true_condition(job, "Failed") is not None  # only then are its pods needed
        pods = api.list_pods(namespace, f"job-name={job['metadata']['name']}") if failed else []
        jobs.append(observe_job(job, pods))

    workload = None
    deployment = api.get_deployment(namespace, spec.workload.name)
    if deployment is not None:
        selector = label_selector(deployment.get("spec", {}).get("selector", {}))
        workload = Workload(
            deployment=deployment,
            replicasets=api.list_replicasets(namespace, selector),
            pods=api.list_pods(namespace, selector),
        )
    return Observed(
        generation=generation,
        secret_exists=api.secret_exists(namespace, spec.database.name),
        workload=workload,
        jobs=tuple(jobs),
        retry_token=retry_token,
    )
