"""The typed operations of `spec.operations[]`, parsed from the manifest with field-exact errors.

Each entry is a mapping with exactly one operation key (`renameColumn: {...}`). Parsing checks
every field the way `core.steps` checks steps (identifiers strictly, unknown fields refused) and
raises `SpecError` naming the exact field: `spec.operations[0].renameColumn.to: must be a plain
SQL identifier ...`. The result is immutable and carries its own path, so the compiler can name
the operation again (e.g. "not supported on SQLite").

The four column-reshaping operations (renameColumn, changeColumnType, splitColumn, mergeColumns)
are all one `Sync`: old columns, new columns, `up` (old -> new, one expression per new column)
and `down` (new -> old, one expression per old column). What differs is only how the user
writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from datamigration.core.errors import SpecError
from datamigration.core.operations.sql import (
    column_type,
    expression,
    identifier,
    json_field,
    q,
    table_name,
)
from datamigration.core.steps import DEFAULT_BACKFILL_KEY, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

Dialect = Literal["postgresql", "sqlite"]
DIALECTS: tuple[Dialect, ...] = ("postgresql", "sqlite")
MAX_OPERATIONS = 50

OPERATION_KINDS = (
    "addColumn",
    "renameColumn",
    "changeColumnType",
    "splitColumn",
    "mergeColumns",
    "setNotNull",
    "addCheck",
    "addForeignKey",
    "addUnique",
    "addIndex",
    "dropIndex",
    "dropColumn",
    "dropTable",
    "copyField",
    "renameField",
    "deleteField",
    "upcast",
)
ON_DELETE = ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT")
INDEX_METHODS = ("btree", "hash", "gin", "gist", "brin")


@dataclass(frozen=True)
class Op:
    """Common to every operation: where it was written."""

    path: str  # spec.operations[i].<kind>

    @property
    def kind(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class AddColumn(Op):
    table: str
    column: str
    type: str
    default: str | None
    not_null: bool
    up: str | None  # value for existing rows and for rows old code inserts without it
    key: str
    batch_size: int


@dataclass(frozen=True)
class Sync(Op):
    """Old columns and new columns kept equal by triggers from expand until contract."""

    table: str
    key: str
    old: tuple[str, ...]
    new: tuple[tuple[str, str], ...]  # (column, type)
    up: tuple[tuple[str, str], ...]  # (new column, expression over old columns)
    down: tuple[tuple[str, str], ...]  # (old column, expression over new columns)
    copy: bool  # a plain rename: up and down are the other column itself
    batch_size: int

    @property
    def new_columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.new)


@dataclass(frozen=True)
class SetNotNull(Op):
    table: str
    column: str
    fill: str | None
    key: str
    batch_size: int


@dataclass(frozen=True)
class AddCheck(Op):
    table: str
    name: str
    check: str


@dataclass(frozen=True)
class AddForeignKey(Op):
    table: str
    name: str
    columns: tuple[str, ...]
    references_table: str
    references_columns: tuple[str, ...]
    on_delete: str | None


@dataclass(frozen=True)
class AddUnique(Op):
    table: str
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class AddIndex(Op):
    table: str
    name: str
    columns: tuple[str, ...]
    unique: bool
    method: str
    where: str | None


@dataclass(frozen=True)
class DropIndex(Op):
    name: str  # optionally schema-qualified


@dataclass(frozen=True)
class DropColumn(Op):
    table: str
    column: str


@dataclass(frozen=True)
class DropTable(Op):
    table: str


@dataclass(frozen=True)
class FieldOp(Op):
    """copyField (from -> to), renameField (from -> to), deleteField (from only)."""

    table: str
    column: str
    source: str
    target: str | None
    key: str
    batch_size: int


@dataclass(frozen=True)
class Upcast(Op):
    table: str
    column: str
    version_field: str
    initial: int
    transforms: tuple[tuple[int, str], ...]  # (version it produces, expression), in order
    key: str
    batch_size: int

    @property
    def current(self) -> int:
        return self.transforms[-1][0]


Operation = (
    AddColumn
    | Sync
    | SetNotNull
    | AddCheck
    | AddForeignKey
    | AddUnique
    | AddIndex
    | DropIndex
    | DropColumn
    | DropTable
    | FieldOp
    | Upcast
)


class _Fields:
    """One operation's mapping: unknown keys refused, typed getters that name the field."""

    def __init__(self, body: object, path: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(body, Mapping):
            raise SpecError(path, "must be a mapping")
        for key in body:
            if key not in allowed:
                raise SpecError(f"{path}.{key}", f"unknown field (allowed: {', '.join(allowed)})")
        self.body: Mapping[str, Any] = body
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.body.get(key) is not None

    def required(self, key: str) -> object:
        if key not in self.body or self.body[key] is None:
            raise SpecError(self.at(key), "is required")
        return self.body[key]

    def ident(self, key: str) -> str:
        return identifier(self.required(key), self.at(key))

    def table(self, key: str = "table") -> str:
        return table_name(self.required(key), self.at(key))

    def type(self, key: str = "type") -> str:
        return column_type(self.required(key), self.at(key))

    def expr(self, key: str) -> str:
        return expression(self.required(key), self.at(key))

    def optional_expr(self, key: str) -> str | None:
        return expression(self.body[key], self.at(key)) if self.has(key) else None

    def flag(self, key: str) -> bool:
        value = self.body.get(key, False)
        if not isinstance(value, bool):
            raise SpecError(self.at(key), "must be true or false")
        return value

    def key(self) -> str:
        return identifier(self.body.get("key", DEFAULT_BACKFILL_KEY), self.at("key"))

    def batch_size(self) -> int:
        value = self.body.get("batchSize", DEFAULT_BATCH_SIZE)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_BATCH_SIZE
        ):
            raise SpecError(
                self.at("batchSize"), f"must be an integer between 1 and {MAX_BATCH_SIZE}"
            )
        return value

    def columns(self, key: str) -> tuple[str, ...]:
        raw = self.required(key)
        if not isinstance(raw, list) or not raw or len(raw) > 32:
            raise SpecError(self.at(key), "must be a non-empty list of column names (at most 32)")
        names = tuple(identifier(item, f"{self.at(key)}[{i}]") for i, item in enumerate(raw))
        _distinct(names, self.at(key))
        return names

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = self.body.get(key, default)
        if value is None:
            return None
        if value not in allowed:
            raise SpecError(self.at(key), f"must be one of {', '.join(allowed)}, not {value!r}")
        return str(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SpecError(self.at(key), f"must be an integer between {low} and {high}")
        return value


def _distinct(names: tuple[str, ...], path: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise SpecError(f"{path}[{index}]", f'"{name}" is listed twice')
        seen.add(name)


_BATCH = ("key", "batchSize")


def parse_operations(raw: object, path: str = "spec.operations") -> tuple[Operation, ...]:
    """The operations of `spec.operations`, in order; `SpecError` names the first bad field."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, "must be a list of operations")
    if len(raw) > MAX_OPERATIONS:
        raise SpecError(path, f"must have at most {MAX_OPERATIONS} operations")
    operations: list[Operation] = []
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise SpecError(
                item_path, f"must be a mapping with exactly one of {', '.join(OPERATION_KINDS)}"
            )
        ((kind, body),) = item.items()
        if kind not in OPERATION_KINDS:
            raise SpecError(
                f"{item_path}.{kind}",
                f"unknown operation (one of {', '.join(OPERATION_KINDS)})",
            )
        operations.append(_PARSERS[kind](body, f"{item_path}.{kind}"))
    return tuple(operations)


def parse_dialect(database: object, path: str = "spec.database.dialect") -> Dialect:
    """`spec.database.dialect`: postgresql (the default) or sqlite."""
    value = database.get("dialect") if isinstance(database, Mapping) else None
    if value is None:
        return "postgresql"
    if value == "sqlite":
        return "sqlite"
    if value == "postgresql":
        return "postgresql"
    raise SpecError(path, f"must be one of {', '.join(DIALECTS)}, not {value!r}")


def _add_column(body: object, path: str) -> AddColumn:
    f = _Fields(body, path, ("table", "column", "type", "default", "notNull", "up", *_BATCH))
    op = AddColumn(
        path=path,
        table=f.table(),
        column=f.ident("column"),
        type=f.type(),
        default=f.optional_expr("default"),
        not_null=f.flag("notNull"),
        up=f.optional_expr("up"),
        key=f.key(),
        batch_size=f.batch_size(),
    )
    if op.not_null and op.default is None and op.up is None:
        raise SpecError(
            f.at("notNull"),
            "a NOT NULL column needs a value for the rows that exist and the rows old code "
            "inserts: set default (a constant) or up (an expression over the row)",
        )
    return op


def _rename_column(body: object, path: str) -> Sync:
    f = _Fields(body, path, ("table", "from", "to", "type", *_BATCH))
    old, new = f.ident("from"), f.ident("to")
    if old == new:
        raise SpecError(f.at("to"), "must differ from from")
    return Sync(
        path=path,
        table=f.table(),
        key=f.key(),
        old=(old,),
        new=((new, f.type()),),
        up=((new, q(old)),),
        down=((old, q(new)),),
        copy=True,
        batch_size=f.batch_size(),
    )


def _change_column_type(body: object, path: str) -> Sync:
    f = _Fields(body, path, ("table", "column", "to", "type", "up", "down", *_BATCH))
    old, new = f.ident("column"), f.ident("to")
    if old == new:
        raise SpecError(
            f.at("to"),
            "must differ from column: old code keeps using the old column until contract, so "
            "the new type lives in a new column",
        )
    return Sync(
        path=path,
        table=f.table(),
        key=f.key(),
        old=(old,),
        new=((new, f.type()),),
        up=((new, f.expr("up")),),
        down=((old, f.expr("down")),),
        copy=False,
        batch_size=f.batch_size(),
    )


def _split_column(body: object, path: str) -> Sync:
    f = _Fields(body, path, ("table", "column", "into", "down", *_BATCH))
    old = f.ident("column")
    raw_into = f.required("into")
    if not isinstance(raw_into, list) or len(raw_into) < 2 or len(raw_into) > 16:
        raise SpecError(f.at("into"), "must be a list of 2 to 16 {column, type, up}")
    new: list[tuple[str, str]] = []
    up: list[tuple[str, str]] = []
    for index, item in enumerate(raw_into):
        part = _Fields(item, f"{f.at('into')}[{index}]", ("column", "type", "up"))
        column = part.ident("column")
        if column == old or column in (c for c, _ in new):
            raise SpecError(part.at("column"), f'"{column}" is used twice')
        new.append((column, part.type()))
        up.append((column, part.expr("up")))
    return Sync(
        path=path,
        table=f.table(),
        key=f.key(),
        old=(old,),
        new=tuple(new),
        up=tuple(up),
        down=((old, f.expr("down")),),
        copy=False,
        batch_size=f.batch_size(),
    )


def _merge_columns(body: object, path: str) -> Sync:
    f = _Fields(body, path, ("table", "columns", "into", "down", *_BATCH))
    old = f.columns("columns")
    if len(old) < 2:
        raise SpecError(f.at("columns"), "must name at least 2 columns to merge")
    into = _Fields(f.required("into"), f.at("into"), ("column", "type", "up"))
    new = into.ident("column")
    if new in old:
        raise SpecError(into.at("column"), f'"{new}" is one of the merged columns')
    raw_down = f.required("down")
    if not isinstance(raw_down, Mapping) or set(raw_down) != set(old):
        raise SpecError(
            f.at("down"),
            f"must be a mapping with one expression for each merged column ({', '.join(old)})",
        )
    down = tuple(
        (column, expression(raw_down[column], f"{f.at('down')}.{column}")) for column in old
    )
    return Sync(
        path=path,
        table=f.table(),
        key=f.key(),
        old=old,
        new=((new, into.type()),),
        up=((new, into.expr("up")),),
        down=down,
        copy=False,
        batch_size=f.batch_size(),
    )


def _set_not_null(body: object, path: str) -> SetNotNull:
    f = _Fields(body, path, ("table", "column", "fill", *_BATCH))
    return SetNotNull(
        path=path,
        table=f.table(),
        column=f.ident("column"),
        fill=f.optional_expr("fill"),
        key=f.key(),
        batch_size=f.batch_size(),
    )


def _add_check(body: object, path: str) -> AddCheck:
    f = _Fields(body, path, ("table", "name", "check"))
    return AddCheck(path=path, table=f.table(), name=f.ident("name"), check=f.expr("check"))


def _add_foreign_key(body: object, path: str) -> AddForeignKey:
    f = _Fields(body, path, ("table", "name", "columns", "references", "onDelete"))
    ref = _Fields(f.required("references"), f.at("references"), ("table", "columns"))
    columns = f.columns("columns")
    ref_columns = ref.columns("columns")
    if len(columns) != len(ref_columns):
        raise SpecError(ref.at("columns"), f"must name {len(columns)} column(s), as columns does")
    return AddForeignKey(
        path=path,
        table=f.table(),
        name=f.ident("name"),
        columns=columns,
        references_table=ref.table(),
        references_columns=ref_columns,
        on_delete=f.choice("onDelete", ON_DELETE, None),
    )


def _add_unique(body: object, path: str) -> AddUnique:
    f = _Fields(body, path, ("table", "name", "columns"))
    return AddUnique(path=path, table=f.table(), name=f.ident("name"), columns=f.columns("columns"))


def _add_index(body: object, path: str) -> AddIndex:
    f = _Fields(body, path, ("table", "name", "columns", "unique", "method", "where"))
    return AddIndex(
        path=path,
        table=f.table(),
        name=f.ident("name"),
        columns=f.columns("columns"),
        unique=f.flag("unique"),
        method=str(f.choice("method", INDEX_METHODS, "btree")),
        where=f.optional_expr("where"),
    )


def _drop_index(body: object, path: str) -> DropIndex:
    f = _Fields(body, path, ("name",))
    return DropIndex(path=path, name=f.table("name"))


def _drop_column(body: object, path: str) -> DropColumn:
    f = _Fields(body, path, ("table", "column"))
    return DropColumn(path=path, table=f.table(), column=f.ident("column"))


def _drop_table(body: object, path: str) -> DropTable:
    f = _Fields(body, path, ("table",))
    return DropTable(path=path, table=f.table())


def _field_op(body: object, path: str) -> FieldOp:
    deleting = path.endswith(".deleteField")
    names = ("field",) if deleting else ("from", "to")
    f = _Fields(body, path, ("table", "column", *names, *_BATCH))
    source = json_field(f.required(names[0]), f.at(names[0]))
    target = None if deleting else json_field(f.required("to"), f.at("to"))
    if target == source:
        raise SpecError(f.at("to"), "must differ from from")
    return FieldOp(
        path=path,
        table=f.table(),
        column=f.ident("column"),
        source=source,
        target=target,
        key=f.key(),
        batch_size=f.batch_size(),
    )


def _upcast(body: object, path: str) -> Upcast:
    f = _Fields(
        body, path, ("table", "column", "versionField", "initialVersion", "transforms", *_BATCH)
    )
    initial = f.integer("initialVersion", 1, 0, 1_000_000)
    raw = f.required("transforms")
    if not isinstance(raw, list) or not raw or len(raw) > 32:
        raise SpecError(f.at("transforms"), "must be a list of 1 to 32 {to, expression}")
    transforms: list[tuple[int, str]] = []
    for index, item in enumerate(raw):
        step = _Fields(item, f"{f.at('transforms')}[{index}]", ("to", "expression"))
        expected = initial + index + 1
        to = step.integer("to", expected, 0, 1_000_032)
        if to != expected:
            raise SpecError(
                step.at("to"),
                f"must be {expected}: one transform per version step, in order, starting from "
                f"initialVersion {initial}",
            )
        transforms.append((to, step.expr("expression")))
    return Upcast(
        path=path,
        table=f.table(),
        column=f.ident("column"),
        version_field=json_field(f.body.get("versionField", "version"), f.at("versionField")),
        initial=initial,
        transforms=tuple(transforms),
        key=f.key(),
        batch_size=f.batch_size(),
    )


_PARSERS: dict[str, Any] = {
    "addColumn": _add_column,
    "renameColumn": _rename_column,
    "changeColumnType": _change_column_type,
    "splitColumn": _split_column,
    "mergeColumns": _merge_columns,
    "setNotNull": _set_not_null,
    "addCheck": _add_check,
    "addForeignKey": _add_foreign_key,
    "addUnique": _add_unique,
    "addIndex": _add_index,
    "dropIndex": _drop_index,
    "dropColumn": _drop_column,
    "dropTable": _drop_table,
    "copyField": _field_op,
    "renameField": _field_op,
    "deleteField": _field_op,
    "upcast": _upcast,
}
