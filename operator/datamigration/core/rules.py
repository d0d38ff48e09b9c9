"""The rules about a migration's state that more than one place needs: one module, one answer.

`decide` and the CLI both ask "is it finished?", "may it still be aborted?", "is there anything to
approve?", "may it be retried?". Before this module each answered on its own from raw dicts; now
both call these functions on the typed status (`core/status.py`), so the CLI refuses exactly
what the operator would ignore.

Pure. Functions take a `Status` or the raw status dict as the API serves it (parsed here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from datamigration.core.spec import PHASES
from datamigration.core.status import ROLLBACK, Phase, State, Status

#: Summary phases after which nothing changes any more.
TERMINAL: Final = tuple(p.value for p in Phase if p.terminal)
#: Summary phases after which nothing changes by itself (a person must act).
SETTLED: Final = tuple(p.value for p in Phase if p.settled)


def _status(status: Status | Mapping[str, Any]) -> Status:
    return status if isinstance(status, Status) else Status.from_dict(status)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def is_terminal(status: Status | Mapping[str, Any]) -> bool:
    return _status(status).phase.terminal


def contract_started(status: Status | Mapping[str, Any]) -> bool:
    """Once the contract has started, it cannot be taken back: abort is refused from then on."""
    return _status(status).record("contract").state != State.PENDING


def why_not_abort(status: Status | Mapping[str, Any]) -> str | None:
    """None when an abort would take effect; else the reason it would be refused."""
    st = _status(status)
    if st.phase == Phase.SUCCEEDED:
        return "it has already Succeeded: its contract ran, there is nothing left to abort"
    if contract_started(st):
        rec = st.record("contract")
        job = f", Job {rec.job}" if rec.job else ""
        return f"its contract has already started (state {rec.state.value}{job})"
    return None


def has_contract(spec: Mapping[str, Any]) -> bool:
    contract = _mapping(spec.get("contract"))
    return bool(contract.get("steps") or contract.get("verify"))


def needs_approval(spec: Mapping[str, Any]) -> bool:
    return (_mapping(spec.get("contract")).get("approval") or "Manual") == "Manual"


def failed_phase(status: Status | Mapping[str, Any]) -> str | None:
    """The phase a retry would re-arm: a failed rollback (abort) first, else the failed phase."""
    st = _status(status)
    return next((p for p in (ROLLBACK, *PHASES) if st.record(p).state == State.FAILED), None)
