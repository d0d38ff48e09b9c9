"""The typed model of a DataMigration's `status`: what the operator writes and everyone reads.

Why: the CLI, the rules (`core/rules.py`) and `decide` all read the status; reading it as raw
dicts let each reader drift (a missing key, a typo'd state). These frozen dataclasses parse the
status once (`Status.from_dict`, tolerant of missing or malformed keys, as a status written by an
older operator may be) and write it back (`to_dict`, only the keys that are set, so a merge patch
stays minimal). Enums name every summary phase and phase state the CRD allows.

Pure: no I/O. `decide` still assembles the next status as a dict (it patches records in place);
its reads go through the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from datamigration.core.spec import PHASES

#: `status.phases.rollback`: the Job that undoes expand on abort (present once one started).
ROLLBACK = "rollback"


class Phase(StrEnum):
    """`status.phase`, the summary (CRD enum)."""

    PENDING = "Pending"
    EXPANDING = "Expanding"
    BACKFILLING = "Backfilling"
    ROLLING_OUT = "RollingOut"
    AWAITING_APPROVAL = "AwaitingApproval"
    CONTRACTING = "Contracting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"
    ABORTED = "Aborted"
    ROLLING_BACK = "RollingBack"  # aborted; the rollback Job undoes expand
    INVALID = "Invalid"

    @property
    def terminal(self) -> bool:
        """Nothing changes any more, whatever the spec says."""
        return self in (Phase.SUCCEEDED, Phase.ABORTED)

    @property
    def settled(self) -> bool:
        """Nothing changes by itself: a person must act (or nothing is left to do)."""
        return self in (Phase.SUCCEEDED, Phase.ABORTED, Phase.FAILED, Phase.INVALID)


class State(StrEnum):
    """`status.phases.<phase>.state` (CRD enum)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: object, default: E) -> E:
    try:
        return kind(str(value))
    except ValueError:
        return default


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class PhaseRecord:
    """One phase's record: its state, its current Job and attempt, why it failed."""

    state: State = State.PENDING
    attempts: int = 0
    job: str = ""
    message: str = ""
    reason: str = ""
    started_at: str = ""
    finished_at: str = ""
    #: Step name -> checksum recorded when the phase's Job was created.
    steps: Mapping[str, str] = field(default_factory=dict)
    #: rollback only: the steps its Job undid, in the order they ran.
    undone: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: object) -> PhaseRecord:
        if not isinstance(raw, Mapping):
            return cls()
        steps, undone = raw.get("steps"), raw.get("undone")
        return cls(
            state=_enum(State, raw.get("state"), State.PENDING),
            attempts=_int(raw.get("attempts")),
            job=_str(raw.get("job")),
            message=_str(raw.get("message")),
            reason=_str(raw.get("reason")),
            started_at=_str(raw.get("startedAt")),
            finished_at=_str(raw.get("finishedAt")),
            steps={str(k): str(v) for k, v in steps.items()} if isinstance(steps, Mapping) else {},
            undone=tuple(str(n) for n in undone) if isinstance(undone, list) else (),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.value, "attempts": self.attempts}
        for key, value in (
            ("job", self.job),
            ("message", self.message),
            ("reason", self.reason),
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
        ):
            if value:
                out[key] = value
        if self.steps:
            out["steps"] = dict(self.steps)
        if self.undone:
            out["undone"] = list(self.undone)
        return out


@dataclass(frozen=True)
class ContractStatus:
    """`status.contract`: the digest an approval must name, or why it is not known yet."""

    digest: str = ""
    image: str = ""
    approved_digest: str = ""
    message: str = ""

    @classmethod
    def from_dict(cls, raw: object) -> ContractStatus:
        if not isinstance(raw, Mapping):
            return cls()
        return cls(
            digest=_str(raw.get("digest")),
            image=_str(raw.get("image")),
            approved_digest=_str(raw.get("approvedDigest")),
            message=_str(raw.get("message")),
        )


@dataclass(frozen=True)
class Status:
    """The parts of `status` that rules and readers decide on."""

    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    phases: Mapping[str, PhaseRecord] = field(default_factory=dict)
    contract: ContractStatus = field(default_factory=ContractStatus)
    retry_token: str = ""

    @classmethod
    def from_dict(cls, raw: object) -> Status:
        if not isinstance(raw, Mapping):
            return cls()
        records = raw.get("phases") if isinstance(raw.get("phases"), Mapping) else {}
        assert isinstance(records, Mapping)
        generation = raw.get("observedGeneration")
        return cls(
            phase=_enum(Phase, raw.get("phase") or "Pending", Phase.PENDING),
            message=_str(raw.get("message")),
            observed_generation=generation if isinstance(generation, int) else None,
            phases={
                p: PhaseRecord.from_dict(records.get(p))
                for p in (*PHASES, ROLLBACK)
                if p in PHASES or p in records
            },
            contract=ContractStatus.from_dict(raw.get("contract")),
            retry_token=_str(raw.get("retryToken")),
        )

    def record(self, phase: str) -> PhaseRecord:
        return self.phases.get(phase) or PhaseRecord()


#: What only reports how far something has come: messages anywhere, and a rollout's counts.
_PROGRESS_KEYS = frozenset({"message", "summary", "lastTransitionTime"})
_ROLLOUT_COUNTS = frozenset(
    {"replicas", "updatedReplicas", "availableReplicas", "oldPods", "terminatingPods"}
)


def progress_only(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether going from status `before` to `after` changes only progress: messages and a
    rollout's pod counts, with the phase, every phase record's state, every condition's status
    and reason, the rollout's verdict and the observed generation all the same.

    Why: a rollout of a Deployment that many migrations name changes every one's rollout counts
    on every pod event; written at once, that is a status write per migration per pod event, at
    the moment the API server is busiest (the rollout's proof, and the contract Jobs after it,
    come right behind). The reconciler writes such a change at most once per interval; any
    other change (a transition, a verdict, a new reason) goes out at once."""
    return bool(_essence(before) == _essence(after))


def _essence(value: Any, *, rollout: bool = False) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _essence(v, rollout=rollout or k == "rollout")
            for k, v in value.items()
            if k not in _PROGRESS_KEYS and not (rollout and k in _ROLLOUT_COUNTS)
        }
    if isinstance(value, list):
        return [_essence(v, rollout=rollout) for v in value]
    return value
