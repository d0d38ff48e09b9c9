"""Database URLs and passwords never reach the output or the ledger; unreachable is exit 6.

The scrubber is tested on its own (every spelling of a URL and its password), on the real
message of a failed connection, and end to end through the runner.
"""

from __future__ import annotations

import pytest
from runner_support import Database, Runner, make_plan
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from datamigration.runner.engine import make_engine
from datamigration.runner.redact import Scrubber, scrub, url_secrets
from localcluster.processes import free_port

PASSWORD = "Sup3r-S3cret_pw"
URL = f"postgresql://app_user:{PASSWORD}@db.internal:5432/app?sslmode=require"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"connecting to {URL} failed", id="the-url"),
        pytest.param(
            f"engine postgresql+psycopg://app_user:{PASSWORD}@db.internal:5432/app?sslmode=require",
            id="as-sqlalchemy-renders-it",
        ),
        pytest.param(f"auth failed for app_user:{PASSWORD}@db.internal", id="userinfo"),
        pytest.param(f"the password is {PASSWORD}.", id="password-alone"),
        pytest.param(f"conninfo: host=db.internal password={PASSWORD} user=x", id="conninfo"),
        pytest.param(f"postgresql://app_user:{PASSWORD}@other-host/db", id="other-host"),
    ],
)
def test_scrubber_removes_url_password_and_userinfo(text: str) -> None:
    cleaned = scrub(text, URL)
    assert PASSWORD not in cleaned
    assert f"app_user:{PASSWORD}" not in cleaned
    assert URL not in cleaned


def test_scrubber_handles_percent_encoded_passwords_and_query_passwords() -> None:
    url = "postgresql://u:p%40ss%3Aw0rd@h/db?password=qp-s3cret"
    cleaned = scrub(f"a p@ss:w0rd b p%40ss%3Aw0rd c qp-s3cret d {url}", url)
    for secret in ("p@ss:w0rd", "p%40ss%3Aw0rd", "qp-s3cret", url):
        assert secret not in cleaned
    assert cleaned.startswith("a *** b *** c *** d")


def test_scrubber_scrubs_any_urls_userinfo_and_keeps_the_rest() -> None:
    text = "see https://admin:hunter2@example.com/x and SELECT 1"
    assert Scrubber()(text) == "see https://***@example.com/x and SELECT 1"
    assert scrub("nothing to hide here", URL) == "nothing to hide here"


def test_url_secrets_longest_first() -> None:
    secrets = url_secrets(URL)
    assert URL in secrets
    assert PASSWORD in secrets
    assert [len(s) for s in secrets] == sorted((len(s) for s in secrets), reverse=True)


def test_the_message_of_a_real_failed_connection_is_scrubbed() -> None:
    url = f"postgresql://app_user:{PASSWORD}@127.0.0.1:{free_port()}/app"
    engine = make_engine(url)
    with pytest.raises(OperationalError) as caught:
        engine.connect()
    engine.dispose()
    # The driver's message, plus what a careless caller might add: the URL object's repr.
    rendered = make_url(url).render_as_string(hide_password=False)
    message = f"{caught.value} / {caught.value!r} / {rendered}"
    cleaned = scrub(message, url)
    assert "connection" in cleaned.lower()
    assert PASSWORD not in cleaned


def test_unreachable_postgresql_is_exit_6_without_secrets(run: Runner) -> None:
    url = f"postgresql://app_user:{PASSWORD}@127.0.0.1:{free_port()}/app"
    outcome = run(url, make_plan({"name": "a", "sql": "SELECT 1"}))
    assert outcome.code == 6, outcome.out
    assert "FAILED exit=6: cannot connect to the database" in outcome.last_line
    assert PASSWORD not in outcome.out
    assert "app_user:" not in outcome.out


def test_missing_sqlite_file_is_exit_6(run: Runner, tmp_path: object) -> None:
    outcome = run(f"sqlite:///{tmp_path}/nope.db", make_plan({"name": "a", "sql": "SELECT 1"}))
    assert outcome.code == 6
    assert "does not exist" in outcome.last_line


def test_unsupported_url_is_exit_2_without_the_url(run: Runner) -> None:
    outcome = run(f"mysql://root:{PASSWORD}@db/app", make_plan())
    assert outcome.code == 2
    assert "unsupported database URL scheme 'mysql'" in outcome.last_line
    assert PASSWORD not in outcome.out


@pytest.mark.pg
def test_wrong_password_is_exit_6_without_either_password(pg_url: str, run: Runner) -> None:
    right = make_url(pg_url)
    wrong = right.set(password="Wr0ng-Passw0rd")
    outcome = run(wrong.render_as_string(hide_password=False), make_plan())
    assert outcome.code == 6, outcome.out
    assert "password authentication failed" in outcome.last_line
    assert "Wr0ng-Passw0rd" not in outcome.out
    assert str(right.password) not in outcome.out


@pytest.mark.pg
def test_a_step_error_quoting_the_password_is_scrubbed_in_log_and_ledger(
    pg_url: str, run: Runner
) -> None:
    password = str(make_url(pg_url).password)
    step = {"name": "leaky", "sql": f'SELECT * FROM "{password}"'}
    outcome = run(pg_url, make_plan(step))
    assert outcome.code == 7
    assert 'relation "***" does not exist' in outcome.last_line
    assert password not in outcome.out
    error = Database(pg_url).ledger()["leaky"]["error"]
    assert "***" in error
    assert password not in error
