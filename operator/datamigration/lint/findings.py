"""What the safety lint reports, and how it prints it.

A `Finding` names where (migration, phase, step, statement), what (a stable kebab-case rule id and
a severity) and why + what to do (one line). `format_findings` is the complete text the CLI prints;
the CLI exits 1 when `has_errors(findings)`.
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
    return any(finding.severity == Severity.ERROR for finding in findings)


def format_findings(findings: Sequence[Finding]) -> str:
    """Human-readable report: two lines per finding, then a count."""
    if not findings:
        return "no findings"
    lines: list[str] = []
    for finding in findings:
        head = f"{finding.severity.value}: {finding.location}: {finding.rule}"
        if finding.statement:
            head += f": {finding.statement}"
        lines.append(head)
        lines.append(f"    {finding.message}")
    errors = sum(1 for finding in findings if finding.severity == Severity.ERROR)
    warnings = len(findings) - errors
    lines.append(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}")
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
