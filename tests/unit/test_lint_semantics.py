"""The lint against each statement issue 10 lists as missed or wrongly refused, one named case
each, plus the per-step opt-out (`lint: {allow, reason}`) and the CONCURRENTLY step shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import spec as base_spec

from datamigration.core.errors import SpecError
from datamigration.core.spec import parse_spec
from datamigration.core.steps import parse_steps
from datamigration.lint import (
    ALLOWABLE_RULE_IDS,
    RULES,
    Severity,
    allowed_findings,
    format_findings,
    has_errors,
    lint_steps,
)
from datamigration.validation import validate

E, W = Severity.ERROR, Severity.WARNING
ROOT = Path(__file__).resolve().parents[2]


def lint(phase: str, *sqls: str, transactional: bool = True) -> list[tuple[str, Severity]]:
    raw = [
        {"name": f"s{i}", "sql": text, "transactional": transactional}
        for i, text in enumerate(sqls)
    ]
    return [(f.rule, f.severity) for f in lint_steps(phase, parse_steps(raw, "s"))]


def blocking(phase: str, *sqls: str) -> set[str]:
    return {rule for rule, severity in lint(phase, *sqls) if severity == E}


# (case id, SQL, the error it must raise in expand and backfill)
MISSED = [
    ("do-block-drop-table", "DO $$ BEGIN DROP TABLE users; END $$", "drop-table"),
    (
        "do-block-execute-constant-string",
        "DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$",
        "drop-table",
    ),
    (
        "do-block-execute-built-string",
        "DO $$ BEGIN EXECUTE 'DROP TABLE ' || quote_ident('users'); END $$",
        "dynamic-sql",
    ),
    (
        "do-block-execute-format",
        "DO $$ BEGIN EXECUTE format('TRUNCATE %I', 'users'); END $$",
        "dynamic-sql",
    ),
    (
        "do-block-nested-in-execute",
        "DO $$ BEGIN EXECUTE $q$ DO $i$ BEGIN EXECUTE 'TRUNCATE users'; END $i$ $q$; END $$",
        "truncate",
    ),
    (
        "do-block-other-language",
        "DO LANGUAGE plpython3u $$ plpy.execute('DROP TABLE users') $$",
        "dynamic-sql",
    ),
    (
        "plpgsql-function-created-then-called",
        "CREATE FUNCTION wipe() RETURNS void LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM users; END $$; SELECT wipe()",
        "delete-without-where",
    ),
    (
        "sql-procedure-created-then-called",
        "CREATE PROCEDURE wipe() LANGUAGE sql AS $$ TRUNCATE users $$; CALL wipe()",
        "truncate",
    ),
    (
        "begin-atomic-function-body",
        "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM users; END",
        "delete-without-where",
    ),
    (
        "trigger-function-body",
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN UPDATE audit SET n = n + 1; RETURN NEW; END $$",
        "update-without-where",
    ),
    ("call-unknown-procedure", "CALL cleanup_everything()", "unknown-call"),
    (
        "trigger-on-unknown-function",
        "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION purge()",
        "unknown-call",
    ),
    ("prepare-execute", "PREPARE p AS DELETE FROM users; EXECUTE p", "delete-without-where"),
    ("execute-unprepared", "EXECUTE prepared_elsewhere", "dynamic-sql"),
    ("explain-analyze-delete", "EXPLAIN ANALYZE DELETE FROM users", "delete-without-where"),
    (
        "cte-delete",
        "WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d",
        "delete-without-where",
    ),
    (
        "merge-then-delete",
        "MERGE INTO users u USING gone g ON u.id = g.id WHEN MATCHED THEN DELETE",
        "merge-delete",
    ),
    ("delete-where-true", "DELETE FROM users WHERE true", "delete-without-where"),
    ("update-where-1-eq-1", "UPDATE users SET a = 1 WHERE 1 = 1", "update-without-where"),
    ("update-where-col-eq-col", "UPDATE users SET a = 1 WHERE id = id", "update-without-where"),
    (
        "delete-where-or-true",
        "DELETE FROM users WHERE id < 10 OR NOT false",
        "delete-without-where",
    ),
    ("delete-where-cast-true", "DELETE FROM users WHERE 't'::boolean", "delete-without-where"),
    (
        "delete-where-exists-constant",
        "DELETE FROM users WHERE EXISTS (SELECT 1)",
        "delete-without-where",
    ),
    ("revoke", "REVOKE SELECT ON users FROM app", "revoke"),
    ("alter-role-nologin", "ALTER ROLE app NOLOGIN", "alter-role"),
    ("setval", "SELECT setval('users_id_seq', 1)", "sequence-reset"),
    ("setval-schema-qualified", "SELECT pg_catalog.setval('users_id_seq', 1)", "sequence-reset"),
    (
        "pg-terminate-backend",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "terminate-backend",
    ),
    ("disable-trigger-all", "ALTER TABLE users DISABLE TRIGGER ALL", "disable-trigger"),
    ("session-replication-role", "SET session_replication_role = replica", "disable-trigger"),
    ("drop-not-null", "ALTER TABLE users ALTER COLUMN email DROP NOT NULL", "drop-not-null"),
    ("drop-default", "ALTER TABLE users ALTER COLUMN tier DROP DEFAULT", "drop-default"),
    ("alter-type-rename-value", "ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'", "rename-enum-value"),
    (
        "generated-stored",
        "ALTER TABLE users ADD COLUMN n bigint GENERATED ALWAYS AS (id * 2) STORED",
        "add-column-generated-stored",
    ),
    ("set-logged", "ALTER TABLE users SET LOGGED", "set-logged-unlogged"),
    ("set-unlogged", "ALTER TABLE users SET UNLOGGED", "set-logged-unlogged"),
    ("set-tablespace", "ALTER TABLE users SET TABLESPACE fast", "set-tablespace"),
    ("vacuum-full", "VACUUM FULL users", "vacuum-full"),
    ("cluster", "CLUSTER users USING users_pkey", "cluster"),
    ("reindex-without-concurrently", "REINDEX TABLE users", "reindex-not-concurrently"),
    ("lock-table", "LOCK TABLE users", "lock-table"),
    (
        "volatile-default-not-on-a-short-list",
        "ALTER TABLE users ADD COLUMN t text DEFAULT my_token()",
        "add-column-volatile-default",
    ),
    (
        "new-table-exemption-not-temp",
        "CREATE TEMP TABLE users (a bigint); CREATE INDEX i ON users (a)",
        "create-index-not-concurrently",
    ),
    (
        "new-table-exemption-not-other-schema",
        "CREATE TABLE scratch.users (a bigint); CREATE INDEX i ON users (a)",
        "create-index-not-concurrently",
    ),
    (
        "new-table-exemption-not-if-not-exists",
        "CREATE TABLE IF NOT EXISTS users (a bigint); CREATE INDEX i ON users (a)",
        "create-index-not-concurrently",
    ),
    (
        "new-table-exemption-ends-with-search-path",
        "SET search_path = scratch; CREATE TABLE users (a bigint); RESET search_path; "
        "DROP TABLE users",
        "drop-table",
    ),
    (
        "inline-references",
        "ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users (id)",
        "add-constraint-validating",
    ),
    (
        "inline-unique",
        "ALTER TABLE users ADD COLUMN e text UNIQUE",
        "add-unique-constraint-locking",
    ),
    (
        "exclude",
        "ALTER TABLE rooms ADD CONSTRAINT no_overlap EXCLUDE USING gist (span WITH &&)",
        "add-exclusion-constraint",
    ),
    (
        "domain-check",
        "CREATE DOMAIN positive AS bigint CHECK (VALUE > 0)",
        "domain-check-constraint",
    ),
    (
        "alter-domain-add-check",
        "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0)",
        "domain-check-constraint",
    ),
    (
        "validate-in-same-transaction",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) "
        "NOT VALID; ALTER TABLE orders VALIDATE CONSTRAINT fk",
        "validate-in-same-transaction",
    ),
    ("index-not-concurrently", "CREATE INDEX i ON users (email)", "create-index-not-concurrently"),
    (
        "foreign-key-without-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)",
        "add-constraint-validating",
    ),
    (
        "check-without-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT c CHECK (amount > 0)",
        "add-constraint-validating",
    ),
    ("copy-from-program", "COPY users FROM PROGRAM 'curl example.com'", "server-side-copy"),
    ("transaction-control", "COMMIT; DROP INDEX i", "transaction-control"),
    ("lock-timeout-override", "SET LOCAL lock_timeout = 0", "timeout-override"),
    (
        "query-to-xml-runs-a-string",
        "SELECT query_to_xml('DELETE FROM users RETURNING 1', true, false, '')",
        "dynamic-sql",
    ),
]


@pytest.mark.parametrize(
    ("statement", "rule"), [pytest.param(s, r, id=case) for case, s, r in MISSED]
)
def test_issue_example_is_refused_outside_contract(statement: str, rule: str) -> None:
    assert rule in blocking("expand", statement)
    assert rule in blocking("backfill", statement)
    # In contract the rule is allowed (destructive) or only warns (a lock hazard), except the
    # few that stay errors everywhere; see docs/lint.md.
    in_contract = RULES[rule].contract
    assert (rule in blocking("contract", statement)) == (in_contract == E)


def test_a_table_created_in_an_earlier_step_is_not_new() -> None:
    first, second = "CREATE TABLE audit (a bigint)", "CREATE INDEX i ON audit (a)"
    assert "create-index-not-concurrently" in blocking("expand", first, second)
    assert blocking("expand", f"{first}; {second}") == set()


def test_explain_without_analyze_does_not_run_its_statement() -> None:
    assert lint("expand", "EXPLAIN DELETE FROM users") == []


# -- false positives: binary-coercible type changes -------------------------------------------
# (case id, the column's type as created earlier in the phase, the new type)
COERCIBLE = [
    ("varchar-5-to-varchar-10", "varchar(5)", "varchar(10)"),
    ("varchar-to-text", "varchar(20)", "text"),
    ("unbounded-varchar-to-text", "varchar", "text"),
    ("text-to-unbounded-varchar", "text", "varchar"),
    ("varchar-n-to-unbounded-varchar", "varchar(5)", "varchar"),
    ("numeric-precision-increase-same-scale", "numeric(10,2)", "numeric(12,2)"),
    ("numeric-to-unbounded-numeric", "numeric(10,2)", "numeric"),
    ("cidr-to-inet", "cidr", "inet"),
    ("timestamp-precision-increase", "timestamp(3)", "timestamp(6)"),
    ("timestamptz-precision-increase", "timestamptz(0)", "timestamptz(3)"),
    ("interval-precision-increase", "interval(0)", "interval(6)"),
    ("varbit-length-increase", "varbit(8)", "varbit(16)"),
]
NOT_COERCIBLE = [
    ("varchar-10-to-varchar-5", "varchar(10)", "varchar(5)"),
    ("numeric-scale-change", "numeric(10,2)", "numeric(12,4)"),
    ("int-to-bigint", "int", "bigint"),
    ("text-to-varchar-n", "text", "varchar(10)"),
    ("timestamp-to-timestamptz", "timestamp", "timestamptz"),
    ("inet-to-cidr", "inet", "cidr"),
]


@pytest.mark.parametrize(("old", "new"), [pytest.param(o, n, id=case) for case, o, n in COERCIBLE])
def test_binary_coercible_type_change_is_safe(old: str, new: str) -> None:
    created = f"ALTER TABLE users ADD COLUMN c {old}"
    changed = f"ALTER TABLE users ALTER COLUMN c TYPE {new}"
    findings = lint_steps(
        "expand", parse_steps([{"name": "a", "sql": created}, {"name": "b", "sql": changed}], "s")
    )
    assert [f.rule for f in findings if f.step == "b"] == []


@pytest.mark.parametrize(
    ("old", "new"), [pytest.param(o, n, id=case) for case, o, n in NOT_COERCIBLE]
)
def test_rewriting_type_change_is_refused(old: str, new: str) -> None:
    created = f"ALTER TABLE users ADD COLUMN c {old}"
    changed = f"ALTER TABLE users ALTER COLUMN c TYPE {new}"
    findings = lint_steps(
        "expand", parse_steps([{"name": "a", "sql": created}, {"name": "b", "sql": changed}], "s")
    )
    assert [(f.rule, f.severity) for f in findings if f.step == "b"] == [("alter-column-type", E)]


@pytest.mark.parametrize(
    "new", ["varchar(10)", "text", "varchar", "numeric(12,2)", "timestamptz(6)", "inet"]
)
def test_widening_with_unknown_old_type_is_accepted_with_a_warning(new: str) -> None:
    # The old type is in the database, not in the spec: the lint accepts and says what to check.
    verdict = lint("expand", f"ALTER TABLE users ALTER COLUMN c TYPE {new}")
    assert verdict == [("alter-column-type-unverified", W)]


def test_type_change_with_using_is_a_rewrite() -> None:
    statement = "ALTER TABLE users ALTER COLUMN c TYPE text USING c::text"
    assert lint("expand", statement) == [("alter-column-type", E)]


# -- CONCURRENTLY: a step of its own, transactional: false -------------------------------------
def test_concurrently_in_a_transactional_step_names_the_field() -> None:
    steps = parse_steps(
        [
            {"name": "add", "sql": "ALTER TABLE users ADD COLUMN e text"},
            {"name": "index", "sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (e)"},
        ],
        "spec.expand.steps",
    )
    [finding] = lint_steps("expand", steps)
    assert finding.rule == "concurrently-in-transaction"
    assert finding.field == "spec.expand.steps[1].transactional"
    assert "spec.expand.steps[1].transactional: false" in finding.message


def test_concurrently_must_be_alone_in_its_non_transactional_step() -> None:
    two = (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a ON users (x); "
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS b ON users (y)"
    )
    assert blocking("expand", two) == {"concurrently-in-transaction"}
    assert lint("expand", two, transactional=False) == [("non-transactional-not-alone", E)]
    alone = "CREATE INDEX CONCURRENTLY IF NOT EXISTS a ON users (x)"
    assert lint("expand", alone, transactional=False) == []
    assert lint("expand", "REINDEX (CONCURRENTLY) INDEX a", transactional=False) == []


# -- the opt-out ---------------------------------------------------------------------------------
def spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return base_spec(expand={"steps": list(steps)})


def dynamic(**lint_field: Any) -> dict[str, Any]:
    step = {"name": "dyn", "sql": "DO $$ BEGIN EXECUTE 'SELECT ' || 1; END $$"}
    return {**step, "lint": lint_field} if lint_field else step


def test_without_opt_out_dynamic_sql_is_refused() -> None:
    verdict = validate(spec(dynamic()))
    assert not hasattr(verdict, "expand")
    assert "dynamic-sql" in " ".join(verdict.problems)  # type: ignore[union-attr]


def test_an_allowed_rule_is_reported_with_its_reason_and_does_not_block() -> None:
    reason = "builds the statement from a fixed list; reviewed in PR 42"
    raw = spec(dynamic(allow=["dynamic-sql"], reason=reason))
    parsed = validate(raw)
    assert hasattr(parsed, "expand"), parsed
    [finding] = allowed_findings(parse_spec(raw))
    assert (finding.rule, finding.allowed_by, finding.step) == ("dynamic-sql", reason, "dyn")
    assert finding.field == "spec.expand.steps[0].sql"
    assert not finding.blocking
    assert not has_errors([finding])
    text = format_findings([finding])
    assert "allowed error" in text
    assert reason in text
    assert text.endswith("0 errors, 0 warnings, 1 allowed")


def test_allowing_one_rule_does_not_silence_another() -> None:
    step = {
        "name": "dyn",
        "sql": "DO $$ BEGIN EXECUTE 'SELECT ' || 1; END $$; DROP TABLE users",
        "lint": {"allow": ["dynamic-sql"], "reason": "reviewed"},
    }
    verdict = validate(spec(step))
    problems = " ".join(verdict.problems)  # type: ignore[union-attr]
    assert "drop-table" in problems
    assert "dynamic-sql" not in problems


def test_plan_shows_an_allowed_finding_with_its_reason() -> None:
    from datamigration.cli.plan import plan_migration

    reason = "builds the statement from a fixed list; reviewed in PR 42"
    document = {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": "m", "namespace": "shop"},
        "spec": spec(dynamic(allow=["dynamic-sql"], reason=reason)),
    }
    plan = plan_migration(document)
    assert plan.ok, plan.text
    assert "lint allowed error: dynamic-sql" in plan.text
    assert f"allowed by the step's lint.allow: {reason}" in plan.text


def test_an_unknown_rule_id_is_an_error_naming_the_field() -> None:
    step = {**dynamic(), "lint": {"allow": ["dynamic-sql", "no-such-rule"], "reason": "x"}}
    verdict = validate(spec(step))
    assert any(
        p.startswith("spec.expand.steps[0].lint: ") and "lint.allow[1]" in p
        for p in verdict.problems  # type: ignore[union-attr]
    )


def test_a_structural_rule_cannot_be_allowed() -> None:
    step = {
        "name": "index",
        "sql": "CREATE INDEX CONCURRENTLY i ON users (a)",
        "lint": {"allow": ["concurrently-in-transaction"], "reason": "x"},
    }
    problems = " ".join(validate(spec(step)).problems)  # type: ignore[union-attr]
    assert "spec.expand.steps[0].lint.allow[0]: the lint rule concurrently-in-transaction" in (
        problems
    )
    assert "concurrently-in-transaction" not in ALLOWABLE_RULE_IDS


@pytest.mark.parametrize(
    ("lint_field", "field"),
    [
        pytest.param({"allow": ["dynamic-sql"]}, "lint.reason", id="reason-missing"),
        pytest.param({"allow": ["dynamic-sql"], "reason": "  "}, "lint.reason", id="reason-blank"),
        pytest.param({"allow": [], "reason": "x"}, "lint.allow", id="allow-empty"),
        pytest.param({"reason": "x"}, "lint.allow", id="allow-missing"),
        pytest.param({"allow": ["Drop Table"], "reason": "x"}, "lint.allow[0]", id="not-an-id"),
        pytest.param({"allow": ["*"], "reason": "x"}, "lint.allow[0]", id="no-wildcard"),
        pytest.param(
            {"allow": ["drop-table", "drop-table"], "reason": "x"}, "lint.allow[1]", id="twice"
        ),
        pytest.param({"allow": ["drop-table"], "reason": "x", "all": True}, "lint.all", id="extra"),
    ],
)
def test_a_malformed_opt_out_names_the_field(lint_field: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_steps([{**dynamic(), "lint": lint_field}], "spec.expand.steps")
    assert caught.value.field == f"spec.expand.steps[0].{field}"


def test_the_opt_out_does_not_change_the_step_checksum() -> None:
    [plain] = parse_steps([dynamic()], "s")
    [allowed] = parse_steps([dynamic(allow=["dynamic-sql"], reason="x")], "s")
    assert plain.checksum == allowed.checksum


# -- one source of truth ------------------------------------------------------------------------
def crd_lint_schema(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    step = schema["properties"]["spec"]["properties"]["expand"]["properties"]["steps"]["items"]
    lint_schema: dict[str, Any] = step["properties"]["lint"]
    return lint_schema


def test_the_crd_allows_exactly_the_allowable_rule_ids() -> None:
    schema = crd_lint_schema(ROOT / "crds" / "datamigrations.datamigration.dev.yaml")
    assert schema["required"] == ["allow", "reason"]
    assert schema["properties"]["allow"]["items"]["enum"] == list(ALLOWABLE_RULE_IDS)
    assert schema["properties"]["reason"]["minLength"] == 1


def test_docs_explain_every_rule_with_its_verdicts() -> None:
    text = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}
    words = {None: "passes", E: "**refused**", W: "warning"}
    for rule_id, rule in RULES.items():
        cells = [cell.strip() for cell in rows[rule_id].split("|")]
        assert cells[2:4] == [words[rule.expand], words[rule.contract]], rule_id
        assert rule.reason in rows[rule_id], rule_id


def test_every_rule_has_a_reason_a_recipe_and_a_source() -> None:
    for rule in RULES.values():
        assert rule.reason.endswith("."), rule.id
        assert rule.recipe.endswith("."), rule.id
        assert rule.allowable is False or rule.sources, rule.id


# -- hostile input: deep nesting is refused, never a crash and never a pass ----------------------
@pytest.mark.parametrize("depth", [65, 101, 500, 2000, 10000])
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda n: "DELETE FROM users WHERE " + "NOT " * n + "(id = 5)", id="not"),
        pytest.param(lambda n: "DELETE FROM users WHERE 't'" + "::bool" * n, id="casts"),
        pytest.param(
            lambda n: "DELETE FROM users WHERE " + "(" * n + "true" + ")" * n, id="parens"
        ),
    ],
)
def test_a_too_deep_where_is_refused(build: Any, depth: int) -> None:
    assert blocking("expand", build(depth)) & {
        "delete-without-where",
        "dynamic-sql",
        "unparseable-sql",
    }


def test_an_even_number_of_nots_on_false_is_still_evaluated() -> None:
    assert lint("expand", "DELETE FROM users WHERE " + "NOT " * 64 + "false") == []


@pytest.mark.parametrize("phase", ["expand", "backfill", "contract"])
@pytest.mark.parametrize(
    "step",
    [
        pytest.param(
            {"name": "v", "verify": {"query": "SELECT setval('users_id_seq', 1)", "expect": 1}},
            id="verify-setval",
        ),
        pytest.param(
            {"name": "v", "verify": {"query": "SELECT pg_advisory_lock(1)", "expect": ""}},
            id="verify-advisory-lock",
        ),
        pytest.param(
            {"name": "b", "backfill": {"table": "t", "set": {"c": "nextval('s')"}}},
            id="backfill-set-nextval",
        ),
        pytest.param(
            {
                "name": "b",
                "backfill": {"table": "t", "set": {"c": "1"}, "where": "setval('s', 1) > 0"},
            },
            id="backfill-where-setval",
        ),
    ],
)
def test_a_side_effect_in_a_check_or_a_transform_is_refused_in_every_phase(
    phase: str, step: dict[str, Any]
) -> None:
    """In contract the verify queries share the destructive step's transaction (not READ ONLY),
    so a side effect there would run: refused everywhere, and no step can allow it."""
    findings = lint_steps(phase, parse_steps([step], "s"))
    assert any(f.rule == "side-effect-in-check" and f.blocking for f in findings), findings
