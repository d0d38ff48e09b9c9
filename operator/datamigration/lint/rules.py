"""The lint's rules: which statements are unsafe in which phase, decided on PostgreSQL's own AST.

Why AST and not text: `DROP` can hide in a comment, a string or a dollar-quoted body, and
`ALTER TABLE ... ALTER COLUMN ... TYPE` has a dozen spellings. pglast (libpg_query, the real
PostgreSQL parser) gives the statement tree; no regular expression classifies SQL here.

The phases: while `expand` and `backfill` run, the *old* application version is still serving
traffic, so those phases may only add (tables, nullable columns, indexes built concurrently,
data). Removing or renaming anything belongs to `contract`, after the new version has rolled
out. Some statements are also *lock* hazards in any phase (they hold ACCESS EXCLUSIVE while
scanning or rewriting a table); those are warnings, also in `contract`.

Each rule has a stable kebab-case id and a severity per phase group: `expand` (expand and
backfill) and `contract`. `None` means "not reported in that phase".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, NullTestType, ObjectType
from pglast.visitors import Visitor

from datamigration.lint.findings import Severity

E, W = Severity.ERROR, Severity.WARNING
DESTRUCTIVE_FIX = "Move it to the contract phase, after the new code has rolled out."


@dataclass(frozen=True)
class Rule:
    id: str
    expand: Severity | None  # in expand and backfill
    contract: Severity | None
    message: str  # why, then what to do

    def severity(self, phase: str) -> Severity | None:
        return self.contract if phase == "contract" else self.expand


def _destructive(rule_id: str, why: str) -> Rule:
    return Rule(rule_id, E, None, f"{why} {DESTRUCTIVE_FIX}")


_OLD_CODE = "breaks the application version still running until code-rollout."
RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in [
        _destructive("drop-table", f"Dropping a table {_OLD_CODE}"),
        _destructive("drop-column", f"Dropping a column {_OLD_CODE}"),
        _destructive(
            "drop-index", f"Dropping an index can make the old code's queries slow; it {_OLD_CODE}"
        ),
        _destructive("drop-schema", f"Dropping a schema {_OLD_CODE}"),
        _destructive("drop-view", f"Dropping a view {_OLD_CODE}"),
        _destructive("drop-sequence", f"Dropping a sequence {_OLD_CODE}"),
        _destructive("drop-type", f"Dropping a type {_OLD_CODE}"),
        _destructive("drop-function", f"Dropping a function or procedure {_OLD_CODE}"),
        _destructive("drop-database", f"Dropping a database {_OLD_CODE}"),
        _destructive("drop-object", f"Dropping a database object {_OLD_CODE}"),
        _destructive(
            "drop-constraint",
            f"Dropping a constraint lets the old code write data it must not; it {_OLD_CODE}",
        ),
        _destructive("rename-table", f"Renaming or moving a table {_OLD_CODE}"),
        Rule(
            "rename-column",
            E,
            None,
            f"Renaming a column {_OLD_CODE} Add the new column in expand, backfill it, and drop "
            "the old one in contract.",
        ),
        _destructive(
            "rename-object", f"Renaming a schema, view, sequence, type or function {_OLD_CODE}"
        ),
        _destructive("truncate", f"TRUNCATE deletes every row and {_OLD_CODE}"),
        _destructive(
            "delete-without-where", f"DELETE without WHERE deletes every row and {_OLD_CODE}"
        ),
        Rule(
            "alter-column-type",
            E,
            W,
            "Changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock and "
            "breaks the old code. Add a new column in expand, backfill it, switch in contract.",
        ),
        Rule(
            "set-not-null",
            E,
            W,
            "SET NOT NULL on an existing column rejects the old code's NULL writes and scans the "
            "table under an ACCESS EXCLUSIVE lock. In contract, first ADD CONSTRAINT ... CHECK "
            "(col IS NOT NULL) NOT VALID and VALIDATE CONSTRAINT it; SET NOT NULL then skips "
            "the scan.",
        ),
        Rule(
            "add-column-not-null-without-default",
            E,
            E,
            "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table with rows and rejects the "
            "old code's inserts. Add it nullable (or with a DEFAULT), backfill, then constrain.",
        ),
        Rule(
            "add-column-volatile-default",
            W,
            W,
            "A volatile DEFAULT (random(), gen_random_uuid(), nextval, clock_timestamp()) rewrites "
            "the whole table under an ACCESS EXCLUSIVE lock. Add the column without it and "
            "backfill the values.",
        ),
        Rule(
            "update-without-where",
            E,
            W,
            "UPDATE without WHERE rewrites every row in one transaction and locks them all until "
            "it commits. Use a backfill step (batched, resumable).",
        ),
        Rule(
            "create-index-not-concurrently",
            W,
            W,
            "CREATE INDEX without CONCURRENTLY blocks writes to the table while the index builds. "
            "Use CREATE INDEX CONCURRENTLY in a step with transactional: false.",
        ),
        Rule(
            "drop-index-not-concurrently",
            None,
            W,
            "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table. Use DROP "
            "INDEX CONCURRENTLY in a step with transactional: false.",
        ),
        Rule(
            "add-constraint-validating",
            W,
            W,
            "Adding a FOREIGN KEY or CHECK constraint validates every row under a lock that blocks "
            "writes. Add it NOT VALID, then VALIDATE CONSTRAINT in a later step.",
        ),
        Rule(
            "add-unique-constraint-locking",
            W,
            W,
            "Adding a UNIQUE or PRIMARY KEY constraint builds its index under an ACCESS EXCLUSIVE "
            "lock. CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX.",
        ),
        Rule(
            "concurrently-in-transaction",
            E,
            E,
            "CONCURRENTLY cannot run inside a transaction block, and a transactional step is one. "
            "Put the statement in its own step with transactional: false.",
        ),
        Rule(
            "unparseable-sql",
            E,
            E,
            "PostgreSQL's parser rejects this SQL. Fix the syntax "
            "(the lint checks PostgreSQL SQL).",
        ),
        Rule(
            "invalid-expression",
            E,
            E,
            "A backfill `set` value must be one SQL expression and `where` one condition, with no "
            "statement separators or subquery tricks. Write a single expression.",
        ),
        Rule(
            "verify-not-read-only",
            E,
            E,
            "A verify step is a check: its query must be a single SELECT that changes nothing. "
            "Move changes to a sql step.",
        ),
        Rule(
            "invalid-spec",
            E,
            E,
            "The DataMigration does not match the step format. Fix the field named above.",
        ),
    ]
}

_DROP_RULES = {
    ObjectType.OBJECT_TABLE: "drop-table",
    ObjectType.OBJECT_FOREIGN_TABLE: "drop-table",
    ObjectType.OBJECT_INDEX: "drop-index",
    ObjectType.OBJECT_SCHEMA: "drop-schema",
    ObjectType.OBJECT_VIEW: "drop-view",
    ObjectType.OBJECT_MATVIEW: "drop-view",
    ObjectType.OBJECT_SEQUENCE: "drop-sequence",
    ObjectType.OBJECT_TYPE: "drop-type",
    ObjectType.OBJECT_DOMAIN: "drop-type",
    ObjectType.OBJECT_FUNCTION: "drop-function",
    ObjectType.OBJECT_PROCEDURE: "drop-function",
    ObjectType.OBJECT_ROUTINE: "drop-function",
    ObjectType.OBJECT_AGGREGATE: "drop-function",
}
_RENAME_RULES = {
    ObjectType.OBJECT_TABLE: "rename-table",
    ObjectType.OBJECT_FOREIGN_TABLE: "rename-table",
    ObjectType.OBJECT_COLUMN: "rename-column",
    ObjectType.OBJECT_SCHEMA: "rename-object",
    ObjectType.OBJECT_VIEW: "rename-object",
    ObjectType.OBJECT_MATVIEW: "rename-object",
    ObjectType.OBJECT_SEQUENCE: "rename-object",
    ObjectType.OBJECT_TYPE: "rename-object",
    ObjectType.OBJECT_DOMAIN: "rename-object",
    ObjectType.OBJECT_FUNCTION: "rename-object",
    ObjectType.OBJECT_PROCEDURE: "rename-object",
}
# Functions whose DEFAULT forces PostgreSQL to rewrite the table when the column is added.
_VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v4",
        "clock_timestamp",
        "nextval",
        "timeofday",
        "txid_current",
        "statement_timestamp",
    }
)
# Statements that change data or schema, forbidden anywhere in a verify query.
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


@dataclass
class Scope:
    """What earlier statements of the same phase did: tables they created (no lock risk on a new
    table) and columns they proved NOT NULL with a validated CHECK (then SET NOT NULL neither
    scans the table nor rejects anything new)."""

    created_tables: set[str] = field(default_factory=set)
    checked_not_null: set[tuple[str, str]] = field(default_factory=set)  # (table, column)
    unvalidated_checks: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, name)

    def is_new(self, relation: ast.RangeVar | None) -> bool:
        return relation is not None and str(relation.relname) in self.created_tables


def classify(statement: ast.Node, *, transactional: bool, scope: Scope) -> list[str]:
    """The ids of the rules one parsed statement of a sql step breaks (any phase)."""
    hits: list[str] = []
    if isinstance(statement, ast.CreateStmt | ast.CreateTableAsStmt):
        if isinstance(statement, ast.CreateStmt):
            relation = statement.relation
        else:
            relation = statement.into.rel if statement.into is not None else None
        if relation is not None:
            scope.created_tables.add(str(relation.relname))
    elif isinstance(statement, ast.DropStmt):
        drop_type = statement.removeType
        hits.append(_DROP_RULES.get(drop_type, "drop-object") if drop_type else "drop-object")
        if statement.removeType == ObjectType.OBJECT_INDEX:
            if statement.concurrent and transactional:
                hits.append("concurrently-in-transaction")
            if not statement.concurrent:
                hits.append("drop-index-not-concurrently")
    elif isinstance(statement, ast.DropdbStmt):
        hits.append("drop-database")
    elif isinstance(statement, ast.DropRoleStmt | ast.DropOwnedStmt | ast.DropTableSpaceStmt):
        hits.append("drop-object")
    elif isinstance(statement, ast.RenameStmt):
        renamed = _RENAME_RULES.get(statement.renameType) if statement.renameType else None
        if renamed:
            hits.append(renamed)
    elif isinstance(statement, ast.AlterObjectSchemaStmt):
        if statement.objectType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_FOREIGN_TABLE):
            hits.append("rename-table")
        elif statement.objectType in _RENAME_RULES:
            hits.append("rename-object")
    elif isinstance(statement, ast.TruncateStmt):
        hits.append("truncate")
    elif isinstance(statement, ast.DeleteStmt):
        if statement.whereClause is None:
            hits.append("delete-without-where")
    elif isinstance(statement, ast.UpdateStmt):
        if statement.whereClause is None:
            hits.append("update-without-where")
    elif isinstance(statement, ast.IndexStmt):
        if statement.concurrent and transactional:
            hits.append("concurrently-in-transaction")
        if not statement.concurrent and not scope.is_new(statement.relation):
            hits.append("create-index-not-concurrently")
    elif isinstance(statement, ast.ReindexStmt):
        concurrent = any(
            isinstance(param, ast.DefElem) and param.defname == "concurrently"
            for param in statement.params or ()
        )
        if concurrent and transactional:
            hits.append("concurrently-in-transaction")
    elif isinstance(statement, ast.AlterTableStmt):
        hits.extend(_alter_table(statement, scope))
    return hits


def _alter_table(statement: ast.AlterTableStmt, scope: Scope) -> list[str]:
    if statement.objtype not in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_FOREIGN_TABLE):
        return []
    new = scope.is_new(statement.relation)
    table = str(statement.relation.relname) if statement.relation else ""
    hits: list[str] = []
    for command in statement.cmds or ():
        if not isinstance(command, ast.AlterTableCmd):
            continue
        subtype = command.subtype
        _track_not_null_checks(command, table, scope)
        if subtype == AlterTableType.AT_DropColumn:
            hits.append("drop-column")
        elif subtype == AlterTableType.AT_DropConstraint:
            hits.append("drop-constraint")
        elif subtype == AlterTableType.AT_AlterColumnType and not new:
            hits.append("alter-column-type")
        elif (
            subtype == AlterTableType.AT_SetNotNull
            and not new
            and (table, str(command.name)) not in scope.checked_not_null
        ):
            hits.append("set-not-null")
        elif subtype == AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
            hits.extend(_add_column(command.def_, new))
        elif subtype == AlterTableType.AT_AddConstraint and isinstance(
            command.def_, ast.Constraint
        ):
            hits.extend(_add_constraint(command.def_, new))
    return hits


def _track_not_null_checks(command: ast.AlterTableCmd, table: str, scope: Scope) -> None:
    """Remember `CHECK (col IS NOT NULL)` constraints, and when they become validated."""
    definition = command.def_
    if command.subtype == AlterTableType.AT_AddConstraint and isinstance(
        definition, ast.Constraint
    ):
        expression = definition.raw_expr
        if (
            definition.contype == ConstrType.CONSTR_CHECK
            and isinstance(expression, ast.NullTest)
            and expression.nulltesttype == NullTestType.IS_NOT_NULL
            and isinstance(expression.arg, ast.ColumnRef)
            and expression.arg.fields
        ):
            column = str(getattr(expression.arg.fields[-1], "sval", ""))
            if definition.skip_validation:
                scope.unvalidated_checks[(table, str(definition.conname))] = column
            else:
                scope.checked_not_null.add((table, column))
    elif command.subtype == AlterTableType.AT_ValidateConstraint:
        validated = scope.unvalidated_checks.pop((table, str(command.name)), "")
        if validated:
            scope.checked_not_null.add((table, validated))


def _add_column(column: ast.ColumnDef, new_table: bool) -> list[str]:
    if new_table:
        return []
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    types = {c.contype for c in constraints}
    not_null = ConstrType.CONSTR_NOTNULL in types or ConstrType.CONSTR_PRIMARY in types
    default = next((c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
    hits: list[str] = []
    identity = ConstrType.CONSTR_IDENTITY in types or ConstrType.CONSTR_GENERATED in types
    if not_null and default is None and not identity and not _is_serial(column):
        hits.append("add-column-not-null-without-default")
    if (default is not None and _calls_volatile(default.raw_expr)) or _is_serial(column):
        hits.append("add-column-volatile-default")
    return hits


def _add_constraint(constraint: ast.Constraint, new_table: bool) -> list[str]:
    if new_table:
        return []
    if constraint.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK):
        return [] if constraint.skip_validation else ["add-constraint-validating"]
    if constraint.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
        return [] if constraint.indexname else ["add-unique-constraint-locking"]
    return []


def _is_serial(column: ast.ColumnDef) -> bool:
    names = [
        str(getattr(n, "sval", ""))
        for n in (column.typeName.names or () if column.typeName else ())
    ]
    return bool(names) and names[-1] in {"serial", "bigserial", "smallserial", "serial4", "serial8"}


class _Collector(Visitor):
    """Collects every node of a tree."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[Any] = []

    def visit(self, ancestors: Any, node: Any) -> None:
        del ancestors
        self.nodes.append(node)


def nodes(tree: Any) -> list[Any]:
    collector = _Collector()
    collector(tree)
    return collector.nodes


def _calls_volatile(expression: Any) -> bool:
    for node in nodes(expression) if expression is not None else []:
        if isinstance(node, ast.FuncCall):
            name = str(getattr(node.funcname[-1], "sval", "")) if node.funcname else ""
            if name in _VOLATILE_FUNCTIONS:
                return True
    return False


def is_read_only_select(statement: ast.Node) -> bool:
    """A SELECT with no data-modifying CTE and no row locking (FOR UPDATE/SHARE)."""
    if not isinstance(statement, ast.SelectStmt):
        return False
    for node in nodes(statement):
        if isinstance(node, _WRITES):
            return False
        if isinstance(node, ast.SelectStmt) and node.lockingClause:
            return False
    return True
