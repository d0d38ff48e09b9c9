"""Act: carry out a `Decision` against the API, then record the new status, then tell people.

Order matters for crash safety and for concurrent operators:

1. Side effects (Jobs, the image change, deleting a Job) happen before the status that mentions
   them is written. A crash in between leaves a Job the next reconcile adopts by its labels;
   never a status claiming a Job that was not created. Each is idempotent (deterministic Job
   names: a second create answers 409 and is adopted).
2. The status is written as the smallest merge patch, with the object's `resourceVersion` as a
   precondition: if anything wrote the object since it was read (the runner's progress, a second
   operator process), the API answers 409 and `StatusConflict` makes the reconciler re-read and
   decide again. Only keys the operator changed are in the patch, so the runner's
   `status.progress` keys are never nulled.
3. Events go out only after that write succeeded, so only the process whose write recorded the
   transition emits them, in the order of the transitions. Their names are derived from the
   migration's uid, the resourceVersion the decision was based on and the Event's reason, so a
   repeated create (a retry after a crash) is a 409 and a no-op: once per transition. The
   operator hands them to `events.EventPoster` (`events=`), which posts them in that order
   beside the reconciles instead of inside them.
4. Every write passes the leader fence first (`fence`, from `k8s.leader.LeaderElector.fence_ok`):
   immediately before each API write this process must hold the Lease with a renew younger than
   the renew deadline, or `NotLeader` stops the reconcile with nothing more written. A standby,
   or a leader that was paused or cut off, writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from datamigration.controller.settings import OperatorSettings
from datamigration.core.decide import CreateJob, Decision, DeleteJob, EmitEvent, SetWorkloadImage
from datamigration.core.diff import merge_patch
from datamigration.core.jobs import Owner, build_job
from datamigration.core.redact import scrub
from datamigration.core.spec import MigrationSpec
from datamigration.k8s.client import KubeError
from datamigration.k8s.protocol import EventSink, OperatorApi

log = logging.getLogger(__name__)


class StatusConflict(Exception):
    """The object changed since it was read: re-read and decide again."""


class NotLeader(Exception):
    """This process may not write (a standby, or a leader past its renew deadline)."""


Fence = Callable[[], bool]


def _always() -> bool:
    return True


def _check(fence: Fence, what: str) -> None:
    if not fence():
        raise NotLeader(f"not the leader: did not {what}")


def event_name(meta: dict[str, Any], index: int, event: EmitEvent) -> str:
    """Deterministic per (migration uid, resourceVersion decided on, position, reason)."""
    key = f"{meta.get('uid')}:{meta.get('resourceVersion')}:{index}:{event.reason}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{str(meta.get('name'))[:200]}.{digest}"


def _job_spec(spec: MigrationSpec, action: CreateJob) -> MigrationSpec:
    """The spec the Job is built from: an accepted edit lets the runner record new checksums."""
    if not action.allow_checksum_change:
        return spec
    runner = dataclasses.replace(spec.runner, allow_checksum_change=True)
    return dataclasses.replace(spec, runner=runner)


def manages_runner_identity(settings: OperatorSettings, spec: MigrationSpec) -> bool:
    """Whether the operator makes the runner's ServiceAccount and RoleBinding before a Job of
    this migration (the chart's default), rather than the spec naming its own account."""
    return settings.manage_runner_rbac and not spec.runner.service_account_name


def act(
    api: OperatorApi,
    settings: OperatorSettings,
    body: dict[str, Any],
    spec: MigrationSpec | None,
    decision: Decision,
    *,
    fence: Fence = _always,
    events: EventSink | None = None,
) -> dict[str, Any] | None:
    """Returns the migration as the status write left it (None: nothing was written).
    `events`: where the Events go (default: posted by `api`, in this call)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    owner = Owner(namespace=namespace, name=name, uid=meta["uid"])
    for action in decision.actions:
        if isinstance(action, CreateJob) and spec is not None:
            if manages_runner_identity(settings, spec):
                _check(fence, "ensure the runner identity")
                api.ensure_runner_identity(
                    namespace, settings.runner_service_account, settings.runner_cluster_role
                )
            job = build_job(
                owner,
                _job_spec(spec, action),
                action.phase,
                action.attempt,
                settings.jobs,
                expected_image=action.expected_image,
                rollout_proven_at=action.rollout_proven_at,
            )
            _check(fence, "create a Job")
            api.create_job(job)
            log.info("%s/%s: created Job %s", namespace, name, job["metadata"]["name"])
        elif isinstance(action, SetWorkloadImage) and spec is not None:
            _check(fence, "set an image")
            target = action.name or spec.workload.name
            api.set_container_image(
                namespace, target, action.container, action.image, kind=action.kind
            )
            log.info(
                "%s/%s: set %s %s container %s image to %s",
                *(namespace, name, action.kind, target, action.container, action.image),
            )
        elif isinstance(action, DeleteJob):
            _check(fence, "delete a Job")
            api.delete_job(namespace, action.name)
            log.info("%s/%s: deleted Job %s", namespace, name, action.name)

    patch = merge_patch(body.get("status") or {}, decision.status)
    if not patch:
        return None  # nothing changed, so nothing transitioned: no Event either
    _check(fence, "write the status")
    try:
        written = api.patch_migration_status(namespace, name, patch, meta.get("resourceVersion"))
    except KubeError as exc:
        if exc.conflict:
            raise StatusConflict(f"{namespace}/{name} changed since it was read") from None
        raise

    sink = events or api
    emitted = [a for a in decision.actions if isinstance(a, EmitEvent)]
    for index, event in enumerate(emitted):
        _check(fence, "post an Event")
        try:
            sink.post_event(
                body, event.type, event.reason, scrub(event.message), event_name(meta, index, event)
            )
        except KubeError as exc:  # an Event is a courtesy; the status already says it all
            log.warning("%s/%s: could not post Event %s: %s", namespace, name, event.reason, exc)
    return written
