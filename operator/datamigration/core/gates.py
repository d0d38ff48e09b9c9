"""The gates `decide` passes before any phase may run: each a pure function that answers
"blocked, because ..." (a `Blocked`) or "go" (None).

Why separate functions: each rule is read, tested and changed on its own, and `decide` grows by
adding a gate rather than a branch. A gate only looks; it never acts. (The gate for edited steps,
`decide._spec_changed`, stays in `decide` because it also stops a running backfill Job.)
"""

from __future__ import annotations

from dataclasses import dataclass

from datamigration.core import reasons as R
from datamigration.core.observed import Observed
from datamigration.core.rollout import container_names
from datamigration.core.rules import TERMINAL
from datamigration.core.spec import MigrationSpec

#: Secrets and other migrations are not watched by the operator: look again this often.
RECHECK_SECONDS = 10.0


@dataclass(frozen=True)
class Blocked:
    """Nothing runs, because `message`; `reason` is the Stalled condition's reason."""

    reason: str
    message: str
    #: The summary phase to show; None keeps the current one.
    phase: str | None = None
    #: When to look again by itself (the cause is not watched), if ever.
    recheck_after: float | None = None


def workload_owner(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """One workload, one owner: of two unfinished migrations that want different images in the
    same container, the older one (by creationTimestamp, then by name: timestamps have
    one-second resolution) goes on, the other waits."""
    me = (observed.created, observed.name)
    for peer in sorted(observed.peers, key=lambda p: (p.created, p.name)):
        if (
            peer.name == observed.name
            or peer.phase in TERMINAL
            or peer.workload != spec.workload.name
            or peer.container != spec.workload.container
            or peer.image == spec.workload.image
            or (peer.created, peer.name) >= me
        ):
            continue
        return Blocked(
            R.WORKLOAD_CONFLICT,
            f"DataMigration {peer.name} (phase {peer.phase}) also targets Deployment "
            f"{spec.workload.name} container {spec.workload.container} with image "
            f"{peer.image or '(observed)'}; this one (image {spec.workload.image or '(observed)'}) "
            f"waits until {peer.name} has Succeeded or is Aborted",
            recheck_after=RECHECK_SECONDS,
        )
    return None


def secret(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """The database Secret exists and has the key, before any Job is created (a Job whose pod
    cannot read its environment would wait forever)."""
    ref = spec.database
    if not observed.secret_exists:
        return Blocked(
            R.SECRET_NOT_FOUND,
            f"Secret {ref.name} (spec.database.urlFrom.secretKeyRef.name) not found",
            recheck_after=RECHECK_SECONDS,
        )
    if not observed.secret_has_key:
        return Blocked(
            R.SECRET_KEY_NOT_FOUND,
            f"Secret {ref.name} has no key {ref.key!r} "
            "(spec.database.urlFrom.secretKeyRef.key); no Job is created until it does",
            recheck_after=RECHECK_SECONDS,
        )
    return None


def workload_exists(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """The Deployment exists and has the named container."""
    if observed.workload is None:
        return Blocked(
            R.WORKLOAD_NOT_FOUND, f"Deployment {spec.workload.name} (spec.workload.name) not found"
        )
    names = container_names(observed.workload.deployment)
    if spec.workload.container not in names:
        return Blocked(
            R.INVALID_SPEC,
            f"spec.workload.container: Deployment {spec.workload.name} has no container "
            f"{spec.workload.container!r} (containers: {', '.join(names) or 'none'})",
            phase="Invalid",
        )
    return None
