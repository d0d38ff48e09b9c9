"""The lint's shortcuts give the lint's answers: SQL parsed ahead in a background thread gives the
trees (and parse errors) parsing on the spot gives, a large spec gets the findings of its phases
linted one by one, and `access-exclusive-then-more` names the first slow statement after the lock
however far it is."""

from __future__ import annotations

from typing import Any

import pytest
from factories import spec as base_spec
from pglast.parser import ParseError, parse_sql_json

from datamigration.core.spec import parse_spec
from datamigration.core.steps import STEP_PHASES, parse_steps
from datamigration.lint import lint_spec, lint_steps, step_paths
from datamigration.lint.analyze import PARSE_AHEAD_BYTES, ParseAhead


def padded(sql: str, size: int) -> str:
    return sql + " " * max(0, size - len(sql))


def test_parse_ahead_gives_the_parsers_trees_and_errors() -> None:
    size = PARSE_AHEAD_BYTES // 2  # two texts reach the threshold: the thread is used
    texts = [
        padded("CREATE TABLE a (id bigint)", size),
        padded("ALTER TABLE a ADD COLUMN b text; SELEC 1", size),
        padded("DROP TABLE a", size),
        padded("CREATE TABLE a (id bigint)", size),  # the same text twice
    ]
    with ParseAhead(texts) as ahead:
        assert ahead.tree(texts[0]) == parse_sql_json(texts[0])
        with pytest.raises(ParseError) as raised:
            ahead.tree(texts[1])
        with pytest.raises(ParseError) as direct:
            parse_sql_json(texts[1])
        assert raised.value.args == direct.value.args
        assert ahead.tree(texts[3]) == parse_sql_json(texts[3])  # parsed again, same tree
        assert ahead.tree("SELECT 2") == parse_sql_json("SELECT 2")  # not handed over
    # Left without asking for texts[2]: nothing is kept, and asking still parses.
    assert ahead.tree(texts[2]) == parse_sql_json(texts[2])


def test_a_large_spec_gets_the_findings_of_its_phases_linted_one_by_one() -> None:
    body = "".join(
        f"CREATE TABLE t{i} (id int, v varchar(5), at timestamp);\n"
        f"ALTER TABLE old ADD COLUMN c{i} int NOT NULL;\n"
        f"ALTER TABLE t{i} ALTER COLUMN v TYPE varchar(10);\n"
        f"UPDATE old SET c{i} = 1 WHERE 1 = 1;\n"
        for i in range(300)
    )
    assert len(body) * 5 > PARSE_AHEAD_BYTES
    spec = parse_spec(
        base_spec(
            expand={
                "steps": [
                    {"name": "big", "sql": body},
                    {"name": "bad", "sql": "SELEC 1"},
                    {"name": "big-2", "sql": body},
                    {"name": "big-3", "sql": body.replace("old", "older")},
                ]
            },
            rollback={"steps": [{"name": "undo", "sql": body}]},
            contract={
                "approval": "Manual",
                "steps": [{"name": "drop", "sql": body + "DROP TABLE old;"}],
            },
        )
    )
    expected = []
    for phase in (*STEP_PHASES, "rollback"):
        steps = spec.rollback_steps() if phase == "rollback" else spec.job_steps(phase)
        expected += lint_steps(phase, list(steps.steps), paths=step_paths(spec, phase))
    found = lint_spec(spec)
    assert found == expected
    rules = {f.rule for f in found}
    assert {"unparseable-sql", "prefer-bigint", "access-exclusive-then-more"} <= rules


def lint_rules(sql: str) -> list[tuple[str, str]]:
    steps = parse_steps([{"name": "s", "sql": sql}], "s")
    return [(f.rule, f.statement) for f in lint_steps("expand", steps)]


@pytest.mark.parametrize(
    ("sql", "slow"),
    [
        # The first slow statement after the lock, far away.
        (
            "ALTER TABLE a ADD COLUMN b text;"
            + "COMMENT ON TABLE a IS 'x';" * 300
            + "UPDATE a SET b = 'y' WHERE id = 1;",
            "UPDATE a SET b = 'y' WHERE id = 1",
        ),
        # An ALTER TABLE that validates comes before a slow kind; a marker in a string of
        # another statement is not an ALTER TABLE.
        (
            "ALTER TABLE a ADD COLUMN b text; COMMENT ON TABLE a IS 'AT_AddConstraint';"
            "ALTER TABLE a VALIDATE CONSTRAINT c; DELETE FROM a WHERE id = 1;",
            "ALTER TABLE a VALIDATE CONSTRAINT c",
        ),
        # A slow kind before an ALTER TABLE that validates.
        (
            "ALTER TABLE a ADD COLUMN b text; SELECT 1; ALTER TABLE a VALIDATE CONSTRAINT c;",
            "SELECT 1",
        ),
        # Nothing slow after the lock.
        ("ALTER TABLE a ADD COLUMN b text; COMMENT ON TABLE a IS 'AT_AlterColumnType';", None),
        # Slow, but before the lock.
        ("UPDATE a SET b = 1 WHERE id = 2; ALTER TABLE a ADD COLUMN b text;", None),
    ],
)
def test_access_exclusive_then_more_names_the_first_slow_statement(
    sql: str, slow: str | None
) -> None:
    found: list[Any] = [s for rule, s in lint_rules(sql) if rule == "access-exclusive-then-more"]
    assert found == ([slow] if slow else [])
