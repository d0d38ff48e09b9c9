"""The step model: what one entry of `spec.<phase>.steps[]` means, validated once for everyone.

Why it exists: the operator validates a DataMigration before it starts a Job, the CLI lints the
same manifest, and the runner executes the steps inside the Job. All three parse the raw dicts
with `parse_steps`, so they agree on every default and every rejection, and every rejection names
the exact field (`spec.backfill.steps[0].backfill.batchSize: ...`).

Guarantees:
- The model is immutable (frozen dataclasses) and pure: no database, API or framework imports.
- Identifiers (backfill table, key, columns) are checked strictly here, so the runner may quote
  and splice them into SQL. Expressions (`set` values, `where`) and statements stay SQL text from
  the user; the safety lint parses those.
- `Step.checksum` identifies the *change* a step makes: sha256 over a canonical JSON of its name,
  kind and definition. Tuning knobs (`batchSize`, `targetBatchMilliseconds`,
  `pauseMilliseconds`, and the step-level `lockTimeoutMilliseconds`,
  `statementTimeoutMilliseconds`, `lockRetries`) are left out, so slowing down a running backfill
  or giving a step more patience is not a "changed step".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from datamigration.core.errors import SpecError

#: Phases whose spec carries `steps` (code-rollout is a gate, not a list of steps).
STEP_PHASES = ("expand", "backfill", "contract")
#: The kind keys a step may have (exactly one of them).
STEP_KINDS = ("sql", "backfill", "verify", "command")

DEFAULT_BACKFILL_KEY = "id"
DEFAULT_BATCH_SIZE = 5000
MAX_BATCH_SIZE = 1_000_000
DEFAULT_TARGET_BATCH_MILLISECONDS = 20  # measured: see docs/runner.md, "Tuning"
MAX_TARGET_BATCH_MILLISECONDS = 60_000
MAX_PAUSE_MILLISECONDS = 600_000
#: Step-level database limits (sql, backfill and verify steps; the runner applies them).
MAX_LOCK_TIMEOUT_MILLISECONDS = 600_000
MAX_STATEMENT_TIMEOUT_MILLISECONDS = 86_400_000  # 0 means no limit
MAX_LOCK_RETRIES = 100
DEFAULT_LOCK_TIMEOUT_MILLISECONDS = 2_000
DEFAULT_LOCK_RETRIES = 10
LIMIT_FIELDS = ("lockTimeoutMilliseconds", "statementTimeoutMilliseconds", "lockRetries")

_STEP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Unquoted SQL identifiers only: the runner quotes them, and nothing else can be smuggled in.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_IDENTIFIER = 63
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_RULE_ID = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
MAX_LINT_REASON = 1024


@dataclass(frozen=True)
class LintAllow:
    """A step's explicit, reviewed opt-out of named lint rules (`lint: {allow, reason}`).

    The lint checks that each id names a rule that may be allowed; allowed findings are still
    reported, marked with the reason."""

    allow: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Step:
    """One step of a phase. Subclasses add the definition of their kind."""

    name: str
    # Not part of `definition()`: allowing a lint rule does not change what the step does.
    lint: LintAllow | None = field(default=None, kw_only=True)
    # Per-step database limits (None: the spec-wide default, `spec.runner.*`); tuning knobs,
    # not part of the checksum. keyword-only so subclasses keep their positional fields.
    lock_timeout_milliseconds: int | None = field(default=None, kw_only=True)
    statement_timeout_milliseconds: int | None = field(default=None, kw_only=True)
    lock_retries: int | None = field(default=None, kw_only=True)
    kind: ClassVar[str] = ""

    def definition(self) -> dict[str, Any]:
        """The fields that define the change this step makes (not its tuning knobs)."""
        raise NotImplementedError

    @property
    def checksum(self) -> str:
        """sha256 (hex) of the canonical JSON of name, kind and definition."""
        canonical = json.dumps(
            {"name": self.name, "kind": self.kind, "definition": self.definition()},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SqlStep(Step):
    """One or more SQL statements; in one transaction unless `transactional` is false."""

    sql: str
    transactional: bool = True
    kind: ClassVar[str] = "sql"

    def definition(self) -> dict[str, Any]:
        return {"sql": self.sql, "transactional": self.transactional}


@dataclass(frozen=True)
class BackfillStep(Step):
    """Set columns of an existing table in key-ordered batches, resumably."""

    table: str
    set: tuple[tuple[str, str], ...]  # (column, SQL expression), in the order written
    key: str = DEFAULT_BACKFILL_KEY
    where: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    target_batch_milliseconds: int = DEFAULT_TARGET_BATCH_MILLISECONDS
    pause_milliseconds: int = 0
    kind: ClassVar[str] = "backfill"

    def definition(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "set": dict(sorted(self.set)),
            "where": self.where,
        }


@dataclass(frozen=True)
class VerifyStep(Step):
    """A check: the query's single scalar, as text, must equal `expect`."""

    query: str
    expect: str
    kind: ClassVar[str] = "verify"

    def definition(self) -> dict[str, Any]:
        return {"query": self.query, "expect": self.expect}


@dataclass(frozen=True)
class CommandStep(Step):
    """A container the operator runs as its own Job (e.g. a framework's migration tool)."""

    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (name, value), in the order written
    kind: ClassVar[str] = "command"

    def definition(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": list(self.command),
            "args": list(self.args),
            "env": [list(pair) for pair in self.env],
        }


def parse_steps(raw: object, field_path: str) -> list[Step]:
    """Validate `raw` (the list under `field_path`) and return its steps in order.

    Raises `SpecError` naming the first offending field, e.g.
    `spec.backfill.steps[0].backfill.batchSize: must be an integer between 1 and 1000000`.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SpecError(field_path, "must be a list of steps")
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"{field_path}[{index}]"
        step = _parse_step(item, path)
        if step.name in seen:
            first = f"{field_path}[{seen[step.name]}]"
            raise SpecError(
                f"{path}.name", f'duplicate step name "{step.name}" (already used by {first})'
            )
        seen[step.name] = index
        steps.append(step)
    return steps


def _parse_step(item: object, path: str) -> Step:
    if not isinstance(item, Mapping):
        raise SpecError(
            path, "must be a mapping with a name and one of sql, backfill, verify, command"
        )
    kinds = [kind for kind in STEP_KINDS if kind in item]
    allowed = {"name", *STEP_KINDS, "transactional", "lint", *LIMIT_FIELDS}
    for key in item:
        if key not in allowed:
            raise SpecError(
                f"{path}.{key}",
                "unknown field (a step has name, exactly one of sql, backfill, verify, command, "
                "transactional for sql steps, lint, and lockTimeoutMilliseconds, "
                "statementTimeoutMilliseconds, lockRetries)",
            )
    name = _step_name(item.get("name"), f"{path}.name")
    if not kinds:
        raise SpecError(path, "needs exactly one of sql, backfill, verify, command")
    if len(kinds) > 1:
        raise SpecError(path, f"has {' and '.join(kinds)}; a step has exactly one kind")
    kind = kinds[0]
    if "transactional" in item and kind != "sql":
        raise SpecError(f"{path}.transactional", "only applies to sql steps")
    body_path = f"{path}.{kind}"
    body = item[kind]
    lint = _lint_allow(item["lint"], f"{path}.lint") if "lint" in item else None
    if kind == "command":
        for limit in LIMIT_FIELDS:
            if limit in item:
                raise SpecError(
                    f"{path}.{limit}",
                    "only applies to sql, backfill and verify steps (the runner's statements)",
                )
        command = _parse_command(name, body, body_path)
        return command if lint is None else replace(command, lint=lint)
    step: Step
    if kind == "sql":
        transactional = item.get("transactional", True)
        if not isinstance(transactional, bool):
            raise SpecError(f"{path}.transactional", "must be true or false")
        step = SqlStep(name=name, sql=_text(body, body_path), transactional=transactional)
    elif kind == "backfill":
        step = _parse_backfill(name, body, body_path)
    else:
        step = _parse_verify(name, body, body_path)
    step = _with_limits(step, item, path)
    return step if lint is None else replace(step, lint=lint)


def _lint_allow(raw: object, path: str) -> LintAllow:
    """`lint: {allow: [rule-id, ...], reason: "..."}`; the lint checks the ids name rules."""
    fields = _mapping(raw, path, {"allow", "reason"})
    allow = fields.get("allow")
    if not isinstance(allow, list) or not allow:
        raise SpecError(f"{path}.allow", "must be a non-empty list of lint rule ids")
    for index, rule in enumerate(allow):
        if not isinstance(rule, str) or not _RULE_ID.fullmatch(rule):
            raise SpecError(f"{path}.allow[{index}]", "must be a lint rule id such as drop-column")
        if rule in allow[:index]:
            raise SpecError(f"{path}.allow[{index}]", f"{rule} is listed twice")
    reason = fields.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise SpecError(f"{path}.reason", "is required: say why the rule does not apply here")
    if len(reason) > MAX_LINT_REASON:
        raise SpecError(f"{path}.reason", f"must be at most {MAX_LINT_REASON} characters")
    return LintAllow(allow=tuple(allow), reason=reason.strip())


def _with_limits(step: Step, item: Mapping[str, Any], path: str) -> Step:
    """`step` with its step-level database limits (validated; unset stays None)."""

    def optional(key: str, low: int, high: int) -> int | None:
        value = item.get(key)
        return None if value is None else _integer(value, f"{path}.{key}", low, high)

    return replace(
        step,
        lock_timeout_milliseconds=optional(
            "lockTimeoutMilliseconds", 1, MAX_LOCK_TIMEOUT_MILLISECONDS
        ),
        statement_timeout_milliseconds=optional(
            "statementTimeoutMilliseconds", 0, MAX_STATEMENT_TIMEOUT_MILLISECONDS
        ),
        lock_retries=optional("lockRetries", 0, MAX_LOCK_RETRIES),
    )


def _parse_backfill(name: str, body: object, path: str) -> BackfillStep:
    fields = _mapping(
        body,
        path,
        {
            "table",
            "key",
            "set",
            "where",
            "batchSize",
            "targetBatchMilliseconds",
            "pauseMilliseconds",
        },
    )
    table = _table(fields.get("table"), f"{path}.table")
    key = _identifier(fields.get("key", DEFAULT_BACKFILL_KEY), f"{path}.key")
    raw_set = fields.get("set")
    if not isinstance(raw_set, Mapping) or not raw_set:
        raise SpecError(f"{path}.set", "must be a non-empty mapping of column to SQL expression")
    assignments: list[tuple[str, str]] = []
    for column, expression in raw_set.items():
        column_path = f"{path}.set.{column}"
        _identifier(column, column_path)
        if column == key:
            raise SpecError(column_path, "cannot set the backfill key column it iterates over")
        assignments.append((column, _text(expression, column_path)))
    where = fields.get("where")
    return BackfillStep(
        name=name,
        table=table,
        key=key,
        set=tuple(assignments),
        where=None if where is None else _text(where, f"{path}.where"),
        batch_size=_integer(
            fields.get("batchSize", DEFAULT_BATCH_SIZE), f"{path}.batchSize", 1, MAX_BATCH_SIZE
        ),
        target_batch_milliseconds=_integer(
            fields.get("targetBatchMilliseconds", DEFAULT_TARGET_BATCH_MILLISECONDS),
            f"{path}.targetBatchMilliseconds",
            1,
            MAX_TARGET_BATCH_MILLISECONDS,
        ),
        pause_milliseconds=_integer(
            fields.get("pauseMilliseconds", 0),
            f"{path}.pauseMilliseconds",
            0,
            MAX_PAUSE_MILLISECONDS,
        ),
    )


def _parse_verify(name: str, body: object, path: str) -> VerifyStep:
    fields = _mapping(body, path, {"query", "expect"})
    expect = fields.get("expect")
    if isinstance(expect, bool) or not isinstance(expect, str | int):
        raise SpecError(f"{path}.expect", "must be a string or an integer")
    return VerifyStep(
        name=name, query=_text(fields.get("query"), f"{path}.query"), expect=str(expect)
    )


def _parse_command(name: str, body: object, path: str) -> CommandStep:
    fields = _mapping(
        body, path, {"image", "command", "args", "env", "automountServiceAccountToken"}
    )
    if not isinstance(fields.get("automountServiceAccountToken", False), bool):
        raise SpecError(f"{path}.automountServiceAccountToken", "must be true or false")
    command = _string_list(fields.get("command"), f"{path}.command")
    if not command:
        raise SpecError(f"{path}.command", "must be a non-empty list of strings")
    raw_env = fields.get("env", [])
    if not isinstance(raw_env, list):
        raise SpecError(f"{path}.env", "must be a list of {name, value}")
    env: list[tuple[str, str]] = []
    for index, item in enumerate(raw_env):
        entry = _mapping(item, f"{path}.env[{index}]", {"name", "value"})
        env.append(
            (
                _env_name(entry.get("name"), f"{path}.env[{index}].name"),
                _string(entry.get("value"), f"{path}.env[{index}].value"),
            )
        )
    return CommandStep(
        name=name,
        image=_text(fields.get("image"), f"{path}.image"),
        command=command,
        args=_string_list(fields.get("args", []), f"{path}.args"),
        env=tuple(env),
    )


def _mapping(body: object, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise SpecError(path, "must be a mapping")
    for key in body:
        if key not in allowed:
            raise SpecError(
                f"{path}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})"
            )
    return body


def _step_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(path, "is required: a DNS label such as add-email-column")
    if len(value) > 63 or not _STEP_NAME.fullmatch(value):
        raise SpecError(
            path,
            "must be a DNS label: at most 63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, "must be a non-empty string")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, "must be a string")
    return value


def _env_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise SpecError(path, "must be an environment variable name such as APP_ENV")
    return value


def _identifier(value: object, path: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > _MAX_IDENTIFIER
        or not _IDENTIFIER.fullmatch(value)
    ):
        raise SpecError(
            path,
            "must be a plain SQL identifier: a letter or '_' then letters, digits or '_' "
            f"(at most {_MAX_IDENTIFIER} characters)",
        )
    return value


def _table(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(path, "must be a table name, optionally schema-qualified (public.users)")
    parts = value.split(".")
    if len(parts) > 2:
        raise SpecError(path, "must be a table name, optionally schema-qualified (public.users)")
    for part in parts:
        _identifier(part, path)
    return value


def _integer(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(path, f"must be an integer between {low} and {high}")
    return value


def _string_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise SpecError(path, "must be a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{path}[{index}]", "must be a string")
    return tuple(value)
