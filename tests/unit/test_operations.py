"""The planner as tables: operation in, expand / backfill / contract / undo SQL out; bad input
refused naming the field; and how `spec.operations` joins the hand-written steps."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from datamigration.core.errors import SpecError
from datamigration.core.operations import OPERATION_KINDS, Planned, plan_operations, raw_step
from datamigration.core.spec import parse_spec
from datamigration.core.steps import BackfillStep, SqlStep, Step, VerifyStep, parse_steps
from datamigration.lint import Severity, lint_steps

RENAME = {
    "renameColumn": {"table": "users", "from": "email", "to": "email_address", "type": "text"}
}
RETYPE = {
    "changeColumnType": {
        "table": "items",
        "column": "price",
        "to": "price_cents",
        "type": "bigint",
        "up": "round(price * 100)",
        "down": "price_cents / 100.0",
    }
}
SPLIT = {
    "splitColumn": {
        "table": "people",
        "column": "full_name",
        "into": [
            {"column": "first_name", "type": "text", "up": "split_part(full_name, ' ', 1)"},
            {"column": "last_name", "type": "text", "up": "split_part(full_name, ' ', 2)"},
        ],
        "down": "first_name || ' ' || last_name",
    }
}
MERGE = {
    "mergeColumns": {
        "table": "places",
        "columns": ["lat", "lon"],
        "into": {"column": "point", "type": "text", "up": "lat || ',' || lon"},
        "down": {"lat": "split_part(point, ',', 1)", "lon": "split_part(point, ',', 2)"},
    }
}
ALL_OPERATIONS: list[dict[str, Any]] = [
    {"addColumn": {"table": "users", "column": "nickname", "type": "text"}},
    {
        "addColumn": {
            "table": "users",
            "column": "kind",
            "type": "text",
            "default": "'basic'",
            "notNull": True,
        }
    },
    {
        "addColumn": {
            "table": "users",
            "column": "score",
            "type": "integer",
            "notNull": True,
            "up": "length(email)",
        }
    },
    RENAME,
    RETYPE,
    SPLIT,
    MERGE,
    {"setNotNull": {"table": "users", "column": "account_id", "fill": "0"}},
    {"addCheck": {"table": "items", "name": "price_positive", "check": "price > 0"}},
    {
        "addForeignKey": {
            "table": "users",
            "name": "users_account_fk",
            "columns": ["account_id"],
            "references": {"table": "accounts", "columns": ["id"]},
            "onDelete": "CASCADE",
        }
    },
    {"addUnique": {"table": "users", "name": "users_email_key", "columns": ["email"]}},
    {
        "addIndex": {
            "table": "users",
            "name": "users_note_idx",
            "columns": ["note"],
            "where": "note IS NOT NULL",
        }
    },
    {"dropIndex": {"name": "users_old_idx"}},
    {"dropColumn": {"table": "users", "column": "legacy"}},
    {"dropTable": {"table": "old_audit"}},
    {"copyField": {"table": "events", "column": "doc", "from": "user", "to": "actor"}},
    {"renameField": {"table": "events", "column": "doc", "from": "ts", "to": "at"}},
    {"deleteField": {"table": "events", "column": "doc", "field": "debug"}},
    {
        "upcast": {
            "table": "events",
            "column": "doc",
            "transforms": [
                {"to": 2, "expression": 'doc || \'{"source": "web"}\''},
                {"to": 3, "expression": "doc - 'legacy'"},
            ],
        }
    },
]


def sql_of(steps: tuple[Step, ...]) -> list[tuple[str, str]]:
    """(name, what it runs) per step: the SQL, the backfill as an UPDATE, the verify query."""
    out: list[tuple[str, str]] = []
    for step in steps:
        if isinstance(step, SqlStep):
            suffix = "" if step.transactional else "  -- own step, not in a transaction"
            out.append((step.name, step.sql + suffix))
        elif isinstance(step, BackfillStep):
            sets = ", ".join(f"{col} = {expr}" for col, expr in step.set)
            out.append((step.name, f"UPDATE {step.table} SET {sets} WHERE {step.where}"))
        elif isinstance(step, VerifyStep):
            out.append((step.name, f"{step.query} -> {step.expect}"))
    return out


# -- operation in, SQL out -----------------------------------------------------------------------
CASES: list[tuple[str, dict[str, Any], dict[str, list[tuple[str, str]]]]] = [
    (
        "addColumn nullable",
        {"addColumn": {"table": "users", "column": "nickname", "type": "text"}},
        {
            "expand": [
                ("add-users-nickname-column", 'ALTER TABLE "users" ADD COLUMN "nickname" text')
            ],
            "undo": [
                (
                    "undo-add-users-nickname",
                    'ALTER TABLE "users" DROP COLUMN IF EXISTS "nickname"',
                )
            ],
        },
    ),
    (
        "addColumn with a default, NOT NULL",
        {
            "addColumn": {
                "table": "public.users",
                "column": "kind",
                "type": "varchar(20)",
                "default": "'basic'",
                "notNull": True,
            }
        },
        {
            "expand": [
                (
                    "add-users-kind-column",
                    'ALTER TABLE "public"."users" ADD COLUMN "kind" varchar(20) '
                    "DEFAULT ('basic') NOT NULL",
                )
            ],
            "undo": [
                (
                    "undo-add-users-kind",
                    'ALTER TABLE "public"."users" DROP COLUMN IF EXISTS "kind"',
                )
            ],
        },
    ),
    (
        "setNotNull: fill, CHECK NOT VALID, VALIDATE on its own, SET NOT NULL, drop the check",
        {"setNotNull": {"table": "users", "column": "account_id", "fill": "0"}},
        {
            "backfill": [
                (
                    "not-null-users-account-id-fill",
                    'UPDATE users SET account_id = 0 WHERE "account_id" IS NULL',
                ),
                (
                    "not-null-users-account-id-check",
                    'ALTER TABLE "users" ADD CONSTRAINT "users_account_id_not_null" '
                    'CHECK ("account_id" IS NOT NULL) NOT VALID',
                ),
            ],
            "contract": [
                (
                    "not-null-users-account-id-no-nulls",
                    'SELECT count(*) FROM "users" WHERE "account_id" IS NULL -> 0',
                ),
                (
                    "not-null-users-account-id-validate",
                    'ALTER TABLE "users" VALIDATE CONSTRAINT "users_account_id_not_null"',
                ),
                (
                    "not-null-users-account-id-set",
                    'ALTER TABLE "users" ALTER COLUMN "account_id" SET NOT NULL;\n'
                    'ALTER TABLE "users" DROP CONSTRAINT "users_account_id_not_null"',
                ),
            ],
            "undo": [
                (
                    "undo-not-null-users-account-id",
                    'ALTER TABLE "users" DROP CONSTRAINT IF EXISTS "users_account_id_not_null"',
                )
            ],
        },
    ),
    (
        "renameColumn",
        RENAME,
        {
            "expand": [
                (
                    "rename-users-email-columns",
                    'ALTER TABLE "users" ADD COLUMN "email_address" text',
                ),
                ("rename-users-email-sync-triggers", "<trigger>"),
            ],
            "backfill": [
                (
                    "rename-users-email-backfill",
                    'UPDATE users SET email_address = "email" '
                    'WHERE "email_address" IS DISTINCT FROM "email"',
                )
            ],
            "contract": [
                (
                    "rename-users-email-in-sync",
                    'SELECT count(*) FROM "users" WHERE "email_address" IS DISTINCT FROM "email" '
                    "-> 0",
                ),
                (
                    "rename-users-email-drop-old",
                    'DROP TRIGGER IF EXISTS "dm_sync_users_email_email_address_ins" ON "users";\n'
                    'DROP TRIGGER IF EXISTS "dm_sync_users_email_email_address_upd" ON "users";\n'
                    'DROP FUNCTION IF EXISTS "dm_sync_users_email_email_address"();\n'
                    'ALTER TABLE "users" DROP COLUMN "email"',
                ),
            ],
            "undo": [
                (
                    "undo-rename-users-email",
                    'DROP TRIGGER IF EXISTS "dm_sync_users_email_email_address_ins" ON "users";\n'
                    'DROP TRIGGER IF EXISTS "dm_sync_users_email_email_address_upd" ON "users";\n'
                    'DROP FUNCTION IF EXISTS "dm_sync_users_email_email_address"();\n'
                    'ALTER TABLE "users" DROP COLUMN IF EXISTS "email_address"',
                )
            ],
        },
    ),
    (
        "changeColumnType with up and down",
        RETYPE,
        {
            "expand": [
                (
                    "retype-items-price-columns",
                    'ALTER TABLE "items" ADD COLUMN "price_cents" bigint',
                ),
                ("retype-items-price-sync-triggers", "<trigger>"),
            ],
            "backfill": [
                (
                    "retype-items-price-backfill",
                    'UPDATE items SET price_cents = round(price * 100) WHERE "price_cents" IS NULL',
                )
            ],
            "contract": [
                (
                    "retype-items-price-in-sync",
                    'SELECT count(*) FROM "items" WHERE NOT (("price_cents" IS NOT DISTINCT FROM '
                    '(round(price * 100))) OR ("price" IS NOT DISTINCT FROM '
                    "(price_cents / 100.0))) -> 0",
                ),
                (
                    "retype-items-price-drop-old",
                    'DROP TRIGGER IF EXISTS "dm_sync_items_price_price_cents" ON "items";\n'
                    'DROP FUNCTION IF EXISTS "dm_sync_items_price_price_cents"();\n'
                    'ALTER TABLE "items" DROP COLUMN "price"',
                ),
            ],
            "undo": [
                (
                    "undo-retype-items-price",
                    'DROP TRIGGER IF EXISTS "dm_sync_items_price_price_cents" ON "items";\n'
                    'DROP FUNCTION IF EXISTS "dm_sync_items_price_price_cents"();\n'
                    'ALTER TABLE "items" DROP COLUMN IF EXISTS "price_cents"',
                )
            ],
        },
    ),
    (
        "addForeignKey: NOT VALID, then VALIDATE on its own",
        {
            "addForeignKey": {
                "table": "users",
                "name": "users_account_fk",
                "columns": ["account_id"],
                "references": {"table": "accounts", "columns": ["id"]},
                "onDelete": "SET NULL",
            }
        },
        {
            "expand": [
                (
                    "fk-users-users-account-fk-add",
                    'ALTER TABLE "users" ADD CONSTRAINT "users_account_fk" FOREIGN KEY '
                    '("account_id") REFERENCES "accounts" ("id") ON DELETE SET NULL NOT VALID',
                )
            ],
            "backfill": [
                (
                    "fk-users-users-account-fk-validate",
                    'ALTER TABLE "users" VALIDATE CONSTRAINT "users_account_fk"',
                )
            ],
            "undo": [
                (
                    "undo-fk-users-users-account-fk",
                    'ALTER TABLE "users" DROP CONSTRAINT IF EXISTS "users_account_fk"',
                )
            ],
        },
    ),
    (
        "addCheck",
        {"addCheck": {"table": "items", "name": "price_positive", "check": "price > 0"}},
        {
            "expand": [
                (
                    "check-items-price-positive-add",
                    'ALTER TABLE "items" ADD CONSTRAINT "price_positive" CHECK (price > 0) '
                    "NOT VALID",
                )
            ],
            "backfill": [
                (
                    "check-items-price-positive-validate",
                    'ALTER TABLE "items" VALIDATE CONSTRAINT "price_positive"',
                )
            ],
            "undo": [
                (
                    "undo-check-items-price-positive",
                    'ALTER TABLE "items" DROP CONSTRAINT IF EXISTS "price_positive"',
                )
            ],
        },
    ),
    (
        "addUnique: index CONCURRENTLY on its own, then USING INDEX",
        {"addUnique": {"table": "users", "name": "users_email_key", "columns": ["email"]}},
        {
            "expand": [
                (
                    "unique-users-users-email-key-index",
                    'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "users_email_key" ON "users" '
                    '("email")  -- own step, not in a transaction',
                ),
                (
                    "unique-users-users-email-key-constraint",
                    'ALTER TABLE "users" ADD CONSTRAINT "users_email_key" UNIQUE USING INDEX '
                    '"users_email_key"',
                ),
            ],
            "undo": [
                (
                    "undo-unique-users-users-email-key-constraint",
                    'ALTER TABLE "users" DROP CONSTRAINT IF EXISTS "users_email_key"',
                ),
                (
                    "undo-unique-users-users-email-key-index",
                    'DROP INDEX CONCURRENTLY IF EXISTS "users_email_key"  -- own step, not in a '
                    "transaction",
                ),
            ],
        },
    ),
    (
        "addIndex, partial, gin",
        {
            "addIndex": {
                "table": "app.events",
                "name": "events_doc_idx",
                "columns": ["doc"],
                "method": "gin",
                "where": "doc IS NOT NULL",
            }
        },
        {
            "expand": [
                (
                    "index-events-events-doc-idx",
                    'CREATE INDEX CONCURRENTLY IF NOT EXISTS "events_doc_idx" ON "app"."events" '
                    'USING gin ("doc") WHERE (doc IS NOT NULL)  -- own step, not in a transaction',
                )
            ],
            "undo": [
                (
                    "undo-index-events-events-doc-idx",
                    'DROP INDEX CONCURRENTLY IF EXISTS "app"."events_doc_idx"  -- own step, not '
                    "in a transaction",
                )
            ],
        },
    ),
    (
        "dropIndex: contract only, CONCURRENTLY",
        {"dropIndex": {"name": "users_old_idx"}},
        {
            "contract": [
                (
                    "drop-index-users-old-idx",
                    'DROP INDEX CONCURRENTLY IF EXISTS "users_old_idx"  -- own step, not in a '
                    "transaction",
                )
            ]
        },
    ),
    (
        "dropColumn: contract only",
        {"dropColumn": {"table": "users", "column": "legacy"}},
        {"contract": [("drop-users-legacy", 'ALTER TABLE "users" DROP COLUMN "legacy"')]},
    ),
    (
        "dropTable: contract only",
        {"dropTable": {"table": "old_audit"}},
        {"contract": [("drop-table-old-audit", 'DROP TABLE "old_audit"')]},
    ),
    (
        "copyField (copy_field!)",
        {"copyField": {"table": "events", "column": "doc", "from": "user", "to": "actor"}},
        {
            "backfill": [
                (
                    "copy-field-events-doc-user",
                    "UPDATE events SET doc = jsonb_set(\"doc\", '{actor}', \"doc\" -> 'user') "
                    "WHERE \"doc\" -> 'user' IS NOT NULL AND \"doc\" -> 'actor' IS DISTINCT FROM "
                    "\"doc\" -> 'user'",
                )
            ]
        },
    ),
    (
        "deleteField (delete_field!): contract, then checked",
        {"deleteField": {"table": "events", "column": "doc", "field": "debug"}},
        {
            "contract": [
                (
                    "delete-field-events-doc-debug",
                    "UPDATE events SET doc = \"doc\" - 'debug' WHERE \"doc\" -> 'debug' IS NOT NULL",
                ),
                (
                    "delete-field-events-doc-debug-gone",
                    'SELECT count(*) FROM "events" WHERE "doc" -> \'debug\' IS NOT NULL -> 0',
                ),
            ]
        },
    ),
    (
        "upcast: one transform per version step, in order, then checked",
        {
            "upcast": {
                "table": "events",
                "column": "doc",
                "versionField": "v",
                "transforms": [
                    {"to": 2, "expression": 'doc || \'{"source": "web"}\''},
                    {"to": 3, "expression": "doc - 'legacy'"},
                ],
            }
        },
        {
            "contract": [
                (
                    "upcast-events-doc-v2",
                    "UPDATE events SET doc = jsonb_set((doc || '{\"source\": \"web\"}'), '{v}', "
                    "'2'::jsonb) WHERE \"doc\" IS NOT NULL AND COALESCE((\"doc\" ->> 'v')::integer"
                    ", 1) = 1",
                ),
                (
                    "upcast-events-doc-v3",
                    "UPDATE events SET doc = jsonb_set((doc - 'legacy'), '{v}', '3'::jsonb) WHERE "
                    '"doc" IS NOT NULL AND COALESCE(("doc" ->> \'v\')::integer, 1) = 2',
                ),
                (
                    "upcast-events-doc-current",
                    'SELECT count(*) FROM "events" WHERE "doc" IS NOT NULL AND '
                    "COALESCE((\"doc\" ->> 'v')::integer, 1) < 3 -> 0",
                ),
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("operation", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_operation_compiles_to_the_phases_sql(
    operation: dict[str, Any], expected: dict[str, list[tuple[str, str]]]
) -> None:
    planned = plan_operations([operation])
    phases = {
        "expand": planned.expand,
        "backfill": planned.backfill,
        "contract": planned.phase("contract"),
        "undo": planned.undo,
    }
    for phase, steps in phases.items():
        got = sql_of(steps)
        want = expected.get(phase, [])
        got = [(name, "<trigger>" if "CREATE TRIGGER" in sql else sql) for name, sql in got]
        assert got == want, phase


def test_postgresql_rename_trigger_decides_by_which_column_changed() -> None:
    (_, sync) = plan_operations([RENAME]).expand
    assert isinstance(sync, SqlStep) and sync.transactional
    sql = sync.sql
    assert 'CREATE FUNCTION "dm_sync_users_email_email_address"() RETURNS trigger' in sql
    # Called only when the two columns disagree after the write (the backfill never calls it);
    # BEFORE INSERT assigns NEW; AFTER UPDATE (no BEFORE UPDATE: no row lock per backfilled row).
    when = 'FOR EACH ROW WHEN (NEW."email" IS DISTINCT FROM NEW."email_address")'
    assert (
        'CREATE TRIGGER "dm_sync_users_email_email_address_ins" BEFORE INSERT ON "users"\n'
        f"  {when}" in sql
    )
    assert (
        'CREATE TRIGGER "dm_sync_users_email_email_address_upd" AFTER UPDATE OF "email", '
        f'"email_address" ON "users"\n  {when}' in sql
    )
    assert "BEFORE UPDATE" not in sql and "BEFORE INSERT OR UPDATE" not in sql
    # INSERT: the new column unset means old code -> up; otherwise new code (it wins) -> down.
    assert 'IF NEW."email_address" IS NULL THEN' in sql
    assert 'NEW."email_address" := NEW."email";' in sql
    assert 'NEW."email" := NEW."email_address";' in sql
    # UPDATE: the new column unchanged means old code -> up; otherwise new code -> down.
    assert 'IF NEW."email_address" IS NOT DISTINCT FROM OLD."email_address" THEN' in sql
    assert 'UPDATE "users" SET "email_address" = "email" WHERE "id" = NEW."id";' in sql
    assert 'UPDATE "users" SET "email" = "email_address" WHERE "id" = NEW."id";' in sql


def test_postgresql_general_trigger_evaluates_expressions_over_the_row() -> None:
    (_, sync) = plan_operations([SPLIT]).expand
    assert isinstance(sync, SqlStep)
    assert (
        "SELECT (split_part(full_name, ' ', 1)), (split_part(full_name, ' ', 2)) "
        'INTO NEW."first_name", NEW."last_name" FROM (SELECT NEW.*) AS dm_row;' in sync.sql
    )
    assert (
        "SELECT (first_name || ' ' || last_name) INTO NEW.\"full_name\" "
        "FROM (SELECT NEW.*) AS dm_row;" in sync.sql
    )


def test_sqlite_uses_after_triggers_guarded_by_when_and_the_key() -> None:
    planned = plan_operations([RENAME], "sqlite")
    (_, sync) = planned.expand
    assert isinstance(sync, SqlStep)
    assert sync.sql.count("CREATE TRIGGER") == 4
    assert "BEFORE" not in sync.sql
    assert (
        'AFTER UPDATE OF "email" ON "users"\n  FOR EACH ROW WHEN (OLD."email" IS NOT NEW."email") '
        'AND NEW."email_address" IS OLD."email_address"' in sync.sql
    )
    assert 'WHERE "id" = NEW."id" AND NOT ("email_address" IS ("email"))' in sync.sql
    (drop,) = planned.contract
    assert isinstance(drop, SqlStep)
    assert drop.sql.count("DROP TRIGGER IF EXISTS") == 4
    assert drop.sql.endswith('ALTER TABLE "users" DROP COLUMN "email"')


def test_sqlite_trigger_bodies_survive_the_runners_statement_splitter() -> None:
    from datamigration.runner.sqltext import split_statements

    (_, sync) = plan_operations([RENAME], "sqlite").expand
    assert isinstance(sync, SqlStep)
    statements = split_statements(sync.sql)
    assert len(statements) == 4
    assert all(s.startswith("CREATE TRIGGER") for s in statements)


def test_sqlite_documents_use_json1() -> None:
    planned = plan_operations(
        [{"renameField": {"table": "events", "column": "doc", "from": "ts", "to": "at"}}], "sqlite"
    )
    assert sql_of(planned.backfill) == [
        (
            "rename-field-events-doc-ts-copy",
            "UPDATE events SET doc = json_set(\"doc\", '$.at', json_extract(\"doc\", '$.ts')) "
            "WHERE json_type(\"doc\", '$.ts') IS NOT NULL AND json_type(\"doc\", '$.at') IS NULL",
        )
    ]


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_generated_steps_round_trip_through_the_manifest_form(dialect: str) -> None:
    operations = ALL_OPERATIONS if dialect == "postgresql" else [RENAME, RETYPE, SPLIT, MERGE]
    planned = plan_operations(operations, dialect)  # type: ignore[arg-type]
    for phase in ("expand", "backfill", "contract", "rollback"):
        steps = planned.phase(phase)
        again = parse_steps([raw_step(s) for s in steps], "x")
        assert [s.checksum for s in again] == [s.checksum for s in steps]


def test_step_names_are_stable_and_independent_of_position() -> None:
    alone = plan_operations([RETYPE])
    after_others = plan_operations([RENAME, SPLIT, RETYPE])
    names = {s.name: s.checksum for p in ("expand", "backfill", "contract") for s in alone.phase(p)}
    later = {
        s.name: s.checksum
        for p in ("expand", "backfill", "contract")
        for s in after_others.phase(p)
    }
    assert names.items() <= later.items()


def test_long_names_are_shortened_with_a_hash_to_63_characters() -> None:
    long = "c" * 60
    planned = plan_operations(
        [{"renameColumn": {"table": "t" * 60, "from": long, "to": long + "x", "type": "text"}}]
    )
    names = [
        s.name for p in ("expand", "backfill", "contract", "rollback") for s in planned.phase(p)
    ]
    assert all(len(n) <= 63 for n in names)
    assert len(set(names)) == len(names)
    (_, sync) = planned.expand
    assert isinstance(sync, SqlStep)
    function = sync.sql.split('CREATE FUNCTION "', 1)[1].split('"', 1)[0]
    assert len(function) == 63


def test_every_operation_passes_the_lint_in_its_phases() -> None:
    planned = plan_operations(ALL_OPERATIONS)
    assert {next(iter(op)) for op in ALL_OPERATIONS} == set(OPERATION_KINDS)
    for phase in ("expand", "backfill", "contract"):
        errors = [
            f"{f.step}: {f.rule}"
            for f in lint_steps(phase, list(planned.phase(phase)))
            if f.severity == Severity.ERROR
        ]
        assert errors == [], phase
    undo_errors = [
        f for f in lint_steps("contract", list(planned.undo)) if f.severity == Severity.ERROR
    ]
    assert undo_errors == []


def test_expand_and_backfill_never_drop_and_contract_drops_triggers_with_the_column() -> None:
    planned = plan_operations(ALL_OPERATIONS)
    for step in (*planned.expand, *planned.backfill):
        assert "DROP" not in getattr(step, "sql", ""), step.name
    (drop,) = [s for s in planned.contract if s.name == "rename-users-email-drop-old"]
    assert isinstance(drop, SqlStep) and drop.transactional


def test_undo_runs_in_reverse_order_of_the_operations() -> None:
    planned = plan_operations([RENAME, RETYPE])
    assert [s.name for s in planned.undo] == ["undo-retype-items-price", "undo-rename-users-email"]


def test_expressions_are_listed_with_their_field_for_the_lint() -> None:
    planned = plan_operations([RETYPE, MERGE, RENAME])
    assert planned.expressions() == [
        ("spec.operations[0].changeColumnType.up", "round(price * 100)"),
        ("spec.operations[0].changeColumnType.down", "price_cents / 100.0"),
        ("spec.operations[1].mergeColumns.into.up", "lat || ',' || lon"),
        ("spec.operations[1].mergeColumns.down.lat", "split_part(point, ',', 1)"),
        ("spec.operations[1].mergeColumns.down.lon", "split_part(point, ',', 2)"),
    ]


# -- bad input names the field -------------------------------------------------------------------
def _with(operation: dict[str, Any], **changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(operation)
    (body,) = result.values()
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return result


REJECTED: list[tuple[object, str, str]] = [
    ("not a list", "spec.operations", "must be a list of operations"),
    ([{"renameColumn": {}, "dropTable": {}}], "spec.operations[0]", "exactly one of"),
    ([{"renameColumns": {}}], "spec.operations[0].renameColumns", "unknown operation"),
    (
        [_with(RENAME, to="email-address")],
        "spec.operations[0].renameColumn.to",
        "plain SQL identifier",
    ),
    (
        [_with(RENAME, to='x"; DROP TABLE users; --')],
        "spec.operations[0].renameColumn.to",
        "identifier",
    ),
    ([_with(RENAME, to="email")], "spec.operations[0].renameColumn.to", "must differ"),
    ([_with(RENAME, type=None)], "spec.operations[0].renameColumn.type", "is required"),
    (
        [_with(RENAME, type="text; DROP TABLE x")],
        "spec.operations[0].renameColumn.type",
        "column type",
    ),
    ([_with(RENAME, table="a.b.c")], "spec.operations[0].renameColumn.table", "table name"),
    ([_with(RENAME, colour="red")], "spec.operations[0].renameColumn.colour", "unknown field"),
    ([_with(RENAME, batchSize=0)], "spec.operations[0].renameColumn.batchSize", "between 1"),
    ([_with(RETYPE, up="")], "spec.operations[0].changeColumnType.up", "non-empty SQL expression"),
    ([_with(RETYPE, down=None)], "spec.operations[0].changeColumnType.down", "is required"),
    ([_with(RETYPE, to="price")], "spec.operations[0].changeColumnType.to", "new column"),
    ([_with(RETYPE, up="$dm$ x")], "spec.operations[0].changeColumnType.up", "$dm$"),
    (
        [_with(SPLIT, into=[{"column": "a", "type": "text", "up": "x"}])],
        "spec.operations[0].splitColumn.into",
        "2 to 16",
    ),
    (
        [
            _with(
                SPLIT,
                into=[
                    {"column": "a", "type": "text", "up": "x"},
                    {"column": "a", "type": "text", "up": "y"},
                ],
            )
        ],
        "spec.operations[0].splitColumn.into[1].column",
        "used twice",
    ),
    ([_with(MERGE, down={"lat": "x"})], "spec.operations[0].mergeColumns.down", "each merged"),
    (
        [{"addColumn": {"table": "t", "column": "c", "type": "int", "notNull": True}}],
        "spec.operations[0].addColumn.notNull",
        "set default",
    ),
    (
        [{"addColumn": {"table": "t", "column": "c", "type": "int", "notNull": "yes"}}],
        "spec.operations[0].addColumn.notNull",
        "true or false",
    ),
    (
        [
            {
                "addForeignKey": {
                    "table": "t",
                    "name": "fk",
                    "columns": ["a", "b"],
                    "references": {"table": "u", "columns": ["id"]},
                }
            }
        ],
        "spec.operations[0].addForeignKey.references.columns",
        "must name 2",
    ),
    (
        [{"addIndex": {"table": "t", "name": "i", "columns": ["a", "a"]}}],
        "spec.operations[0].addIndex.columns[1]",
        "listed twice",
    ),
    (
        [{"addIndex": {"table": "t", "name": "i", "columns": ["a"], "method": "rtree"}}],
        "spec.operations[0].addIndex.method",
        "must be one of",
    ),
    (
        [{"copyField": {"table": "t", "column": "doc", "from": "a.b", "to": "c"}}],
        "spec.operations[0].copyField.from",
        "top-level document key",
    ),
    (
        [
            {
                "upcast": {
                    "table": "t",
                    "column": "doc",
                    "transforms": [{"to": 3, "expression": "doc"}],
                }
            }
        ],
        "spec.operations[0].upcast.transforms[0].to",
        "must be 2",
    ),
    ([RENAME, RENAME], "spec.operations[1].renameColumn", "also generates"),
]


@pytest.mark.parametrize(
    ("raw", "field", "fragment"), REJECTED, ids=[r[1] + ":" + r[2] for r in REJECTED]
)
def test_bad_input_is_refused_naming_the_field(raw: object, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        plan_operations(raw)
    assert caught.value.field == field
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "operation",
    [
        {"setNotNull": {"table": "t", "column": "c"}},
        {"addCheck": {"table": "t", "name": "n", "check": "c > 0"}},
        {"addColumn": {"table": "t", "column": "c", "type": "int", "notNull": True, "up": "1"}},
        {"addIndex": {"table": "t", "name": "i", "columns": ["c"], "method": "gin"}},
    ],
)
def test_sqlite_refuses_what_it_cannot_do_naming_the_operation(operation: dict[str, Any]) -> None:
    with pytest.raises(SpecError) as caught:
        plan_operations([operation], "sqlite")
    assert caught.value.field == f"spec.operations[0].{next(iter(operation))}"
    assert "not supported with spec.database.dialect sqlite" in caught.value.message


def test_sqlite_index_steps_are_transactional_and_plain() -> None:
    planned = plan_operations(
        [{"addUnique": {"table": "users", "name": "users_email_key", "columns": ["email"]}}],
        "sqlite",
    )
    assert sql_of(planned.expand) == [
        (
            "unique-users-users-email-key-index",
            'CREATE UNIQUE INDEX IF NOT EXISTS "users_email_key" ON "users" ("email")',
        )
    ]


# -- spec.operations in the spec -----------------------------------------------------------------
def spec(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "database": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        "workload": {"name": "api", "container": "api", "image": "api:2"},
        "operations": [RENAME],
    }
    raw.update(extra)
    return raw


def names(steps: tuple[Step, ...]) -> list[str]:
    return [s.name for s in steps]


def test_operations_alone_make_a_valid_spec_and_fill_every_phase() -> None:
    parsed = parse_spec(spec())
    assert names(parsed.job_steps("expand").steps) == [
        "rename-users-email-columns",
        "rename-users-email-sync-triggers",
    ]
    assert names(parsed.job_steps("backfill").steps) == ["rename-users-email-backfill"]
    assert names(parsed.job_steps("contract").steps) == [
        "rename-users-email-in-sync",
        "rename-users-email-drop-old",
    ]
    # The runner's plan carries the raw form, which parses back to the same steps.
    contract = parsed.job_steps("contract")
    assert [s.checksum for s in parse_steps(list(contract.raw), "x")] == [
        s.checksum for s in contract.steps
    ]


def test_generated_steps_come_before_the_hand_written_ones_of_each_phase() -> None:
    parsed = parse_spec(
        spec(
            expand={"steps": [{"name": "mine", "sql": "CREATE TABLE x (id int)"}]},
            contract={
                "verify": [{"name": "my-check", "query": "SELECT 0", "expect": 0}],
                "steps": [{"name": "my-drop", "sql": "DROP TABLE x"}],
            },
        )
    )
    assert names(parsed.job_steps("expand").steps)[-1] == "mine"
    assert names(parsed.job_steps("contract").steps) == [
        "rename-users-email-in-sync",
        "my-check",
        "rename-users-email-drop-old",
        "my-drop",
    ]


def test_rollback_runs_hand_written_rollback_steps_then_the_generated_undo() -> None:
    parsed = parse_spec(
        spec(rollback={"steps": [{"name": "drop-x", "sql": "DROP TABLE IF EXISTS x"}]})
    )
    assert names(parsed.rollback_steps().steps) == ["drop-x", "undo-rename-users-email"]
    assert len(parsed.rollback_steps().raw) == 2


def test_dialect_is_read_from_spec_database() -> None:
    raw = spec()
    raw["database"]["dialect"] = "sqlite"
    parsed = parse_spec(raw)
    assert parsed.operations.dialect == "sqlite"
    raw["database"]["dialect"] = "mysql"
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.field == "spec.database.dialect"


def test_a_hand_written_step_may_not_take_a_generated_name() -> None:
    raw = spec(expand={"steps": [{"name": "rename-users-email-columns", "sql": "SELECT 1"}]})
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.field == "spec.expand.steps[0].name"
    assert "generated by spec.operations[0].renameColumn" in caught.value.message


def test_a_command_step_cannot_share_its_phase_with_generated_steps() -> None:
    command = {"name": "tool", "command": {"image": "tool:1", "command": ["migrate"]}}
    with pytest.raises(SpecError) as caught:
        parse_spec(spec(expand={"steps": [command]}))
    assert caught.value.field == "spec.expand.steps[0].command"


def test_automatic_approval_of_generated_drops_needs_a_verify() -> None:
    drop_only = spec(operations=[{"dropColumn": {"table": "users", "column": "legacy"}}])
    drop_only["contract"] = {"approval": "Automatic"}
    with pytest.raises(SpecError) as caught:
        parse_spec(drop_only)
    assert caught.value.field == "spec.contract"
    renamed = spec(contract={"approval": "Automatic"})
    assert isinstance(parse_spec(renamed).operations, Planned)  # its own verify is the gate


def test_a_spec_without_operations_is_unchanged() -> None:
    raw = spec(expand={"steps": [{"name": "mine", "sql": "CREATE TABLE x (id int)"}]})
    del raw["operations"]
    parsed = parse_spec(raw)
    assert names(parsed.job_steps("expand").steps) == ["mine"]
    assert parsed.operations == Planned()


def test_plan_shows_the_generated_sql_per_phase_and_the_undo() -> None:
    from datamigration.cli.plan import plan_migration

    document = {
        "apiVersion": "datamigration.dev/v1alpha1",
        "kind": "DataMigration",
        "metadata": {"name": "rename-email"},
        "spec": spec(contract={"approval": "Automatic"}),
    }
    plan = plan_migration(document)
    assert plan.ok, plan.text
    text = plan.text
    assert "SQL generated by spec.operations (1 operation, dialect postgresql):" in text
    expand = text.index("    expand:")
    backfill = text.index("    backfill:")
    contract = text.index("    contract:")
    rollback = text.index("    rollback (the undo, on abort before contract):")
    assert expand < backfill < contract < rollback
    assert text.index('ALTER TABLE "users" ADD COLUMN "email_address" text;') < backfill
    assert text.index('CREATE TRIGGER "dm_sync_users_email_email_address_upd"') < backfill
    assert text.index('ALTER TABLE "users" DROP COLUMN "email";') > contract
    assert text.index('ALTER TABLE "users" DROP COLUMN IF EXISTS "email_address";') > rollback
    # The phase overview counts the generated steps too.
    assert "1. expand (Job rename-email-expand-<attempt>-<uid5>)" in text


def test_add_nullable_column_with_up_fills_old_code_inserts_and_checks_nothing_else() -> None:
    planned = plan_operations(
        [{"addColumn": {"table": "users", "column": "domain", "type": "text", "up": "lower(x)"}}],
        "sqlite",
    )
    (_, fill) = planned.expand
    assert isinstance(fill, SqlStep)
    assert fill.sql.startswith(
        'CREATE TRIGGER "dm_fill_users_domain" AFTER INSERT ON "users"\n'
        '  FOR EACH ROW WHEN NEW."domain" IS NULL\n'
        'BEGIN\n  UPDATE "users" SET "domain" = (lower(x)) WHERE "id" = NEW."id"'
    )
    assert planned.verify == ()  # `up` may legitimately give NULL for a nullable column
    assert sql_of(planned.contract) == [
        ("add-users-domain-finish", 'DROP TRIGGER IF EXISTS "dm_fill_users_domain"')
    ]
    assert sql_of(planned.undo) == [
        (
            "undo-add-users-domain",
            'DROP TRIGGER IF EXISTS "dm_fill_users_domain";\n'
            'ALTER TABLE "users" DROP COLUMN "domain"',
        )
    ]
