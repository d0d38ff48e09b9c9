"""The project's one scrubber: secrets never reach logs, status, Events or the ledger.

Why here, in the pure core: the runner scrubs what it writes (with the database URL it knows), and
the operator scrubs every message it copies from a pod or a Job (log tails, termination messages,
waiting reasons) before it reaches status or an Event. Both use this module, so the rules are the
same everywhere. The runner adds the spellings of its own URL (`runner/redact.py` derives them with
SQLAlchemy, which the pure core may not import); the operator never reads a Secret's value, so it
relies on the safety nets, which remove the userinfo of *any* URL and any `password=...` pair.

A short password can make the scrubber blank unrelated text; that is the price of never leaking it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: What replaces a removed URL or secret.
URL_PLACEHOLDER = "[database URL]"
SECRET_PLACEHOLDER = "***"  # noqa: S105 - the placeholder, not a password

# Safety nets for text we did not anticipate (these are not SQL classification).
_ANY_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/@'\"]+@")
_PASSWORD_PAIR = re.compile(r"(?i)(password\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)")


class Scrubber:
    """Removes the given secret strings, any URL userinfo and any `password=` value from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also scrub these exact strings (longest first, so no fragment survives)."""
        merged = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                placeholder = URL_PLACEHOLDER if "://" in secret else SECRET_PLACEHOLDER
                text = text.replace(secret, placeholder)
        text = _ANY_USERINFO.sub(lambda m: f"{m.group('scheme')}{SECRET_PLACEHOLDER}@", text)
        return _PASSWORD_PAIR.sub(lambda m: f"{m.group(1)}{SECRET_PLACEHOLDER}", text)


_SAFETY_NETS = Scrubber()


def scrub(text: str) -> str:
    """`text` without URL userinfo or `password=` values: for messages copied from pods."""
    return _SAFETY_NETS(text)
