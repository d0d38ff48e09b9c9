"""The step model (`datamigration.core.steps`): defaults, every rejection names its exact field,
and checksums change with the definition but not with tuning knobs."""

from __future__ import annotations

from typing import Any

import pytest

from datamigration.core.errors import SpecError
from datamigration.core.steps import (
    BackfillStep,
    CommandStep,
    SqlStep,
    VerifyStep,
    parse_steps,
)

PATH = "spec.backfill.steps"


def test_each_kind_parses_with_its_defaults() -> None:
    steps = parse_steps(
        [
            {"name": "add-email", "sql": "ALTER TABLE users ADD COLUMN email_address text"},
            {"name": "cic", "sql": "CREATE INDEX CONCURRENTLY i ON t (c)", "transactional": False},
            {"name": "copy", "backfill": {"table": "public.users", "set": {"b": "a"}}},
            {"name": "check", "verify": {"query": "SELECT 0", "expect": 0}},
            {"name": "alembic", "command": {"image": "app:1", "command": ["alembic"]}},
        ],
        PATH,
    )
    assert steps == [
        SqlStep(name="add-email", sql="ALTER TABLE users ADD COLUMN email_address text"),
        SqlStep(name="cic", sql="CREATE INDEX CONCURRENTLY i ON t (c)", transactional=False),
        BackfillStep(
            name="copy",
            table="public.users",
            set=(("b", "a"),),
            key="id",
            where=None,
            batch_size=5000,
            target_batch_milliseconds=20,
            pause_milliseconds=0,
        ),
        VerifyStep(name="check", query="SELECT 0", expect="0"),
        CommandStep(name="alembic", image="app:1", command=("alembic",)),
    ]
    assert [step.kind for step in steps] == ["sql", "sql", "backfill", "verify", "command"]


def test_no_steps_is_an_empty_list() -> None:
    assert parse_steps(None, PATH) == []
    assert parse_steps([], PATH) == []


def backfill(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"table": "users", "set": {"email_address": "email"}}
    body.update(fields)
    return {"name": "copy", "backfill": body}


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param("nope", PATH, "must be a list of steps", id="not-a-list"),
        pytest.param(["x"], f"{PATH}[0]", "must be a mapping", id="step-not-a-mapping"),
        pytest.param([{"sql": "SELECT 1"}], f"{PATH}[0].name", "is required", id="no-name"),
        pytest.param(
            [{"name": "Bad_Name", "sql": "SELECT 1"}],
            f"{PATH}[0].name",
            "must be a DNS label",
            id="name-not-dns",
        ),
        pytest.param(
            [{"name": "a" * 64, "sql": "SELECT 1"}], f"{PATH}[0].name", "DNS label", id="long-name"
        ),
        pytest.param(
            [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}],
            f"{PATH}[1].name",
            f'duplicate step name "a" (already used by {PATH}[0])',
            id="duplicate-name",
        ),
        pytest.param([{"name": "a"}], f"{PATH}[0]", "needs exactly one of", id="no-kind"),
        pytest.param(
            [{"name": "a", "sql": "SELECT 1", "verify": {"query": "SELECT 1", "expect": 1}}],
            f"{PATH}[0]",
            "has sql and verify",
            id="two-kinds",
        ),
        pytest.param(
            [{"name": "a", "sql": "SELECT 1", "retries": 3}],
            f"{PATH}[0].retries",
            "unknown field",
            id="unknown-step-field",
        ),
        pytest.param([{"name": "a", "sql": "  "}], f"{PATH}[0].sql", "non-empty", id="empty-sql"),
        pytest.param(
            [{"name": "a", "sql": "SELECT 1", "transactional": "no"}],
            f"{PATH}[0].transactional",
            "true or false",
            id="transactional-not-bool",
        ),
        pytest.param(
            [{"name": "a", "verify": {"query": "SELECT 1", "expect": 1}, "transactional": False}],
            f"{PATH}[0].transactional",
            "only applies to sql steps",
            id="transactional-on-verify",
        ),
        pytest.param(
            [backfill(batchSize=0)],
            f"{PATH}[0].backfill.batchSize",
            "must be an integer between 1 and 1000000",
            id="batch-size-zero",
        ),
        pytest.param(
            [backfill(batchSize=True)],
            f"{PATH}[0].backfill.batchSize",
            "must be an integer between 1 and 1000000",
            id="batch-size-bool",
        ),
        pytest.param(
            [backfill(targetBatchMilliseconds=60001)],
            f"{PATH}[0].backfill.targetBatchMilliseconds",
            "between 1 and 60000",
            id="target-too-big",
        ),
        pytest.param(
            [backfill(pauseMilliseconds=-1)],
            f"{PATH}[0].backfill.pauseMilliseconds",
            "between 0 and 600000",
            id="negative-pause",
        ),
        pytest.param(
            [backfill(table="users; DROP TABLE users")],
            f"{PATH}[0].backfill.table",
            "plain SQL identifier",
            id="table-injection",
        ),
        pytest.param(
            [backfill(table="a.b.c")],
            f"{PATH}[0].backfill.table",
            "schema-qualified",
            id="table-three-parts",
        ),
        pytest.param(
            [backfill(key='"id"')], f"{PATH}[0].backfill.key", "identifier", id="quoted-key"
        ),
        pytest.param(
            [backfill(set={})], f"{PATH}[0].backfill.set", "non-empty mapping", id="empty-set"
        ),
        pytest.param(
            [backfill(set={"bad column": "1"})],
            f"{PATH}[0].backfill.set.bad column",
            "identifier",
            id="set-column-not-identifier",
        ),
        pytest.param(
            [backfill(set={"id": "id + 1"})],
            f"{PATH}[0].backfill.set.id",
            "cannot set the backfill key",
            id="set-the-key",
        ),
        pytest.param(
            [backfill(set={"b": ""})], f"{PATH}[0].backfill.set.b", "non-empty", id="empty-expr"
        ),
        pytest.param(
            [backfill(where=5)], f"{PATH}[0].backfill.where", "non-empty string", id="where-int"
        ),
        pytest.param(
            [backfill(order="id")], f"{PATH}[0].backfill.order", "unknown field", id="unknown-key"
        ),
        pytest.param(
            [{"name": "v", "verify": {"query": "SELECT 1", "expect": True}}],
            f"{PATH}[0].verify.expect",
            "string or an integer",
            id="expect-bool",
        ),
        pytest.param(
            [{"name": "v", "verify": {"expect": "1"}}],
            f"{PATH}[0].verify.query",
            "non-empty string",
            id="verify-no-query",
        ),
        pytest.param(
            [{"name": "c", "command": {"image": "x", "command": []}}],
            f"{PATH}[0].command.command",
            "non-empty list",
            id="command-empty",
        ),
        pytest.param(
            [{"name": "c", "command": {"image": "x", "command": ["a", 1]}}],
            f"{PATH}[0].command.command[1]",
            "must be a string",
            id="command-item-not-string",
        ),
        pytest.param(
            [{"name": "c", "command": {"image": "x", "command": ["a"], "env": [{"name": "1 A"}]}}],
            f"{PATH}[0].command.env[0].name",
            "environment variable name",
            id="command-env-name",
        ),
    ],
)
def test_rejections_name_the_exact_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_steps(raw, PATH)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def checksum_of(raw: dict[str, Any]) -> str:
    return parse_steps([raw], PATH)[0].checksum


def test_checksum_ignores_tuning_knobs() -> None:
    base = checksum_of(backfill())
    tuned = checksum_of(backfill(batchSize=100, targetBatchMilliseconds=5, pauseMilliseconds=10))
    assert tuned == base
    assert len(base) == 64
    assert int(base, 16) >= 0


def test_checksum_ignores_the_order_of_set_columns() -> None:
    one = backfill(set={"a": "x", "b": "y"})
    other = backfill(set={"b": "y", "a": "x"})
    assert checksum_of(one) == checksum_of(other)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(backfill(table="accounts"), id="table"),
        pytest.param(backfill(key="uuid"), id="key"),
        pytest.param(backfill(set={"email_address": "lower(email)"}), id="set-expression"),
        pytest.param(backfill(where="email_address IS NULL"), id="where"),
        pytest.param({**backfill(), "name": "copy-2"}, id="name"),
    ],
)
def test_checksum_changes_with_the_definition(changed: dict[str, Any]) -> None:
    assert checksum_of(changed) != checksum_of(backfill())


def test_checksum_of_sql_covers_text_and_transactional() -> None:
    plain = checksum_of({"name": "a", "sql": "SELECT 1"})
    assert checksum_of({"name": "a", "sql": "SELECT 1", "transactional": False}) != plain
    assert checksum_of({"name": "a", "sql": "SELECT 2"}) != plain
    # same definition, same checksum (kind is part of it, so a verify with the same text differs)
    assert checksum_of({"name": "a", "sql": "SELECT 1", "transactional": True}) == plain
    assert checksum_of({"name": "a", "verify": {"query": "SELECT 1", "expect": 1}}) != plain
