"""The offline verdict on one DataMigration manifest, shared by `lint` and `plan`.

Why: the offline tools must refuse what the cluster refuses and then say what the operator would
refuse. In order, for each manifest:

1. the CRD's schema and CEL rules (`cli.schema`): every error, as the API server words it;
2. the semantic checks of `core.spec.parse_spec` (what the operator marks InvalidSpec);
3. the SQL lint (`datamigration.lint`);
4. the steps nothing can check (command steps), named with what to do instead.

Steps 2 and 3 are skipped for an object beyond the CRD's bounds (too many steps, too long a text),
which the API server would not store: checking it would only cost time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from datamigration.cli.errors import EXIT_FAILURE, EXIT_OK, CliError
from datamigration.cli.manifest import load_documents
from datamigration.cli.schema import KIND, Problem, Report, validate_manifest
from datamigration.core.errors import SpecError
from datamigration.core.spec import MigrationSpec, parse_spec
from datamigration.lint import (
    Finding,
    Severity,
    format_findings,
    has_errors,
    lint_document,
    lint_spec,
    migration_name,
)
from datamigration.validation import UNCHECKED_COMMAND, unchecked_steps

#: Finding rule ids for what the CRD refuses (the lint's own ids name SQL rules).
RULE_BY_SOURCE = {"schema": "crd-schema", "cel": "crd-rule", "size": "too-large"}
NOT_LINTED = (
    "semantic checks and SQL lint not run: the object is beyond the CRD's bounds, so the API "
    "server would refuse it; fix the errors above first"
)


@dataclass
class Checked:
    """Everything the offline tools know about one manifest."""

    migration: str  # "<namespace>/<name>", or the name
    schema: Report
    spec: MigrationSpec | None  # None when it does not parse (or was not parsed)
    findings: list[Finding] = field(default_factory=list)  # schema, spec and lint, in that order
    notes: list[str] = field(default_factory=list)  # what was not checked, one line each
    commands: list[tuple[str, str]] = field(default_factory=list)  # command steps: unchecked
    linted: bool = True  # False: over the CRD's bounds, spec checks and SQL lint not run


def check_manifest(document: Mapping[str, Any], *, source: str = "") -> Checked:
    """The schema, semantic and lint verdict on one DataMigration, every error included."""
    migration = migration_name(document)
    report = validate_manifest(document)

    def finding(rule: str, message: str) -> Finding:
        return Finding(
            rule=rule, severity=Severity.ERROR, message=message, migration=migration, source=source
        )

    checked = Checked(migration, report, None)
    checked.findings += [finding(RULE_BY_SOURCE[p.source], str(p)) for p in report.problems]
    checked.notes += [f"unchecked: CEL rule not evaluated offline: {r}" for r in report.unchecked]
    if any(_beyond_bounds(p) for p in report.problems):
        checked.linted = False
        checked.notes.append(NOT_LINTED)
        return checked
    try:
        checked.spec = parse_spec(document.get("spec"))
    except SpecError as exc:
        if report.ok:  # otherwise the schema errors already say it, in the API server's words
            checked.findings.append(finding("invalid-spec", str(exc)))
    if checked.spec is not None:
        # The steps the operator validates (`validation.validate`), as it lints them.
        checked.findings += lint_spec(checked.spec, migration=migration, source=source)
        checked.commands = unchecked_steps(checked.spec)
    else:
        # The lint still reads every step that parses; shape problems are reported above.
        checked.findings += [
            f for f in lint_document(document, source=source) if f.rule != "invalid-spec"
        ]
    return checked


def lint_paths(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    """`kubectl datamigration lint FILE...`: every file, every manifest, every error."""
    failed = False
    for path in paths:
        try:
            if not os.path.exists(path):
                raise CliError(f"{path}: no such file")
            documents = load_documents(path)
            migrations = [d for d in documents if d.get("kind") == KIND]
            if not migrations:
                raise CliError(f"{path}: no {KIND} document in the file")
        except CliError as exc:
            err.write(f"error: {exc.message}\n" + "".join(f"hint: {h}\n" for h in exc.hints))
            failed = True
            continue
        findings: list[Finding] = []
        notes: list[str] = []
        for document in migrations:
            checked = check_manifest(document, source=path)
            findings += checked.findings
            where = " ".join(part for part in (path, checked.migration) if part)
            notes += [f"{where}: {note}" for note in checked.notes]
            notes += [
                f'{where}: unchecked: {phase} step "{name}" (command): {UNCHECKED_COMMAND}'
                for phase, name in checked.commands
            ]
        text = format_findings(findings)
        out.write((f"{path}: {text}" if not findings else text) + "\n")
        out.write("".join(f"{note}\n" for note in notes))
        failed = failed or has_errors(findings)
    return EXIT_FAILURE if failed else EXIT_OK


def _beyond_bounds(problem: Problem) -> bool:
    # Too large as a whole (the request limit) is still checked: the file bound keeps it cheap.
    return problem.message.startswith(("Too many", "Too long"))
