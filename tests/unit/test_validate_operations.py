"""Admission of `spec.operations` and `spec.rollback`: the rollback is linted with contract's
rules (it runs destructive undo SQL), every user expression of an operation is checked on its
own (one side-effect-free expression, the field named), and the SQLite rendering of an operation
is admitted with a visible `lint.allow` of `unparseable-sql` (the lint reads PostgreSQL SQL)."""

from __future__ import annotations

from typing import Any

import pytest
from factories import spec

from datamigration.core.decide import Invalid
from datamigration.core.spec import MigrationSpec
from datamigration.lint.check import allowed_findings
from datamigration.validation import validate

RETYPE = {
    "table": "orders",
    "column": "total",
    "to": "total_cents",
    "type": "bigint",
    "up": "round(total * 100)::bigint",
    "down": "total_cents / 100.0",
}
RENAME = {"table": "users", "from": "email", "to": "email_address", "type": "text"}


def with_ops(*operations: dict[str, Any], dialect: str | None = None, **extra: Any) -> Any:
    raw = spec(operations=list(operations))
    del raw["expand"], raw["backfill"]
    raw.update(extra)
    if dialect is not None:
        raw["database"] = {**raw["database"], "dialect": dialect}
    return raw


def rollback(sql: str, **fields: Any) -> dict[str, Any]:
    return {"steps": [{"name": "undo-1", "sql": sql, **fields}]}


def problems(raw: dict[str, Any]) -> list[str]:
    result = validate(raw)
    assert isinstance(result, Invalid), "admitted"
    return list(result.problems)


def test_a_destructive_rollback_step_is_admitted_as_in_contract() -> None:
    sql = "ALTER TABLE users DROP COLUMN IF EXISTS email_address"
    assert isinstance(validate(spec(rollback=rollback(sql))), MigrationSpec)
    refused = problems(spec(expand={"steps": [{"name": "s1", "sql": sql}]}))
    assert any("drop-column" in p for p in refused)  # the same SQL in expand is refused


@pytest.mark.parametrize(
    ("step", "field", "rule"),
    [
        pytest.param(
            rollback("ALTER TABLE users DROP"), "spec.rollback.steps[0].sql", "unparseable-sql"
        ),
        pytest.param(
            rollback("CREATE INDEX CONCURRENTLY i ON users (email)"),
            "spec.rollback.steps[0].transactional",
            "concurrently-in-transaction",
        ),
    ],
)
def test_a_rollback_step_the_contract_rules_refuse_is_refused_with_its_field(
    step: dict[str, Any], field: str, rule: str
) -> None:
    refused = problems(spec(rollback=step))
    assert any(p.startswith(f'{field}: step "undo-1": {rule}') for p in refused), refused


@pytest.mark.parametrize(
    ("key", "expression", "rule"),
    [
        pytest.param("up", "setval('orders_id_seq', 1)::bigint", "side-effect-function", id="fn"),
        pytest.param(
            "up",
            "round(total) FROM orders; DELETE FROM orders; SELECT (1",
            "unsafe-expression",
            id="breakout",
        ),
        pytest.param("down", "total_cents / 100.0 -- ", "unsafe-expression", id="comment"),
        pytest.param("down", "total_cents), (1", "unsafe-expression", id="second-value"),
    ],
)
def test_an_unsafe_operation_expression_is_refused_naming_the_field(
    key: str, expression: str, rule: str
) -> None:
    refused = problems(with_ops({"changeColumnType": {**RETYPE, key: expression}}))
    field = f"spec.operations[0].changeColumnType.{key}"
    assert any(p.startswith(f"{field}: {rule}: ") for p in refused), refused


def test_an_unsafe_expression_is_refused_on_sqlite_too() -> None:
    op = {"changeColumnType": {**RETYPE, "up": "CAST(total * 100 AS integer)), (1"}}
    refused = problems(with_ops(op, dialect="sqlite"))
    assert any(p.startswith("spec.operations[0].changeColumnType.up: ") for p in refused)


@pytest.mark.parametrize("op", [{"renameColumn": RENAME}, {"changeColumnType": RETYPE}])
def test_sqlite_operations_are_admitted_with_a_visible_lint_allow(op: dict[str, Any]) -> None:
    admitted = validate(with_ops(op, dialect="sqlite"))
    assert isinstance(admitted, MigrationSpec), admitted
    allowed = allowed_findings(admitted)
    assert allowed and {f.rule for f in allowed} == {"unparseable-sql"}
    assert all("the lint reads PostgreSQL SQL" in str(f.allowed_by) for f in allowed)
    # The same operation in PostgreSQL needs no allowance: the lint reads all of it.
    assert allowed_findings(validate(with_ops(op))) == []  # type: ignore[arg-type]


def test_hand_written_sqlite_sql_the_lint_cannot_read_still_needs_its_own_allow() -> None:
    raw = with_ops(
        {"renameColumn": RENAME},
        dialect="sqlite",
        expand={
            "steps": [
                {
                    "name": "own",
                    "sql": "CREATE INDEX IF NOT EXISTS i ON users (email) WHERE email IS NOT email",
                }
            ]
        },
    )
    assert any(
        p.startswith('spec.expand.steps[0].sql: step "own": unparseable-sql') for p in problems(raw)
    )
