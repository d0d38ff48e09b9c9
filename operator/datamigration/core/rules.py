"""The rules about a migration's state that more than one place needs: one module, one answer.

`decide` and the CLI both ask "is it finished?", "may it still be aborted?", "is there anything to
approve?", "may it be retried?". Before this module each answered on its own from raw dicts; now
both call these functions, so the CLI refuses exactly what the operator would ignore.

Pure: functions of the status (and spec) dicts as the API serves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from datamigration.core.spec import PHASES

#: Summary phases after which nothing changes any more.
TERMINAL: Final = ("Succeeded", "Aborted")
#: Summary phases after which nothing changes by itself (a person must act).
SETTLED: Final = ("Succeeded", "Aborted", "Failed", "Invalid")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def phase_of(status: Mapping[str, Any]) -> str:
    return str(status.get("phase") or "Pending")


def is_terminal(status: Mapping[str, Any]) -> bool:
    return phase_of(status) in TERMINAL


def record(status: Mapping[str, Any], phase: str) -> Mapping[str, Any]:
    return _mapping(_mapping(status.get("phases")).get(phase))


def contract_started(status: Mapping[str, Any]) -> bool:
    """Once the contract has started, it cannot be taken back: abort is refused from then on."""
    return str(record(status, "contract").get("state") or "Pending") != "Pending"


def why_not_abort(status: Mapping[str, Any]) -> str | None:
    """None when an abort would take effect; else the reason it would be refused."""
    if phase_of(status) == "Succeeded":
        return "it has already Succeeded: its contract ran, there is nothing left to abort"
    if contract_started(status):
        rec = record(status, "contract")
        job = f", Job {rec['job']}" if rec.get("job") else ""
        state = rec.get("state") or "Pending"
        return f"its contract has already started (state {state}{job})"
    return None


def has_contract(spec: Mapping[str, Any]) -> bool:
    contract = _mapping(spec.get("contract"))
    return bool(contract.get("steps") or contract.get("verify"))


def needs_approval(spec: Mapping[str, Any]) -> bool:
    return (_mapping(spec.get("contract")).get("approval") or "Manual") == "Manual"


def failed_phase(status: Mapping[str, Any]) -> str | None:
    """The phase a retry would re-arm."""
    return next((p for p in PHASES if record(status, p).get("state") == "Failed"), None)
