"""The SQL text the planner writes: quoting, object names, column types and user expressions.

Why one module: every piece of text the planner puts into a statement comes through here, so the
rules are in one place and reviewable:

- identifiers were validated by `core.steps`' rules (plain `[A-Za-z_][A-Za-z0-9_]*`, at most 63
  characters) and are always double-quoted, on PostgreSQL and SQLite alike, so they can neither
  break out nor be case-folded differently from what the runner's backfill does;
- column types are checked against a small grammar (`numeric(10, 2)`, `timestamp with time
  zone`, `text[]`, `public.mood`): words, one optional modifier list of integers, array brackets;
- names the planner invents (triggers, functions, constraints, step names) are deterministic, at
  most 63 characters, shortened with a stable hash when needed;
- user expressions (`up`, `down`, `default`, `check`, transforms) go through `expression()` and
  nothing else. Today it checks that the text is a non-empty string and keeps it as written; the
  SQL lint (which may parse and re-emit it from PostgreSQL's parse tree) cannot be imported into
  the pure core, so it reaches these texts through `Planned.expressions()`.
"""

from __future__ import annotations

import hashlib
import re

from datamigration.core.errors import SpecError
from datamigration.core.steps import _identifier, _table

MAX_NAME = 63
_TYPE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?"  # a name, optionally schema-qualified
    r"( [A-Za-z_][A-Za-z0-9_]*)*"  # more words: double precision, character varying
    r"( ?\(\d{1,4}( ?, ?\d{1,4})?\))?"  # one modifier list: varchar(20), numeric(10, 2)
    r"( [A-Za-z_][A-Za-z0-9_]*)*"  # words after it: timestamp(3) with time zone
    r"(\[\])*"  # arrays
)
_JSON_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifier(value: object, path: str) -> str:
    """A plain SQL identifier (the step model's rule), or `SpecError` naming `path`."""
    return _identifier(value, path)


def table_name(value: object, path: str) -> str:
    """A table name, optionally schema-qualified (the step model's rule)."""
    return _table(value, path)


def column_type(value: object, path: str) -> str:
    if not isinstance(value, str) or len(value) > 128 or not _TYPE.fullmatch(value.strip()):
        raise SpecError(
            path,
            "must be a column type such as text, bigint, numeric(10, 2), "
            "timestamp with time zone or text[]",
        )
    return value.strip()


def json_field(value: object, path: str) -> str:
    """A top-level key of a JSON document: letters, digits and '_' (no nested paths)."""
    if not isinstance(value, str) or len(value) > 63 or not _JSON_FIELD.fullmatch(value):
        raise SpecError(
            path, "must be a top-level document key: a letter or '_' then letters, digits or '_'"
        )
    return value


def expression(value: object, path: str) -> str:
    """A user SQL expression, as it will appear in the generated SQL (always parenthesised by
    the caller). The one place where expression text enters the planner."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, "must be a non-empty SQL expression")
    if len(value) > 4096:
        raise SpecError(path, "must be at most 4096 characters")
    if "$dm$" in value:
        raise SpecError(path, "must not contain $dm$ (it quotes the generated trigger bodies)")
    return value.strip()


def q(name: str) -> str:
    """A quoted identifier (validated before, so it contains no quote)."""
    return f'"{name}"'


def qt(table: str) -> str:
    """A quoted, optionally schema-qualified table name."""
    return ".".join(q(part) for part in table.split("."))


def bare_table(table: str) -> str:
    """The table without its schema (constraint and trigger names live in the table's schema)."""
    return table.rsplit(".", maxsplit=1)[-1]


def schema_of(table: str) -> str | None:
    parts = table.split(".")
    return parts[0] if len(parts) == 2 else None


def short_name(*parts: str, limit: int = MAX_NAME) -> str:
    """`parts` joined by '_' if that fits in `limit`, else cut with a stable 8-hex hash."""
    name = "_".join(parts)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}_{digest}"


def step_name(*parts: str) -> str:
    """A DNS-label step name from identifiers: lower case, '_' and '.' become '-'."""
    text = "-".join(parts).lower().replace("_", "-").replace(".", "-")
    text = re.sub(r"-+", "-", text).strip("-")
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: MAX_NAME - 9].rstrip('-')}-{digest}"


def literal(text: str) -> str:
    """A SQL string literal of planner-validated text (no quotes inside, but be safe)."""
    return "'" + text.replace("'", "''") + "'"
