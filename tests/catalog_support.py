"""A snapshot of what PostgreSQL's catalog says about one table, to prove a rollback complete.

`table_shape(conn, table)` lists the table's columns (name, type, nullability, default), its
constraints, indexes and triggers, and every function in the public schema (sync triggers create
their own), each as sorted text. Two snapshots compare equal exactly when the database has the
same shape: a left-over trigger, function, index, constraint or column shows up as a difference.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_QUERIES = {
    "columns": """
        SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conname || ' ' || pg_get_constraintdef(oid) || CASE WHEN convalidated THEN ''
               ELSE ' NOT VALIDATED' END
        FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)""",
    "indexes": "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = :t",
    "triggers": """
        SELECT tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
        WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal""",
    "functions": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'""",
}


def table_shape(conn: Connection, table: str) -> dict[str, list[Any]]:
    """The catalog's description of `table` (and the public functions), sorted."""
    return {
        kind: sorted(row[0] for row in conn.execute(text(query), {"t": table}))
        for kind, query in _QUERIES.items()
    }
