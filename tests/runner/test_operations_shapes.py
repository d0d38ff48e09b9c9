"""More typed operations run for real through the runner, on SQLite and PostgreSQL: splitting a
column with a writer of each version, filling a new NOT NULL column for old code's inserts, and
reshaping JSON documents (copyField, renameField, deleteField, upcast)."""

from __future__ import annotations

import json
from typing import Any

from runner_support import Database, Runner, make_plan

from datamigration.core.operations import plan_operations, raw_step
from datamigration.core.steps import Step


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def run_phase(run: Runner, url: str, phase: str, steps: tuple[Step, ...]) -> None:
    outcome = run(url, make_plan(*(raw_step(s) for s in steps), phase=phase))
    assert outcome.code == 0, outcome.out


def rows(db: Database, query: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(query).all()]


def test_split_column_syncs_both_versions_until_contract(
    db: Database, db_url: str, run: Runner
) -> None:
    if dialect_of(db_url) == "sqlite":
        first = "substr(full_name, 1, instr(full_name, ' ') - 1)"
        last = "substr(full_name, instr(full_name, ' ') + 1)"
    else:
        first = "split_part(full_name, ' ', 1)"
        last = "substr(full_name, strpos(full_name, ' ') + 1)"
    db.script(
        "CREATE TABLE people (id integer PRIMARY KEY, full_name text)",
        "INSERT INTO people VALUES (1, 'Ada Lovelace'), (2, 'Alan Turing'), (3, 'Grace Hopper')",
    )
    planned = plan_operations(
        [
            {
                "splitColumn": {
                    "table": "people",
                    "column": "full_name",
                    "into": [
                        {"column": "first_name", "type": "text", "up": first},
                        {"column": "last_name", "type": "text", "up": last},
                    ],
                    "down": "first_name || ' ' || last_name",
                }
            }
        ],
        dialect_of(db_url),  # type: ignore[arg-type]
    )
    run_phase(run, db_url, "expand", planned.expand)
    db.script(
        "INSERT INTO people (id, full_name) VALUES (4, 'Edsger Dijkstra')",  # old code
        "INSERT INTO people (id, first_name, last_name) VALUES (5, 'Barbara', 'Liskov')",  # new
        "UPDATE people SET last_name = 'King' WHERE id = 1",  # new code, one of the two
        "UPDATE people SET full_name = 'Alan M Turing' WHERE id = 2",  # old code
    )
    run_phase(run, db_url, "backfill", planned.backfill)
    db.execute("UPDATE people SET full_name = 'Grace B Hopper' WHERE id = 3")  # old, after
    (verify,) = planned.verify
    assert db.scalar(verify.query) == 0
    run_phase(run, db_url, "contract", planned.phase("contract"))
    assert rows(db, "SELECT id, first_name, last_name FROM people ORDER BY id") == [
        (1, "Ada", "King"),
        (2, "Alan", "M Turing"),
        (3, "Grace", "B Hopper"),
        (4, "Edsger", "Dijkstra"),
        (5, "Barbara", "Liskov"),
    ]


def test_add_not_null_column_fills_rows_old_code_writes(pg_url: str, run: Runner) -> None:
    db = Database(pg_url)
    try:
        db.script(
            "CREATE TABLE users (id integer PRIMARY KEY, email text NOT NULL, note text)",
            "INSERT INTO users (id, email) SELECT i, 'u' || i FROM generate_series(1, 100) i",
        )
        planned = plan_operations(
            [
                {
                    "addColumn": {
                        "table": "users",
                        "column": "email_length",
                        "type": "integer",
                        "notNull": True,
                        "up": "length(email)",
                        "batchSize": 7,
                    }
                }
            ]
        )
        run_phase(run, pg_url, "expand", planned.expand)
        # Old code, unaware of the column, inserts and updates rows the backfill has not reached:
        # the NOT VALID check holds because the fill trigger computes the value.
        db.script(
            "INSERT INTO users (id, email) VALUES (101, 'abcdef')",
            "UPDATE users SET note = 'x' WHERE id = 50",
        )
        run_phase(run, pg_url, "backfill", planned.backfill)
        db.execute("INSERT INTO users (id, email) VALUES (102, 'abc')")
        run_phase(run, pg_url, "contract", planned.phase("contract"))
        assert db.scalar("SELECT count(*) FROM users WHERE email_length = length(email)") == 102
        assert (
            db.scalar(
                "SELECT is_nullable FROM information_schema.columns "
                "WHERE table_name = 'users' AND column_name = 'email_length'"
            )
            == "NO"
        )
        assert db.scalar("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0
    finally:
        db.close()


def test_document_operations_reshape_every_record(db: Database, db_url: str, run: Runner) -> None:
    sqlite = dialect_of(db_url) == "sqlite"
    doc_type = "text" if sqlite else "jsonb"
    documents = [
        {"user": "ada", "ts": 1, "debug": True},
        {"user": "alan", "ts": 2, "version": 2},
        {"user": "grace", "at": 30, "ts": 3, "version": 3},
        {"ts": 4, "debug": {"nested": [1, 2]}},
    ]
    db.script(f"CREATE TABLE events (id integer PRIMARY KEY, doc {doc_type})")
    for key, doc in enumerate(documents, start=1):
        db.execute("INSERT INTO events (id, doc) VALUES (:id, :doc)", id=key, doc=json.dumps(doc))
    if sqlite:
        add_source = "json_set(doc, '$.source', 'web')"
        drop_user = "json_remove(doc, '$.legacy')"
    else:
        add_source = 'doc || \'{"source": "web"}\''
        drop_user = "doc - 'legacy'"
    planned = plan_operations(
        [
            {"copyField": {"table": "events", "column": "doc", "from": "user", "to": "actor"}},
            {"renameField": {"table": "events", "column": "doc", "from": "ts", "to": "at"}},
            {"deleteField": {"table": "events", "column": "doc", "field": "debug"}},
            {
                "upcast": {
                    "table": "events",
                    "column": "doc",
                    "transforms": [
                        {"to": 2, "expression": add_source},
                        {"to": 3, "expression": drop_user},
                    ],
                }
            },
        ],
        dialect_of(db_url),  # type: ignore[arg-type]
    )
    assert not planned.expand
    run_phase(run, db_url, "backfill", planned.backfill)
    # Old code writes a record of the old shape after the backfill; contract catches it up.
    db.execute(
        "INSERT INTO events (id, doc) VALUES (5, :doc)", doc=json.dumps({"user": "kay", "ts": 5})
    )
    run_phase(run, db_url, "contract", planned.phase("contract"))
    got = {
        key: json.loads(doc) if isinstance(doc, str) else doc
        for key, doc in rows(db, "SELECT id, doc FROM events")
    }
    assert got == {
        1: {"user": "ada", "actor": "ada", "at": 1, "source": "web", "version": 3},
        2: {"user": "alan", "actor": "alan", "at": 2, "version": 3},  # was at version 2
        3: {"user": "grace", "actor": "grace", "at": 30, "version": 3},
        4: {"at": 4, "source": "web", "version": 3},
        5: {"user": "kay", "at": 5, "source": "web", "version": 3},
    }
