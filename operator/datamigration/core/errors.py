"""Errors of the pure core that name the exact place in a manifest they are about.

Why: a DataMigration is written by hand, and "invalid spec" is useless without the field. Every
validation in the core raises `SpecError(field, message)` where `field` is the full path as the
user wrote it (`spec.backfill.steps[0].backfill.batchSize`), so the operator's Stalled condition,
the CLI and the runner all print the same precise sentence.
"""

from __future__ import annotations


class SpecError(Exception):
    """A value in a DataMigration (or a runner plan) is invalid; `str()` is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"
