"""Secret scrubbing in the runner: the database URL, its password and its userinfo never leave it.

The rules and the safety nets are the project's one scrubber, `datamigration.core.redact`; this
module adds what only the runner can do: derive every spelling of the URL it was given.

Why: the runner's log is read with `kubectl logs` and its last lines become the Job's failure
message on the DataMigration; the ledger's `error` column is readable by anyone with SELECT on
the database. Drivers and SQLAlchemy put connection details into exception text, so every piece
of text that leaves the process (log records, the final line, ledger errors) goes through a
`Scrubber` built from the URL(s) in use.

What is removed: the URL itself in any spelling we can derive (as given, as SQLAlchemy renders it,
with the password percent-encoded or decoded), its `user:password@` userinfo, the password alone
wherever it appears, and, as a safety net, the userinfo of *any* URL and any `password=...` pair.
A short password can make the scrubber blank unrelated text; that is the price of never leaking it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from datamigration.core import redact
from datamigration.core.redact import SECRET_PLACEHOLDER, URL_PLACEHOLDER

__all__ = ["SECRET_PLACEHOLDER", "URL_PLACEHOLDER", "Scrubber", "scrub", "url_secrets"]


def url_secrets(url: str) -> list[str]:
    """Every string derived from `url` that must not appear in output, longest first."""
    found: set[str] = set()
    if not url:
        return []
    found.add(url)
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
        query_passwords = parse_qs(parts.query).get("password", [])
    except ValueError:
        username, password, query_passwords = None, None, []
    # The userinfo as written in the URL (may be percent-encoded).
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo + "@")
        raw_password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
        if raw_password:
            found.update({raw_password, unquote(raw_password)})
    for secret in [password, *query_passwords]:
        if secret:
            found.update({secret, unquote(secret), quote(secret, safe=""), quote(secret)})
    if username and password:
        found.add(f"{username}:{password}@")
    try:
        # SQLAlchemy's own rendering (e.g. after we mapped postgresql:// to postgresql+psycopg://).
        rendered = make_url(url)
        found.add(rendered.render_as_string(hide_password=False))
        found.add(rendered.render_as_string(hide_password=True))
        if rendered.password:
            found.add(str(rendered.password))
    except (ArgumentError, ValueError):
        pass  # an unparseable URL has no other spellings to add
    return sorted((s for s in found if s), key=len, reverse=True)


class Scrubber(redact.Scrubber):
    """Removes the secrets of the given URLs (and any URL userinfo) from text."""

    def __init__(self, urls: Iterable[str] = ()) -> None:
        super().__init__()
        for url in urls:
            self.add_url(url)

    def add_url(self, url: str) -> None:
        """Also scrub everything derived from `url`."""
        self.add(url_secrets(url))


def scrub(text: str, *urls: str) -> str:
    """`text` without the URLs, their passwords and userinfo (one-shot form of `Scrubber`)."""
    return Scrubber(urls)(text)
