"""The SQL safety lint, shared by the operator (admission of a DataMigration), the runner (log
lines) and the CLI (`kubectl-datamigration lint FILE`).

Steps of `expand` and `backfill` run while the old application version still serves traffic, so
they must not destroy or rename anything; `contract` may. Statements are classified on
PostgreSQL's own parse tree (pglast), never with regular expressions. See `rules` for the
catalogue and `check` for how it is applied.

The API: `lint_steps(phase, steps)`, `lint_document(manifest)`, `lint_file(path)`,
`format_findings(findings)` and `has_errors(findings)`.
"""

from datamigration.lint.check import lint_document, lint_file, lint_steps
from datamigration.lint.findings import Finding, Severity, format_findings, has_errors
from datamigration.lint.rules import RULES

__all__ = [
    "RULES",
    "Finding",
    "Severity",
    "format_findings",
    "has_errors",
    "lint_document",
    "lint_file",
    "lint_steps",
]
