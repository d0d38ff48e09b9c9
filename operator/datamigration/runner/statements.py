"""What a `sql` step may contain so that it is all or nothing, decided on PostgreSQL's parse tree.

Why: a transactional step is one transaction that the runner opens, commits or rolls back. A
`COMMIT` (or `BEGIN`, `ROLLBACK`, ...) inside the step's text would end that transaction half-way:
what came before it would stay after a failure, and the retry would fail with "already exists".
Statements that cannot run inside a transaction (`CREATE INDEX CONCURRENTLY`, `VACUUM`, ...) must
be a step of their own with `transactional: false`, and such a step runs exactly ONE statement,
so a failure never leaves part of a step behind.

`check_sql_step` enforces that before the database is touched (a refusal is exit 2, naming the
field). Text PostgreSQL's parser rejects (SQLite-only syntax) is still checked for
transaction-control keywords with pglast's scanner, which skips comments and quotes.

`concurrent_index` names the index a `CREATE [UNIQUE] INDEX CONCURRENTLY` builds, so that the
runner can drop the INVALID index a failed build leaves before it tries again.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums import AlterTableType
from pglast.parser import ParseError, scan

from datamigration.core.errors import SpecError
from datamigration.core.steps import SqlStep
from datamigration.runner.sqltext import split_statements

_TRANSACTION_WORDS = frozenset(
    {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE"}
)


@dataclass(frozen=True)
class Statement:
    text: str
    node: ast.Node | None  # None: PostgreSQL's parser rejected the step's text


def parse_statements(sql: str) -> list[Statement]:
    """The statements of `sql`, with their parse trees when PostgreSQL's parser accepts it."""
    try:
        raw_statements = parse_sql(sql)
    except ParseError:
        return [Statement(text, None) for text in split_statements(sql)]
    encoded = sql.encode("utf-8")  # libpg_query reports byte offsets
    statements: list[Statement] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        text = encoded[start:end].decode("utf-8", "replace").strip()
        if text:
            statements.append(Statement(text, raw.stmt))
    return statements


def check_sql_step(step: SqlStep, path: str) -> None:
    """Refuse a step that could not be all or nothing; `path` is the step (`plan.steps[0]`)."""
    statements = parse_statements(step.sql)
    for position, statement in enumerate(statements, start=1):
        if _is_transaction_control(statement):
            raise SpecError(
                f"{path}.sql",
                f"statement {position} ({_head(statement.text)}) controls the transaction; the "
                "runner runs each step as one transaction of its own, so remove it "
                "(split the work into steps instead)",
            )
    if not step.transactional and len(statements) > 1:
        raise SpecError(
            f"{path}.transactional",
            f"false allows exactly one statement per step, this step has {len(statements)}: "
            "outside a transaction a failure half-way would leave the earlier statements "
            "applied; put each statement in a step of its own",
        )
    if step.transactional:
        for position, statement in enumerate(statements, start=1):
            reason = needs_own_transaction(statement.node)
            if reason:
                raise SpecError(
                    f"{path}.transactional",
                    f"statement {position} ({reason}) cannot run inside a transaction: put it in "
                    "a step of its own with transactional: false",
                )


def needs_own_transaction(node: ast.Node | None) -> str | None:
    """Why `node` cannot run in a transaction block (None when it can)."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and any(
        isinstance(param, ast.DefElem) and param.defname == "concurrently"
        for param in node.params or ()
    ):
        return "REINDEX CONCURRENTLY"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    if isinstance(node, ast.CreatedbStmt | ast.DropdbStmt):
        return "CREATE/DROP DATABASE"
    if isinstance(node, ast.CreateTableSpaceStmt | ast.DropTableSpaceStmt):
        return "CREATE/DROP TABLESPACE"
    if isinstance(node, ast.AlterSystemStmt):
        return "ALTER SYSTEM"
    if isinstance(node, ast.ClusterStmt) and node.relation is None:
        return "CLUSTER without a table"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if (
                isinstance(cmd, ast.AlterTableCmd)
                and cmd.subtype == AlterTableType.AT_DetachPartition
                and isinstance(cmd.def_, ast.PartitionCmd)
                and cmd.def_.concurrent
            ):
                return "DETACH PARTITION CONCURRENTLY"
    return None


def concurrent_index(node: ast.Node | None) -> tuple[str | None, str] | None:
    """(schema, name) of the index a named `CREATE INDEX CONCURRENTLY` builds."""
    if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname):
        return None
    schema = node.relation.schemaname if node.relation is not None else None
    return (schema or None, node.idxname)


def _is_transaction_control(statement: Statement) -> bool:
    if statement.node is not None:
        return isinstance(statement.node, ast.TransactionStmt)
    for token in scan(statement.text):
        if token.name in {"C_COMMENT", "SQL_COMMENT"}:
            continue
        return token.name in _TRANSACTION_WORDS
    return False


def _head(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
