"""Proof from the database's side: no session of the old code is connected.

Why: the rollout gate sees pods; it cannot see old code Kubernetes does not run (a VM, a laptop, a
CronJob in another namespace). The database sees every session. Right before each destructive
contract step (with the rollout re-check, `run_phase(before_destructive=...)`), the runner looks
at `pg_stat_activity` of its own database, excluding its own sessions (application_name
`datamigration-runner`), for sessions whose `application_name` matches the configured pattern (of
the old version; and of `role`, when set), and, with `olderThan`, any session of `role` that
started before the rollout was proven. If one is found the step does not run: exit 10
(`OldSessionsConnected`) naming each session by pid, application_name, client address and
backend start. Never the `query` column: it may hold data or secrets.

PostgreSQL only (SQLite has no sessions); the pattern is a PostgreSQL regular expression (`~`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from datamigration.runner.errors import OldSessionsConnected
from datamigration.runner.plan import SessionsGate

log = logging.getLogger(__name__)

#: At most this many sessions named in the message (the count is always given).
NAMED_SESSIONS = 5
RUNNER_APPLICATION_NAME = "datamigration-runner"

_QUERY = text(
    """
    SELECT pid, application_name, client_addr::text AS client_addr, backend_start, usename
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND application_name <> :runner
      AND (
        (application_name ~ :pattern AND (CAST(:role AS text) IS NULL OR usename = :role))
        OR (CAST(:older_than AS timestamptz) IS NOT NULL AND usename = :role
            AND backend_start < CAST(:older_than AS timestamptz))
      )
    ORDER BY backend_start, pid
    """
)


def old_sessions(engine: Engine, gate: SessionsGate) -> list[dict[str, Any]]:
    """The sessions that block, oldest first (pid, application_name, client_addr,
    backend_start, usename): never a query text."""
    with engine.connect() as conn:
        rows = conn.execute(
            _QUERY,
            {
                "runner": RUNNER_APPLICATION_NAME,
                "pattern": gate.application_name_pattern,
                "role": gate.role,
                "older_than": gate.older_than,
            },
        ).mappings()
        return [dict(row) for row in rows]


def describe(session: dict[str, Any]) -> str:
    started = session["backend_start"]
    when = started.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(started, "strftime") else started
    return (
        f"pid {session['pid']} application_name {session['application_name'] or '(empty)'!r} "
        f"client {session['client_addr'] or 'local socket'} since {when}"
    )


def check_sessions(engine: Engine, gate: SessionsGate) -> None:
    """Raise `OldSessionsConnected` naming the sessions of the old code, if any."""
    found = old_sessions(engine, gate)
    if not found:
        log.info("database sessions: none of the old code (%s)", gate.application_name_pattern)
        return
    named = "; ".join(describe(s) for s in found[:NAMED_SESSIONS])
    more = f" (and {len(found) - NAMED_SESSIONS} more)" if len(found) > NAMED_SESSIONS else ""
    raise OldSessionsConnected(
        f"the destructive step was not run: {len(found)} database session(s) of the old code "
        f"are connected (spec.contract.databaseSessions): {named}{more}"
    )


def before_destructive(engine: Engine, gate: SessionsGate | None) -> Callable[[], None] | None:
    """The sessions check for `run_phase(before_destructive=...)`, or None without a gate."""
    if gate is None:
        return None
    if engine.dialect.name != "postgresql":
        log.warning(
            "databaseSessions applies to PostgreSQL only; not checked on %s", engine.dialect.name
        )
        return None
    return lambda: check_sessions(engine, gate)


def both(*checks: Callable[[], None] | None) -> Callable[[], None] | None:
    """Every given check, in order (None when there is none)."""
    present = [c for c in checks if c is not None]
    if not present:
        return None

    def run_all() -> None:
        for check in present:
            check()

    return run_all
