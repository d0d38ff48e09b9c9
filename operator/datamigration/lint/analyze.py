"""Which rules the SQL of one step breaks, decided on PostgreSQL's own parse tree.

Why a parse tree and not text: `DROP` can hide in a comment, a string or a dollar-quoted body,
and `ALTER TABLE ... ALTER COLUMN ... TYPE` has a dozen spellings. libpg_query (via pglast) is
PostgreSQL's own parser; no regular expression classifies SQL here.

How, and why it is linear: the step's SQL is parsed once into libpg_query's JSON tree. Every
node that a rule looks at is found by its *type name* in that JSON (a key such as
`{"DeleteStmt":`; such a key cannot occur unescaped inside a JSON string, so a string literal
in the SQL can never fake or hide one) and only those nodes are decoded. Nested statements are
therefore found wherever they are: in a CTE (`WITH d AS (DELETE ...)`), `PREPARE`, `EXPLAIN
ANALYZE`, a rule action, a `BEGIN ATOMIC` function body. Bodies that are strings to the SQL
parser are parsed in turn: PL/pgSQL `DO` blocks and functions with pglast's PL/pgSQL parser
(each embedded statement and expression linted as SQL; `EXECUTE` of a constant string linted
as SQL, of a built string reported as `dynamic-sql`), `LANGUAGE sql` bodies as SQL. Nesting is
bounded (`MAX_DEPTH`); deeper is `dynamic-sql`. Each SQL text is parsed once; the texts of a
large spec are parsed ahead in a background thread (`ParseAhead`: libpg_query releases the GIL),
which gives the same trees.

What a step may rely on: the new-table exemption (no lock hazard on a table nobody else uses)
holds only for a table created earlier in the *same step*, in the same schema as written, not
TEMP and not `IF NOT EXISTS` (which may leave a pre-existing table in place); changing
`search_path` in the step ends it.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pglast import parser
from pglast.parser import ParseError

#: How deep SQL inside SQL (a DO body, an EXECUTE of a constant, a function body) is followed.
MAX_DEPTH = 6
#: How deep a WHERE is evaluated for being always true; deeper counts as always true.
MAX_CONDITION_DEPTH = 64

Node = dict[str, Any]
_TOO_DEEP = "nested deeper than the lint can follow"


class TooDeepError(Exception):
    """An expression nested deeper than the lint evaluates (`MAX_CONDITION_DEPTH`)."""


@dataclass(frozen=True)
class Hit:
    """One rule broken by one statement (`statement` is the top-level statement's text)."""

    rule: str
    statement: str
    detail: str = ""  # extra words for the message (the parser's error, the function...)


@dataclass
class PhaseScope:
    """What earlier steps of the same phase did, that later steps may rely on."""

    # (schema, table, column) proven NOT NULL by a validated CHECK (col IS NOT NULL)
    checked_not_null: set[tuple[str, str, str]] = field(default_factory=set)
    # (schema, table, constraint name) -> column, for NOT VALID CHECK (col IS NOT NULL)
    unvalidated_checks: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # (schema, table, column) -> (type name, typmods) from CREATE TABLE / ADD COLUMN
    column_types: dict[tuple[str, str, str], tuple[str, tuple[int, ...]]] = field(
        default_factory=dict
    )
    routines: set[str] = field(default_factory=set)  # functions/procedures created (names)
    prepared: set[str] = field(default_factory=set)  # PREPAREd statement names


@dataclass
class _StepScope:
    """What earlier statements of the same step did."""

    phase: PhaseScope
    transactional: bool
    created: set[tuple[str, str]] = field(default_factory=set)  # (schema as written, table)
    not_valid: set[tuple[str, str, str]] = field(default_factory=set)  # added NOT VALID here

    def is_new(self, relation: Node | None) -> bool:
        return relation is not None and _rel_key(relation) in self.created


def parse_json(sql: str) -> tuple[str | None, str]:
    """(libpg_query's JSON tree of `sql`, "") or (None, the parser's error message): parsed once,
    for `split_statements` and `analyze_expression_sql` both."""
    try:
        return parser.parse_sql_json(sql), ""
    except ParseError as exc:
        return None, str(exc.args[0]) if exc.args else str(exc)


def split_statements(sql: str, tree: str | None = None) -> list[tuple[str, str]] | str:
    """(statement text, JSON of its node) pairs of a SQL text, or the parser's error message.
    `tree` is the text's JSON tree when the caller has it already (`parse_json`)."""
    if tree is None:
        tree, error = parse_json(sql)
        if tree is None:
            return error
    statements = _Statements(sql, tree)
    return [(statements.text(i), statements.json(i)) for i in range(len(statements))]


#: Below this much SQL in all, `ParseAhead` parses on the spot (a thread would cost more).
PARSE_AHEAD_BYTES = 256 * 1024


class ParseAhead:
    """SQL texts parsed ahead of the lint, in order, in one background thread.

    libpg_query releases the GIL while it parses: on a machine with a free core, the parsing of
    a large spec costs no wall-clock time, since the lint decodes and checks one step while the
    next is parsed. `tree(sql)` gives what `pglast.parser.parse_sql_json(sql)` gives (the same
    JSON, or the same ParseError raised): a text not handed over up front, or handed over twice,
    is parsed on the spot. Under `PARSE_AHEAD_BYTES` of SQL in all, no thread is started. Use it
    as a context manager: leaving it drops what was not asked for."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._pending: dict[str, Future[str]] = {}
        self._executor: ThreadPoolExecutor | None = None
        if sum(len(text) for text in texts) < PARSE_AHEAD_BYTES:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lint-parse")
        for text in texts:
            if text not in self._pending:
                self._pending[text] = self._executor.submit(parser.parse_sql_json, text)

    def tree(self, sql: str) -> str:
        future = self._pending.pop(sql, None)
        return parser.parse_sql_json(sql) if future is None else future.result()

    def close(self) -> None:
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ParseAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def analyze_sql(
    sql: str, *, transactional: bool, scope: PhaseScope, ahead: ParseAhead | None = None
) -> list[Hit] | str:
    """The rules the statements of one sql step break, in order; or the parser's message.
    `ahead` may hold the step's parse tree already."""
    try:
        tree = parser.parse_sql_json(sql) if ahead is None else ahead.tree(sql)
    except ParseError as exc:
        return str(exc.args[0]) if exc.args else str(exc)
    analyzer = _Analyzer(_StepScope(scope, transactional))
    statements = _Statements(sql, tree)
    try:
        analyzer.run(statements, depth=0, outer="")
    except (RecursionError, TooDeepError):  # deeper than the lint can follow
        analyzer.hits.append(Hit("dynamic-sql", sql, _TOO_DEEP))
    hits = analyzer.hits
    if not transactional and len(statements) > 1:
        hits.insert(0, Hit("non-transactional-not-alone", statements.text(1)))
    return hits


def analyze_expression_sql(sql: str, scope: PhaseScope, tree: str | None = None) -> list[Hit]:
    """Rules broken inside a read-only query or expression (`SELECT setval(...)`...). `tree` is
    the text's JSON tree when the caller has it already (`parse_json`)."""
    if tree is None:
        tree, _ = parse_json(sql)
        if tree is None:
            return []  # the caller reports unparseable input
    analyzer = _Analyzer(_StepScope(scope, transactional=False))
    try:
        analyzer.run(_Statements(sql, tree), depth=0, outer="")
    except (RecursionError, TooDeepError):
        analyzer.hits.append(Hit("dynamic-sql", sql, _TOO_DEEP))
    return analyzer.hits


# -- finding the nodes --------------------------------------------------------------------------
# Every statement node; `_nodes` keeps those `_Analyzer` has a handler for (`_HANDLED`).
_NODE = re.compile(r'\{"([A-Z][A-Za-z]*Stmt)":')
# A function call's name, read straight from the JSON (funcname is FuncCall's first field): the
# call itself is only decoded when its arguments matter (set_config).
_STRING = r'\{"String":\{"sval":"(?:[^"\\]|\\.)*"\}\}'
_FUNC = re.compile(r'\{"FuncCall":\{"funcname":\[((?:' + _STRING + r",?)+)\]")
_SVAL = re.compile(r'"sval":"((?:[^"\\]|\\.)*)"')
_TOP = re.compile(r'\{"stmt":')
# In libpg_query's PL/pgSQL JSON: an expression (its SQL text and parse mode), and the
# constructs whose expression is run as SQL.
_PL_EXPR = re.compile(r'\{"PLpgSQL_expr":\{"query":"((?:[^"\\]|\\.)*)"(?:,"parseMode":(\d+))?')
_PL_DYNAMIC = re.compile(r'"PLpgSQL_stmt_dyn(?:execute|fors)":\{|"dynquery":')
_PL_QUERY = re.compile(r'"query":\{"PLpgSQL_expr":')
_LOCATION = re.compile(r'"stmt_location":(\d+)')
_LENGTH = re.compile(r'"stmt_len":(\d+)')
_DECODER = json.JSONDecoder()


class _Statements:
    """The top-level statements of a parsed SQL text: their JSON offsets, and their text
    (computed only when a finding needs it)."""

    def __init__(self, sql: str, tree: str) -> None:
        self.sql = sql
        self.tree = tree
        self.starts = [m.start() for m in _TOP.finditer(tree)]
        self._texts: dict[int, str] = {}
        self._encoded: bytes | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def text(self, index: int) -> str:
        if index < 0:
            return ""
        if index not in self._texts:
            if self._encoded is None:
                self._encoded = self.sql.encode("utf-8")  # libpg_query reports byte offsets
            start = self.starts[index]
            end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.tree)
            # RawStmt's own fields follow its statement: the tail of its chunk holds them.
            tail = self.tree[max(start, end - 80) : end]
            locations = _LOCATION.findall(tail) or ["0"]
            lengths = _LENGTH.findall(tail)
            begin = int(locations[-1])
            finish = begin + int(lengths[-1]) if lengths else len(self._encoded)
            raw = self._encoded[begin:finish]
            self._texts[index] = raw.decode("utf-8", "replace").strip()
        return self._texts[index]

    def json(self, index: int) -> str:
        start = self.starts[index]
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.tree)
        return self.tree[start:end]


def _nodes(tree: str) -> Iterator[tuple[int, str, Node]]:
    """(JSON offset, type, body) of every node a rule looks at, in document order. A function
    call comes as {"funcname": [...]} only, unless its arguments matter."""
    statements = _NODE.finditer(tree)
    calls = _FUNC.finditer(tree)
    call = next(calls, None)
    for match in statements:
        kind = match.group(1)
        if kind not in _HANDLED:
            continue
        while call is not None and call.start() < match.start():
            yield _call(tree, call)
            call = next(calls, None)
        wrapper, _ = _DECODER.raw_decode(tree, match.start())
        yield match.start(), kind, wrapper[kind]
    while call is not None:
        yield _call(tree, call)
        call = next(calls, None)


def _call(tree: str, match: re.Match[str]) -> tuple[int, str, Node]:
    names = _SVAL.findall(match.group(1))
    if any("\\" in name for name in names):
        names = [json.loads(f'"{name}"') for name in names]
    if names[-1:] == ["set_config"]:
        wrapper, _ = _DECODER.raw_decode(tree, match.start())
        return match.start(), "FuncCall", wrapper["FuncCall"]
    return match.start(), "FuncCall", {"funcname": [{"String": {"sval": n}} for n in names]}


# -- small helpers on the JSON tree -------------------------------------------------------------
def _rel_key(relation: Node) -> tuple[str, str]:
    return (str(relation.get("schemaname", "")), str(relation.get("relname", "")))


def _rel_name(relation: Node | None) -> str:
    if not relation:
        return ""
    schema, name = _rel_key(relation)
    return f"{schema}.{name}" if schema else name


def _strings(items: list[Any] | None) -> list[str]:
    return [str(item.get("String", {}).get("sval", "")) for item in items or ()]


def _defnames(items: list[Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        body = item.get("DefElem")
        if body:
            out[str(body.get("defname", ""))] = body.get("arg")
    return out


def _const(node: Any, depth: int = 0) -> Any:
    """The Python value of an A_Const (None for NULL or not a constant); `_NOT_CONST` if not."""
    if not isinstance(node, dict):
        return _NOT_CONST
    body = node.get("A_Const")
    if body is None:
        cast = node.get("TypeCast")
        if cast is not None:
            if depth > MAX_CONDITION_DEPTH:
                raise TooDeepError
            value = _const(cast.get("arg"), depth + 1)
            typename = (_strings(cast.get("typeName", {}).get("names")) or [""])[-1]
            if typename in ("bool", "boolean") and isinstance(value, int):
                return value != 0
            if typename in ("bool", "boolean") and isinstance(value, str):
                low = value.strip().lower()
                if low in ("t", "true", "y", "yes", "on", "1"):
                    return True
                if low in ("f", "false", "n", "no", "off", "0"):
                    return False
            return value
        return _NOT_CONST
    if body.get("isnull"):
        return None
    for key, inner in (("ival", "ival"), ("sval", "sval"), ("boolval", "boolval")):
        if key in body:
            default: Any = {"ival": 0, "sval": "", "boolval": False}[key]
            return body[key].get(inner, default)
    if "fval" in body:
        return float(body["fval"].get("fval", "0"))
    return _NOT_CONST


_NOT_CONST = object()
_COMPARE = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def truth(node: Any, depth: int = 0) -> bool | None:
    """True/False if the condition is constant (`true`, `1 = 1`, `x = x`, `NOT false`,
    `a OR true`, `EXISTS (SELECT 1)`...), None if it depends on the row."""
    if depth > MAX_CONDITION_DEPTH:
        raise TooDeepError  # the caller treats it as always true (refused), never as safe
    if not isinstance(node, dict):
        return None
    value = _const(node)
    if value is not _NOT_CONST:
        return value if isinstance(value, bool) else None
    if "BoolExpr" in node:
        body = node["BoolExpr"]
        args = [truth(arg, depth + 1) for arg in body.get("args", ())]
        op = body.get("boolop")
        if op == "AND_EXPR":
            return False if False in args else (True if all(a is True for a in args) else None)
        if op == "OR_EXPR":
            return True if True in args else (False if all(a is False for a in args) else None)
        if op == "NOT_EXPR" and args and args[0] is not None:
            return not args[0]
        return None
    if "A_Expr" in node:
        body = node["A_Expr"]
        kind, names = body.get("kind"), _strings(body.get("name"))
        left, right = body.get("lexpr"), body.get("rexpr")
        op = names[-1] if names else ""
        if kind == "AEXPR_OP" and op in _COMPARE:
            if (
                isinstance(left, dict)
                and isinstance(right, dict)
                and "ColumnRef" in left
                and "ColumnRef" in right
                and _same(left, right)
            ):
                return op in ("=", "<=", ">=")  # col = col: true for every non-NULL row
            a, b = _const(left), _const(right)
            if a is _NOT_CONST or b is _NOT_CONST or a is None or b is None:
                return None
            try:
                return bool(_COMPARE[op](a, b))
            except TypeError:
                return None
        if kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and op in ("~~", "!~~", "~~*", "!~~*"):
            a, b = _const(left), _const(right)
            if not isinstance(a, str) or not isinstance(b, str):
                return None
            pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in b)
            flags = re.IGNORECASE | re.DOTALL if "*" in op else re.DOTALL
            matched = re.fullmatch(pattern, a, flags) is not None
            return matched if not op.startswith("!") else not matched
        if kind == "AEXPR_IN" and isinstance(right, dict) and "List" in right:
            a = _const(left)
            items = [_const(item) for item in right["List"].get("items", ())]
            if a is _NOT_CONST or a is None or _NOT_CONST in items:
                return None
            return (a in items) if op == "=" else (a not in items)
        return None
    if "NullTest" in node:
        body = node["NullTest"]
        value = _const(body.get("arg"))
        if value is _NOT_CONST:
            return None
        is_null = value is None
        return is_null if body.get("nulltesttype") == "IS_NULL" else not is_null
    if "BooleanTest" in node:
        body = node["BooleanTest"]
        inner = truth(body.get("arg"), depth + 1)
        if inner is None:
            return None
        test = body.get("booltesttype", "")
        return {
            "IS_TRUE": inner,
            "IS_NOT_FALSE": inner,
            "IS_FALSE": not inner,
            "IS_NOT_TRUE": not inner,
        }.get(test)
    if "SubLink" in node:
        body = node["SubLink"]
        select = body.get("subselect", {}).get("SelectStmt", {})
        if not select or "fromClause" in select:
            return None
        where = select.get("whereClause")
        if where is not None and truth(where, depth + 1) is not True:
            return None
        if body.get("subLinkType") == "EXISTS_SUBLINK":
            return True
        targets = select.get("targetList") or []
        if body.get("subLinkType") == "EXPR_SUBLINK" and len(targets) == 1:
            return truth(targets[0].get("ResTarget", {}).get("val"), depth + 1)
        return None
    return None


def _always_true(where: Any) -> bool:
    """A WHERE that selects every row; one too deep to evaluate counts as one."""
    try:
        return truth(where) is True
    except TooDeepError:
        return True


def _same(a: Any, b: Any) -> bool:
    """Equal trees, ignoring where in the text they were written."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - {"location"}
        return all(_same(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _funcname(call: Node) -> str:
    names = _strings(call.get("funcname"))
    return names[-1] if names else ""


def _walk_funcs(node: Any) -> Iterator[Node]:
    """Every FuncCall body below `node` (small subtrees only: defaults, arguments)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "FuncCall" in item and isinstance(item["FuncCall"], dict):
                yield item["FuncCall"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# Functions a DEFAULT may call without forcing a table rewrite: immutable or stable ones.
# Anything else is treated as volatile (the lint cannot see the catalogue).
_NON_VOLATILE = frozenset(
    [
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtime",
        "localtimestamp",
        "transaction_timestamp",
        "statement_timestamp",
        "lower",
        "upper",
        "length",
        "char_length",
        "octet_length",
        "trim",
        "btrim",
        "ltrim",
        "rtrim",
        "substr",
        "substring",
        "replace",
        "concat",
        "concat_ws",
        "coalesce",
        "nullif",
        "greatest",
        "least",
        "abs",
        "ceil",
        "ceiling",
        "floor",
        "round",
        "trunc",
        "mod",
        "power",
        "sqrt",
        "exp",
        "ln",
        "log",
        "sign",
        "to_char",
        "to_date",
        "to_timestamp",
        "to_number",
        "date_trunc",
        "date_part",
        "extract",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "to_jsonb",
        "to_json",
        "array_length",
        "cardinality",
        "md5",
        "left",
        "right",
        "lpad",
        "rpad",
        "repeat",
        "reverse",
        "split_part",
        "strpos",
        "position",
        "format",
        "current_user",
        "session_user",
        "current_schema",
        "current_database",
        "timezone",
        "int4",
        "int8",
        "int2",
        "numeric",
        "text",
        "float8",
        "float4",
        "bool",
    ]
)
_SIDE_EFFECTS = {
    "setval": "sequence-reset",
    "pg_terminate_backend": "terminate-backend",
    "pg_cancel_backend": "terminate-backend",
    "dblink": "dynamic-sql",
    "dblink_exec": "dynamic-sql",
    "dblink_send_query": "dynamic-sql",
    "dblink_open": "dynamic-sql",
    "query_to_xml": "dynamic-sql",
    "query_to_xmlschema": "dynamic-sql",
    "query_to_xml_and_xmlschema": "dynamic-sql",
    "lo_unlink": "side-effect-function",
    "lo_import": "side-effect-function",
    "lo_export": "side-effect-function",
    "lo_put": "side-effect-function",
    "lo_truncate": "side-effect-function",
    "lo_from_bytea": "side-effect-function",
    "pg_file_write": "side-effect-function",
    "pg_file_unlink": "side-effect-function",
    "pg_file_rename": "side-effect-function",
    "pg_reload_conf": "side-effect-function",
    "pg_rotate_logfile": "side-effect-function",
    "pg_switch_wal": "side-effect-function",
    "pg_promote": "side-effect-function",
    "pg_drop_replication_slot": "side-effect-function",
    "pg_create_logical_replication_slot": "side-effect-function",
    "pg_create_physical_replication_slot": "side-effect-function",
    "pg_replication_origin_drop": "side-effect-function",
    "pg_stat_reset": "side-effect-function",
}
_GUARDED_SETTINGS = {
    "lock_timeout": "timeout-override",
    "statement_timeout": "timeout-override",
    "idle_in_transaction_session_timeout": "timeout-override",
    "session_replication_role": "disable-trigger",
}
_INT_TYPES = {"int4", "int2", "int", "integer", "smallint", "serial", "serial4", "smallserial"}
_SERIAL = {"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}
# The style advice on a column's type, in the order it is given (`_Analyzer._column`);
# prefer-text-field only for a varchar with a length.
_STYLE_RULES: dict[str, tuple[str, ...]] = {
    typename: tuple(
        rule
        for rule, applies in (
            ("prefer-bigint", typename in _INT_TYPES),
            ("prefer-identity", typename in _SERIAL),
            ("prefer-text-field", typename == "varchar"),
            ("prefer-timestamptz", typename == "timestamp"),
            ("ban-char-field", typename == "bpchar"),
        )
        if applies
    )
    for typename in (*_INT_TYPES, *_SERIAL, "varchar", "timestamp", "bpchar")
}
_DROP_RULES = {
    "OBJECT_TABLE": "drop-table",
    "OBJECT_FOREIGN_TABLE": "drop-table",
    "OBJECT_INDEX": "drop-index",
    "OBJECT_SCHEMA": "drop-schema",
    "OBJECT_VIEW": "drop-view",
    "OBJECT_MATVIEW": "drop-view",
    "OBJECT_SEQUENCE": "drop-sequence",
    "OBJECT_TYPE": "drop-type",
    "OBJECT_DOMAIN": "drop-type",
    "OBJECT_FUNCTION": "drop-function",
    "OBJECT_PROCEDURE": "drop-function",
    "OBJECT_ROUTINE": "drop-function",
    "OBJECT_AGGREGATE": "drop-function",
    "OBJECT_DATABASE": "drop-database",
}
_RENAME_RULES = {
    "OBJECT_TABLE": "rename-table",
    "OBJECT_FOREIGN_TABLE": "rename-table",
    "OBJECT_COLUMN": "rename-column",
    "OBJECT_ATTRIBUTE": "rename-column",
    "OBJECT_SCHEMA": "rename-object",
    "OBJECT_VIEW": "rename-object",
    "OBJECT_MATVIEW": "rename-object",
    "OBJECT_SEQUENCE": "rename-object",
    "OBJECT_TYPE": "rename-object",
    "OBJECT_DOMAIN": "rename-object",
    "OBJECT_FUNCTION": "rename-object",
    "OBJECT_PROCEDURE": "rename-object",
    "OBJECT_ROUTINE": "rename-object",
    "OBJECT_AGGREGATE": "rename-object",
    "OBJECT_DATABASE": "rename-object",
    "OBJECT_TABLESPACE": "rename-object",
    "OBJECT_ROLE": "alter-role",
}
# ALTER TABLE subcommands that take something away from the old code.
_REMOVALS = {
    "AT_ChangeOwner": "revoke",
    "AT_DropColumn": "drop-column",
    "AT_DropConstraint": "drop-constraint",
    "AT_DropNotNull": "drop-not-null",
    "AT_DropIdentity": "drop-default",
    "AT_DetachPartition": "detach-partition",
}
_REWRITES = {
    "AT_SetLogged": "set-logged-unlogged",
    "AT_SetUnLogged": "set-logged-unlogged",
    "AT_SetTableSpace": "set-tablespace",
    "AT_SetAccessMethod": "set-access-method",
    "AT_DisableTrig": "disable-trigger",
    "AT_DisableTrigAll": "disable-trigger",
    "AT_DisableTrigUser": "disable-trigger",
    "AT_EnableReplicaTrig": "disable-trigger",
    "AT_DisableRule": "disable-trigger",
    "AT_EnableRowSecurity": "row-level-security",
    "AT_DisableRowSecurity": "row-level-security",
    "AT_ForceRowSecurity": "row-level-security",
    "AT_NoForceRowSecurity": "row-level-security",
}
# ALTER TABLE subcommands that take ACCESS EXCLUSIVE (PostgreSQL's ALTER TABLE docs).
_ACCESS_EXCLUSIVE = {
    "AT_AddColumn",
    "AT_AddConstraint",
    "AT_DropColumn",
    "AT_AlterColumnType",
    "AT_SetNotNull",
    "AT_DropNotNull",
    "AT_ColumnDefault",
    "AT_SetLogged",
    "AT_SetUnLogged",
    "AT_SetTableSpace",
    "AT_SetAccessMethod",
    "AT_DropConstraint",
    "AT_EnableRowSecurity",
    "AT_DisableRowSecurity",
}
# Target types of a possibly binary-coercible type change (a widening within the family).
_WIDENING = {
    "varchar": "text",
    "text": "text",
    "bpchar": "",
    "numeric": "numeric",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "timetz": "timetz",
    "interval": "interval",
    "inet": "inet",
    "varbit": "varbit",
}


class _Analyzer:
    def __init__(self, step: _StepScope) -> None:
        self.step = step
        self.hits: list[Hit] = []
        self.statements = _Statements("", "")
        self.current = -1  # the statement being looked at
        self.index = -1  # its index among the step's top-level statements (-1: nested)
        self.exclusive_index: int | None = None

    def hit(self, rule: str, statement: str, detail: str = "") -> None:
        self.hits.append(Hit(rule, statement or self.own, detail))

    # -- driving ----------------------------------------------------------------------------
    def run(self, statements: _Statements, *, depth: int, outer: str) -> None:
        """Lint every handled node of the statements; `outer` is the text shown for nested SQL
        (empty at the top: a finding then shows its own statement)."""
        tree, starts = statements.tree, statements.starts
        skip_until = -1
        for offset, kind, body in _nodes(tree):
            if offset < skip_until:
                continue
            index = bisect_right(starts, offset) - 1
            self.statements, self.current = statements, index
            self.index = index if depth == 0 else -1
            if kind == "ExplainStmt" and not self._analyzes(body):
                _, skip_until = _DECODER.raw_decode(tree, offset)
                continue
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, body, outer, depth)
        exclusive = self.exclusive_index
        if depth == 0 and exclusive is not None:
            later = _first_slow(statements, exclusive + 1)
            if later is not None:
                self.hits.append(Hit("access-exclusive-then-more", statements.text(later)))

    @property
    def own(self) -> str:
        """The text of the statement being looked at."""
        return self.statements.text(self.current)

    def nested_sql(self, sql: str, shown: str, depth: int, tree: str | None = None) -> None:
        """Lint SQL found inside SQL (a function body, an EXECUTEd constant); `tree` is its JSON
        tree when the caller has parsed it already."""
        if depth >= MAX_DEPTH:
            self.hit("dynamic-sql", shown, "SQL nested too deep to follow")
            return
        if tree is None:
            tree, error = parse_json(sql)
            if tree is None:
                self.hit("unparseable-sql", shown, error)
                return
        saved = self.statements, self.current, self.index
        self.run(_Statements(sql, tree), depth=depth, outer=shown)
        self.statements, self.current, self.index = saved

    # -- one node ---------------------------------------------------------------------------
    def _analyzes(self, body: Node) -> bool:
        options = _defnames(body.get("options"))
        if "analyze" not in options:
            return False
        value = options["analyze"]
        return value is None or _const(value) not in (False, "false", "off", 0, "0")

    def _exclusive(self, relation: Node | None) -> None:
        """Note an ACCESS EXCLUSIVE lock on an existing table (access-exclusive-then-more)."""
        if (
            self.step.transactional
            and self.index >= 0
            and self.exclusive_index is None
            and not self.step.is_new(relation)
        ):
            self.exclusive_index = self.index

    # creation ---------------------------------------------------------------------------------
    def _CreateStmt(self, body: Node, text: str, depth: int) -> None:
        relation = body.get("relation") or {}
        key = _rel_key(relation)
        for element in body.get("tableElts") or ():
            column = element.get("ColumnDef")
            if column:
                self._column(key, column, text)
        if relation.get("relpersistence") == "t" or body.get("if_not_exists"):
            return
        self.step.created.add(key)

    def _CreateTableAsStmt(self, body: Node, text: str, depth: int) -> None:
        into = body.get("into") or {}
        relation = into.get("rel") or {}
        if body.get("objtype", "OBJECT_TABLE") != "OBJECT_TABLE":
            return
        if relation.get("relpersistence") == "t" or body.get("if_not_exists"):
            return
        self.step.created.add(_rel_key(relation))

    def _CreateEnumStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("create-enum", text)

    def _CreateDomainStmt(self, body: Node, text: str, depth: int) -> None:
        for constraint in body.get("constraints") or ():
            if constraint.get("Constraint", {}).get("contype") == "CONSTR_CHECK":
                self.hit("domain-check-constraint", text)
                return

    def _AlterDomainStmt(self, body: Node, text: str, depth: int) -> None:
        subtype = body.get("subtype")
        constraint = (body.get("def") or {}).get("Constraint", {})
        if (subtype == "C" and not constraint.get("skip_validation")) or subtype == "O":
            self.hit("domain-check-constraint", text)
        elif subtype == "X":
            self.hit("drop-constraint", text)

    def _CreateFunctionStmt(self, body: Node, text: str, depth: int) -> None:
        options = _defnames(body.get("options"))
        name = _funcname({"funcname": body.get("funcname")})
        self.step.phase.routines.add(name)
        language = str((options.get("language") or {}).get("String", {}).get("sval", "sql"))
        if body.get("sql_body") is not None:
            return  # BEGIN ATOMIC / RETURN: its statements are nodes of this tree, found anyway
        source = options.get("as") or {}
        parts = _strings(source.get("List", {}).get("items")) if "List" in source else []
        if "String" in source:
            parts = [str(source["String"].get("sval", ""))]
        if language == "plpgsql":
            self._plpgsql(self.own, text, depth)
        elif language == "sql":
            self.nested_sql(parts[0] if parts else "", text, depth + 1)
        else:
            self.hit("dynamic-sql", text, f"a function body in LANGUAGE {language}")

    def _DoStmt(self, body: Node, text: str, depth: int) -> None:
        args = _defnames(body.get("args"))
        language = str((args.get("language") or {}).get("String", {}).get("sval", "plpgsql"))
        code = str((args.get("as") or {}).get("String", {}).get("sval", ""))
        if language != "plpgsql":
            self.hit("dynamic-sql", text, f"a DO block in LANGUAGE {language}")
            return
        self._plpgsql("DO " + _dollar_quote(code), text, depth)

    def _plpgsql(self, source: str, text: str, depth: int) -> None:
        """Lint a PL/pgSQL body: each embedded statement and expression as SQL; `EXECUTE` of a
        constant as SQL, of anything else as dynamic-sql."""
        if depth + 1 >= MAX_DEPTH:
            self.hit("dynamic-sql", text, "PL/pgSQL nested too deep to follow")
            return
        try:
            tree = parser.parse_plpgsql_json(source)
        except ParseError as exc:
            self.hit("unparseable-sql", text, str(exc.args[0]) if exc.args else str(exc))
            return
        # The expressions whose value is run as SQL: EXECUTE's, FOR ... IN EXECUTE's, and
        # OPEN/RETURN QUERY ... EXECUTE's (`dynquery`).
        dynamic: set[int] = set()
        for match in _PL_DYNAMIC.finditer(tree):
            if match.group(0) == '"dynquery":':
                dynamic.add(match.end())
            else:
                found = _PL_QUERY.search(tree, match.end())
                if found is not None:
                    dynamic.add(found.end() - len('{"PLpgSQL_expr":'))
        pieces: list[str] = []
        for match in _PL_EXPR.finditer(tree):
            query = str(match.group(1))
            if "\\" in query:
                query = str(json.loads(f'"{query}"'))
            if match.start() in dynamic:
                self._dynamic(query, text, depth + 1)
            else:
                piece = _plpgsql_sql(query, int(match.group(2) or 0))
                if piece:
                    pieces.append(piece)
        if not pieces:
            return
        # One parse for the whole body; if it fails, piece by piece to name the bad one.
        joined = ";\n".join(pieces)
        joined_tree, _ = parse_json(joined)
        if joined_tree is not None:
            self.nested_sql(joined, text, depth + 1, joined_tree)
        else:
            for piece in pieces:
                self.nested_sql(piece, text, depth + 1)

    def _dynamic(self, source: str, text: str, depth: int) -> None:
        """EXECUTE <expr>: a constant string is linted as SQL; anything else is unseen."""
        value: Any = _NOT_CONST
        try:
            tree = json.loads(parser.parse_sql_json("SELECT " + source))
            target = tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"]
            if len(tree["stmts"]) == 1 and len(target) == 1:
                value = _const(target[0]["ResTarget"]["val"])
        except (ParseError, KeyError, IndexError, TypeError):
            value = _NOT_CONST
        if isinstance(value, str):
            self.nested_sql(value, text, depth)
        else:
            self.hit("dynamic-sql", text, f"EXECUTE of a built string ({source.strip()[:60]})")

    def _CallStmt(self, body: Node, text: str, depth: int) -> None:
        name = _funcname(body.get("funccall") or {})
        if name not in self.step.phase.routines:
            self.hit("unknown-call", text, f"procedure {name}")

    def _CreateTrigStmt(self, body: Node, text: str, depth: int) -> None:
        name = _funcname(body)
        if name not in self.step.phase.routines:
            self.hit("unknown-call", text, f"trigger function {name}")

    _CreateEventTrigStmt = _CreateTrigStmt

    def _PrepareStmt(self, body: Node, text: str, depth: int) -> None:
        self.step.phase.prepared.add(str(body.get("name", "")))

    def _ExecuteStmt(self, body: Node, text: str, depth: int) -> None:
        if str(body.get("name", "")) not in self.step.phase.prepared:
            self.hit("dynamic-sql", text, "EXECUTE of a statement not prepared in this phase")

    def _ExplainStmt(self, body: Node, text: str, depth: int) -> None:
        """EXPLAIN ANALYZE runs its statement: the nested node is linted where it is found."""

    # destruction ------------------------------------------------------------------------------
    def _DropStmt(self, body: Node, text: str, depth: int) -> None:
        remove = str(body.get("removeType", ""))
        rule = _DROP_RULES.get(remove, "drop-object")
        if remove == "OBJECT_TABLE":
            objects = body.get("objects") or []
            names = [tuple(_strings(obj.get("List", {}).get("items"))) for obj in objects]
            keys = {(n[-2] if len(n) > 1 else "", n[-1]) for n in names if n}
            if keys and keys <= self.step.created:
                return  # a table this step created (a scratch table)
        self.hit(rule, text)
        if remove == "OBJECT_INDEX":
            if body.get("concurrent"):
                if self.step.transactional:
                    self.hit("concurrently-in-transaction", text)
                elif not body.get("missing_ok"):
                    self.hit("prefer-robust-stmts", text)
            else:
                self.hit("drop-index-not-concurrently", text)
        elif remove == "OBJECT_TABLE":
            self._exclusive(None)

    def _DropdbStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("drop-database", text)

    def _DropRoleStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("drop-object", text)

    _DropOwnedStmt = _DropRoleStmt
    _DropTableSpaceStmt = _DropRoleStmt

    def _RenameStmt(self, body: Node, text: str, depth: int) -> None:
        rule = _RENAME_RULES.get(str(body.get("renameType", "")))
        if rule and not (rule == "rename-table" and self.step.is_new(body.get("relation"))):
            self.hit(rule, text)

    def _AlterObjectSchemaStmt(self, body: Node, text: str, depth: int) -> None:
        kind = str(body.get("objectType", ""))
        if kind in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE"):
            self.hit("rename-table", text)
        elif kind in _RENAME_RULES:
            self.hit("rename-object", text)

    def _AlterEnumStmt(self, body: Node, text: str, depth: int) -> None:
        if body.get("oldVal"):
            self.hit("rename-enum-value", text)

    def _TruncateStmt(self, body: Node, text: str, depth: int) -> None:
        relations = [r.get("RangeVar", {}) for r in body.get("relations") or ()]
        if relations and all(self.step.is_new(r) for r in relations):
            return
        self.hit("truncate", text)
        self._exclusive(None)
        if body.get("behavior") == "DROP_CASCADE":
            self.hit("truncate-cascade", text)

    def _DeleteStmt(self, body: Node, text: str, depth: int) -> None:
        if self.step.is_new(body.get("relation")):
            return
        where = body.get("whereClause")
        if where is None or _always_true(where):
            self.hit("delete-without-where", text)

    def _UpdateStmt(self, body: Node, text: str, depth: int) -> None:
        if self.step.is_new(body.get("relation")):
            return
        where = body.get("whereClause")
        if where is None or _always_true(where):
            self.hit("update-without-where", text)

    def _MergeStmt(self, body: Node, text: str, depth: int) -> None:
        for clause in body.get("mergeWhenClauses") or ():
            if clause.get("MergeWhenClause", {}).get("commandType") == "CMD_DELETE":
                self.hit("merge-delete", text)
                return

    def _GrantStmt(self, body: Node, text: str, depth: int) -> None:
        if not body.get("is_grant"):
            self.hit("revoke", text)

    _GrantRoleStmt = _GrantStmt

    def _AlterDefaultPrivilegesStmt(self, body: Node, text: str, depth: int) -> None:
        if not (body.get("action") or {}).get("is_grant"):
            self.hit("revoke", text)

    def _AlterOwnerStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("revoke", text, "a new owner: the old owner loses its rights")

    _ReassignOwnedStmt = _AlterOwnerStmt

    def _AlterRoleStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("alter-role", text)

    _AlterRoleSetStmt = _AlterRoleStmt

    def _AlterSystemStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("alter-system", text)

    _AlterDatabaseStmt = _AlterSystemStmt
    _AlterDatabaseSetStmt = _AlterSystemStmt

    def _AlterSeqStmt(self, body: Node, text: str, depth: int) -> None:
        if "restart" in _defnames(body.get("options")):
            self.hit("sequence-reset", text)

    def _TransactionStmt(self, body: Node, text: str, depth: int) -> None:
        if body.get("kind") not in (
            "TRANS_STMT_SAVEPOINT",
            "TRANS_STMT_RELEASE",
            "TRANS_STMT_ROLLBACK_TO",
        ):
            self.hit("transaction-control", text)

    def _VariableSetStmt(self, body: Node, text: str, depth: int) -> None:
        name = str(body.get("name", "")).lower()
        if body.get("kind") == "VAR_RESET_ALL":
            self.hit("timeout-override", text)
            self.step.created.clear()
        elif name in _GUARDED_SETTINGS:
            self.hit(_GUARDED_SETTINGS[name], text)
        elif name == "search_path":
            self.step.created.clear()  # unqualified names may now mean other tables

    def _CopyStmt(self, body: Node, text: str, depth: int) -> None:
        if body.get("is_program") or body.get("filename"):
            self.hit("server-side-copy", text)

    def _DiscardStmt(self, body: Node, text: str, depth: int) -> None:
        if body.get("target") == "DISCARD_ALL":
            self.hit("timeout-override", text)

    def _AlterTableMoveAllStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("set-tablespace", text)

    def _RuleStmt(self, body: Node, text: str, depth: int) -> None:
        self.hit("create-rule", text)

    def _FuncCall(self, body: Node, text: str, depth: int) -> None:
        name = _funcname(body)
        rule = _SIDE_EFFECTS.get(name)
        if rule:
            self.hit(rule, text, f"{name}()")
        elif name == "set_config":
            args = body.get("args") or []
            setting = _const(args[0]) if args else _NOT_CONST
            if isinstance(setting, str) and setting.lower() in _GUARDED_SETTINGS:
                self.hit(_GUARDED_SETTINGS[setting.lower()], text)
            elif not isinstance(setting, str) or setting.lower() == "search_path":
                self.step.created.clear()

    # locks and rewrites -----------------------------------------------------------------------
    def _IndexStmt(self, body: Node, text: str, depth: int) -> None:
        if not body.get("unique") and len(body.get("indexParams") or ()) > 3:
            self.hit("index-too-many-columns", text)
        if body.get("concurrent"):
            if self.step.transactional:
                self.hit("concurrently-in-transaction", text)
            elif not body.get("if_not_exists"):
                self.hit("prefer-robust-stmts", text)
        elif not self.step.is_new(body.get("relation")):
            self.hit("create-index-not-concurrently", text)

    def _ReindexStmt(self, body: Node, text: str, depth: int) -> None:
        params = _defnames(body.get("params"))
        if "concurrently" in params and _const(params["concurrently"]) is not False:
            if self.step.transactional:
                self.hit("concurrently-in-transaction", text)
        elif not self.step.is_new(body.get("relation")):
            self.hit("reindex-not-concurrently", text)

    def _VacuumStmt(self, body: Node, text: str, depth: int) -> None:
        options = _defnames(body.get("options"))
        if "full" in options and _const(options["full"]) is not False:
            self.hit("vacuum-full", text)

    def _ClusterStmt(self, body: Node, text: str, depth: int) -> None:
        if not self.step.is_new(body.get("relation")):
            self.hit("cluster", text)

    def _LockStmt(self, body: Node, text: str, depth: int) -> None:
        relations = [r.get("RangeVar", {}) for r in body.get("relations") or ()]
        if int(body.get("mode", 8)) >= 5 and not all(self.step.is_new(r) for r in relations):
            self.hit("lock-table", text)
            self._exclusive(None)

    def _RefreshMatViewStmt(self, body: Node, text: str, depth: int) -> None:
        if not body.get("concurrent"):
            self.hit("refresh-matview-blocking", text)

    def _AlterTableStmt(self, body: Node, text: str, depth: int) -> None:
        objtype = body.get("objtype", "OBJECT_TABLE")
        relation = body.get("relation") or {}
        new = self.step.is_new(relation)
        exclusive = False
        for item in body.get("cmds") or ():
            command = item.get("AlterTableCmd") or {}
            subtype = str(command.get("subtype", ""))
            if subtype in ("AT_SetTableSpace", "AT_SetLogged", "AT_SetUnLogged") or objtype in (
                "OBJECT_TABLE",
                "OBJECT_FOREIGN_TABLE",
            ):
                exclusive |= subtype in _ACCESS_EXCLUSIVE
                self._alter_command(command, subtype, relation, new, text)
        if exclusive and not new:
            self._exclusive(relation)

    def _alter_command(
        self, command: Node, subtype: str, relation: Node, new: bool, text: str
    ) -> None:
        schema, table = _rel_key(relation)
        definition = command.get("def") or {}
        column_name = str(command.get("name", ""))
        if subtype in _REMOVALS or (subtype == "AT_ColumnDefault" and not definition):
            if not new:  # DROP DEFAULT is AT_ColumnDefault without a new default
                self.hit(_REMOVALS.get(subtype, "drop-default"), text)
        elif subtype in _REWRITES:
            rule = _REWRITES[subtype]
            if not new or rule in ("disable-trigger", "row-level-security"):
                self.hit(rule, text)
        elif subtype == "AT_AlterColumnType":
            if not new:
                self._type_change(definition.get("ColumnDef") or {}, relation, column_name, text)
        elif subtype == "AT_SetNotNull":
            if not new and (schema, table, column_name) not in self.step.phase.checked_not_null:
                self.hit("set-not-null", text)
        elif subtype == "AT_AddColumn":
            column = definition.get("ColumnDef") or {}
            typename = self._column((schema, table), column, text)
            if not new:
                self._add_column(column, typename, text)
        elif subtype == "AT_AddConstraint":
            constraint = definition.get("Constraint") or {}
            self._track_checks(constraint, schema, table)
            if not new:
                self._add_constraint(constraint, text)
        elif subtype == "AT_ValidateConstraint":
            key = (schema, table, column_name)
            if key in self.step.not_valid and self.step.transactional:
                self.hit("validate-in-same-transaction", text)
            validated = self.step.phase.unvalidated_checks.pop(key, "")
            if validated:
                self.step.phase.checked_not_null.add((schema, table, validated))

    def _track_checks(self, constraint: Node, schema: str, table: str) -> None:
        """Remember NOT VALID adds, and `CHECK (col IS NOT NULL)` (for a cheap SET NOT NULL)."""
        name = str(constraint.get("conname", ""))
        if constraint.get("skip_validation"):
            self.step.not_valid.add((schema, table, name))
        expression = constraint.get("raw_expr") or {}
        test = expression.get("NullTest") or {}
        fields = _strings(test.get("arg", {}).get("ColumnRef", {}).get("fields"))
        if (
            constraint.get("contype") == "CONSTR_CHECK"
            and test.get("nulltesttype") == "IS_NOT_NULL"
            and fields
        ):
            if constraint.get("skip_validation"):
                self.step.phase.unvalidated_checks[(schema, table, name)] = fields[-1]
            else:
                self.step.phase.checked_not_null.add((schema, table, fields[-1]))

    def _add_column(self, column: Node, typename: str, text: str) -> None:
        if not column.get("constraints"):  # no NOT NULL, DEFAULT, IDENTITY, GENERATED, key
            if typename in _SERIAL:
                self.hit("add-column-volatile-default", text)
            if typename == "json":
                self.hit("prefer-jsonb", text)
            return
        constraints = [c.get("Constraint", {}) for c in column.get("constraints") or ()]
        types = {c.get("contype") for c in constraints}
        serial = typename in _SERIAL
        identity = "CONSTR_IDENTITY" in types
        default = next((c for c in constraints if c.get("contype") == "CONSTR_DEFAULT"), None)
        not_null = bool(types & {"CONSTR_NOTNULL", "CONSTR_PRIMARY"})
        generated = "CONSTR_GENERATED" in types
        if not_null and default is None and not (identity or serial or generated):
            self.hit("add-column-not-null-without-default", text)
        if serial or identity or (default is not None and _volatile(default.get("raw_expr"))):
            self.hit("add-column-volatile-default", text)
        if generated:
            self.hit("add-column-generated-stored", text)
        if types & {"CONSTR_FOREIGN", "CONSTR_CHECK"}:
            self.hit("add-constraint-validating", text)
        if types & {"CONSTR_UNIQUE", "CONSTR_PRIMARY"}:
            self.hit("add-unique-constraint-locking", text)
        if typename == "json":
            self.hit("prefer-jsonb", text)

    def _add_constraint(self, constraint: Node, text: str) -> None:
        contype = constraint.get("contype")
        if contype in ("CONSTR_FOREIGN", "CONSTR_CHECK"):
            if not constraint.get("skip_validation"):
                self.hit("add-constraint-validating", text)
        elif contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY"):
            if not constraint.get("indexname"):
                self.hit("add-unique-constraint-locking", text)
            elif contype == "CONSTR_PRIMARY":
                self.hit("primary-key-using-index", text)
        elif contype == "CONSTR_EXCLUSION":
            self.hit("add-exclusion-constraint", text)

    def _type_change(self, column: Node, relation: Node, name: str, text: str) -> None:
        target, typmods = _type_of(column)
        if target == "json":
            self.hit("prefer-jsonb", text)
        using = column.get("raw_default")
        schema, table = _rel_key(relation)
        old = self.step.phase.column_types.get((schema, table, name))
        if using is None and old is not None and _coercible(old, (target, typmods)):
            return
        if using is None and old is None and _WIDENING.get(target):
            self.hit("alter-column-type-unverified", text)
            return
        self.hit("alter-column-type", text)

    def _column(self, relation: tuple[str, str], column: Node, text: str) -> str:
        """Remember a new column's type (for later type changes), give the style advice, and
        return the type's name. `relation` is the table's `_rel_key`."""
        found = _type_of(column)
        self.step.phase.column_types[(relation[0], relation[1], str(column.get("colname", "")))] = (
            found
        )
        typename, typmods = found
        if typename in _STYLE_RULES:
            for rule in _STYLE_RULES[typename]:
                if rule != "prefer-text-field" or typmods:  # varchar(n) only
                    self.hit(rule, text)
        return typename


_SLOW_KINDS = re.compile(
    r'\{"stmt":\{"(UpdateStmt|DeleteStmt|InsertStmt|MergeStmt|IndexStmt|SelectStmt|'
    r"CreateTableAsStmt|DoStmt|CallStmt|RefreshMatViewStmt|ClusterStmt|VacuumStmt|ReindexStmt|"
    r'CopyStmt|ExecuteStmt)":'
)
_SLOW_ALTERS = re.compile('"AT_ValidateConstraint"|"AT_AlterColumnType"|"AT_AddConstraint"')
_ALTER_TABLE = '{"stmt":{"AlterTableStmt":'


def _first_slow(statements: _Statements, first: int) -> int | None:
    """The index of the first top-level statement from `first` on that may take long (reads or
    writes rows, builds, validates: a slow kind, or an ALTER TABLE that validates, adds a
    constraint or changes a type), or None. Found by searching the JSON forward, not by
    visiting every statement."""
    tree, starts = statements.tree, statements.starts
    if first >= len(starts):
        return None
    begin = starts[first]
    found: int | None = None
    kind = _SLOW_KINDS.search(tree, begin)  # `{"stmt":` opens a top-level statement only
    if kind is not None:
        found = bisect_right(starts, kind.start()) - 1
    limit = starts[found] if found is not None else len(tree)
    for marker in _SLOW_ALTERS.finditer(tree, begin, limit):
        index = bisect_right(starts, marker.start()) - 1
        if tree.startswith(_ALTER_TABLE, starts[index]):
            return index
    return found


def _type_of(column: Node) -> tuple[str, tuple[int, ...]]:
    """A column's type name (the last of its qualified name) and its integer modifiers."""
    try:  # the usual shape, read directly
        type_name = column["typeName"]
        name = str(type_name["names"][-1]["String"]["sval"])
    except (KeyError, IndexError, TypeError):  # anything else, field by field
        type_name = column.get("typeName") or {}
        names = type_name.get("names")
        name = str(names[-1].get("String", {}).get("sval", "")) if names else ""
    typmods = type_name.get("typmods")
    if not typmods:
        return name, ()
    mods = [_const(mod) for mod in typmods]
    return name, tuple(m for m in mods if isinstance(m, int))


def _coercible(old: tuple[str, tuple[int, ...]], new: tuple[str, tuple[int, ...]]) -> bool:
    """A binary-coercible change (no rewrite, no scan), per PostgreSQL's ALTER TABLE notes."""
    (old_type, old_mods), (new_type, new_mods) = old, new
    if (old_type, new_type) == ("cidr", "inet"):
        return True
    if {old_type, new_type} <= {"varchar", "text"}:
        if new_type == "text" or not new_mods:
            return True
        return old_type == "varchar" and bool(old_mods) and new_mods[0] >= old_mods[0]
    if old_type != new_type or old_type not in _WIDENING:
        return False
    if not new_mods:
        return True
    if not old_mods:
        return False
    if old_type == "numeric":
        old_scale = old_mods[1] if len(old_mods) > 1 else 0
        new_scale = new_mods[1] if len(new_mods) > 1 else 0
        return new_scale == old_scale and new_mods[0] >= old_mods[0]
    return new_mods[0] >= old_mods[0]


def _plpgsql_sql(query: str, mode: int) -> str:
    """A PL/pgSQL expression as SQL to lint ('' when there is nothing a rule looks at)."""
    if mode == 0:
        return query  # a whole statement
    if "(" not in query:
        return ""  # no call and no subquery in it
    if mode >= 3 and ":=" in query:
        query = query.split(":=", 1)[1]  # an assignment: its value
    return "SELECT " + query


def _volatile(expression: Any) -> bool:
    return any(_funcname(call) not in _NON_VOLATILE for call in _walk_funcs(expression))


def _dollar_quote(code: str) -> str:
    tag = "$dm$"
    counter = 0
    while tag in code:
        counter += 1
        tag = f"$dm{counter}$"
    return f"{tag}{code}{tag}"


#: The statement node types `_Analyzer` looks at: those it has a `_<NodeType>` handler for.
_HANDLED = frozenset(
    name[1:] for name in dir(_Analyzer) if name.endswith("Stmt") and name[1:2].isupper()
)
#: node type -> its handler (`_<NodeType>`), looked up once rather than per node.
_HANDLERS: dict[str, Callable[[_Analyzer, Node, str, int], None]] = {
    kind: getattr(_Analyzer, f"_{kind}") for kind in (*_HANDLED, "FuncCall")
}
