"""The gates `decide` passes before any phase may run: each a pure function that answers
"blocked, because ..." (a `Blocked`) or "go" (None).

Why separate functions: each rule is read, tested and changed on its own, and `decide` grows by
adding a gate rather than a branch. A gate only looks; it never acts. (The gate for edited steps,
`decide._spec_changed`, stays in `decide` because it also stops a running backfill Job.)
"""

from __future__ import annotations

from dataclasses import dataclass

from datamigration.core import reasons as R
from datamigration.core.observed import Observed, Peer, Target
from datamigration.core.rules import TERMINAL
from datamigration.core.spec import MigrationSpec
from datamigration.core.workloads import template_containers

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


def _targets(spec: MigrationSpec) -> list[Target]:
    return [
        Target(w.kind, w.name, c, w.image)
        for w in spec.workloads
        if w.kind != "Pods"  # a selector owns no template: nothing to fight over
        for c in w.all_containers
    ]


def workload_owner(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """One workload, one owner: of two unfinished migrations that want different images in the
    same container of the same workload (any entry of `spec.workloads`), the older one (by
    creationTimestamp, then by name: timestamps have one-second resolution) goes on, the other
    waits."""
    me = (observed.created, observed.name)
    mine = {(t.kind, t.name, t.container): t for t in _targets(spec)}
    # The oldest conflicting peer is named; found in one pass (no sort: a namespace may hold
    # a thousand migrations, and this runs on every reconcile).
    found: tuple[tuple[str, str], Peer, Target, Target] | None = None
    for peer in observed.peers:
        order = (peer.created, peer.name)
        if peer.name == observed.name or peer.phase in TERMINAL or order >= me:
            continue
        if found is not None and order >= found[0]:
            continue
        for theirs in peer.all_targets:
            target = mine.get((theirs.kind, theirs.name, theirs.container))
            if target is not None and theirs.image != target.image:
                found = (order, peer, theirs, target)
                break
    if found is None:
        return None
    _, peer, theirs, target = found
    return Blocked(
        R.WORKLOAD_CONFLICT,
        f"DataMigration {peer.name} (phase {peer.phase}) also targets {target.kind} "
        f"{target.name} container {target.container} with image "
        f"{theirs.image or '(observed)'}; this one (image "
        f"{target.image or '(observed)'}) waits until {peer.name} has Succeeded or "
        "is Aborted",
        recheck_after=RECHECK_SECONDS,
    )


def secret(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """The database Secret exists and has the key, before any Job is created (a Job whose pod
    cannot read its environment would wait forever)."""
    ref = spec.database
    if not observed.secret_exists:
        return Blocked(
            R.SECRET_NOT_FOUND,
            f"Secret {ref.name} (spec.database.urlFrom.secretKeyRef.name) not found",
        )  # no recheck timer: the operator watches Secrets, their events wake it
    if not observed.secret_has_key:
        return Blocked(
            R.SECRET_KEY_NOT_FOUND,
            f"Secret {ref.name} has no key {ref.key!r} "
            "(spec.database.urlFrom.secretKeyRef.key); no Job is created until it does",
        )
    return None


def workload_exists(spec: MigrationSpec, observed: Observed) -> Blocked | None:
    """Every workload exists (and can be read) and has the named containers."""
    for entry, seen in zip(spec.workloads, observed.workload_list(), strict=False):
        if seen is not None and seen.unreadable:
            return Blocked(
                R.WORKLOAD_NOT_FOUND,
                f"{entry.label} ({entry.path}.kind) cannot be read: {seen.unreadable}",
                recheck_after=RECHECK_SECONDS,
            )
        if seen is None:
            return Blocked(R.WORKLOAD_NOT_FOUND, f"{entry.label} ({entry.path}.name) not found")
        if entry.kind == "Pods":
            continue
        names = template_containers(entry.kind, seen.deployment)
        for container in entry.all_containers:
            if container not in names:
                field = "container" if not entry.containers else "containers"
                return Blocked(
                    R.INVALID_SPEC,
                    f"{entry.path}.{field}: {entry.label} has no container {container!r} "
                    f"(containers: {', '.join(names) or 'none'})",
                    phase="Invalid",
                )
    return None
