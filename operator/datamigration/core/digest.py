"""Digests that bind a person's decision to the exact content it was about.

Why: an approval given for "drop column email" must not carry over to "drop column name"; an
accepted edit of one backfill must not accept the next one. Each decision therefore names a digest
of what it accepts, and the operator compares it with the digest of what would run.

- `contract_digest`: sha256 over the canonical JSON of the contract's verify steps, its steps
  (each by `Step.checksum`, which leaves tuning knobs out) and the target image (the code that
  must be running when the contract runs). `sha256:<64 hex>`; `short` gives 12 hex for display.
- `phase_checksums`: `{step name: checksum}` of the steps a phase's Job runs, recorded in that
  phase's status record when its Job is created, and compared with the spec on every reconcile.
- `change_token`: `<phase>/<12 hex>` naming one edited version of a phase, the value of the
  `datamigration.dev/accept-change` annotation that accepts exactly that edit.

Pure: hashes of the parsed spec, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from datamigration.core.spec import MigrationSpec

PREFIX = "sha256:"
SHORT = 12


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def contract_digest(spec: MigrationSpec, image: str | Sequence[str | None] | None) -> str | None:
    """The digest of what the contract Job would run against which code; None while a target
    image is not known (Observe mode without spec.workload.image, before the rollout is seen).

    `image`: the target image, or one per `spec.workloads` entry (in order). With several
    workloads, every workload and its image is covered; with one, the digest is the same as for
    the single `spec.workload` (approvals given before `spec.workloads` existed stay valid)."""
    images = [image] if image is None or isinstance(image, str) else list(image)
    if not images or not all(images):
        return None
    body: dict[str, Any] = {
        "verify": [[s.name, s.checksum] for s in spec.contract.verify.steps],
        "steps": [[s.name, s.checksum] for s in spec.contract.steps.steps],
    }
    sessions = spec.contract.database_sessions
    if sessions is not None:  # absent: the digest stays what it was before this gate existed
        body["databaseSessions"] = [
            sessions.application_name_pattern,
            sessions.role,
            sessions.older_than_rollout_proof,
        ]
    if len(images) == 1:
        body["image"] = images[0]
    else:
        body["images"] = [
            [w.kind, w.name or w.selector, list(w.all_containers), img]
            for w, img in zip(spec.workloads, images, strict=False)
        ]
    return PREFIX + _sha256(body)


def short(digest: str) -> str:
    """`sha256:0123456789ab`: enough to recognise a digest on a screen."""
    return digest[: len(PREFIX) + SHORT]


def phase_checksums(spec: MigrationSpec, phase: str) -> dict[str, str]:
    """`{step name: checksum}` of the steps the phase's Job runs (contract: verify included)."""
    return {step.name: step.checksum for step in spec.job_steps(phase).steps}


def changed_steps(recorded: Mapping[str, Any], current: Mapping[str, str]) -> list[str]:
    """The step names whose definition differs: edited, removed, or added, in a stable order."""
    names = sorted(set(recorded) | set(current))
    return [n for n in names if recorded.get(n) != current.get(n)]


def change_token(phase: str, current: Mapping[str, str]) -> str:
    """`<phase>/<12 hex>`: the annotation value that accepts this version of the phase."""
    return f"{phase}/{_sha256(dict(current))[:SHORT]}"
