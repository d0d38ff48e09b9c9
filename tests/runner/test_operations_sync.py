"""Typed operations run for real: the planner's steps through the runner's entry point, against
a SQLite file and a real PostgreSQL, with "old code" and "new code" writing through the window.

What each test proves, on both databases:
- renameColumn / changeColumnType: from expand until contract the sync triggers carry every write
  of the old code (old column only) to the new column via `up` and every write of the new code
  (new column, or both) to the old one via `down`, on INSERT and UPDATE, also while the backfill
  runs; right before the DROP no row differs (the generated verify passes, and we check it
  ourselves), and afterwards every row holds the last value written, whoever wrote it;
- the undo of expand leaves the catalog exactly as it was before expand.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from runner_support import Database, Runner, make_plan
from sqlalchemy import inspect, text

from datamigration.core.operations import Planned, plan_operations, raw_step
from datamigration.core.steps import BackfillStep, Step

ROWS = 300
RENAME_USERS = {
    "renameColumn": {"table": "users", "from": "email", "to": "email_address", "type": "text"}
}


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def run_phase(run: Runner, url: str, phase: str, steps: Iterable[Step], **extra: Any) -> None:
    outcome = run(url, make_plan(*(raw_step(s) for s in steps), phase=phase, **extra))
    assert outcome.code == 0, outcome.out


def contract_columns(db: Database, table: str) -> list[str]:
    with db.engine.connect() as conn:
        return [c["name"] for c in inspect(conn).get_columns(table)]


class Writers:
    """Old-code and new-code writes of one logical value per row; `expected` is the last value
    written to each row, in the new shape, whoever wrote it."""

    def __init__(
        self, db: Database, table: str, old: str, new: str, to_new: Callable[[Any], Any]
    ) -> None:
        self.db, self.table, self.old, self.new = db, table, old, new
        self.to_new = to_new
        self.expected: dict[int, Any] = {}
        self.next_id = itertools.count(100_000)

    def old_insert(self, value: Any) -> None:
        key = next(self.next_id)
        self.db.execute(
            f"INSERT INTO {self.table} (id, {self.old}) VALUES (:id, :v)", id=key, v=value
        )
        self.expected[key] = self.to_new(value)

    def old_update(self, key: int, value: Any) -> None:
        self.db.execute(f"UPDATE {self.table} SET {self.old} = :v WHERE id = :id", id=key, v=value)
        self.expected[key] = self.to_new(value)

    def new_insert(self, value: Any, *, both: Any = None) -> None:
        key = next(self.next_id)
        if both is None:
            self.db.execute(
                f"INSERT INTO {self.table} (id, {self.new}) VALUES (:id, :v)", id=key, v=value
            )
        else:
            self.db.execute(
                f"INSERT INTO {self.table} (id, {self.old}, {self.new}) VALUES (:id, :o, :v)",
                id=key,
                o=both,
                v=value,
            )
        self.expected[key] = value

    def new_update(self, key: int, value: Any, *, both: Any = None) -> None:
        if both is None:
            self.db.execute(
                f"UPDATE {self.table} SET {self.new} = :v WHERE id = :id", id=key, v=value
            )
        else:
            self.db.execute(
                f"UPDATE {self.table} SET {self.old} = :o, {self.new} = :v WHERE id = :id",
                id=key,
                o=both,
                v=value,
            )
        self.expected[key] = value

    def unrelated_update(self, key: int) -> None:
        """An update by old code that rewrites the old column with its own value (ORMs do)."""
        self.db.execute(
            f"UPDATE {self.table} SET {self.old} = {self.old}, note = 'touched' WHERE id = :id",
            id=key,
        )


def exercise(
    w: Writers, round_: int, old_value: Callable[[int], Any], new_value: Callable[[int], Any]
) -> None:
    """One round of writes of both versions, on existing and new rows."""
    base = round_ * 10
    w.old_update(base + 1, old_value(base + 1))
    w.old_insert(old_value(base + 2))
    w.new_update(base + 3, new_value(base + 3))
    w.new_insert(new_value(base + 4))
    w.new_update(base + 5, new_value(base + 5), both=old_value(base + 5))
    w.new_insert(new_value(base + 6), both=old_value(base + 6))
    w.unrelated_update(base + 7)
    w.old_update(base + 3, old_value(base + 8))  # old code after new code, same row
    w.new_update(base + 1, new_value(base + 9))  # new code after old code, same row


def concurrently(action: Callable[[], None], writes: Callable[[int], None]) -> None:
    """Run `action` (a runner phase) while a thread keeps writing, until the action is done."""
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for round_ in itertools.count(20):
                if done.is_set() or round_ >= ROWS // 10:
                    return
                writes(round_)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        action()
    finally:
        done.set()
        thread.join(timeout=120)
    assert not errors, errors


@dataclass(frozen=True)
class Values:
    """The values a scenario writes: rows before expand, old code's and new code's writes."""

    initial: Callable[[int], Any]
    old: Callable[[int], Any]
    new: Callable[[int], Any]


def sync_scenario(
    db: Database, url: str, run: Runner, *, planned: Planned, w: Writers, values: Values
) -> None:
    for key in range(1, ROWS + 1):
        w.expected[key] = w.to_new(values.initial(key))
    old_value, new_value = values.old, values.new

    run_phase(run, url, "expand", planned.expand)
    for round_ in range(0, 5):  # expand done, backfill not started
        exercise(w, round_, old_value, new_value)
    concurrently(
        lambda: run_phase(run, url, "backfill", planned.backfill),
        lambda r: exercise(w, r, old_value, new_value),
    )
    for round_ in range(5, 10):  # backfill done, code rollout in progress
        exercise(w, round_, old_value, new_value)

    # The moment before the DROP: no row differs, and every write so far is in the new shape.
    (verify,) = planned.verify
    assert db.scalar(verify.query) == 0
    assert current(db, w) == w.expected

    run_phase(run, url, "contract", planned.phase("contract"))
    assert w.old not in contract_columns(db, w.table)
    assert current(db, w) == w.expected  # no write lost


def current(db: Database, w: Writers) -> dict[int, Any]:
    with db.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, {w.new} FROM {w.table}")).all()
    return {int(key): value for key, value in rows}


def test_rename_column_keeps_old_and_new_code_writes(
    db: Database, db_url: str, run: Runner
) -> None:
    db.script(
        "CREATE TABLE users (id integer PRIMARY KEY, email text, note text)",
        *(f"INSERT INTO users (id, email) VALUES ({i}, 'u{i}@old')" for i in range(1, ROWS + 1)),
    )
    planned = plan_operations(
        [
            {
                "renameColumn": {
                    "table": "users",
                    "from": "email",
                    "to": "email_address",
                    "type": "text",
                    "batchSize": 40,
                }
            }
        ],
        dialect_of(db_url),
    )
    w = Writers(db, "users", "email", "email_address", lambda v: v)
    values = Values(
        initial=lambda i: f"u{i}@old", old=lambda i: f"o{i}@old", new=lambda i: f"n{i}@new"
    )
    sync_scenario(db, db_url, run, planned=planned, w=w, values=values)


def test_change_column_type_keeps_old_and_new_code_writes(
    db: Database, db_url: str, run: Runner
) -> None:
    db.script(
        "CREATE TABLE items (id integer PRIMARY KEY, price numeric(10, 2), note text)",
        *(f"INSERT INTO items (id, price) VALUES ({i}, {i}.25)" for i in range(1, ROWS + 1)),
    )
    planned = plan_operations(
        [
            {
                "changeColumnType": {
                    "table": "items",
                    "column": "price",
                    "to": "price_cents",
                    "type": "bigint",
                    "up": "round(price * 100)",
                    "down": "price_cents / 100.0",
                    "batchSize": 40,
                }
            }
        ],
        dialect_of(db_url),
    )
    w = Writers(db, "items", "price", "price_cents", lambda v: round(float(v) * 100))
    values = Values(
        initial=lambda i: f"{i}.25", old=lambda i: f"{i}.75", new=lambda i: i * 100 + 11
    )
    sync_scenario(db, db_url, run, planned=planned, w=w, values=values)


def catalog(db: Database) -> list[tuple[Any, ...]]:
    """Everything about the application's schema: columns, constraints, indexes, triggers,
    functions (the runner's ledger excluded)."""
    if db.url.startswith("sqlite"):
        queries = [
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name NOT LIKE 'datamigration%' ORDER BY name"
        ]
    else:
        queries = [
            "SELECT table_name, column_name, data_type, is_nullable, column_default, "
            "ordinal_position FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name <> 'datamigration_ledger' ORDER BY 1, 2",
            "SELECT conrelid::regclass::text, conname, contype, convalidated, "
            "pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace "
            "AND conrelid::regclass::text <> 'datamigration_ledger' ORDER BY 1, 2",
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename <> 'datamigration_ledger' ORDER BY 1, 2",
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal "
            "ORDER BY 1, 2",
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
        ]
    with db.engine.connect() as conn:
        return [tuple(row) for query in queries for row in conn.execute(text(query)).all()]


def test_undo_after_expand_and_backfill_leaves_the_catalog_as_before(
    db: Database, db_url: str, run: Runner
) -> None:
    postgres = dialect_of(db_url) == "postgresql"
    db.script(
        "CREATE TABLE accounts (id integer PRIMARY KEY)",
        "CREATE TABLE users (id integer PRIMARY KEY, email text, price numeric(10, 2), "
        "account_id integer, note text)",
        "INSERT INTO accounts (id) VALUES (1)",
        *(
            f"INSERT INTO users (id, email, price, account_id) VALUES ({i}, 'u{i}', {i}.5, 1)"
            for i in range(1, 50)
        ),
    )
    operations: list[dict[str, Any]] = [
        {
            "renameColumn": {
                "table": "users",
                "from": "email",
                "to": "email_address",
                "type": "text",
            }
        },
        {
            "changeColumnType": {
                "table": "users",
                "column": "price",
                "to": "price_cents",
                "type": "bigint",
                "up": "round(price * 100)",
                "down": "price_cents / 100.0",
            }
        },
        {"addColumn": {"table": "users", "column": "kind", "type": "text", "default": "'basic'"}},
        {"addIndex": {"table": "users", "name": "users_note_idx", "columns": ["note"]}},
        {"addUnique": {"table": "users", "name": "users_email_key", "columns": ["email"]}},
    ]
    if postgres:
        operations += [
            {
                "addColumn": {
                    "table": "users",
                    "column": "score",
                    "type": "integer",
                    "notNull": True,
                    "up": "length(email)",
                }
            },
            {"setNotNull": {"table": "users", "column": "account_id"}},
            {"addCheck": {"table": "users", "name": "price_positive", "check": "price > 0"}},
            {
                "addForeignKey": {
                    "table": "users",
                    "name": "users_account_fk",
                    "columns": ["account_id"],
                    "references": {"table": "accounts", "columns": ["id"]},
                }
            },
        ]
    planned = plan_operations(operations, dialect_of(db_url))
    before = catalog(db)

    run_phase(run, db_url, "expand", planned.expand)
    run_phase(run, db_url, "backfill", planned.backfill)
    assert catalog(db) != before
    run_phase(run, db_url, "contract", planned.undo, migration="shop/users-rollback")

    assert catalog(db) == before


def test_rename_backfill_updates_never_call_the_trigger_function(pg_url: str, run: Runner) -> None:
    """The cost of the sync trigger for the backfill: its WHEN is false for every backfilled row
    (the backfill makes both columns equal), so the function is never called. Counted with
    PostgreSQL's per-transaction function statistics; an old-code write in the same transaction
    is counted, so the zero is not an artefact."""
    db = Database(pg_url)
    try:
        db.script(
            "CREATE TABLE users (id integer PRIMARY KEY, email text)",
            "INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 500) i",
        )
        planned = plan_operations([RENAME_USERS])
        run_phase(run, pg_url, "expand", planned.expand)
        (backfill,) = planned.backfill
        assert isinstance(backfill, BackfillStep)
        ((column, value),) = backfill.set
        function = "'dm_sync_users_email_email_address'::regproc"
        with db.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL track_functions = 'pl'")
            # what the runner's batches run: SET <set> WHERE <key range> AND (<where>)
            conn.exec_driver_sql(
                f'UPDATE users SET "{column}" = ({value}) WHERE id > 0 AND id <= 500 '
                f"AND ({backfill.where})"
            )
            calls = f"SELECT coalesce(pg_stat_get_xact_function_calls({function}), 0)"
            assert conn.exec_driver_sql(calls).scalar() == 0
            assert (
                conn.exec_driver_sql(
                    "SELECT count(*) FROM users WHERE email_address IS NULL"
                ).scalar()
                == 0
            )
            conn.exec_driver_sql("UPDATE users SET email = 'changed' WHERE id = 7")  # old code
            assert conn.exec_driver_sql(calls).scalar() == 1
            row = conn.exec_driver_sql("SELECT email_address FROM users WHERE id = 7").scalar()
            assert row == "changed"
    finally:
        db.close()
