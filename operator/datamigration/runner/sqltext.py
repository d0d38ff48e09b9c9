"""The only place where the runner builds SQL text, and the rules it follows.

Why: user statements (sql steps, verify queries) must reach the database as written, while our
own statements (backfill batches, bounds) are built here. Identifiers were validated by
`core.steps` (plain identifiers, optionally schema-qualified) and are quoted here with the
dialect's preparer; every value is a bound parameter. Backfill `set` values and `where` go
through `lint.expressions.expression_sql`: on PostgreSQL each is parsed as exactly one expression
and printed back from the parse tree; on SQLite (syntax PostgreSQL's parser may reject) its tokens
must show one expression that cannot close the parentheses it is wrapped in. Only that text is
wrapped in parentheses (one operand) with its colons escaped (so SQLAlchemy never takes `':x'`
for a bind parameter).

Parameters in `text()` are cast with `CAST(:x AS BIGINT)`, never `:x::bigint` (that is not a
bind parameter to SQLAlchemy), and integer bounds are always computed in Python: psycopg 3 binds
small Python ints as smallint, so arithmetic on parameters in SQL can overflow.

Statement splitting uses PostgreSQL's own parser (pglast); text it cannot parse (SQLite-only
syntax, or a typo the database should report) is split by pglast's scanner, which still respects
quotes, comments and dollar quoting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import split
from pglast.parser import ParseError
from sqlalchemy import Connection, CursorResult, Dialect, TextClause, text

from datamigration.core.steps import BackfillStep
from datamigration.lint.expressions import expression_sql

#: Send user SQL without a parameter collection, so the driver does not parse it for
#: placeholders (psycopg would take `%` in `LIKE 'a%'` for one).
VERBATIM: dict[str, Any] = {"no_parameters": True}


def execute_verbatim(conn: Connection, statement: str) -> CursorResult[Any]:
    """Run one user statement exactly as written."""
    return conn.exec_driver_sql(statement, execution_options=VERBATIM)


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, in order, without empty ones."""
    try:
        statements = list(split(sql, with_parser=True))
    except ParseError:
        statements = list(split(sql, with_parser=False))
    return [statement for statement in statements if statement.strip()]


def quote_table(dialect: Dialect, table: str) -> str:
    """`schema.table` or `table`, each part quoted as the dialect requires."""
    preparer = dialect.identifier_preparer
    return ".".join(preparer.quote(part) for part in table.split("."))


def quote_column(dialect: Dialect, column: str) -> str:
    return dialect.identifier_preparer.quote(column)


@dataclass(frozen=True)
class BackfillSql:
    """The statements of one backfill step, built once and reused for every batch."""

    key_bounds: TextClause  # -> (min(key), max(key))
    max_after: TextClause  # :lo -> max(key) above lo
    max_all: TextClause  # -> max(key)
    row_count: TextClause  # -> count(*) (SQLite and PostgreSQL fallback)
    int_update: TextClause  # :lo, :hi (bigint) -> UPDATE key in (lo, hi]
    boundary_after: TextClause  # :lo, :skip -> the key `skip` rows above lo (keyset)
    boundary_first: TextClause  # :skip -> the key at offset `skip` (keyset, first batch)
    update_after: TextClause  # :lo, :hi -> UPDATE key in (lo, hi] (keyset)
    update_upto: TextClause  # :hi -> UPDATE key <= hi (keyset, first batch)


def backfill_sql(dialect: Dialect, step: BackfillStep) -> BackfillSql:
    table = quote_table(dialect, step.table)
    key = quote_column(dialect, step.key)
    assignments = ", ".join(
        f"{quote_column(dialect, column)} = ({_escaped(_expression(dialect, expression, column))})"
        for column, expression in step.set
    )
    where = expression_sql(step.where, "where", dialect=dialect.name) if step.where else None
    extra = f" AND ({_escaped(where)})" if where else ""
    update = f"UPDATE {table} SET {assignments} WHERE "
    return BackfillSql(
        key_bounds=text(f"SELECT min({key}), max({key}) FROM {table}"),
        max_after=text(f"SELECT max({key}) FROM {table} WHERE {key} > :lo"),
        max_all=text(f"SELECT max({key}) FROM {table}"),
        row_count=text(f"SELECT count(*) FROM {table}"),
        int_update=text(
            f"{update}{key} > CAST(:lo AS BIGINT) AND {key} <= CAST(:hi AS BIGINT){extra}"
        ),
        boundary_after=text(
            f"SELECT {key} FROM {table} WHERE {key} > :lo ORDER BY {key} LIMIT 1 OFFSET :skip"
        ),
        boundary_first=text(f"SELECT {key} FROM {table} ORDER BY {key} LIMIT 1 OFFSET :skip"),
        update_after=text(f"{update}{key} > :lo AND {key} <= :hi{extra}"),
        update_upto=text(f"{update}{key} <= :hi{extra}"),
    )


def _expression(dialect: Dialect, expression: str, column: str) -> str:
    return expression_sql(expression, column, in_set=True, dialect=dialect.name)


def _escaped(expression: str) -> str:
    """Expression text inside `text()`: escape colons so `:x` and `'10:30'` stay as they are."""
    return expression.replace(":", "\\:")


#: The planner's row estimate for `:table` (a quoted name; -1 or 0 when never analysed): free.
POSTGRES_ROW_ESTIMATE = text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)")
