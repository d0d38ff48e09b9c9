"""Backfill `set`/`where` expressions and verify queries that cannot break out or write.

Why: the runner wraps a backfill's `set` values and `where` into its own batch UPDATE. Spliced as
text, `where: "note IS NULL) OR (true"` escaped the batch predicate, `set: {note: "'x'), amount =
(amount * 100"}` touched a column not in `set`, and a trailing `--` commented the key range out.
A verify query could call `setval` and still report "verified".

Guarantees (pure: pglast only, no database):
- `expression_sql(text, field)` parses `text` with PostgreSQL's own parser as exactly ONE value
  expression (`SELECT <text>` must be one statement with one unnamed target and nothing else: no
  FROM, WHERE, set operation, ...), refuses comments, and returns the expression printed back from
  the parse tree. The runner builds its UPDATE from that text only, so nothing the user writes can
  close a parenthesis, add an assignment or comment out the rest of the statement.
- Inside an expression and a verify query, sub-statements that write or lock (INSERT, UPDATE,
  DELETE, MERGE, SELECT INTO, FOR UPDATE/SHARE) are refused, and every function called must be on
  `ALLOWED_FUNCTIONS` (known immutable or stable functions without side effects, aggregates, and
  for `set` only `SET_ONLY_FUNCTIONS`, volatile but harmless such as `gen_random_uuid`). Known
  side-effect functions (`SIDE_EFFECT_FUNCTIONS`, `SIDE_EFFECT_PREFIXES`) are refused with rule
  `side-effect-function`; any other function, including your own, with `unknown-function`.
  Functions may be written plain or `pg_catalog.`-qualified; any other schema is unknown.
- `verify_problems` requires a verify query to be a single SELECT (no data-modifying CTE); the
  runner also runs it in a READ ONLY transaction on PostgreSQL (outside the contract transaction).

Each problem names the field (`spec.backfill.steps[0].backfill.set.note`) and carries a rule id:
`unsafe-expression`, `side-effect-function` or `unknown-function`. The operator refuses the
DataMigration (lint), the runner refuses the plan (exit 2).

SQLite (`dialect="sqlite"`): SQLite has syntax PostgreSQL's parser rejects (`a IS b`,
`json_type(doc, '$.k')`...). There an expression is checked on the tokens of pglast's scanner
(which skips quoted strings and identifiers): no comment, no `;`, no top-level `,`, no `)` that
closes a parenthesis the expression did not open (so it cannot leave the runner's wrapping
parentheses), no keyword of a statement that writes, and every `name(` a function on the lists;
when PostgreSQL's parser also accepts it, the parse-tree checks apply as well. It is then sent as
written inside the runner's parentheses (PostgreSQL's printed form would change its meaning on
SQLite: `TRIM(x)` prints as `pg_catalog.btrim(x)`). A verify query is checked the same way: one
statement starting with SELECT, WITH or VALUES, no writing keyword, allow-listed functions.

Limits: operators (`+`, `||`, ...) are not checked (PostgreSQL's built-in operators call
side-effect-free functions; a user-defined operator over a side-effect function is not detected).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import SetOperation
from pglast.parser import ParseError, scan

from datamigration.core.errors import SpecError
from datamigration.core.steps import BackfillStep, Step, VerifyStep
from datamigration.lint.findings import Finding, Severity, shorten

POSTGRESQL = "postgresql"
SQLITE = "sqlite"
UNSAFE_EXPRESSION = "unsafe-expression"
SIDE_EFFECT_FUNCTION = "side-effect-function"
UNKNOWN_FUNCTION = "unknown-function"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Immutable or stable functions without side effects (PostgreSQL, plus common SQLite ones).
ALLOWED_FUNCTIONS = _words(
    """
    abs ceil ceiling floor round trunc sign mod div power pow sqrt cbrt exp ln log log10 pi
    degrees radians width_bucket gcd lcm factorial scale trim_scale min_scale greatest least
    coalesce nullif num_nonnulls num_nulls lower upper initcap length char_length
    character_length octet_length bit_length substr substring left right lpad rpad trim
    btrim ltrim rtrim replace translate reverse repeat concat concat_ws format split_part
    strpos position starts_with ascii chr to_hex md5 sha224 sha256 sha384 sha512 encode
    decode convert_from convert_to overlay normalize quote_ident quote_literal
    quote_nullable regexp_replace regexp_match regexp_like regexp_count regexp_instr
    regexp_substr unistr casefold string_to_array array_to_string to_char to_date
    to_timestamp to_number date_trunc date_part extract date_bin age make_date make_time
    make_timestamp make_timestamptz make_interval justify_days justify_hours
    justify_interval isfinite timezone now current_date current_time current_timestamp
    localtime localtimestamp transaction_timestamp statement_timestamp to_json to_jsonb
    row_to_json array_to_json json_build_object jsonb_build_object json_build_array
    jsonb_build_array json_object jsonb_object jsonb_set jsonb_set_lax jsonb_insert
    jsonb_strip_nulls json_strip_nulls jsonb_typeof json_typeof json_extract_path
    json_extract_path_text jsonb_extract_path jsonb_extract_path_text jsonb_array_length
    json_array_length jsonb_pretty jsonb_path_exists jsonb_path_match jsonb_path_query_first
    jsonb_exists array_length array_lower array_upper array_ndims array_dims array_append
    array_prepend array_cat array_position array_positions array_remove array_replace
    cardinality array_fill trim_array bool_and bool_or every count sum avg min max array_agg
    string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bit_and bit_or stddev
    variance to_regclass to_regtype to_regproc to_regnamespace to_regrole pg_typeof
    format_type pg_get_indexdef pg_get_constraintdef pg_get_expr pg_relation_size
    pg_table_size pg_indexes_size pg_total_relation_size obj_description col_description
    current_schema current_database current_user session_user current_setting
    has_table_privilege has_column_privilege host hostmask masklen netmask network family
    inet_same_family uuid_extract_version uuid_extract_timestamp ifnull instr printf
    strftime julianday datetime date time iif json_extract hex unicode typeof total
    group_concat json json_array json_insert json_patch json_remove json_replace json_set
    json_type json_valid json_quote json_group_array json_group_object
    """
)
#: Volatile but without side effects: allowed in backfill `set` only (not in where or verify).
SET_ONLY_FUNCTIONS = frozenset(
    {"gen_random_uuid", "uuid_generate_v4", "random", "clock_timestamp", "timeofday"}
)
#: Functions that change something outside the expression's value (refused by name).
SIDE_EFFECT_FUNCTIONS = _words(
    """
    setval nextval lastval currval pg_terminate_backend pg_cancel_backend pg_reload_conf
    pg_rotate_logfile set_config pg_sleep pg_sleep_for pg_sleep_until pg_notify
    pg_switch_wal pg_create_restore_point pg_backup_start pg_backup_stop pg_start_backup
    pg_stop_backup pg_promote pg_export_snapshot pg_import_system_collations txid_current
    pg_current_xact_id query_to_xml query_to_xmlschema query_to_xml_and_xmlschema
    cursor_to_xml pg_log_backend_memory_contexts pg_truncate_visibility_map pg_prewarm
    pg_logical_emit_message pg_stat_statements_reset load_extension
    """
)
SIDE_EFFECT_PREFIXES = (
    "dblink",
    "lo_",
    "pg_advisory",
    "pg_try_advisory",
    "pg_stat_reset",
    "pg_replication_",
    "pg_create_",
    "pg_drop_",
    "pg_wal_",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
)
_WRITING = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_EMPTY_SELECT_FIELDS = (
    "distinctClause",
    "intoClause",
    "fromClause",
    "whereClause",
    "groupClause",
    "havingClause",
    "windowClause",
    "valuesLists",
    "sortClause",
    "limitOffset",
    "limitCount",
    "lockingClause",
    "withClause",
    "larg",
    "rarg",
)


@dataclass(frozen=True)
class Problem:
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class UnsafeExpression(SpecError):
    """An expression or verify query refused; `rule` is the problem's rule id."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.field, problem.message)
        self.rule = problem.rule


def expression_sql(
    text: str, field: str, *, in_set: bool = False, dialect: str = POSTGRESQL
) -> str:
    """`text` as exactly one SQL expression, safe to wrap in parentheses (else UnsafeExpression).

    PostgreSQL: printed from its parse tree. SQLite: as written, once its tokens passed."""
    if dialect == SQLITE:
        problems = _sqlite_expression(text, field, in_set=in_set)
        if problems:
            raise UnsafeExpression(problems[0])
        return text.strip()
    node, problems = _expression(text, field, in_set=in_set)
    if problems:
        raise UnsafeExpression(problems[0])
    assert node is not None
    from pglast.stream import RawStream  # pglast's printers: only when an expression is emitted

    return str(RawStream()(node))


def expression_problems(
    text: str, field: str, *, in_set: bool = False, dialect: str = POSTGRESQL
) -> list[Problem]:
    if dialect == SQLITE:
        return _sqlite_expression(text, field, in_set=in_set)
    return _expression(text, field, in_set=in_set)[1]


def backfill_problems(step: BackfillStep, path: str, dialect: str = POSTGRESQL) -> list[Problem]:
    """Problems of a backfill step's `set` values and `where`; `path` names the step."""
    problems: list[Problem] = []
    for column, expression in step.set:
        problems += expression_problems(
            expression, f"{path}.backfill.set.{column}", in_set=True, dialect=dialect
        )
    if step.where is not None:
        problems += expression_problems(step.where, f"{path}.backfill.where", dialect=dialect)
    return problems


def verify_problems(step: VerifyStep, field: str, dialect: str = POSTGRESQL) -> list[Problem]:
    """Problems of a verify query; `field` names the query (`...verify.query`)."""
    try:
        statements = parse_sql(step.query)
    except ParseError as exc:
        if dialect == SQLITE:
            return _sqlite_verify(step.query, field)
        return [_unsafe(field, f"PostgreSQL's parser rejects the query: {_parser_message(exc)}")]
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        return [_unsafe(field, "must be exactly one SELECT statement (a check, not a change)")]
    return _tree_problems(statements[0].stmt, field, allowed=ALLOWED_FUNCTIONS)


def expression_findings(
    phase: str, steps: Sequence[Step], *, migration: str = "", source: str = ""
) -> list[Finding]:
    """Lint findings (errors in every phase) for the backfill expressions and verify queries.

    Fields are named `spec.<phase>.steps[i]...` by position in `steps`; in contract the
    `spec.contract.verify` entries come first, so there a verify step is named by its name."""
    findings: list[Finding] = []
    for index, step in enumerate(steps):
        path = f"spec.{phase}.steps[{index}]"
        if isinstance(step, BackfillStep):
            problems = backfill_problems(step, path)
            shown = ", ".join(f"{column} = {value}" for column, value in step.set)
        elif isinstance(step, VerifyStep):
            field = (
                f'spec.contract verify "{step.name}" query'
                if phase == "contract"
                else f"{path}.verify.query"
            )
            # The query's shape (one SELECT, read-only) is the lint's verify-not-read-only rule.
            problems = [p for p in verify_problems(step, field) if p.rule != UNSAFE_EXPRESSION]
            shown = step.query
        else:
            continue
        findings += [
            Finding(
                rule=problem.rule,
                severity=Severity.ERROR,
                message=f"{problem.field}: {problem.message}",
                phase=phase,
                step=step.name,
                statement=shorten(shown),
                migration=migration,
                source=source,
            )
            for problem in problems
        ]
    return findings


def _expression(text: str, field: str, *, in_set: bool) -> tuple[Any, list[Problem]]:
    for token in scan(text):
        if token.name in {"C_COMMENT", "SQL_COMMENT"}:
            return None, [
                _unsafe(field, "comments are not allowed in an expression (they can hide text)")
            ]
    try:
        statements = parse_sql(f"SELECT {text}")
    except ParseError as exc:
        return None, [
            _unsafe(field, f"is not one SQL expression: {_parser_message(exc)}"),
        ]
    select = statements[0].stmt if len(statements) == 1 else None
    if (
        not isinstance(select, ast.SelectStmt)
        or len(select.targetList or ()) != 1
        or any(getattr(select, name) for name in _EMPTY_SELECT_FIELDS)
        or select.op != SetOperation.SETOP_NONE
    ):
        return None, [
            _unsafe(field, "must be exactly one SQL expression (no statements, lists or clauses)")
        ]
    target = (select.targetList or (None,))[0]
    if not isinstance(target, ast.ResTarget) or target.name or target.indirection:
        return None, [_unsafe(field, "must be exactly one SQL expression (no alias)")]
    allowed = ALLOWED_FUNCTIONS | SET_ONLY_FUNCTIONS if in_set else ALLOWED_FUNCTIONS
    problems = _tree_problems(target.val, field, allowed=allowed)
    return target.val, problems


def _tree_problems(root: Any, field: str, *, allowed: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    for node in _walk(root):
        if isinstance(node, _WRITING):
            problems.append(
                _unsafe(field, "contains a statement that writes (INSERT, UPDATE, DELETE, MERGE)")
            )
        elif isinstance(node, ast.SelectStmt) and (node.intoClause or node.lockingClause):
            problems.append(_unsafe(field, "contains SELECT INTO or FOR UPDATE/SHARE"))
        elif isinstance(node, ast.FuncCall):
            problem = _function_problem(node, field, allowed)
            if problem is not None:
                problems.append(problem)
    return problems


def _function_problem(node: ast.FuncCall, field: str, allowed: frozenset[str]) -> Problem | None:
    parts = [str(part.sval) for part in node.funcname or () if isinstance(part, ast.String)]
    name = parts[-1].lower() if parts else ""
    schema = parts[0].lower() if len(parts) > 1 else None
    shown = ".".join(parts)
    if name in SIDE_EFFECT_FUNCTIONS or name.startswith(SIDE_EFFECT_PREFIXES):
        return Problem(
            SIDE_EFFECT_FUNCTION,
            field,
            f"calls {shown}(), a function with side effects; a backfill expression or verify "
            "query may only compute values",
        )
    if schema not in (None, "pg_catalog") or name not in allowed:
        return Problem(
            UNKNOWN_FUNCTION,
            field,
            f"calls {shown}(), which is not on the allow-list of side-effect-free functions "
            "(docs/runner.md, 'Expressions'); unknown functions are refused",
        )
    return None


#: Keywords that start or belong to a statement that writes (SQLite token checks).
_WRITING_WORDS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "CREATE",
        "DROP",
        "ALTER",
        "ATTACH",
        "DETACH",
        "PRAGMA",
        "VACUUM",
        "INTO",
        "TRUNCATE",
        "GRANT",
        "REVOKE",
        "COPY",
        "CALL",
        "DO",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "REINDEX",
        "ANALYZE",
        "SET",
    }
)
#: Keywords that may precede `(` without being a function call.
_NOT_FUNCTIONS = frozenset(
    {
        "IN",
        "EXISTS",
        "AND",
        "OR",
        "NOT",
        "CAST",
        "IS",
        "ON",
        "WHEN",
        "THEN",
        "ELSE",
        "AS",
        "OVER",
        "FILTER",
        "WITHIN",
        "VALUES",
        "SELECT",
        "FROM",
        "WHERE",
        "BETWEEN",
        "LIKE",
        "GLOB",
        "MATCH",
        "REGEXP",
        "CASE",
        "END",
        "ALL",
        "ANY",
        "SOME",
        "ESCAPE",
        "BY",
        "USING",
        "JOIN",
        "HAVING",
        "ROW",
        "ARRAY",
        "DISTINCT",
        "COLLATE",
    }
)
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})


def _sqlite_expression(text: str, field: str, *, in_set: bool) -> list[Problem]:
    """Token-level checks of one expression for SQLite (see the module docstring)."""
    try:
        tokens = list(scan(text))
    except ParseError as exc:  # an unterminated quote
        return [_unsafe(field, f"is not one SQL expression: {_parser_message(exc)}")]
    depth = 0
    for token in tokens:
        if token.name in _COMMENTS:
            return [
                _unsafe(field, "comments are not allowed in an expression (they can hide text)")
            ]
        if token.name == "ASCII_59":
            return [_unsafe(field, "must be exactly one SQL expression (no ';')")]
        if token.name == "ASCII_40":
            depth += 1
        elif token.name == "ASCII_41":
            depth -= 1
            if depth < 0:
                return [_unsafe(field, "closes a parenthesis it did not open")]
        elif token.name == "ASCII_44" and depth == 0:
            return [_unsafe(field, "must be exactly one SQL expression (no top-level ',')")]
    if depth != 0:
        return [_unsafe(field, "has unbalanced parentheses")]
    problems = _token_problems(text, tokens, field, in_set=in_set)
    if problems:
        return problems
    try:  # PostgreSQL's parser as a second opinion, when it understands the text
        parse_sql(f"SELECT {text}")
    except ParseError:
        return []
    return _expression(text, field, in_set=in_set)[1]


def _sqlite_verify(query: str, field: str) -> list[Problem]:
    """Token-level checks of a verify query PostgreSQL's parser rejects (SQLite syntax)."""
    try:
        tokens = [t for t in scan(query) if t.name not in _COMMENTS]
    except ParseError as exc:
        return [_unsafe(field, f"is not one SQL query: {_parser_message(exc)}")]
    while tokens and tokens[-1].name == "ASCII_59":
        tokens.pop()
    if not tokens or tokens[0].name not in {"SELECT", "WITH", "VALUES"}:
        return [_unsafe(field, "must be exactly one SELECT statement (a check, not a change)")]
    if any(token.name == "ASCII_59" for token in tokens):
        return [_unsafe(field, "must be exactly one SELECT statement (a check, not a change)")]
    return _token_problems(query, tokens, field, in_set=False)


def _token_problems(text: str, tokens: list[Any], field: str, *, in_set: bool) -> list[Problem]:
    raw = text.encode("utf-8")  # token offsets are bytes
    allowed = ALLOWED_FUNCTIONS | SET_ONLY_FUNCTIONS if in_set else ALLOWED_FUNCTIONS
    problems: list[Problem] = []
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        if token.name in _WRITING_WORDS:
            problems.append(_unsafe(field, f"contains {token.name}, a keyword of a statement"))
        elif (
            following is not None
            and following.name == "ASCII_40"
            and token.name not in _NOT_FUNCTIONS
            and (token.name == "IDENT" or token.kind != "NO_KEYWORD")
        ):
            name = raw[token.start : token.end + 1].decode("utf-8", "replace")
            call = ast.FuncCall(funcname=(ast.String(sval=name),))
            problem = _function_problem(call, field, allowed)
            if problem is not None:
                problems.append(problem)
    return problems


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for slot in getattr(type(node), "__slots__", ()):
            yield from _walk(getattr(node, slot, None))


def _unsafe(field: str, message: str) -> Problem:
    return Problem(UNSAFE_EXPRESSION, field, message)


def _parser_message(exc: ParseError) -> str:
    return str(exc.args[0]) if exc.args else str(exc)
