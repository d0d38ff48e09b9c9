"""The lint's catalogue: every rule, its verdict per phase, why, and the safe recipe.

The phases: while `expand` and `backfill` run, the *old* application version is still serving
traffic, so those phases may only add (tables, nullable columns, indexes built concurrently,
data in batches), and may not take long ACCESS EXCLUSIVE locks or rewrite a table. Removing or
renaming anything belongs to `contract`, after the new version has rolled out. Lock and rewrite
hazards still matter in `contract` (the new code is serving then): there they are warnings, so a
reviewer sees them in `plan` and can split the step, and the runner's lock timeout bounds how
long application queries can queue behind them (see docs/lint.md, "Why some rules only warn").

Each rule has a stable kebab-case id (other code, docs and users' `lint.allow` lists name it), a
severity for `expand`/`backfill` and one for `contract` (`None`: not reported there), a reason,
a recipe, and the peer rules it covers (`squawk:...`, `strong_migrations:...`, `eugene:E..`,
`safe-ecto:...`, `postgresql:...`). The AST analysis that decides which rule a statement breaks
is in `analyze`; `docs/lint.md` is generated from nothing: it is written by hand and a test
checks that it names every rule id here.
"""

from __future__ import annotations

from dataclasses import dataclass

from datamigration.lint.findings import Severity

E, W = Severity.ERROR, Severity.WARNING
_CONTRACT = "Move it to the contract phase, after the new code has rolled out."


@dataclass(frozen=True)
class Rule:
    id: str
    expand: Severity | None  # in expand and backfill
    contract: Severity | None
    reason: str  # why it is dangerous, one sentence
    recipe: str  # what to do instead
    sources: tuple[str, ...] = ()
    allowable: bool = True  # may a step's `lint.allow` name it?

    @property
    def message(self) -> str:
        return f"{self.reason} {self.recipe}"

    def severity(self, phase: str) -> Severity | None:
        # rollback (an abort's undo) runs destructive SQL by design: contract's rules
        return self.contract if phase in ("contract", "rollback") else self.expand


def _r(
    rule_id: str,
    expand: Severity | None,
    contract: Severity | None,
    reason: str,
    recipe: str,
    *sources: str,
    allowable: bool = True,
) -> Rule:
    return Rule(rule_id, expand, contract, reason, recipe, sources, allowable)


_OLD = "breaks the application version still running until code-rollout."
_LOCK = "It holds an ACCESS EXCLUSIVE lock (no reads, no writes) on the table while it"
_ALL = [
    # -- destructive: refused while the old code runs, allowed in contract ----------------------
    _r(
        "drop-table",
        E,
        None,
        f"Dropping a table {_OLD}",
        _CONTRACT,
        "squawk:ban-drop-table",
    ),
    _r(
        "drop-column",
        E,
        None,
        f"Dropping a column {_OLD}",
        f"Stop using it in the new code, then drop it in contract. {_CONTRACT}",
        "squawk:ban-drop-column",
        "strong_migrations:remove_column",
        "safe-ecto:removing-a-column",
    ),
    _r(
        "drop-index",
        E,
        None,
        f"Dropping an index can make the old code's queries slow; it {_OLD}",
        _CONTRACT,
        "postgresql:sql-dropindex",
    ),
    _r("drop-schema", E, None, f"Dropping a schema {_OLD}", _CONTRACT, "postgresql:sql-dropschema"),
    _r("drop-view", E, None, f"Dropping a view {_OLD}", _CONTRACT, "postgresql:sql-dropview"),
    _r("drop-sequence", E, None, f"Dropping a sequence {_OLD}", _CONTRACT, "postgresql:ddl"),
    _r("drop-type", E, None, f"Dropping a type or domain {_OLD}", _CONTRACT, "postgresql:ddl"),
    _r(
        "drop-function",
        E,
        None,
        f"Dropping a function or procedure {_OLD}",
        _CONTRACT,
        "postgresql:sql-dropfunction",
    ),
    _r(
        "drop-database",
        E,
        None,
        f"Dropping a database {_OLD}",
        _CONTRACT,
        "squawk:ban-drop-database",
    ),
    _r(
        "drop-object",
        E,
        None,
        f"Dropping a database object (trigger, policy, role, extension...) {_OLD}",
        _CONTRACT,
        "postgresql:ddl",
    ),
    _r(
        "drop-constraint",
        E,
        None,
        f"Dropping a constraint lets the new code write data the old code must not see; it {_OLD}",
        _CONTRACT,
        "postgresql:sql-altertable",
    ),
    _r(
        "drop-not-null",
        E,
        None,
        f"DROP NOT NULL lets NULLs in that the old code does not expect; it {_OLD}",
        _CONTRACT,
        "squawk:ban-drop-not-null",
    ),
    _r(
        "drop-default",
        E,
        None,
        "DROP DEFAULT (or DROP IDENTITY) makes the old code's inserts, which rely on the "
        f"default, fail or write NULL; it {_OLD}",
        _CONTRACT,
        "postgresql:sql-altertable",
    ),
    _r(
        "rename-table",
        E,
        None,
        f"Renaming or moving a table {_OLD}",
        "Create the new table (or a view with the new name) in expand, switch the code, drop "
        f"the old one in contract. {_CONTRACT}",
        "squawk:renaming-table",
        "strong_migrations:rename_table",
        "safe-ecto:renaming-a-table",
    ),
    _r(
        "rename-column",
        E,
        None,
        f"Renaming a column {_OLD}",
        "Add the new column in expand, backfill it, and drop the old one in contract.",
        "squawk:renaming-column",
        "strong_migrations:rename_column",
        "safe-ecto:renaming-a-column",
    ),
    _r(
        "rename-object",
        E,
        None,
        f"Renaming a schema, view, sequence, type or function {_OLD}",
        _CONTRACT,
        "postgresql:sql-alterview",
    ),
    _r(
        "rename-enum-value",
        E,
        None,
        f"ALTER TYPE ... RENAME VALUE changes a value the old code reads and writes; it {_OLD}",
        "ADD VALUE the new label in expand, migrate the rows, stop using the old one in "
        f"contract. {_CONTRACT}",
        "postgresql:sql-altertype",
    ),
    _r(
        "truncate",
        E,
        None,
        f"TRUNCATE deletes every row and {_OLD}",
        _CONTRACT,
        "postgresql:sql-truncate",
    ),
    _r(
        "truncate-cascade",
        E,
        E,
        "TRUNCATE ... CASCADE also empties every table that references this one, which the "
        "statement does not name.",
        "Name every table to truncate explicitly.",
        "squawk:ban-truncate-cascade",
    ),
    _r(
        "delete-without-where",
        E,
        None,
        f"DELETE without a WHERE (or with one that is always true) deletes every row; it {_OLD}",
        "Give it a real predicate, or move it to the contract phase.",
        "postgresql:sql-delete",
    ),
    _r(
        "merge-delete",
        E,
        None,
        f"MERGE ... THEN DELETE deletes rows the old code still reads; it {_OLD}",
        _CONTRACT,
        "postgresql:sql-merge",
    ),
    _r(
        "detach-partition",
        E,
        None,
        f"DETACH PARTITION removes the partition's rows from the table; it {_OLD}",
        _CONTRACT,
        "postgresql:ddl-partitioning",
    ),
    _r(
        "revoke",
        E,
        None,
        "REVOKE (or a change of owner: OWNER TO, REASSIGN OWNED) takes privileges away from "
        f"the role the old code runs as; it {_OLD}",
        _CONTRACT,
        "postgresql:sql-revoke",
    ),
    # -- dangerous in every phase, refused outside contract, warned in contract -----------------
    _r(
        "alter-role",
        E,
        W,
        "ALTER ROLE (NOLOGIN, a new password, settings) can lock the application out of the "
        "database, old and new code alike.",
        "Manage roles outside schema migrations.",
        "postgresql:sql-alterrole",
    ),
    _r(
        "alter-system",
        E,
        W,
        "ALTER SYSTEM / ALTER DATABASE change settings for every session of every application.",
        "Change server settings outside schema migrations.",
        "postgresql:sql-altersystem",
    ),
    _r(
        "sequence-reset",
        E,
        W,
        "setval() or ALTER SEQUENCE ... RESTART moves a sequence under the running code; its "
        "next inserts can collide with existing keys.",
        "Leave sequences alone while code writes, or do it in contract after checking max(id).",
        "postgresql:functions-sequence",
    ),
    _r(
        "terminate-backend",
        E,
        E,
        "pg_terminate_backend()/pg_cancel_backend() kill other sessions, the application's too.",
        "Do not kill sessions from a migration; the runner's lock timeout and retry handle a "
        "blocking session.",
        "postgresql:functions-admin",
    ),
    _r(
        "side-effect-function",
        E,
        W,
        "This function acts outside the transaction (files, large objects, WAL, replication, "
        "configuration) and cannot be rolled back with the step.",
        "Do it outside the migration.",
        "postgresql:functions-admin",
    ),
    _r(
        "disable-trigger",
        E,
        W,
        "DISABLE TRIGGER (or session_replication_role = replica) switches off triggers the code "
        "relies on, foreign-key checks included.",
        "Keep triggers on; batch the work with a backfill step instead.",
        "postgresql:sql-altertable",
    ),
    _r(
        "row-level-security",
        E,
        W,
        "Enabling, forcing or disabling row level security changes which rows every query of "
        "the running code sees.",
        "Create the policies first and switch RLS in contract, after review.",
        "postgresql:ddl-rowsecurity",
    ),
    _r(
        "create-rule",
        E,
        W,
        "A rewrite RULE silently changes the running code's queries (DO INSTEAD NOTHING drops "
        "its writes).",
        "Use a trigger, or change the code.",
        "postgresql:sql-createrule",
    ),
    _r(
        "timeout-override",
        E,
        W,
        "Setting lock_timeout/statement_timeout (or RESET ALL) in a step switches off the "
        "runner's lock timeout, so application queries can queue behind the migration.",
        "Configure the timeout on the step or in the operator's defaults instead.",
        "squawk:require-timeout-settings",
        "eugene:E9",
        "strong_migrations:lock_timeout",
    ),
    _r(
        "server-side-copy",
        E,
        E,
        "COPY ... PROGRAM runs a shell command on the database server; COPY with a server "
        "file reads or writes the server's disk.",
        "Load data with INSERT or a command step using psql's client-side \\copy.",
        "postgresql:sql-copy",
    ),
    _r(
        "transaction-control",
        E,
        E,
        "BEGIN/COMMIT/ROLLBACK inside a step breaks its all-or-nothing transaction: a failure "
        "after a COMMIT leaves half the step applied.",
        "Remove them; split the work into steps (each step is one transaction).",
        "squawk:transaction-nesting",
        "squawk:ban-uncommitted-transaction",
    ),
    # -- nested and dynamic SQL -----------------------------------------------------------------
    _r(
        "dynamic-sql",
        E,
        W,
        "This runs SQL the lint cannot see (EXECUTE of a built string, a prepared statement "
        "from elsewhere, dblink, query_to_xml, or a function body in a language other than "
        "SQL and PL/pgSQL).",
        "Write the statements out, or opt the step out explicitly with "
        "lint: {allow: [dynamic-sql], reason: ...}.",
        "strong_migrations:execute",
    ),
    _r(
        "unknown-call",
        E,
        W,
        "CALL of a procedure (or a trigger on a function) that this phase did not create runs "
        "code the lint cannot see.",
        "Create the procedure in the same phase (its body is linted), write the statements "
        "out, or opt out with lint: {allow: [unknown-call], reason: ...}.",
        "strong_migrations:execute",
    ),
    # -- locks and rewrites: refused while the old code runs, warned in contract ----------------
    _r(
        "alter-column-type",
        E,
        W,
        f"Changing a column's type breaks the old code and, unless the change is "
        f"binary-coercible, rewrites the table. {_LOCK} does it.",
        "Add a new column in expand, backfill it, switch in contract.",
        "squawk:changing-column-type",
        "strong_migrations:change_column",
        "eugene:E5",
        "safe-ecto:changing-the-type-of-a-column",
    ),
    _r(
        "alter-column-type-unverified",
        W,
        W,
        "This type change is binary-coercible (no rewrite) only if the old type is the same "
        "kind and no wider (varchar(n) to a larger n or text, numeric with more precision, "
        "timestamp with more precision, cidr to inet); the lint cannot see the old type.",
        "Check the current type; if it is not such a widening, use a new column instead.",
        "strong_migrations:change_column",
        "postgresql:sql-altertable",
    ),
    _r(
        "set-not-null",
        E,
        W,
        f"SET NOT NULL rejects the old code's NULL writes and scans the table. {_LOCK} scans.",
        "In contract: ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a "
        "later step; SET NOT NULL then skips the scan.",
        "eugene:E2",
        "strong_migrations:change_column_null",
        "safe-ecto:setting-not-null-on-an-existing-column",
    ),
    _r(
        "add-column-not-null-without-default",
        E,
        E,
        "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table with rows and rejects the "
        "old code's inserts.",
        "Add it nullable (or with a constant DEFAULT), backfill, then constrain.",
        "squawk:adding-required-field",
        "squawk:adding-not-nullable-field",
    ),
    _r(
        "add-column-volatile-default",
        E,
        W,
        f"A volatile DEFAULT (any function not known immutable or stable), a serial or an "
        f"identity column fills every existing row: the table is rewritten. {_LOCK} rewrites.",
        "Add the column without it (or with a constant), backfill the values, then set the "
        "default.",
        "squawk:adding-field-with-default",
        "squawk:adding-serial-primary-key-field",
        "strong_migrations:add_column_default",
        "strong_migrations:add_column_auto_incrementing",
        "eugene:E11",
        "safe-ecto:adding-a-column-with-a-default-value",
    ),
    _r(
        "add-column-generated-stored",
        E,
        W,
        f"ADD COLUMN ... GENERATED ALWAYS AS (...) STORED computes every row: the table is "
        f"rewritten. {_LOCK} rewrites.",
        "Add a plain column, backfill it, and keep it up to date with a trigger.",
        "strong_migrations:add_column_generated_stored",
        "eugene:E11",
    ),
    _r(
        "prefer-jsonb",
        E,
        W,
        "A json column has no equality operator: SELECT DISTINCT, UNION and GROUP BY on "
        "queries that include it break.",
        "Use jsonb.",
        "eugene:E3",
        "strong_migrations:add_column_json",
        "safe-ecto:adding-a-json-column",
    ),
    _r(
        "create-index-not-concurrently",
        E,
        W,
        "CREATE INDEX without CONCURRENTLY blocks every write to the table while it builds.",
        "Use CREATE INDEX CONCURRENTLY in a step of its own with transactional: false.",
        "squawk:require-concurrent-index-creation",
        "strong_migrations:add_index",
        "eugene:E6",
        "safe-ecto:adding-an-index",
    ),
    _r(
        "drop-index-not-concurrently",
        None,
        W,
        "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table.",
        "Use DROP INDEX CONCURRENTLY in a step of its own with transactional: false.",
        "squawk:require-concurrent-index-deletion",
    ),
    _r(
        "reindex-not-concurrently",
        E,
        W,
        "REINDEX without CONCURRENTLY blocks writes to the table (and reads that use the "
        "index) while it rebuilds.",
        "Use REINDEX (CONCURRENTLY) in a step of its own with transactional: false.",
        "postgresql:sql-reindex",
    ),
    _r(
        "add-constraint-validating",
        E,
        W,
        "Adding a FOREIGN KEY or CHECK (also inline REFERENCES or CHECK on ADD COLUMN) "
        "validates every row under a lock that blocks writes.",
        "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later step.",
        "squawk:adding-foreign-key-constraint",
        "squawk:constraint-missing-not-valid",
        "strong_migrations:add_foreign_key",
        "strong_migrations:add_reference",
        "strong_migrations:add_check_constraint",
        "eugene:E1",
        "safe-ecto:adding-a-reference-or-foreign-key",
        "safe-ecto:adding-a-check-constraint",
    ),
    _r(
        "validate-in-same-transaction",
        E,
        W,
        "VALIDATE CONSTRAINT in the same transaction as its NOT VALID add keeps the add's "
        "lock for the whole validation scan, which is what NOT VALID was meant to avoid.",
        "Put the VALIDATE CONSTRAINT in a later step.",
        "squawk:constraint-missing-not-valid",
        "strong_migrations:add_check_constraint",
    ),
    _r(
        "add-unique-constraint-locking",
        E,
        W,
        "Adding a UNIQUE or PRIMARY KEY constraint (also inline on ADD COLUMN) builds its index "
        "under an ACCESS EXCLUSIVE lock.",
        "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... UNIQUE USING INDEX.",
        "squawk:disallowed-unique-constraint",
        "squawk:adding-primary-key-constraint",
        "strong_migrations:add_unique_constraint",
        "eugene:E7",
    ),
    _r(
        "primary-key-using-index",
        W,
        W,
        "ADD PRIMARY KEY USING INDEX also sets its columns NOT NULL, which scans the table "
        "under an ACCESS EXCLUSIVE lock unless they already are.",
        "Make the columns NOT NULL first (validated CHECK, then SET NOT NULL).",
        "eugene:W14",
    ),
    _r(
        "add-exclusion-constraint",
        E,
        W,
        "Adding an EXCLUDE constraint builds its index and checks every row under an ACCESS "
        "EXCLUSIVE lock; there is no concurrent way.",
        "Add it on a new table, or accept the lock in contract.",
        "eugene:E8",
        "strong_migrations:add_exclusion_constraint",
    ),
    _r(
        "domain-check-constraint",
        E,
        W,
        "A CHECK on a domain (CREATE DOMAIN ... CHECK, ALTER DOMAIN ADD CONSTRAINT or SET NOT "
        "NULL) is checked against every column of that domain, under lock, and cannot be "
        "changed online later.",
        "Put CHECK constraints on the tables (NOT VALID, then VALIDATE).",
        "squawk:ban-create-domain-with-constraint",
        "squawk:ban-alter-domain-with-add-constraint",
    ),
    _r(
        "set-logged-unlogged",
        E,
        W,
        f"SET LOGGED / SET UNLOGGED rewrites the table. {_LOCK} rewrites.",
        "Create a new table with the persistence you want and copy in batches.",
        "postgresql:sql-altertable",
    ),
    _r(
        "set-tablespace",
        E,
        W,
        f"SET TABLESPACE copies the whole table or index. {_LOCK} copies.",
        "Move it outside the migration, with a tool such as pg_repack.",
        "postgresql:sql-altertable",
    ),
    _r(
        "set-access-method",
        E,
        W,
        f"SET ACCESS METHOD rewrites the table. {_LOCK} rewrites.",
        "Create a new table and copy in batches.",
        "postgresql:sql-altertable",
    ),
    _r(
        "vacuum-full",
        E,
        W,
        f"VACUUM FULL rewrites the table. {_LOCK} rewrites.",
        "Use plain VACUUM, or pg_repack outside the migration.",
        "postgresql:sql-vacuum",
    ),
    _r(
        "cluster",
        E,
        W,
        f"CLUSTER rewrites the table in index order. {_LOCK} rewrites.",
        "Use pg_repack outside the migration.",
        "postgresql:sql-cluster",
    ),
    _r(
        "lock-table",
        E,
        W,
        "LOCK TABLE in SHARE mode or stronger blocks the running code's writes (ACCESS "
        "EXCLUSIVE, the default, its reads too) until the step commits.",
        "Do not lock explicitly; rely on the statements' own locks and the lock timeout.",
        "postgresql:explicit-locking",
    ),
    _r(
        "refresh-matview-blocking",
        E,
        W,
        "REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks every read of the view while it "
        "runs.",
        "Use REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view).",
        "postgresql:sql-refreshmaterializedview",
    ),
    _r(
        "update-without-where",
        E,
        W,
        "UPDATE without a WHERE (or with one that is always true) rewrites every row in one "
        "transaction and locks them all until it commits.",
        "Use a backfill step (batched, resumable).",
        "strong_migrations:backfilling_data",
        "safe-ecto:backfilling-data",
    ),
    _r(
        "access-exclusive-then-more",
        W,
        W,
        "A statement in this transaction took an ACCESS EXCLUSIVE lock on an existing table; "
        "the statements after it keep that lock held, blocking the table.",
        "Put the locking statement last, or in a step of its own.",
        "eugene:E4",
    ),
    # -- step shape -------------------------------------------------------------------------------
    _r(
        "concurrently-in-transaction",
        E,
        E,
        "CONCURRENTLY cannot run inside a transaction block, and a transactional step is one.",
        "Put the statement in a step of its own with transactional: false.",
        "squawk:ban-concurrent-index-creation-in-transaction",
        allowable=False,
    ),
    _r(
        "non-transactional-not-alone",
        E,
        E,
        "A step with transactional: false runs its statements one by one without a "
        "transaction: a failure leaves the first ones applied.",
        "Give each non-transactional statement (CONCURRENTLY, VACUUM) a step of its own.",
        "postgresql:sql-createindex",
        allowable=False,
    ),
    _r(
        "prefer-robust-stmts",
        W,
        W,
        "A non-transactional step is retried after a failure; without IF [NOT] EXISTS the "
        "retry fails if the first attempt got far enough.",
        "Write CREATE INDEX CONCURRENTLY IF NOT EXISTS / DROP INDEX CONCURRENTLY IF EXISTS.",
        "squawk:prefer-robust-stmts",
    ),
    # -- schema style (peers' best practices): warnings only ------------------------------------
    _r(
        "prefer-bigint",
        W,
        W,
        "A 32- or 16-bit integer key runs out; changing it later rewrites the table.",
        "Use bigint.",
        "squawk:prefer-bigint-over-int",
        "squawk:prefer-bigint-over-smallint",
        "squawk:prefer-big-int",
    ),
    _r(
        "prefer-identity",
        W,
        W,
        "serial columns make ownership and permissions of their sequence awkward.",
        "Use bigint GENERATED BY DEFAULT AS IDENTITY.",
        "squawk:prefer-identity",
    ),
    _r(
        "prefer-text-field",
        W,
        W,
        "Changing a varchar(n) limit later may need an ACCESS EXCLUSIVE lock.",
        "Use text with a CHECK (length(col) <= n) constraint.",
        "squawk:prefer-text-field",
    ),
    _r(
        "prefer-timestamptz",
        W,
        W,
        "timestamp without time zone loses the offset; converting later rewrites the table.",
        "Use timestamptz.",
        "squawk:prefer-timestamptz",
    ),
    _r(
        "ban-char-field",
        W,
        W,
        "char(n) pads with spaces and is never faster than text.",
        "Use text (or varchar).",
        "squawk:ban-char-field",
    ),
    _r(
        "index-too-many-columns",
        W,
        W,
        "A non-unique index on more than three columns is rarely used past its first columns "
        "and slows every write.",
        "Index at most three columns (the selective ones first).",
        "strong_migrations:index_columns",
    ),
    _r(
        "create-enum",
        W,
        W,
        "Enum values cannot be removed or reordered online later.",
        "Consider a text column with a CHECK, or a lookup table.",
        "eugene:W13",
    ),
    # -- the spec itself ------------------------------------------------------------------------
    _r(
        "unparseable-sql",
        E,
        E,
        "PostgreSQL's parser rejects this SQL.",
        "Fix the syntax (the lint checks PostgreSQL SQL).",
        "postgresql:sql-commands",
    ),
    _r(
        "invalid-expression",
        E,
        E,
        "A backfill `set` value must be one SQL expression and `where` one condition, with no "
        "statement separators or subquery tricks.",
        "Write a single expression.",
        allowable=False,
    ),
    _r(
        "side-effect-in-check",
        E,
        E,
        "A verify query, a backfill `set` value or its `where` calls a function with side effects "
        "(sequences, sessions, advisory locks, configuration, files): a check or a row transform "
        "must change nothing else. In contract the verify queries share the destructive step's "
        "transaction, which cannot be READ ONLY, so this is refused in every phase.",
        "Compute the value without the function, or do that work in a sql step.",
        "postgresql:functions-admin",
        allowable=False,
    ),
    _r(
        "verify-not-read-only",
        E,
        E,
        "A verify step is a check: its query must be a single SELECT that changes nothing.",
        "Move changes to a sql step.",
        allowable=False,
    ),
    _r(
        "invalid-spec",
        E,
        E,
        "The DataMigration does not match the step format.",
        "Fix the field named above.",
        allowable=False,
    ),
]
RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}
#: The rule ids a step's `lint.allow` may name (the CRD's enum lists exactly these).
ALLOWABLE_RULE_IDS: tuple[str, ...] = tuple(rule.id for rule in _ALL if rule.allowable)
