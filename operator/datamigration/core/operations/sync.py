"""Sync triggers: old and new shapes of a table kept equal from expand until contract.

Why: between expand and the end of code-rollout both versions of the application write the same
table. Old code writes the old column(s) only; new code writes the new one(s). Without help, the
backfill copies what existed when it ran and every later write of the old code is lost to the new
column (the contract's verify then refuses to drop, and a person repairs rows by hand). These
triggers carry each write to the other shape, on INSERT and UPDATE, in both directions:

- a write of the old columns (the new ones not written) sets the new columns with `up`;
- a write of the new columns (on INSERT: any of them non-null; on UPDATE: any of them changed)
  sets the old columns with `down`. When new code writes both shapes in one statement the new
  shape wins (the old one is about to be dropped); when what it wrote already corresponds
  (`new = up(old)`), nothing is touched, which is also what makes the backfill's own updates
  cheap.

PostgreSQL, a rename: one plpgsql function, a BEFORE INSERT trigger that assigns to NEW and an
AFTER UPDATE OF <both columns> trigger that updates the row by its key, both only
`WHEN (NEW.old IS DISTINCT FROM NEW.new)`: the backfill (which sets new = old) and any write that
leaves both equal never call the function, and never pay the row lock a BEFORE UPDATE trigger
costs on every updated row. The AFTER trigger's own UPDATE leaves the columns equal, so its WHEN
ends the recursion. Other reshapes (expressions): one BEFORE INSERT OR UPDATE OF <columns> row
trigger that assigns to NEW (no second write); expressions are evaluated over the row with
`SELECT <expr> FROM (SELECT NEW.*) AS dm_row`, so they use the table's column names as written.

SQLite (no BEFORE assignment to NEW): four AFTER triggers (insert/update x old/new side) that
UPDATE the row by its key, each with a WHEN guard on what changed and a WHERE that skips rows
already consistent. `recursive_triggers` is off by default, so a trigger never re-fires itself,
and the consistency WHERE stops the other direction from undoing the write (checked by the
runner tests). The runner splits SQL on `;` with PostgreSQL's scanner, which does not know
SQLite's `BEGIN ... END` trigger bodies; `_SQLITE_BODY_END` hides the inner `;` from that
scanner inside a nested comment that SQLite, which does not nest comments, reads as `; END`.
"""

from __future__ import annotations

from datamigration.core.operations.model import Dialect, Sync
from datamigration.core.operations.sql import bare_table, q, qt, schema_of, short_name

#: Ends a SQLite trigger body. PostgreSQL's scanner (the runner's splitter) sees one nested
#: comment `/* /* */; -- */`; SQLite sees the comment `/* /* */`, then `;`, then a line comment.
_SQLITE_BODY_END = " /* /* */; -- */\n"


def object_name(sync: Sync) -> str:
    """The trigger's (and PostgreSQL function's) name: dm_sync_<table>_<old>_<new>."""
    return short_name("dm_sync", bare_table(sync.table), sync.old[0], sync.new[0][0])


def fill_name(table: str, column: str) -> str:
    return short_name("dm_fill", bare_table(table), column)


def _function(table: str, name: str) -> str:
    schema = schema_of(table)
    return f"{q(schema)}.{q(name)}" if schema else q(name)


def same(dialect: Dialect, left: str, right: str) -> str:
    """NULL-safe equality."""
    return f"{left} IS {right}" if dialect == "sqlite" else f"{left} IS NOT DISTINCT FROM {right}"


def differs(dialect: Dialect, left: str, right: str) -> str:
    """NULL-safe inequality."""
    return f"{left} IS NOT {right}" if dialect == "sqlite" else f"{left} IS DISTINCT FROM {right}"


def consistent_new(dialect: Dialect, sync: Sync, prefix: str = "") -> str:
    """The new columns are what `up` makes of the old ones."""
    return " AND ".join(same(dialect, prefix + q(col), f"({expr})") for col, expr in sync.up)


def consistent_old(dialect: Dialect, sync: Sync, prefix: str = "") -> str:
    """The old columns are what `down` makes of the new ones."""
    return " AND ".join(same(dialect, prefix + q(col), f"({expr})") for col, expr in sync.down)


# -- PostgreSQL ----------------------------------------------------------------------------------
def _pg_copy_body(sync: Sync) -> str:
    (old,) = sync.old
    ((new, _),) = sync.new
    o, n, key = q(old), q(new), q(sync.key)
    table = qt(sync.table)
    return (
        "BEGIN\n"
        f"  -- Called only when {o} and {n} differ after the write (see the triggers' WHEN).\n"
        "  IF TG_OP = 'INSERT' THEN  -- BEFORE INSERT\n"
        f"    IF NEW.{n} IS NULL THEN  -- old code inserted {o} only: copy it forward (up)\n"
        f"      NEW.{n} := NEW.{o};\n"
        f"    ELSE  -- new code inserted {n} (maybe {o} too; {n} wins): copy it back (down)\n"
        f"      NEW.{o} := NEW.{n};\n"
        "    END IF;\n"
        "    RETURN NEW;\n"
        "  END IF;\n"
        "  -- AFTER UPDATE: the row is already this transaction's; the UPDATE below leaves the\n"
        "  -- two columns equal, so the trigger's WHEN stops any recursion.\n"
        f"  IF NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN  -- old code wrote {o} only (up)\n"
        f"    UPDATE {table} SET {n} = {o} WHERE {key} = NEW.{key};\n"
        f"  ELSE  -- new code wrote {n} (maybe {o} too; {n} wins): copy it back (down)\n"
        f"    UPDATE {table} SET {o} = {n} WHERE {key} = NEW.{key};\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END"
    )


def _pg_general_body(sync: Sync) -> str:
    news = [q(c) for c in sync.new_columns]
    olds = [q(c) for c in sync.old]
    inserted = " OR ".join(f"NEW.{n} IS NOT NULL" for n in news)
    changed_new = " OR ".join(f"NEW.{n} IS DISTINCT FROM OLD.{n}" for n in news)
    unchanged_old = " AND ".join(f"NEW.{o} IS NOT DISTINCT FROM OLD.{o}" for o in olds)
    up_values = ", ".join(f"({expr})" for _, expr in sync.up)
    up_targets = ", ".join(f"NEW.{q(col)}" for col, _ in sync.up)
    down_values = ", ".join(f"({expr})" for _, expr in sync.down)
    down_targets = ", ".join(f"NEW.{q(col)}" for col, _ in sync.down)
    row = "FROM (SELECT NEW.*) AS dm_row"
    complete = ""
    if len(news) > 1:
        # A row from before the trigger (no new value yet) where new code wrote only some of
        # the new columns: derive the others from the old shape first, so `down` sees them all.
        never_synced = " AND ".join(f"OLD.{n} IS NULL" for n in news)
        fills = "".join(
            f"      IF NEW.{q(col)} IS NOT DISTINCT FROM OLD.{q(col)} THEN\n"
            f"        SELECT ({expr}) INTO NEW.{q(col)} {row};\n"
            "      END IF;\n"
            for col, expr in sync.up
        )
        complete = f"    IF TG_OP = 'UPDATE' AND {never_synced} THEN\n{fills}    END IF;\n"
    return (
        "DECLARE\n"
        "  dm_new_written boolean;\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        f"    dm_new_written := {inserted};\n"
        "  ELSE\n"
        f"    dm_new_written := {changed_new};\n"
        f"    IF NOT dm_new_written AND {unchanged_old} THEN\n"
        "      RETURN NEW;  -- neither shape written: nothing to keep in sync\n"
        "    END IF;\n"
        "  END IF;\n"
        "  IF dm_new_written THEN\n"
        "    -- New code (or the backfill) wrote the new shape; the new shape wins. Derive the\n"
        "    -- old one (down) unless it already corresponds (the backfill's rows stop here).\n"
        f"{complete}"
        f"    IF NOT (SELECT {consistent_new('postgresql', sync)} {row}) THEN\n"
        f"      SELECT {down_values} INTO {down_targets} {row};\n"
        "    END IF;\n"
        "  ELSE\n"
        "    -- Old code wrote the old shape: derive the new one (up).\n"
        f"    SELECT {up_values} INTO {up_targets} {row};\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END"
    )


def _pg_copy_triggers(sync: Sync) -> list[str]:
    """A rename's triggers: BEFORE INSERT (assigns NEW) and AFTER UPDATE (updates the row).

    Not BEFORE UPDATE: PostgreSQL locks (and WAL-logs the lock of) every row an UPDATE touches
    when the table has any BEFORE UPDATE row trigger, before it even evaluates WHEN, so the
    backfill would pay that on every row. An AFTER UPDATE trigger whose WHEN is false (the
    backfill's rows: it sets new = old) costs nothing but the evaluation of WHEN.
    """
    name = object_name(sync)
    function = _function(sync.table, name)
    o, n = q(sync.old[0]), q(sync.new[0][0])
    when = f"WHEN (NEW.{o} IS DISTINCT FROM NEW.{n})"
    insert, update = _pg_copy_trigger_names(sync)
    return [
        f"CREATE TRIGGER {q(insert)} BEFORE INSERT ON {qt(sync.table)}\n"
        f"  FOR EACH ROW {when} EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {q(update)} AFTER UPDATE OF {o}, {n} ON {qt(sync.table)}\n"
        f"  FOR EACH ROW {when} EXECUTE FUNCTION {function}()",
    ]


def _pg_copy_trigger_names(sync: Sync) -> tuple[str, str]:
    base = object_name(sync)
    return short_name(base, "ins"), short_name(base, "upd")


def _pg_install(sync: Sync) -> list[str]:
    name = object_name(sync)
    function = _function(sync.table, name)
    body = _pg_copy_body(sync) if sync.copy else _pg_general_body(sync)
    create = f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $dm$\n{body}\n$dm$"
    if sync.copy:
        return [create, *_pg_copy_triggers(sync)]
    columns = ", ".join(q(c) for c in (*sync.old, *sync.new_columns))
    return [
        create,
        f"CREATE TRIGGER {q(name)} BEFORE INSERT OR UPDATE OF {columns} ON {qt(sync.table)}\n"
        f"  FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def _pg_remove(table: str, name: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {q(name)} ON {qt(table)}",
        f"DROP FUNCTION IF EXISTS {_function(table, name)}()",
    ]


# -- SQLite --------------------------------------------------------------------------------------
def _sqlite_trigger(name: str, event: str, table: str, when: str, statement: str) -> str:
    return (
        f"CREATE TRIGGER {q(name)} AFTER {event} ON {q(bare_table(table))}\n"
        f"  FOR EACH ROW WHEN {when}\n"
        f"BEGIN\n  {statement}{_SQLITE_BODY_END}END"
    )


def _sqlite_names(sync: Sync) -> list[str]:
    base = object_name(sync)
    return [short_name(base, suffix) for suffix in ("ins_up", "ins_down", "upd_up", "upd_down")]


def _sqlite_install(sync: Sync) -> list[str]:
    table = q(bare_table(sync.table))
    key = q(sync.key)
    news = [q(c) for c in sync.new_columns]
    olds = [q(c) for c in sync.old]
    set_up = ", ".join(f"{q(col)} = ({expr})" for col, expr in sync.up)
    set_down = ", ".join(f"{q(col)} = ({expr})" for col, expr in sync.down)
    by_key = f"{key} = NEW.{key}"
    ins_up, ins_down, upd_up, upd_down = _sqlite_names(sync)
    all_new_null = " AND ".join(f"NEW.{n} IS NULL" for n in news)
    any_new = " OR ".join(f"NEW.{n} IS NOT NULL" for n in news)
    old_changed = " OR ".join(f"OLD.{o} IS NOT NEW.{o}" for o in olds)
    new_same = " AND ".join(f"NEW.{n} IS OLD.{n}" for n in news)
    new_changed = " OR ".join(f"OLD.{n} IS NOT NEW.{n}" for n in news)
    down_unless_consistent = (
        f"UPDATE {table} SET {set_down} WHERE {by_key} AND NOT ({consistent_new('sqlite', sync)})"
    )
    return [
        # Old code inserted (no new column set): derive the new shape.
        _sqlite_trigger(
            ins_up,
            "INSERT",
            sync.table,
            all_new_null,
            f"UPDATE {table} SET {set_up} WHERE {by_key}",
        ),
        # New code inserted: derive the old shape unless it already corresponds.
        _sqlite_trigger(ins_down, "INSERT", sync.table, any_new, down_unless_consistent),
        # Old code updated the old shape only: derive the new one, unless the old shape is what
        # `down` made of the new one (then this update came from the other trigger).
        _sqlite_trigger(
            upd_up,
            f"UPDATE OF {', '.join(olds)}",
            sync.table,
            f"({old_changed}) AND {new_same}",
            f"UPDATE {table} SET {set_up} WHERE {by_key} "
            f"AND NOT ({consistent_old('sqlite', sync)})",
        ),
        # New code (or the backfill) updated the new shape: derive the old one unless it already
        # corresponds (the backfill's rows stop here).
        _sqlite_trigger(
            upd_down,
            f"UPDATE OF {', '.join(news)}",
            sync.table,
            f"({new_changed})",
            _complete_first(sync, by_key) + down_unless_consistent,
        ),
    ]


def _complete_first(sync: Sync, by_key: str) -> str:
    """SQLite: before `down`, a row from before the triggers where new code wrote only some of
    several new columns gets the others from `up` (as the PostgreSQL function does)."""
    if len(sync.new) < 2:
        return ""
    table = q(bare_table(sync.table))
    sets = ", ".join(
        f"{q(col)} = CASE WHEN NEW.{q(col)} IS OLD.{q(col)} THEN ({expr}) ELSE {q(col)} END"
        for col, expr in sync.up
    )
    never_synced = " AND ".join(f"OLD.{q(col)} IS NULL" for col in sync.new_columns)
    return f"UPDATE {table} SET {sets} WHERE {by_key} AND {never_synced}{_SQLITE_BODY_END}  "


def install(dialect: Dialect, sync: Sync) -> list[str]:
    """The statements that create the sync trigger(s) (one transactional step)."""
    return _sqlite_install(sync) if dialect == "sqlite" else _pg_install(sync)


def remove(dialect: Dialect, sync: Sync) -> list[str]:
    """The statements that drop them (contract and undo, with the columns, in one step)."""
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {q(name)}" for name in _sqlite_names(sync)]
    if sync.copy:
        triggers = [
            f"DROP TRIGGER IF EXISTS {q(t)} ON {qt(sync.table)}"
            for t in _pg_copy_trigger_names(sync)
        ]
        return [*triggers, f"DROP FUNCTION IF EXISTS {_function(sync.table, object_name(sync))}()"]
    return _pg_remove(sync.table, object_name(sync))


def install_fill(dialect: Dialect, table: str, key: str, column: str, up: str) -> list[str]:
    """addColumn with `up`: rows that old code writes without the column get `up` too.

    PostgreSQL: BEFORE INSERT OR UPDATE, so that the NOT VALID check of a NOT NULL column holds
    for every write, also an update of a row the backfill has not reached. SQLite (no check
    there): AFTER INSERT."""
    name = fill_name(table, column)
    c = q(column)
    if dialect == "sqlite":
        statement = f"UPDATE {q(bare_table(table))} SET {c} = ({up}) WHERE {q(key)} = NEW.{q(key)}"
        return [_sqlite_trigger(name, "INSERT", table, f"NEW.{c} IS NULL", statement)]
    function = _function(table, name)
    body = (
        "BEGIN\n"
        f"  -- Old code writes rows without {c} (inserts, and updates of rows the backfill has\n"
        f"  -- not reached yet): compute it as the backfill does.\n"
        f"  SELECT ({up}) INTO NEW.{c} FROM (SELECT NEW.*) AS dm_row;\n"
        "  RETURN NEW;\n"
        "END"
    )
    return [
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $dm$\n{body}\n$dm$",
        f"CREATE TRIGGER {q(name)} BEFORE INSERT OR UPDATE ON {qt(table)}\n"
        f"  FOR EACH ROW WHEN (NEW.{c} IS NULL) EXECUTE FUNCTION {function}()",
    ]


def remove_fill(dialect: Dialect, table: str, column: str) -> list[str]:
    name = fill_name(table, column)
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {q(name)}"]
    return _pg_remove(table, name)
