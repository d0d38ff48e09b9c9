"""What the safety lint reports, and how it prints it.

A `Finding` names where (migration, phase, step, the step's field, statement), what (a stable
kebab-case rule id and a severity) and why + what to do (one line). A finding of a rule the step
allows explicitly (`lint: {allow: [rule], reason}`) is still reported, with `allowed_by` set to
the reason; it does not block (`blocking`). `format_findings` is the complete text the CLI
prints; the CLI exits 1 when `has_errors(findings)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

#: Statements longer than this are shortened in findings.
STATEMENT_WIDTH = 100


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    rule: str  # stable kebab-case id, e.g. "drop-column"
    severity: Severity
    message: str  # one line: why, then what to do
    phase: str = ""
    step: str = ""
    statement: str = ""  # shortened
    migration: str = ""  # "<namespace>/<name>" or the name, when linting manifests
    source: str = ""  # the file, when linting a file
    field: str = ""  # the step's field, e.g. spec.expand.steps[0].sql
    allowed_by: str | None = None  # the step's lint.reason when its lint.allow names the rule

    @property
    def blocking(self) -> bool:
        """An error the step did not explicitly allow: the operator refuses the spec."""
        return self.severity == Severity.ERROR and self.allowed_by is None

    @property
    def location(self) -> str:
        parts = [part for part in (self.source, self.migration) if part]
        where = " ".join(parts)
        if self.phase:
            where += f" {self.phase}" if where else self.phase
        if self.step:
            where += f' step "{self.step}"'
        return where.strip() or "-"


def shorten(statement: str, width: int = STATEMENT_WIDTH) -> str:
    """One line, whitespace collapsed, at most `width` characters."""
    flat = " ".join(statement.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def has_errors(findings: Iterable[Finding]) -> bool:
    """Any blocking finding (an error not allowed by its step)."""
    return any(finding.blocking for finding in findings)


def format_findings(findings: Sequence[Finding]) -> str:
    """Human-readable report: two lines per finding, then a count."""
    if not findings:
        return "no findings"
    lines: list[str] = []
    for finding in findings:
        level = finding.severity.value
        if finding.allowed_by is not None:
            level = f"allowed {level}"
        head = f"{level}: {finding.location}: {finding.rule}"
        if finding.statement:
            head += f": {finding.statement}"
        lines.append(head)
        lines.append(f"    {finding.message}")
        if finding.allowed_by is not None:
            lines.append(f"    allowed by the step's lint.allow: {finding.allowed_by}")
    errors = sum(1 for finding in findings if finding.blocking)
    allowed = sum(1 for finding in findings if finding.allowed_by is not None)
    warnings = len(findings) - errors - allowed
    tail = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    lines.append(tail + (f", {allowed} allowed" if allowed else ""))
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
