"""Act: carry out a `Decision` against the API, then record the new status.

Order matters for crash safety: side effects (Jobs, the image change) happen before the status
that mentions them is written. A crash in between leaves a Job the next reconcile adopts by its
labels; never a status claiming a Job that was not created.
"""

from __future__ import annotations

import logging
from typing import Any

from datamigration.controller.settings import OperatorSettings
from datamigration.core.decide import CreateJob, Decision, DeleteJob, EmitEvent, SetWorkloadImage
from datamigration.core.diff import merge_patch
from datamigration.core.jobs import Owner, build_job
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.client import KubeError
from datamigration.k8s.cluster import ClusterApi

log = logging.getLogger(__name__)


def act(
    api: ClusterApi,
    settings: OperatorSettings,
    body: dict[str, Any],
    spec: MigrationSpec | None,
    decision: Decision,
) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    owner = Owner(namespace=namespace, name=name, uid=meta["uid"])
    for action in decision.actions:
        if isinstance(action, CreateJob) and spec is not None:
            if settings.manage_runner_rbac and not spec.runner.service_account_name:
                api.ensure_runner_identity(
                    namespace, settings.runner_service_account, settings.runner_cluster_role
                )
            job = build_job(owner, spec, action.phase, action.attempt, settings.jobs)
            api.create_job(job)
            log.info("%s/%s: created Job %s", namespace, name, job["metadata"]["name"])
        elif isinstance(action, SetWorkloadImage) and spec is not None:
            api.set_container_image(namespace, spec.workload.name, action.container, action.image)
            log.info("%s/%s: set %s image to %s", namespace, name, action.container, action.image)
        elif isinstance(action, DeleteJob):
            api.delete_job(namespace, action.name)

    patch = merge_patch(body.get("status") or {}, decision.status)
    if patch:
        api.patch_migration_status(namespace, name, patch)

    for action in decision.actions:
        if isinstance(action, EmitEvent):
            try:
                api.post_event(body, action.type, action.reason, action.message)
            except KubeError as exc:  # an Event is a courtesy; the status already says it all
                log.warning(
                    "%s/%s: could not post Event %s: %s", namespace, name, action.reason, exc
                )
