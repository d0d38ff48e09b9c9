"""Typed operations on the local cluster and a real PostgreSQL, with the operator running.

Acceptance of issue 11:
- examples/05 (renameColumn) and 06 (changeColumnType with up/down) applied as written, while an
  old-code writer (its own connection, paced at 50 writes/s, inserting and updating the OLD column
  only) runs from the end of expand through backfill and code-rollout, until no pod of the old
  code is left. The migration reaches Succeeded with no manual step. A PostgreSQL event trigger
  records the moment of the DROP of the old column (and, at the start of that ALTER TABLE, how many
  rows differ); at that moment no row differs, and every value the writer wrote is in the new
  column of the final table.
- abort after backfill: the rollback Job takes the table back to exactly its shape before expand
  (columns, constraints, indexes, triggers, functions: `tests/catalog_support.py`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from support import REPO, Kube, OperatorProcess, eventually, load_documents

from catalog_support import table_shape
from datamigration.k8s.client import migration_path

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
OLD_IMAGE = "registry.example/shop-api:1.0"
RATE = 50.0  # writes per second of the old code


@dataclass(frozen=True)
class Case:
    """One example: its table, the old code's writes, and how to read the new column."""

    directory: str
    table: str
    insert: str  # :v -> RETURNING id
    update: str  # :v, :id
    value: Callable[[int], Any]  # the n-th value old code writes to the old column
    new_value: Callable[[Any], Any]  # what the new column must hold for it
    new_column: str
    differs: str  # a row where old and new differ (the operation's own verify condition)


CASES = {
    "05-rename-with-sync": Case(
        "05-rename-with-sync",
        "users",
        "INSERT INTO users (email) VALUES (:v) RETURNING id",
        "UPDATE users SET email = :v WHERE id = :id",
        lambda n: f"old{n}@example.com",
        lambda v: v,
        "email_address",
        "email_address IS DISTINCT FROM email",
    ),
    "06-change-column-type": Case(
        "06-change-column-type",
        "orders",
        "INSERT INTO orders (total) VALUES (:v) RETURNING id",
        "UPDATE orders SET total = :v WHERE id = :id",
        lambda n: Decimal(n) + Decimal("0.25"),
        lambda v: int(v * 100),
        "total_cents",
        "NOT ((total_cents IS NOT DISTINCT FROM (round(total * 100)::bigint)) "
        "OR (total IS NOT DISTINCT FROM (total_cents / 100.0)))",
    ),
}


def drop_log(case: Case) -> str:
    """Event triggers: at the start of an ALTER TABLE that drops a column, the time and the rows
    that differ (writes are blocked by then: the contract dropped the sync triggers first, in the
    same transaction); on sql_drop, the time and what was dropped."""
    return f"""
CREATE TABLE drop_check (at timestamptz NOT NULL, differing bigint NOT NULL);
CREATE TABLE drop_done (at timestamptz NOT NULL, kind text NOT NULL, identity text NOT NULL);
CREATE FUNCTION log_drop_check() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() ~* 'DROP COLUMN' THEN
    INSERT INTO drop_check
      SELECT clock_timestamp(), count(*) FROM {case.table} WHERE {case.differs};
  END IF;
END $$;
CREATE FUNCTION log_drop_done() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO drop_done SELECT clock_timestamp(), object_type, object_identity
    FROM pg_event_trigger_dropped_objects();
END $$;
CREATE EVENT TRIGGER log_drop_check ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION log_drop_check();
CREATE EVENT TRIGGER log_drop_done ON sql_drop EXECUTE FUNCTION log_drop_done();
"""


@dataclass
class OldCodeWriter:
    """The old code: writes the old column only, paced, on its own connection, and logs every
    write (id, value, time). Stops at `stop()` or at its first error (recorded)."""

    url: str
    case: Case
    first_ids: list[int]
    written: dict[int, Any] = field(default_factory=dict)  # id -> last value written
    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> OldCodeWriter:
        self._thread = threading.Thread(target=self._run, name="old-code-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        assert self._thread is not None
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the writer did not stop"

    def _run(self) -> None:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        ids = list(self.first_ids)
        next_at = time.monotonic()
        try:
            with engine.connect() as conn:
                n = 0
                while not self._halt.is_set():
                    n += 1
                    value = self.case.value(n)
                    if n % 2:  # an insert, then an update of an earlier row, and so on
                        row = conn.execute(sa.text(self.case.insert), {"v": value}).scalar_one()
                        ids.append(int(row))
                    else:
                        row = ids[(n * 7919) % len(ids)]
                        conn.execute(sa.text(self.case.update), {"v": value, "id": row})
                    self.written[int(row)] = value
                    self.times.append(time.time())
                    next_at += 1 / RATE
                    self._halt.wait(max(0.0, next_at - time.monotonic()))  # the pace
        except Exception as exc:
            self.errors.append(f"write {len(self.times) + 1}: {exc}")
        finally:
            engine.dispose()


def setup_example(kube: Kube, namespace: str, pg_url: str, example: str) -> sa.Engine:
    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.exec_driver_sql((REPO / "examples" / example / "setup.sql").read_text())
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "stringData": {"url": pg_url.replace("postgresql+psycopg://", "postgresql://", 1)},
        }
    )
    for doc in load_documents(REPO / "examples" / "app" / "shop-api.yaml"):
        doc["metadata"]["namespace"] = namespace
        kube.apply(doc)
    eventually(
        lambda: len(kube.pods(namespace, "app=shop-api")) == 3,
        timeout=60,
        what="3 shop-api pods of the old code",
    )
    return engine


def migration_of(example: str, namespace: str) -> dict[str, Any]:
    (doc,) = load_documents(REPO / "examples" / example / "datamigration.yaml")
    doc["metadata"]["namespace"] = namespace
    return doc


def status_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    status = kube.migration(namespace, name).get("status", {})
    if status.get("phase") in ("Failed", "Invalid"):
        raise AssertionError(f"{name}: {status.get('phase')}: {status.get('message')}")
    return dict(status)


def old_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return [
        p
        for p in kube.pods(namespace, "app=shop-api")
        if p["spec"]["containers"][0]["image"] == OLD_IMAGE
    ]


@pytest.mark.parametrize("example", sorted(CASES))
def test_old_code_writes_through_the_window_and_none_is_lost(
    example: str, kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    case = CASES[example]
    engine = setup_example(kube, namespace, pg_url, example)
    with engine.begin() as c:
        c.exec_driver_sql(drop_log(case))
        first_ids = [int(r[0]) for r in c.execute(sa.text(f"SELECT id FROM {case.table}"))]
    migration = migration_of(example, namespace)
    name = migration["metadata"]["name"]
    kube.apply(migration)

    def phase_state(phase: str) -> str:
        return str(status_of(kube, namespace, name).get("phases", {}).get(phase, {}).get("state"))

    eventually(
        lambda: phase_state("expand") == "Succeeded",
        timeout=180,
        what="expand Succeeded",
        interval=0.05,
    )
    writer = OldCodeWriter(pg_url, case, first_ids).start()
    seen: set[str] = set()

    def old_code_gone() -> bool:
        seen.add(str(status_of(kube, namespace, name).get("phase")))
        return not writer.errors and not old_pods(kube, namespace)

    try:
        eventually(old_code_gone, timeout=240, what="no pod of the old code left", interval=0.1)
    finally:
        writer.stop()
    assert writer.errors == [], writer.errors
    assert "RollingOut" in seen, seen  # the writer wrote while the new code rolled out

    eventually(
        lambda: status_of(kube, namespace, name).get("phase") == "Succeeded",
        timeout=240,
        what=f"{name} Succeeded",
    )
    status = status_of(kube, namespace, name)
    backfill_done = status["phases"]["backfill"]["finishedAt"]
    with engine.connect() as c:
        checks = c.execute(sa.text("SELECT at, differing FROM drop_check ORDER BY at")).all()
        dropped = c.execute(
            sa.text("SELECT at, identity FROM drop_done WHERE kind = 'table column'")
        ).all()
        final_rows = dict(
            (r[0], r[1])
            for r in c.execute(sa.text(f"SELECT id, {case.new_column} FROM {case.table}"))
        )
    # One DROP of a column: the old one; at the start of its ALTER TABLE no row differed.
    assert [row.identity.split(".")[-1] for row in dropped] == [
        "email" if case.table == "users" else "total"
    ], dropped
    assert checks and all(row.differing == 0 for row in checks), checks
    drop_at = dropped[0].at.timestamp()
    assert max(writer.times) < drop_at  # old code wrote until before the DROP ...
    # ... from before the backfill finished (its finishedAt has second precision)
    assert (
        min(writer.times)
        < datetime.fromisoformat(backfill_done.replace("Z", "+00:00")).timestamp() + 1
    )
    # ... and not one of its writes is lost: the new column holds each last value written.
    lost = {
        row: value
        for row, value in writer.written.items()
        if final_rows.get(row) != case.new_value(value)
    }
    assert len(writer.written) >= 20 and lost == {}, lost
    print(
        f"{example}: {len(writer.times)} writes of the old code over "
        f"{max(writer.times) - min(writer.times):.1f}s, phases seen {sorted(seen)}, DROP at "
        f"{dropped[0].at:%H:%M:%S.%f}, last old write {drop_at - max(writer.times):.3f}s before it"
    )


def test_abort_after_backfill_leaves_the_schema_exactly_as_before(
    kube: Kube, namespace: str, operator: OperatorProcess, pg_url: str
) -> None:
    example = "05-rename-with-sync"
    engine = setup_example(kube, namespace, pg_url, example)
    with engine.connect() as c:
        before = table_shape(c, "users")
        emails_before = {r[0]: r[1] for r in c.execute(sa.text("SELECT id, email FROM users"))}
    migration = migration_of(example, namespace)
    # Observe mode, and no rollout happens: the migration waits in code-rollout after backfill.
    migration["spec"]["codeRollout"] = {"mode": "Observe", "timeoutSeconds": 600}
    name = migration["metadata"]["name"]
    kube.apply(migration)
    eventually(
        lambda: status_of(kube, namespace, name).get("phase") == "RollingOut",
        timeout=180,
        what="backfill done, waiting for the rollout",
    )
    with engine.connect() as c:
        assert table_shape(c, "users") != before  # the new column and the triggers are there

    kube.client.merge_patch(migration_path(namespace, name), {"spec": {"abort": True}})
    eventually(
        lambda: kube.migration(namespace, name).get("status", {}).get("phase") == "Aborted",
        timeout=180,
        what=f"{name} Aborted after its rollback",
    )
    status = kube.migration(namespace, name)["status"]
    rollback = status["phases"]["rollback"]
    assert rollback["state"] == "Succeeded" and rollback["undone"] == ["undo-rename-users-email"]
    assert "rolled back" in status["message"]
    eventually(
        lambda: any("RolledBack" in e for e in kube.events(namespace, name)),
        timeout=30,
        what="the RolledBack Event",
    )
    assert not any(
        j["metadata"]["labels"]["datamigration.dev/phase"] == "contract"
        for j in kube.jobs(namespace)
    )
    with engine.connect() as c:
        assert table_shape(c, "users") == before
        assert {r[0]: r[1] for r in c.execute(sa.text("SELECT id, email FROM users"))} == (
            emails_before
        )
