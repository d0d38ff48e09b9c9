"""The one exception the CLI's verbs raise to stop with a message a person can act on.

Why: every failure a user can meet (not found, refused, no kubeconfig, unreachable cluster) must
end as one clear line and an exit code, never a traceback. Verbs raise `CliError`; `main` prints
`error: <message>` (and any hint lines) to stderr and exits with `code`.
"""

from __future__ import annotations

#: Exit codes: 0 ok, 1 failure (not found, refused, lint errors), 2 usage.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Stop the command: `message` is printed as `error: ...`, `hints` as extra lines."""

    def __init__(self, message: str, *hints: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.hints = hints
        self.code = code
