"""Running the rules over steps, DataMigration manifests and YAML files.

`lint_file(path)` + `format_findings(findings)` are the whole API the CLI needs
(`kubectl-datamigration lint FILE`, exit 1 when any finding is an error): problems with the file
itself (unreadable, not YAML, no DataMigration in it, a spec that does not parse) are findings
too, so the caller has a single path.

Note: the lint parses PostgreSQL SQL. A migration written for SQLite may use syntax PostgreSQL
rejects; those statements come out as `unparseable-sql`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datamigration.core.errors import SpecError
from datamigration.core.spec import MigrationSpec
from datamigration.core.steps import (
    STEP_PHASES,
    BackfillStep,
    SqlStep,
    Step,
    VerifyStep,
    parse_steps,
)
from datamigration.lint.analyze import (
    Hit,
    ParseAhead,
    PhaseScope,
    analyze_expression_sql,
    analyze_sql,
    parse_json,
    split_statements,
)
from datamigration.lint.expressions import (
    POSTGRESQL,
    SIDE_EFFECT_FUNCTION,
    UNKNOWN_FUNCTION,
    UNSAFE_EXPRESSION,
    backfill_problems,
    verify_problems,
)
from datamigration.lint.findings import Finding, Severity, shorten
from datamigration.lint.rules import RULES

KIND = "DataMigration"
# Nodes a read-only query may not contain anywhere (writes, SELECT INTO, row locks).
_NOT_READ_ONLY = re.compile(
    r'\{"(InsertStmt|UpdateStmt|DeleteStmt|MergeStmt)":|"intoClause":|"lockingClause":'
)


def lint_steps(
    phase: str,
    steps: Sequence[Step],
    *,
    migration: str = "",
    source: str = "",
    paths: Sequence[str] | None = None,
    dialect: str = POSTGRESQL,
    ahead: ParseAhead | None = None,
) -> list[Finding]:
    """Findings for the steps of one phase (`expand`, `backfill` or `contract`).

    `paths` names each step's field (default `spec.<phase>.steps[i]`); findings carry it in
    `Finding.field`. Findings of rules a step allows (`lint.allow`) come back with `allowed_by`.
    `dialect` (`spec.database.dialect`) is the grammar backfill expressions are checked in.
    `ahead` may hold the parse trees of the sql steps already (`lint_spec`).
    """
    findings: list[Finding] = []
    scope = PhaseScope()
    where = _Where(phase, migration, source)
    for index, step in enumerate(steps):
        path = paths[index] if paths is not None else f"spec.{phase}.steps[{index}]"
        allowed, problems = _check_allow(step, path)
        findings += [where.invalid(message, step, f"{path}.lint") for message in problems]
        for hit, field in _step_hits(step, path, scope, dialect, ahead):
            finding = where.finding(hit, step, field, path, allowed)
            if finding is not None:
                findings.append(finding)
    return findings


@dataclass(frozen=True)
class _Where:
    """What every finding of one `lint_steps` call shares."""

    phase: str
    migration: str
    source: str

    def finding(
        self, hit: Hit, step: Step, field: str, path: str, allowed: frozenset[str]
    ) -> Finding | None:
        rule = RULES[hit.rule]
        severity = rule.severity(self.phase)
        if severity is None:
            return None
        if hit.rule == "unparseable-sql":
            message = _unparseable(hit.detail)
        elif hit.detail:
            message = f"{rule.reason} ({hit.detail}) {rule.recipe}"
        else:
            message = rule.message
        if hit.rule == "concurrently-in-transaction":
            field = f"{path}.transactional"
            message += f" Set {field}: false."
        reason = step.lint.reason if step.lint and hit.rule in allowed else None
        return Finding(
            rule=hit.rule,
            severity=severity,
            message=message,
            phase=self.phase,
            step=step.name,
            statement=shorten(hit.statement),
            migration=self.migration,
            source=self.source,
            field=field,
            allowed_by=reason,
        )

    def invalid(self, message: str, step: Step, field: str) -> Finding:
        return Finding(
            rule="invalid-spec",
            severity=Severity.ERROR,
            message=message,
            phase=self.phase,
            step=step.name,
            migration=self.migration,
            source=self.source,
            field=field,
        )


def _step_hits(
    step: Step, path: str, scope: PhaseScope, dialect: str, ahead: ParseAhead | None
) -> list[tuple[Hit, str]]:
    if isinstance(step, SqlStep):
        field = f"{path}.sql"
        result = analyze_sql(step.sql, transactional=step.transactional, scope=scope, ahead=ahead)
        if isinstance(result, str):
            return [(Hit("unparseable-sql", step.sql, result), field)]
        return [(hit, field) for hit in result]
    if isinstance(step, BackfillStep):
        # lint.expressions is the runner's own check: each value parsed as exactly one
        # expression (no wrapper to break out of), functions on an allow-list.
        shown = ", ".join(f"{column} = {value}" for column, value in step.set)
        return [
            (Hit(_EXPRESSION_RULES[problem.rule], shown, problem.message), problem.field)
            for problem in backfill_problems(step, path, dialect)
        ]
    if isinstance(step, VerifyStep):
        field = path + (".query" if ".verify[" in path else ".verify.query")
        hits = [
            (_in_check(h), field)
            for h in _query_hits(step.query, step.query, scope, "verify-not-read-only")
        ]
        reported = {h.rule for h, _ in hits}
        return hits + [
            (Hit(_EXPRESSION_RULES[problem.rule], step.query, problem.message), field)
            for problem in verify_problems(step, field)
            if problem.rule != UNSAFE_EXPRESSION and _EXPRESSION_RULES[problem.rule] not in reported
        ]
    return []


#: lint.expressions' problems as this lint's rules.
_EXPRESSION_RULES = {
    UNSAFE_EXPRESSION: "invalid-expression",
    SIDE_EFFECT_FUNCTION: "side-effect-in-check",
    UNKNOWN_FUNCTION: "invalid-expression",
}


def _in_check(hit: Hit) -> Hit:
    """A side effect in a check or a row transform is refused in every phase, contract too."""
    if hit.rule == "side-effect-function":
        return Hit("side-effect-in-check", hit.statement, hit.detail)
    return hit


def _query_hits(sql: str, shown: str, scope: PhaseScope, not_read_only: str) -> list[Hit]:
    """A read-only query (verify) or a wrapped expression (backfill): one SELECT, no writes,
    no row locks, no SELECT INTO, and no function with side effects."""
    tree, error = parse_json(sql)  # once, for the shape and for the rules
    if tree is None:
        return [Hit("unparseable-sql", shown, error)]
    parsed = split_statements(sql, tree)
    if isinstance(parsed, str):
        return [Hit("unparseable-sql", shown, parsed)]
    if len(parsed) != 1 or not parsed[0][1].startswith('{"stmt":{"SelectStmt":'):
        return [Hit(not_read_only, shown)]
    if _NOT_READ_ONLY.search(parsed[0][1]):
        return [Hit(not_read_only, shown)]
    return [Hit(hit.rule, shown, hit.detail) for hit in analyze_expression_sql(sql, scope, tree)]


def _check_allow(step: Step, path: str) -> tuple[frozenset[str], list[str]]:
    """The rule ids the step allows, and a message for each id that cannot be allowed."""
    if step.lint is None:
        return frozenset(), []
    problems: list[str] = []
    for index, rule_id in enumerate(step.lint.allow):
        field = f"{path}.lint.allow[{index}]"
        rule = RULES.get(rule_id)
        if rule is None:
            problems.append(f"{field}: unknown lint rule {rule_id!r} (docs/lint.md lists the ids)")
        elif not rule.allowable:
            problems.append(f"{field}: the lint rule {rule_id} cannot be allowed: {rule.message}")
    return frozenset(step.lint.allow), problems


def step_paths(spec: MigrationSpec, phase: str) -> list[str]:
    """The field of each step `spec.job_steps(phase)` returns, in the same order: a generated
    step is named by the operation it comes from (`spec.operations[i].<kind>`)."""
    origin = dict(spec.operations.origin)

    def generated(steps: Sequence[Step]) -> list[str]:
        return [origin.get(step.name, "spec.operations") for step in steps]

    def written(field: str, count: int) -> list[str]:
        return [f"{field}[{i}]" for i in range(count)]

    ops = spec.operations
    if phase == "rollback":  # spec.rollback_steps(): the hand-written ones, then the undo
        return written("spec.rollback.steps", len(spec.rollback.steps)) + generated(ops.undo)
    if phase == "contract":
        return (
            generated(ops.verify)
            + written("spec.contract.verify", len(spec.contract.verify.steps))
            + generated(ops.contract)
            + written("spec.contract.steps", len(spec.contract.steps.steps))
        )
    own = spec.expand if phase == "expand" else spec.backfill
    return generated(ops.phase(phase)) + written(f"spec.{phase}.steps", len(own.steps))


def lint_spec(spec: MigrationSpec, *, migration: str = "", source: str = "") -> list[Finding]:
    """Findings for every phase of a parsed spec (what admission, plan and status use), and,
    after them, the rollback's (an abort's rollback Job runs destructive undo SQL: contract's
    rules, lint/rules.py). A large spec's SQL is parsed ahead, in the order it is linted.

    Specs that differ only in what the lint does not read (the database key, `paused`, the
    image) are linted once (`_linted_lately`): the key is everything `lint_steps` is given, so
    a hit is the answer the lint would give."""
    phases = [(phase, spec.job_steps(phase).steps) for phase in STEP_PHASES]
    phases.append(("rollback", spec.rollback_steps().steps))
    inputs: _LintInputs = (
        tuple((phase, tuple(steps), tuple(step_paths(spec, phase))) for phase, steps in phases),
        spec.operations.dialect,
        migration,
        source,
    )
    try:
        hash(inputs)
    except TypeError:  # a step holding a list or a dict: linted without the cache
        return list(_linted(inputs))
    return list(_linted_lately(inputs))


#: What `lint_spec` lints: (phase, steps, each step's field) per phase; dialect; migration and
#: source (named in each finding).
_LintInputs = tuple[tuple[tuple[str, tuple[Step, ...], tuple[str, ...]], ...], str, str, str]
#: Specs linted lately: the operator validates every migration it reconciles, and a thousand
#: migrations made from one template (as many services' are) lint the same steps. Findings are
#: frozen; each caller gets its own list.
LINT_CACHE_SIZE = 256


def _linted(inputs: _LintInputs) -> tuple[Finding, ...]:
    phases, dialect, migration, source = inputs
    texts = [step.sql for _, steps, _ in phases for step in steps if isinstance(step, SqlStep)]
    findings: list[Finding] = []
    with ParseAhead(texts) as ahead:
        for phase, steps, paths in phases:
            findings += lint_steps(
                phase,
                steps,
                migration=migration,
                source=source,
                paths=paths,
                dialect=dialect,
                ahead=ahead,
            )
    return tuple(findings)


_linted_lately = functools.lru_cache(maxsize=LINT_CACHE_SIZE)(_linted)


def allowed_findings(spec: MigrationSpec) -> list[Finding]:
    """The findings a step's `lint.allow` let through, with their reason (`allowed_by`): for
    `plan`, the status and an Event, so an opt-out is always visible."""
    return [finding for finding in lint_spec(spec) if finding.allowed_by is not None]


def lint_document(document: Mapping[str, Any], *, source: str = "") -> list[Finding]:
    """Findings for one DataMigration manifest (all of its phases)."""
    migration = migration_name(document)

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
            paths = [f"spec.{phase}.steps[{i}]" for i in range(len(steps))]
            if phase == "contract":  # the CRD's spec.contract.verify: checks before contract
                verify = _contract_verify(section.get("verify"))
                paths = [f"spec.contract.verify[{i}]" for i in range(len(verify))] + paths
                steps = verify + steps
        except SpecError as exc:
            findings += invalid(str(exc), phase)
            continue
        findings += lint_steps(phase, steps, migration=migration, source=source, paths=paths)
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


def _unparseable(parser_message: str) -> str:
    return (
        f"PostgreSQL's parser rejects this SQL: {parser_message}. "
        "Fix the syntax (the lint checks PostgreSQL SQL)."
    )


def migration_name(document: Mapping[str, Any]) -> str:
    """`<namespace>/<name>` of a manifest (or the name, or ""), as findings name it."""
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        return ""
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str):
        return ""
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
