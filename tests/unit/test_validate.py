"""Spec validation: every problem names its field; unsafe steps outside contract are refused."""

from __future__ import annotations

from typing import Any

import pytest
from factories import spec, with_contract

from datamigration.core.decide import Invalid
from datamigration.core.spec import MigrationSpec
from datamigration.validation import validate


def without(key: str) -> dict[str, Any]:
    s = spec()
    del s[key]
    return s


def expand_sql(sql: str) -> dict[str, Any]:
    return spec(expand={"steps": [{"name": "s1", "sql": sql}]})


CASES = [
    pytest.param(without("database"), "spec.database: is required", id="no-database"),
    pytest.param(
        spec(workload={"name": "shop-api", "container": "api"}),
        "spec.workload.image: is required when spec.codeRollout.mode is Apply",
        id="apply-without-image",
    ),
    pytest.param(
        spec(codeRollout={"mode": "Sometimes"}),
        "spec.codeRollout.mode: must be one of",
        id="bad-mode",
    ),
    pytest.param(
        spec(runner={"backoffLimit": 99}),
        "spec.runner.backoffLimit: must be an integer",
        id="backoff-out-of-range",
    ),
    pytest.param(
        with_contract(verify=[]),
        "a destructive contract needs a gate",
        id="contract-without-any-gate",
    ),
    pytest.param(
        spec(
            expand={
                "steps": [
                    {"name": "a", "sql": "SELECT 1"},
                    {"name": "b", "command": {"image": "x", "command": ["y"]}},
                ]
            }
        ),
        "spec.expand.steps[1].command: a command step runs as the phase's whole Job",
        id="command-step-not-alone",
    ),
    pytest.param(
        expand_sql("ALTER TABLE users DROP COLUMN email"),
        'step "s1": drop-column',
        id="drop-column-in-expand",
    ),
    pytest.param(
        expand_sql("ALTER TABLE users RENAME COLUMN email TO mail"),
        "spec.expand",
        id="rename-in-expand",
    ),
    pytest.param(expand_sql("TRUNCATE users"), "truncate", id="truncate-in-expand"),
    pytest.param(
        expand_sql("ALTER TABLE users ADD COLUMN"), "unparseable", id="bad-sql-is-a-finding"
    ),
]


@pytest.mark.parametrize(("raw", "fragment"), CASES)
def test_invalid(raw: dict[str, Any], fragment: str) -> None:
    result = validate(raw)
    assert isinstance(result, Invalid), result
    assert any(fragment in p for p in result.problems), result.problems


def test_destructive_contract_is_fine() -> None:
    assert isinstance(validate(spec()), MigrationSpec)


def test_manual_approval_is_a_gate_on_its_own() -> None:
    assert isinstance(validate(with_contract(verify=[], approval="Manual")), MigrationSpec)
