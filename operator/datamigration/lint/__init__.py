"""The SQL safety lint, shared by the operator (admission of a DataMigration), the runner (log
lines) and the CLI (`kubectl-datamigration lint FILE`, `plan FILE`).

Steps of `expand` and `backfill` run while the old application version still serves traffic, so
they must not destroy or rename anything, nor hold long ACCESS EXCLUSIVE locks or rewrite
tables; `contract` may destroy, and lock hazards there are warnings. Statements are classified
on PostgreSQL's own parse tree (pglast), never with regular expressions over SQL. See `rules`
for the catalogue (docs/lint.md explains every rule) and `analyze` for how SQL is read.

The API: `lint_steps(phase, steps)`, `lint_spec(spec)`, `allowed_findings(spec)`,
`lint_document(manifest)`, `lint_file(path)`, `format_findings(findings)`, `has_errors(findings)`;
`Finding.blocking` and `Finding.allowed_by` (a step's explicit `lint: {allow, reason}`).
"""

from datamigration.lint.check import (
    allowed_findings,
    lint_document,
    lint_file,
    lint_spec,
    lint_steps,
    migration_name,
    step_paths,
)
from datamigration.lint.findings import Finding, Severity, format_findings, has_errors
from datamigration.lint.rules import ALLOWABLE_RULE_IDS, RULES, Rule

__all__ = [
    "ALLOWABLE_RULE_IDS",
    "RULES",
    "Finding",
    "Rule",
    "Severity",
    "allowed_findings",
    "format_findings",
    "has_errors",
    "lint_document",
    "lint_file",
    "lint_spec",
    "lint_steps",
    "migration_name",
    "step_paths",
]
