"""Running the rules over steps, DataMigration manifests and YAML files.

`lint_file(path)` + `format_findings(findings)` are the whole API the CLI needs
(`kubectl-datamigration lint FILE`, exit 1 when any finding is an error): problems with the file
itself (unreadable, not YAML, no DataMigration in it, a spec that does not parse) are findings
too, so the caller has a single path.

Note: the lint parses PostgreSQL SQL. A migration written for SQLite may use syntax PostgreSQL
rejects; those statements come out as `unparseable-sql`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pglast import parse_sql
from pglast.parser import ParseError

from datamigration.core.errors import SpecError
from datamigration.core.steps import (
    STEP_PHASES,
    SqlStep,
    Step,
    VerifyStep,
    parse_steps,
)
from datamigration.lint.expressions import expression_findings
from datamigration.lint.findings import Finding, Severity, shorten
from datamigration.lint.rules import RULES, Scope, classify, is_read_only_select

KIND = "DataMigration"


def lint_steps(
    phase: str, steps: Sequence[Step], *, migration: str = "", source: str = ""
) -> list[Finding]:
    """Findings for the steps of one phase (`expand`, `backfill` or `contract`)."""
    findings: list[Finding] = []
    scope = Scope()

    def add(rule_id: str, step: Step, statement: str, message: str = "") -> None:
        rule = RULES[rule_id]
        severity = rule.severity(phase)
        if severity is None:
            return
        findings.append(
            Finding(
                rule=rule_id,
                severity=severity,
                message=message or rule.message,
                phase=phase,
                step=step.name,
                statement=shorten(statement),
                migration=migration,
                source=source,
            )
        )

    # Backfill expressions and verify functions: lint.expressions (the runner's own check).
    findings += expression_findings(phase, steps, migration=migration, source=source)
    for step in steps:
        if isinstance(step, SqlStep):
            parsed = _parse(step.sql)
            if isinstance(parsed, str):
                add("unparseable-sql", step, step.sql, _unparseable(parsed))
                continue
            for text, statement in parsed:
                for rule_id in classify(statement, transactional=step.transactional, scope=scope):
                    add(rule_id, step, text)
        elif isinstance(step, VerifyStep):
            parsed = _parse(step.query)
            if isinstance(parsed, str):
                add("unparseable-sql", step, step.query, _unparseable(parsed))
            elif len(parsed) != 1 or not is_read_only_select(parsed[0][1]):
                add("verify-not-read-only", step, step.query)
    return findings


def lint_document(document: Mapping[str, Any], *, source: str = "") -> list[Finding]:
    """Findings for one DataMigration manifest (all of its phases)."""
    migration = _migration_name(document)

    def invalid(message: str, phase: str = "") -> list[Finding]:
        return [
            Finding(
                rule="invalid-spec",
                severity=Severity.ERROR,
                message=message,
                phase=phase,
                migration=migration,
                source=source,
            )
        ]

    if document.get("kind") != KIND:
        return invalid(f"kind: must be {KIND}, got {document.get('kind')!r}")
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        return invalid("spec: must be a mapping")
    findings: list[Finding] = []
    for phase in STEP_PHASES:
        section = spec.get(phase)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            findings += invalid(f"spec.{phase}: must be a mapping", phase)
            continue
        try:
            steps = parse_steps(section.get("steps"), f"spec.{phase}.steps")
            if phase == "contract":  # the CRD's spec.contract.verify: checks before contract
                steps = _contract_verify(section.get("verify")) + steps
        except SpecError as exc:
            findings += invalid(str(exc), phase)
            continue
        findings += lint_steps(phase, steps, migration=migration, source=source)
    return findings


def _contract_verify(raw: object) -> list[Step]:
    """`spec.contract.verify` ([{name, query, expect}]) as verify steps."""
    if raw is None:
        return []
    path = "spec.contract.verify"
    if not isinstance(raw, list):
        raise SpecError(path, "must be a list of {name, query, expect}")
    as_steps: list[object] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise SpecError(f"{path}[{index}]", "must be a mapping with name, query and expect")
        as_steps.append(
            {"name": item.get("name"), "verify": {k: v for k, v in item.items() if k != "name"}}
        )
    try:
        return parse_steps(as_steps, path)
    except (
        SpecError
    ) as exc:  # name the field as written: verify[0].query, not verify[0].verify.query
        field = re.sub(r"^(spec\.contract\.verify\[\d+\])\.verify\b", r"\1", exc.field)
        raise SpecError(field, exc.message) from None


def lint_file(path: str | Path) -> list[Finding]:
    """Findings for every DataMigration in a YAML file (other kinds are ignored)."""
    source = str(path)

    def problem(message: str) -> list[Finding]:
        return [
            Finding(rule="invalid-spec", severity=Severity.ERROR, message=message, source=source)
        ]

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return problem(f"cannot read the file: {exc}")
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        return problem(f"not valid YAML: {' '.join(str(exc).split())}")
    findings: list[Finding] = []
    linted = 0
    for document in documents:
        if isinstance(document, Mapping) and document.get("kind") == KIND:
            linted += 1
            findings += lint_document(document, source=source)
    if linted == 0:
        return problem(f"no {KIND} document in the file")
    return findings


def _parse(sql: str) -> list[tuple[str, Any]] | str:
    """(statement text, AST) pairs, or the parser's error message."""
    try:
        raw_statements = parse_sql(sql)
    except ParseError as exc:
        return str(exc.args[0]) if exc.args else str(exc)
    encoded = sql.encode("utf-8")  # libpg_query reports byte offsets
    parsed: list[tuple[str, Any]] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        parsed.append((encoded[start:end].decode("utf-8", "replace").strip(), raw.stmt))
    return parsed


def _unparseable(parser_message: str) -> str:
    return (
        f"PostgreSQL's parser rejects this SQL: {parser_message}. "
        "Fix the syntax (the lint checks PostgreSQL SQL)."
    )


def _migration_name(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        return ""
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str):
        return ""
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
