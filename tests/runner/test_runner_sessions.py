"""The database-side proof (`databaseSessions`, runner/sessions.py) against a real PostgreSQL.

An open session whose application_name is the old version's keeps the contract's destructive step
from running (exit 10), and the message lists the session (pid, application_name, client, backend
start) but never its query; once it disconnects, the step runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from runner_support import Database, Runner, make_plan
from sqlalchemy.engine import make_url

from datamigration.runner.errors import ExitCode

pytestmark = pytest.mark.pg

DROP = {"name": "drop-old", "sql": "ALTER TABLE items DROP COLUMN old_name"}
SECRET_QUERY = "SELECT 'the-customer-secret' AS s"


@pytest.fixture
def pgdb(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.close()


def libpq(url: str, application_name: str) -> psycopg.Connection[tuple[object, ...]]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
        application_name=application_name, autocommit=True,
    )  # fmt: skip


def test_an_old_session_blocks_the_destructive_step_until_it_disconnects(
    pg_url: str, pgdb: Database, run: Runner
) -> None:
    pgdb.script("CREATE TABLE items (id int PRIMARY KEY, old_name text)")
    plan = make_plan(
        DROP,
        phase="contract",
        databaseSessions={"applicationNamePattern": r"shop-api:1\.", "role": None},
    )
    old = libpq(pg_url, "shop-api:1.0 pod shop-api-7c9f-x2")
    new = libpq(pg_url, "shop-api:2.0 pod shop-api-5d8b-q1")
    try:
        old.execute(SECRET_QUERY)  # its last query stays in pg_stat_activity.query
        pid = old.info.backend_pid
        outcome = run(pg_url, plan)
        assert outcome.code == ExitCode.OLD_SESSIONS == 10, outcome.out
        assert f"pid {pid} application_name 'shop-api:1.0 pod shop-api-7c9f-x2'" in outcome.out
        assert "client 127.0.0.1" in outcome.out and " since " in outcome.out
        assert "the-customer-secret" not in outcome.out
        assert "shop-api:2.0" not in outcome.out  # a session of the new code does not block
        assert (
            pgdb.scalar(
                "SELECT count(*) FROM information_schema.columns WHERE column_name = 'old_name'"
            )
            == 1
        )
    finally:
        old.close()
    try:
        outcome = run(pg_url, plan)
        assert outcome.code == 0, outcome.out
        assert (
            pgdb.scalar(
                "SELECT count(*) FROM information_schema.columns WHERE column_name = 'old_name'"
            )
            == 0
        )
    finally:
        new.close()


def test_sessions_of_the_role_older_than_the_proof_block(
    pg_url: str, pgdb: Database, run: Runner
) -> None:
    pgdb.script("CREATE TABLE items (id int PRIMARY KEY, old_name text)")
    role = make_url(pg_url).username
    anonymous = libpq(pg_url, "")  # no application_name: only its age gives it away
    try:
        plan = make_plan(
            DROP,
            phase="contract",
            databaseSessions={
                "applicationNamePattern": "^never-matches$",
                "role": role,
                "olderThan": "2999-01-01T00:00:00Z",
            },
        )
        outcome = run(pg_url, plan)
        assert outcome.code == ExitCode.OLD_SESSIONS, outcome.out
        assert f"pid {anonymous.info.backend_pid} application_name '(empty)'" in outcome.out
    finally:
        anonymous.close()
