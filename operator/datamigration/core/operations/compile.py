"""From typed operations to the steps of each phase, the contract's checks and the undo.

Each operation contributes steps of the existing kinds (`SqlStep`, `BackfillStep`,
`VerifyStep`), so the runner runs them like hand-written ones and the ledger, checksums, lint,
`plan` and status treat them alike. Guarantees:

- Step names are derived from the operation's content (kind, table, columns, names), never from
  its position, so inserting an operation does not rename (and "change") the others' steps;
  they are DNS labels of at most 63 characters. Two operations that would produce the same step
  name are refused, naming the second one.
- What runs in a transaction of its own is one step; every CONCURRENTLY statement is a step of
  its own with `transactional: false`; VALIDATE is a step of its own.
- Expand and backfill only add (columns, constraints NOT VALID, indexes, triggers, data); every
  drop is in contract, after the rollout gate. The contract drops sync triggers in the same
  transaction as the old column(s).
- Each operation that moves data contributes its check: contract verify queries (run before any
  contract step) or, for document rewrites that run in contract, a verify step after them.
- `undo` lists what takes the database back to its shape before expand, in reverse order
  (only meaningful until contract starts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from datamigration.core.errors import SpecError
from datamigration.core.operations import sync as triggers
from datamigration.core.operations.model import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    AddIndex,
    AddUnique,
    Dialect,
    DropColumn,
    DropIndex,
    DropTable,
    FieldOp,
    Operation,
    SetNotNull,
    Sync,
    Upcast,
)
from datamigration.core.operations.sql import (
    bare_table,
    literal,
    q,
    qt,
    schema_of,
    short_name,
    step_name,
)
from datamigration.core.steps import BackfillStep, SqlStep, Step, VerifyStep


@dataclass
class Contribution:
    """What one operation adds to each phase."""

    expand: list[Step] = field(default_factory=list)
    backfill: list[Step] = field(default_factory=list)
    verify: list[VerifyStep] = field(default_factory=list)  # contract, before any step
    contract: list[Step] = field(default_factory=list)
    undo: list[Step] = field(default_factory=list)


def _sql(name: str, *statements: str, transactional: bool = True) -> SqlStep:
    return SqlStep(name=name, sql=";\n".join(statements), transactional=transactional)


def _count_zero(name: str, table: str, condition: str) -> VerifyStep:
    return VerifyStep(
        name=name, query=f"SELECT count(*) FROM {qt(table)} WHERE {condition}", expect="0"
    )


def _unsupported(op: Operation, dialect: Dialect, why: str) -> SpecError:
    return SpecError(op.path, f"is not supported with spec.database.dialect {dialect}: {why}")


def _index_name(table: str, name: str) -> str:
    schema = schema_of(table)
    return f"{q(schema)}.{q(name)}" if schema else q(name)


# -- columns -------------------------------------------------------------------------------------
def _add_column(op: AddColumn, dialect: Dialect) -> Contribution:
    base = ("add", bare_table(op.table), op.column)
    table, column = qt(op.table), q(op.column)
    out = Contribution()
    definition = f"{column} {op.type}"
    if op.default is not None:
        definition += f" DEFAULT ({op.default})"
    check = short_name(bare_table(op.table), op.column, "not_null")
    staged_not_null = op.not_null and op.up is not None
    if op.not_null and not staged_not_null:
        definition += " NOT NULL"  # with a constant default: no rewrite, no scan (PostgreSQL 11+)
    if staged_not_null and dialect == "sqlite":
        raise _unsupported(op, dialect, "SQLite cannot add a CHECK constraint to a table")
    statements = [f"ALTER TABLE {table} ADD COLUMN {definition}"]
    if staged_not_null:
        statements.append(
            f"ALTER TABLE {table} ADD CONSTRAINT {q(check)} CHECK ({column} IS NOT NULL) NOT VALID"
        )
    out.expand.append(_sql(step_name(*base, "column"), *statements))
    exists = "" if dialect == "sqlite" else "IF EXISTS "  # SQLite has no DROP COLUMN IF EXISTS
    undo = [f"ALTER TABLE {table} DROP COLUMN {exists}{column}"]
    if op.up is not None:
        fill = triggers.install_fill(dialect, op.table, op.key, op.column, op.up)
        out.expand.append(_sql(step_name(*base, "fill-trigger"), *fill))
        out.backfill.append(
            BackfillStep(
                name=step_name(*base, "backfill"),
                table=op.table,
                key=op.key,
                set=((op.column, op.up),),
                where=f"{column} IS NULL",
                batch_size=op.batch_size,
            )
        )
        if op.not_null:  # a nullable column may keep NULL where `up` gives NULL
            where = f"{column} IS NULL"
            out.verify.append(_count_zero(step_name(*base, "filled"), op.table, where))
        removal = triggers.remove_fill(dialect, op.table, op.column)
        if staged_not_null:
            out.contract.append(
                _sql(
                    step_name(*base, "validate"),
                    f"ALTER TABLE {table} VALIDATE CONSTRAINT {q(check)}",
                )
            )
            removal = [
                f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL",
                f"ALTER TABLE {table} DROP CONSTRAINT {q(check)}",
                *removal,
            ]
        out.contract.append(_sql(step_name(*base, "finish"), *removal))
        undo = [*triggers.remove_fill(dialect, op.table, op.column), *undo]
    out.undo.append(_sql(step_name("undo", *base), *undo))
    return out


def _sync(op: Sync, dialect: Dialect) -> Contribution:
    names = {
        "renameColumn": "rename",
        "changeColumnType": "retype",
        "splitColumn": "split",
        "mergeColumns": "merge",
    }
    base = (names[op.kind], bare_table(op.table), op.old[0])
    table = qt(op.table)
    out = Contribution()
    add = [f"ALTER TABLE {table} ADD COLUMN {q(col)} {type_}" for col, type_ in op.new]
    out.expand.append(_sql(step_name(*base, "columns"), *add))
    out.expand.append(_sql(step_name(*base, "sync-triggers"), *triggers.install(dialect, op)))
    if op.copy:
        # Rows the trigger has not touched yet: the new column differs from the old one.
        (old,), ((new, _),) = op.old, op.new
        pending = triggers.differs(dialect, q(new), q(old))
        differs = pending
    else:
        # Rows from before the trigger have no new value yet; the trigger fills every later one.
        pending = " AND ".join(f"{q(col)} IS NULL" for col in op.new_columns)
        differs = (
            f"NOT (({triggers.consistent_new(dialect, op)}) "
            f"OR ({triggers.consistent_old(dialect, op)}))"
        )
    out.backfill.append(
        BackfillStep(
            name=step_name(*base, "backfill"),
            table=op.table,
            key=op.key,
            set=op.up,
            where=pending,
            batch_size=op.batch_size,
        )
    )
    out.verify.append(_count_zero(step_name(*base, "in-sync"), op.table, differs))
    drop = [f"ALTER TABLE {table} DROP COLUMN {q(col)}" for col in op.old]
    out.contract.append(_sql(step_name(*base, "drop-old"), *triggers.remove(dialect, op), *drop))
    exists = "" if dialect == "sqlite" else "IF EXISTS "
    undo = [f"ALTER TABLE {table} DROP COLUMN {exists}{q(col)}" for col in op.new_columns]
    out.undo.append(_sql(step_name("undo", *base), *triggers.remove(dialect, op), *undo))
    return out


def _drop_column(op: DropColumn, dialect: Dialect) -> Contribution:
    del dialect
    name = step_name("drop", bare_table(op.table), op.column)
    return Contribution(
        contract=[_sql(name, f"ALTER TABLE {qt(op.table)} DROP COLUMN {q(op.column)}")]
    )


def _drop_table(op: DropTable, dialect: Dialect) -> Contribution:
    del dialect
    name = step_name("drop-table", op.table)
    return Contribution(contract=[_sql(name, f"DROP TABLE {qt(op.table)}")])


# -- constraints and indexes ---------------------------------------------------------------------
def _set_not_null(op: SetNotNull, dialect: Dialect) -> Contribution:
    if dialect == "sqlite":
        raise _unsupported(op, dialect, "SQLite cannot alter a column's NOT NULL")
    base = ("not-null", bare_table(op.table), op.column)
    table, column = qt(op.table), q(op.column)
    check = q(short_name(bare_table(op.table), op.column, "not_null"))
    out = Contribution()
    if op.fill is not None:
        out.backfill.append(
            BackfillStep(
                name=step_name(*base, "fill"),
                table=op.table,
                key=op.key,
                set=((op.column, op.fill),),
                where=f"{column} IS NULL",
                batch_size=op.batch_size,
            )
        )
    # After the fill, not in expand: a NOT VALID check already applies to every UPDATE, so an
    # update of a row still NULL would fail until the fill reached it.
    out.backfill.append(
        _sql(
            step_name(*base, "check"),
            f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID",
        )
    )
    out.verify.append(_count_zero(step_name(*base, "no-nulls"), op.table, f"{column} IS NULL"))
    out.contract.append(
        _sql(step_name(*base, "validate"), f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}")
    )
    out.contract.append(
        _sql(
            step_name(*base, "set"),
            f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL",
            f"ALTER TABLE {table} DROP CONSTRAINT {check}",
        )
    )
    out.undo.append(
        _sql(step_name("undo", *base), f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}")
    )
    return out


def _validated_constraint(
    op: AddCheck | AddForeignKey, dialect: Dialect, prefix: str, definition: str
) -> Contribution:
    if dialect == "sqlite":
        raise _unsupported(op, dialect, "SQLite cannot add a constraint to an existing table")
    base = (prefix, bare_table(op.table), op.name)
    table = qt(op.table)
    return Contribution(
        expand=[
            _sql(
                step_name(*base, "add"),
                f"ALTER TABLE {table} ADD CONSTRAINT {q(op.name)} {definition} NOT VALID",
            )
        ],
        # VALIDATE takes SHARE UPDATE EXCLUSIVE: writes go on. Early, so a violation stops the
        # migration before the rollout, and in a step of its own.
        backfill=[
            _sql(
                step_name(*base, "validate"),
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {q(op.name)}",
            )
        ],
        undo=[
            _sql(
                step_name("undo", *base),
                f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {q(op.name)}",
            )
        ],
    )


def _add_check(op: AddCheck, dialect: Dialect) -> Contribution:
    return _validated_constraint(op, dialect, "check", f"CHECK ({op.check})")


def _add_foreign_key(op: AddForeignKey, dialect: Dialect) -> Contribution:
    definition = (
        f"FOREIGN KEY ({', '.join(q(c) for c in op.columns)}) "
        f"REFERENCES {qt(op.references_table)} ({', '.join(q(c) for c in op.references_columns)})"
    )
    if op.on_delete:
        definition += f" ON DELETE {op.on_delete}"
    return _validated_constraint(op, dialect, "fk", definition)


def _create_index(
    dialect: Dialect,
    table: str,
    name: str,
    columns: Sequence[str],
    *,
    unique: bool,
    tail: str = "",
) -> str:
    kind = "UNIQUE INDEX" if unique else "INDEX"
    if dialect == "sqlite":  # SQLite: the schema goes on the index, the table stays bare
        concurrently, target, on = "", _index_name(table, name), q(bare_table(table))
    else:  # PostgreSQL: the index lives in its table's schema
        concurrently, target, on = " CONCURRENTLY", q(name), qt(table)
    cols = ", ".join(q(c) for c in columns)
    return f"CREATE {kind}{concurrently} IF NOT EXISTS {target} ON {on}{tail} ({cols})"


def _drop_index_sql(dialect: Dialect, qualified: str) -> str:
    concurrently = "" if dialect == "sqlite" else " CONCURRENTLY"
    return f"DROP INDEX{concurrently} IF EXISTS {qualified}"


def _add_unique(op: AddUnique, dialect: Dialect) -> Contribution:
    base = ("unique", bare_table(op.table), op.name)
    table = qt(op.table)
    index = _index_name(op.table, op.name)
    out = Contribution()
    transactional = dialect == "sqlite"
    out.expand.append(
        _sql(
            step_name(*base, "index"),
            _create_index(dialect, op.table, op.name, op.columns, unique=True),
            transactional=transactional,
        )
    )
    if dialect == "postgresql":
        out.expand.append(
            _sql(
                step_name(*base, "constraint"),
                f"ALTER TABLE {table} ADD CONSTRAINT {q(op.name)} UNIQUE USING INDEX {q(op.name)}",
            )
        )
        out.undo.append(
            _sql(
                step_name("undo", *base, "constraint"),
                f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {q(op.name)}",
            )
        )
    out.undo.append(
        _sql(
            step_name("undo", *base, "index"),
            (_drop_index_sql(dialect, index)),
            transactional=transactional,
        )
    )
    return out


def _add_index(op: AddIndex, dialect: Dialect) -> Contribution:
    if dialect == "sqlite" and op.method != "btree":
        raise _unsupported(op, dialect, f"SQLite has no {op.method} indexes")
    base = ("index", bare_table(op.table), op.name)
    tail = "" if op.method == "btree" else f" USING {op.method}"
    statement = _create_index(dialect, op.table, op.name, op.columns, unique=op.unique, tail=tail)
    if op.where is not None:
        statement += f" WHERE ({op.where})"
    transactional = dialect == "sqlite"
    return Contribution(
        expand=[_sql(step_name(*base), statement, transactional=transactional)],
        undo=[
            _sql(
                step_name("undo", *base),
                (_drop_index_sql(dialect, _index_name(op.table, op.name))),
                transactional=transactional,
            )
        ],
    )


def _drop_index(op: DropIndex, dialect: Dialect) -> Contribution:
    name = ".".join(q(part) for part in op.name.split("."))
    return Contribution(
        contract=[
            _sql(
                step_name("drop-index", op.name),
                (_drop_index_sql(dialect, name)),
                transactional=dialect == "sqlite",
            )
        ]
    )


# -- documents -----------------------------------------------------------------------------------
def _has(dialect: Dialect, column: str, key: str) -> str:
    if dialect == "sqlite":
        return f"json_type({column}, '$.{key}') IS NOT NULL"
    return f"{column} -> {literal(key)} IS NOT NULL"


def _missing(dialect: Dialect, column: str, key: str) -> str:
    if dialect == "sqlite":
        return f"json_type({column}, '$.{key}') IS NULL"
    return f"{column} -> {literal(key)} IS NULL"


def _copy(dialect: Dialect, column: str, source: str, target: str) -> str:
    if dialect == "sqlite":
        return f"json_set({column}, '$.{target}', json_extract({column}, '$.{source}'))"
    return f"jsonb_set({column}, '{{{target}}}', {column} -> {literal(source)})"


def _remove(dialect: Dialect, column: str, key: str) -> str:
    if dialect == "sqlite":
        return f"json_remove({column}, '$.{key}')"
    return f"{column} - {literal(key)}"


def _field_value(dialect: Dialect, column: str, key: str) -> str:
    if dialect == "sqlite":
        return f"json_extract({column}, '$.{key}')"
    return f"{column} -> {literal(key)}"


def _field_op(op: FieldOp, dialect: Dialect) -> Contribution:
    column = q(op.column)
    base = (bare_table(op.table), op.column, op.source)
    out = Contribution()

    def backfill(name: str, value: str, where: str) -> BackfillStep:
        return BackfillStep(
            name=name,
            table=op.table,
            key=op.key,
            set=((op.column, value),),
            where=where,
            batch_size=op.batch_size,
        )

    if op.kind == "deleteField":
        name = step_name("delete-field", *base)
        out.contract.append(
            backfill(name, _remove(dialect, column, op.source), _has(dialect, column, op.source))
        )
        out.contract.append(
            _count_zero(
                step_name("delete-field", *base, "gone"),
                op.table,
                _has(dialect, column, op.source),
            )
        )
        return out
    assert op.target is not None
    copy = _copy(dialect, column, op.source, op.target)
    source_there = _has(dialect, column, op.source)
    if op.kind == "copyField":
        # Like copy_field!: every document with the source gets the same value under the target.
        value_differs = triggers.differs(
            dialect,
            _field_value(dialect, column, op.target),
            _field_value(dialect, column, op.source),
        )
        out.backfill.append(
            backfill(step_name("copy-field", *base), copy, f"{source_there} AND {value_differs}")
        )
        return out
    # renameField, as the operator's manual for renames: the application writes both keys and
    # moves its reads; the backfill copies where the new key is missing (a value new code wrote
    # wins); contract copies what old code wrote since, then removes the old key.
    pending = f"{source_there} AND {_missing(dialect, column, op.target)}"
    out.backfill.append(backfill(step_name("rename-field", *base, "copy"), copy, pending))
    out.contract.append(backfill(step_name("rename-field", *base, "catch-up"), copy, pending))
    out.contract.append(
        backfill(
            step_name("rename-field", *base, "delete"),
            _remove(dialect, column, op.source),
            source_there,
        )
    )
    out.contract.append(
        _count_zero(step_name("rename-field", *base, "gone"), op.table, source_there)
    )
    return out


def _upcast(op: Upcast, dialect: Dialect) -> Contribution:
    column = q(op.column)
    base = ("upcast", bare_table(op.table), op.column)
    if dialect == "sqlite":
        version = f"COALESCE(json_extract({column}, '$.{op.version_field}'), {op.initial})"
    else:
        version = f"COALESCE(({column} ->> {literal(op.version_field)})::integer, {op.initial})"
    out = Contribution()
    for to, transform in op.transforms:
        if dialect == "sqlite":
            value = f"json_set(({transform}), '$.{op.version_field}', {to})"
        else:
            value = f"jsonb_set(({transform}), '{{{op.version_field}}}', '{to}'::jsonb)"
        out.contract.append(
            BackfillStep(
                name=step_name(*base, f"v{to}"),
                table=op.table,
                key=op.key,
                set=((op.column, value),),
                where=f"{column} IS NOT NULL AND {version} = {to - 1}",
                batch_size=op.batch_size,
            )
        )
    out.contract.append(
        _count_zero(
            step_name(*base, "current"),
            op.table,
            f"{column} IS NOT NULL AND {version} < {op.current}",
        )
    )
    return out


_COMPILERS: dict[type, Callable[..., Contribution]] = {
    AddColumn: _add_column,
    Sync: _sync,
    SetNotNull: _set_not_null,
    AddCheck: _add_check,
    AddForeignKey: _add_foreign_key,
    AddUnique: _add_unique,
    AddIndex: _add_index,
    DropIndex: _drop_index,
    DropColumn: _drop_column,
    DropTable: _drop_table,
    FieldOp: _field_op,
    Upcast: _upcast,
}


def compile_operation(op: Operation, dialect: Dialect) -> Contribution:
    return _COMPILERS[type(op)](op, dialect)


def all_steps(c: Contribution) -> Iterator[Step]:
    yield from (*c.expand, *c.backfill, *c.verify, *c.contract, *c.undo)
