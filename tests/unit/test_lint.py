"""The safety lint over a catalogue of named statements: what is an error in expand/backfill, what
is allowed in contract, what is a lock warning everywhere, and what is simply safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from datamigration.core.steps import parse_steps
from datamigration.lint import (
    RULES,
    Finding,
    Severity,
    format_findings,
    has_errors,
    lint_document,
    lint_file,
    lint_steps,
)

E, W = Severity.ERROR, Severity.WARNING


def verdicts(phase: str, *raw_steps: dict[str, Any]) -> list[tuple[str, Severity]]:
    steps = parse_steps(list(raw_steps), f"spec.{phase}.steps")
    return [(f.rule, f.severity) for f in lint_steps(phase, steps)]


def sql(text: str, transactional: bool = True) -> dict[str, Any]:
    return {"name": "step", "sql": text, "transactional": transactional}


def named(name: str, text: str, transactional: bool = True) -> dict[str, Any]:
    return {"name": name, "sql": text, "transactional": transactional}


# (id, sql, verdicts in expand, verdicts in contract)
CATALOGUE: list[tuple[str, str, list[tuple[str, Severity]], list[tuple[str, Severity]]]] = [
    ("drop-table", "DROP TABLE users", [("drop-table", E)], []),
    ("drop-table-if-exists", "DROP TABLE IF EXISTS a, b CASCADE", [("drop-table", E)], []),
    ("drop-column", "ALTER TABLE users DROP COLUMN email", [("drop-column", E)], []),
    (
        "drop-index",
        "DROP INDEX users_email",
        [("drop-index", E)],
        [("drop-index-not-concurrently", W)],
    ),
    (
        "drop-index-concurrently-in-transaction",
        "DROP INDEX CONCURRENTLY users_email",
        [("drop-index", E), ("concurrently-in-transaction", E)],
        [("concurrently-in-transaction", E)],
    ),
    ("drop-schema", "DROP SCHEMA legacy CASCADE", [("drop-schema", E)], []),
    ("drop-view", "DROP VIEW active_users", [("drop-view", E)], []),
    ("drop-materialized-view", "DROP MATERIALIZED VIEW stats", [("drop-view", E)], []),
    ("drop-sequence", "DROP SEQUENCE s", [("drop-sequence", E)], []),
    ("drop-type", "DROP TYPE mood", [("drop-type", E)], []),
    ("drop-function", "DROP FUNCTION f(int)", [("drop-function", E)], []),
    ("drop-trigger", "DROP TRIGGER t ON users", [("drop-object", E)], []),
    ("drop-database", "DROP DATABASE app", [("drop-database", E)], []),
    (
        "drop-constraint",
        "ALTER TABLE users DROP CONSTRAINT users_email_key",
        [("drop-constraint", E)],
        [],
    ),
    ("rename-table", "ALTER TABLE users RENAME TO people", [("rename-table", E)], []),
    ("move-table", "ALTER TABLE users SET SCHEMA archive", [("rename-table", E)], []),
    (
        "rename-column",
        "ALTER TABLE users RENAME COLUMN email TO email_address",
        [("rename-column", E)],
        [],
    ),
    ("rename-view", "ALTER VIEW v RENAME TO w", [("rename-object", E)], []),
    (
        "alter-column-type",
        "ALTER TABLE users ALTER COLUMN id TYPE bigint",
        [("alter-column-type", E)],
        [("alter-column-type", W)],
    ),
    (
        "set-not-null",
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
        [("set-not-null", E)],
        [("set-not-null", W)],
    ),
    (
        "add-column-not-null-without-default",
        "ALTER TABLE users ADD COLUMN tier text NOT NULL",
        [("add-column-not-null-without-default", E)],
        [("add-column-not-null-without-default", E)],
    ),
    (
        "add-column-volatile-default",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        [("add-column-volatile-default", E)],
        [("add-column-volatile-default", W)],
    ),
    ("truncate", "TRUNCATE users", [("truncate", E)], []),
    ("delete-without-where", "DELETE FROM users", [("delete-without-where", E)], []),
    (
        "update-without-where",
        "UPDATE users SET email_address = email",
        [("update-without-where", E)],
        [("update-without-where", W)],
    ),
    (
        "create-index-blocking",
        "CREATE INDEX users_email ON users (email)",
        [("create-index-not-concurrently", E)],
        [("create-index-not-concurrently", W)],
    ),
    (
        "create-index-concurrently-in-transaction",
        "CREATE INDEX CONCURRENTLY users_email ON users (email)",
        [("concurrently-in-transaction", E)],
        [("concurrently-in-transaction", E)],
    ),
    (
        "add-foreign-key-validating",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)",
        [("add-constraint-validating", E)],
        [("add-constraint-validating", W)],
    ),
    (
        "add-unique-constraint",
        "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email)",
        [("add-unique-constraint-locking", E)],
        [("add-unique-constraint-locking", W)],
    ),
    ("unparseable", "ALTR TABLE users", [("unparseable-sql", E)], [("unparseable-sql", E)]),
    # A destructive statement hidden among safe ones is still found.
    (
        "second-statement",
        "ALTER TABLE users ADD COLUMN a text; DROP TABLE sessions",
        [("drop-table", E)],
        [],
    ),
]

SAFE = [
    (
        "create-table",
        "CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "at timestamptz NOT NULL)",
    ),
    ("add-nullable-column", "ALTER TABLE users ADD COLUMN email_address text"),
    (
        "add-column-constant-default",
        "ALTER TABLE users ADD COLUMN tier text NOT NULL DEFAULT 'free'",
    ),
    ("add-column-now-default", "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()"),
    ("set-default", "ALTER TABLE users ALTER COLUMN tier SET DEFAULT 'free'"),
    ("check-not-valid", "ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID"),
    ("validate-constraint", "ALTER TABLE users VALIDATE CONSTRAINT c"),
    ("fk-not-valid", "ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID"),
    ("unique-using-index", "ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX users_email"),
    ("update-with-where", "UPDATE users SET email_address = email WHERE id < 100"),
    ("delete-with-where", "DELETE FROM sessions WHERE expires_at < now()"),
    ("insert", "INSERT INTO settings (k, v) VALUES ('a', 'b')"),
    ("create-view", "CREATE VIEW active_users AS SELECT * FROM users WHERE active"),
    ("rename-index", "ALTER INDEX users_email RENAME TO users_email_idx"),
    ("comment-mentions-drop", "-- DROP TABLE users\nALTER TABLE users ADD COLUMN x text"),
    ("string-mentions-drop", "INSERT INTO log (msg) VALUES ('DROP TABLE users; TRUNCATE x')"),
    (
        "function-body-mentions-drop",
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT 'DROP TABLE t' $$",
    ),
    (
        "index-on-new-table",
        "CREATE TABLE audit (id bigint, at timestamptz); CREATE INDEX audit_at ON audit (at)",
    ),
    (
        "not-null-on-new-table",
        "CREATE TABLE t (a bigint); ALTER TABLE t ALTER COLUMN a SET NOT NULL, "
        "ADD COLUMN b bigint NOT NULL, ADD CONSTRAINT u UNIQUE (a)",
    ),
]


@pytest.mark.parametrize(
    ("statement", "in_expand", "in_contract"),
    [pytest.param(s, e, c, id=case) for case, s, e, c in CATALOGUE],
)
def test_unsafe_statements(
    statement: str,
    in_expand: list[tuple[str, Severity]],
    in_contract: list[tuple[str, Severity]],
) -> None:
    assert verdicts("expand", sql(statement)) == in_expand
    assert verdicts("backfill", sql(statement)) == in_expand
    assert verdicts("contract", sql(statement)) == in_contract


@pytest.mark.parametrize("statement", [pytest.param(s, id=case) for case, s in SAFE])
@pytest.mark.parametrize("phase", ["expand", "backfill", "contract"])
def test_safe_statements(phase: str, statement: str) -> None:
    assert verdicts(phase, sql(statement)) == []


def test_set_not_null_after_a_validated_not_null_check_is_clean() -> None:
    # The documented cheap way (examples/02): the NOT VALID add, then in a later step (its own
    # transaction) VALIDATE and SET NOT NULL: no scan under the lock, nothing newly rejected.
    add = "ALTER TABLE orders ADD CONSTRAINT c CHECK (currency IS NOT NULL) NOT VALID"
    rest = (
        "ALTER TABLE orders VALIDATE CONSTRAINT c; "
        "ALTER TABLE orders ALTER COLUMN currency SET NOT NULL; "
        "ALTER TABLE orders DROP CONSTRAINT c"
    )
    assert verdicts("contract", named("add", add), named("rest", rest)) == []
    # In one transaction, VALIDATE keeps the add's lock through the scan.
    assert verdicts("contract", sql(f"{add}; {rest}")) == [
        ("validate-in-same-transaction", W),
        ("access-exclusive-then-more", W),
    ]
    assert ("validate-in-same-transaction", E) in verdicts("expand", sql(f"{add}; {rest}"))
    # Without the VALIDATE, the check proves nothing about existing rows.
    unvalidated = "ALTER TABLE orders ALTER COLUMN currency SET NOT NULL"
    assert verdicts("contract", named("add", add), named("set", unvalidated)) == [
        ("set-not-null", W)
    ]
    # A check on another column does not count.
    other = (
        "ALTER TABLE orders ADD CONSTRAINT c CHECK (country IS NOT NULL) NOT VALID",
        "ALTER TABLE orders VALIDATE CONSTRAINT c",
        "ALTER TABLE orders ALTER COLUMN currency SET NOT NULL",
    )
    assert verdicts("contract", *(named(f"s{i}", t) for i, t in enumerate(other))) == [
        ("set-not-null", W)
    ]


def test_concurrent_index_in_a_non_transactional_step_is_clean() -> None:
    step = sql("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (email)", transactional=False)
    assert verdicts("expand", step) == []
    drop = sql("DROP INDEX CONCURRENTLY IF EXISTS i", transactional=False)
    assert verdicts("contract", drop) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"set": {"b": "upper(a)"}}, [], id="expression"),
        pytest.param({"set": {"b": "a"}, "where": "b IS NULL"}, [], id="with-where"),
        pytest.param(
            {"set": {"b": "(SELECT max(x) FROM t WHERE t.id = users.id)"}}, [], id="subquery"
        ),
        pytest.param(
            {"set": {"b": "1); DROP TABLE users; SELECT (1"}},
            [("invalid-expression", E)],
            id="statement-smuggled-in-set",
        ),
        pytest.param(
            {"set": {"b": "a"}, "where": "true) OR (1=1); DELETE FROM users; SELECT (1"},
            [("invalid-expression", E)],
            id="statement-smuggled-in-where",
        ),
        pytest.param({"set": {"b": "upper(a"}}, [("invalid-expression", E)], id="bad-expression"),
        pytest.param(
            {"set": {"b": "a"}, "where": "b IS"}, [("invalid-expression", E)], id="bad-where"
        ),
    ],
)
def test_backfill_expressions(body: dict[str, Any], expected: list[tuple[str, Severity]]) -> None:
    step = {"name": "copy", "backfill": {"table": "users", **body}}
    assert verdicts("backfill", step) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("SELECT count(*) FROM users WHERE b IS NULL", [], id="select"),
        pytest.param("WITH x AS (SELECT 1) SELECT count(*) FROM x", [], id="cte"),
        pytest.param("DELETE FROM users RETURNING 1", [("verify-not-read-only", E)], id="delete"),
        pytest.param(
            "WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) FROM d",
            [("verify-not-read-only", E)],
            id="data-modifying-cte",
        ),
        pytest.param("SELECT 1; SELECT 2", [("verify-not-read-only", E)], id="two-statements"),
        pytest.param("SELECT 1 FOR UPDATE", [("verify-not-read-only", E)], id="row-locks"),
        pytest.param("SELEC 1", [("unparseable-sql", E)], id="unparseable"),
    ],
)
def test_verify_queries(query: str, expected: list[tuple[str, Severity]]) -> None:
    step = {"name": "check", "verify": {"query": query, "expect": 0}}
    assert verdicts("expand", step) == expected
    assert verdicts("contract", step) == expected


def test_a_finding_names_phase_step_statement_rule_and_advice() -> None:
    steps = parse_steps(
        [
            {"name": "ok", "sql": "ALTER TABLE users ADD COLUMN b text"},
            {"name": "drop-old", "sql": "ALTER TABLE users   DROP COLUMN\n email " + "-" * 200},
        ],
        "spec.expand.steps",
    )
    [finding] = lint_steps("expand", steps, migration="shop/rename-email")
    assert finding.phase == "expand"
    assert finding.step == "drop-old"
    assert finding.rule == "drop-column"
    assert finding.severity == Severity.ERROR
    assert finding.statement.startswith("ALTER TABLE users DROP COLUMN email")
    assert len(finding.statement) <= 100
    assert "contract" in finding.message
    assert "\n" not in finding.message
    assert finding.migration == "shop/rename-email"


def test_unparseable_finding_carries_the_parser_message() -> None:
    [finding] = lint_steps("expand", parse_steps([sql("ALTR TABLE t")], "s"))
    assert 'syntax error at or near "ALTR"' in finding.message


def test_every_rule_id_is_kebab_case_and_has_advice() -> None:
    for rule_id, rule in RULES.items():
        assert rule_id == rule.id
        assert rule_id.replace("-", "").isalnum()
        assert rule_id == rule_id.lower()
        assert rule.message.endswith(".")
        assert "\n" not in rule.message


def manifest(**phases: Any) -> dict[str, Any]:
    return {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": "rename-email", "namespace": "shop"},
        "spec": {"database": {}, "workload": {}, **phases},
    }


def test_lint_document_covers_every_phase_and_contract_verify() -> None:
    document = manifest(
        expand={"steps": [{"name": "drop", "sql": "DROP TABLE x"}]},
        backfill={"steps": [{"name": "wipe", "sql": "TRUNCATE y"}]},
        contract={
            "verify": [{"name": "sneaky", "query": "DELETE FROM z RETURNING 1", "expect": 0}],
            "steps": [{"name": "drop", "sql": "DROP TABLE x"}],
        },
    )
    findings = lint_document(document)
    assert [(f.phase, f.step, f.rule) for f in findings] == [
        ("expand", "drop", "drop-table"),
        ("backfill", "wipe", "truncate"),
        ("contract", "sneaky", "verify-not-read-only"),
    ]
    assert {f.migration for f in findings} == {"shop/rename-email"}


def test_lint_document_reports_an_invalid_spec_with_its_field() -> None:
    document = manifest(backfill={"steps": [{"name": "c", "backfill": {"table": "t"}}]})
    [finding] = lint_document(document)
    assert finding.rule == "invalid-spec"
    assert finding.severity == Severity.ERROR
    assert finding.message.startswith("spec.backfill.steps[0].backfill.set: ")
    bad_verify = manifest(contract={"verify": [{"name": "v", "expect": 0}]})
    [finding] = lint_document(bad_verify)
    assert finding.message.startswith("spec.contract.verify[0].query: ")


def test_lint_file_with_several_documents(tmp_path: Path) -> None:
    path = tmp_path / "migrations.yaml"
    safe = manifest(expand={"steps": [{"name": "add", "sql": "ALTER TABLE t ADD COLUMN c text"}]})
    unsafe = manifest(expand={"steps": [{"name": "drop", "sql": "DROP TABLE t"}]})
    unsafe["metadata"]["name"] = "second"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}
    path.write_text(yaml.safe_dump_all([safe, secret, unsafe]), encoding="utf-8")
    findings = lint_file(path)
    assert [(f.migration, f.rule, f.source) for f in findings] == [
        ("shop/second", "drop-table", str(path))
    ]
    assert has_errors(findings)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "cannot read the file", id="missing"),
        pytest.param("a: [", "not valid YAML", id="not-yaml"),
        pytest.param("kind: ConfigMap\n", "no DataMigration document", id="no-datamigration"),
    ],
)
def test_lint_file_problems_are_findings(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "file.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    [finding] = lint_file(path)
    assert finding.severity == Severity.ERROR
    assert expected in finding.message
    assert has_errors([finding])


def test_format_findings() -> None:
    assert format_findings([]) == "no findings"
    findings = [
        Finding(
            rule="drop-column",
            severity=Severity.ERROR,
            message="Dropping a column breaks old code. Move it to contract.",
            phase="expand",
            step="drop-old",
            statement="ALTER TABLE users DROP COLUMN email",
            migration="shop/rename-email",
            source="m.yaml",
        ),
        Finding(rule="create-index-not-concurrently", severity=Severity.WARNING, message="Slow."),
    ]
    assert format_findings(findings) == (
        'error: m.yaml shop/rename-email expand step "drop-old": drop-column: '
        "ALTER TABLE users DROP COLUMN email\n"
        "    Dropping a column breaks old code. Move it to contract.\n"
        "warning: -: create-index-not-concurrently\n"
        "    Slow.\n"
        "1 error, 1 warning"
    )
    assert not has_errors(findings[1:])


def test_specs_that_differ_only_where_the_lint_does_not_read_are_linted_once() -> None:
    """The operator validates every migration it reconciles; a thousand made from one template
    lint the same steps. A hit must be the lint's own answer: a change of a step is linted anew."""
    from datamigration.core.spec import parse_spec
    from datamigration.lint import lint_spec
    from datamigration.lint.check import _linted_lately

    def raw(key: str, *, paused: bool = False, drop: str = "DROP COLUMN email") -> dict[str, Any]:
        return {
            "database": {"urlFrom": {"secretKeyRef": {"name": "db", "key": key}}},
            "workload": {"kind": "Deployment", "name": "web", "container": "api", "image": "a:2"},
            "expand": {"steps": [{"name": "add", "sql": "ALTER TABLE t ADD COLUMN e text"}]},
            "contract": {"steps": [{"name": "drop", "sql": f"ALTER TABLE t {drop}"}]},
            "paused": paused,
        }

    _linted_lately.cache_clear()
    first = lint_spec(parse_spec(raw("m1")))
    again = lint_spec(parse_spec(raw("m2", paused=True)))
    assert again == first and again is not first
    assert _linted_lately.cache_info().hits == 1
    other = lint_spec(parse_spec(raw("m3", drop="ALTER COLUMN e SET NOT NULL")))
    assert _linted_lately.cache_info().misses == 2
    assert {f.rule for f in other} != {f.rule for f in first}
    assert other == lint_spec(parse_spec(raw("m4", drop="ALTER COLUMN e SET NOT NULL")))
