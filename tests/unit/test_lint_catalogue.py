"""The catalogue test: every row of `lint_catalogue.yaml` (a peer linter's rule, a PostgreSQL
documentation case, or a bypass attempt) gets the expected verdict in expand, backfill and
contract. Verdicts: `error` (the operator refuses the spec), `warn` (reported only), `ok`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamigration.core.steps import parse_steps
from datamigration.lint import RULES, Finding, lint_steps

CATALOGUE = Path(__file__).with_name("lint_catalogue.yaml")
ROWS: list[dict[str, Any]] = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
PHASES = ("expand", "backfill", "contract")


def verdict(findings: list[Finding]) -> str:
    if any(f.blocking for f in findings):
        return "error"
    return "warn" if findings else "ok"


def findings_of(row: dict[str, Any], phase: str) -> list[Finding]:
    sqls = row["steps"] if "steps" in row else [row["sql"]]
    raw = [
        {"name": f"s{i}", "sql": text, "transactional": row.get("transactional", True)}
        for i, text in enumerate(sqls)
    ]
    return lint_steps(phase, parse_steps(raw, f"spec.{phase}.steps"))


def case_id(index: int, row: dict[str, Any]) -> str:
    return f"{index:03d}-{row['source']}"


@pytest.mark.parametrize(
    "row", [pytest.param(row, id=case_id(i, row)) for i, row in enumerate(ROWS)]
)
def test_catalogue_row(row: dict[str, Any]) -> None:
    expected = {
        "expand": row["expand"],
        "backfill": row.get("backfill", row["expand"]),
        "contract": row["contract"],
    }
    seen: dict[str, str] = {}
    rules: set[str] = set()
    for phase in PHASES:
        findings = findings_of(row, phase)
        seen[phase] = verdict(findings)
        rules |= {f.rule for f in findings}
    assert seen == expected, sorted(rules)
    if "rule" in row:
        assert row["rule"] in RULES
        assert row["rule"] in rules


def test_the_catalogue_is_big_enough_and_cites_its_sources() -> None:
    assert len(ROWS) >= 150
    origins = Counter(str(row["source"]).split(":", 1)[0] for row in ROWS)
    for origin in ("squawk", "strong_migrations", "eugene", "safe-ecto", "postgresql", "bypass"):
        assert origins[origin] >= 10, origins
    for row in ROWS:
        assert set(row) <= {"source", "sql", "steps", "expand", "backfill", "contract"} | {
            "rule",
            "transactional",
        }, row
        assert ("sql" in row) != ("steps" in row), row


def test_no_bypass_passes_outside_contract() -> None:
    bypasses = [row for row in ROWS if str(row["source"]).startswith("bypass:")]
    meant_to_fail = [row for row in bypasses if row["expand"] == "error"]
    assert len(meant_to_fail) >= 30
    for row in meant_to_fail:
        assert verdict(findings_of(row, "expand")) == "error", row["sql"]
