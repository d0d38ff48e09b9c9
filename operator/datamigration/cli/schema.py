"""Validation of a DataMigration manifest against the CRD itself, offline, as the API server does.

Why: `kubectl datamigration lint` and `plan` must not call a manifest valid that `kubectl apply`
refuses. The one source of truth for the shape of a DataMigration is the CRD's
`openAPIV3Schema` (shipped in this package as a byte-identical copy of
`crds/datamigrations.datamigration.dev.yaml`, a test checks it); nothing here restates a rule.

What it guarantees:
- the schema is checked by `jsonschema` (JSON Schema draft 4, the base of OpenAPI v3) after the
  translation of the structural-schema conventions the API server applies: a field the schema
  does not define is an error (as with `kubectl apply`'s strict field validation) unless the
  schema says `x-kubernetes-preserve-unknown-fields`; `nullable`; `x-kubernetes-int-or-string`;
  `null` for a non-nullable field is dropped (the API server prunes it); duplicate keys in
  `x-kubernetes-list-type: map` lists; enums, patterns and bounds as written;
- the `x-kubernetes-validations` CEL rules are evaluated with `celpy` on the object with the
  schema's defaults applied (the API server defaults before it validates). A rule that cannot be
  evaluated offline (one that uses `oldSelf`, or that celpy cannot compile) is not guessed at: it is
  listed in `Report.unchecked`, and the CLI says so;
- EVERY error is reported, each as `path: message` in the API server's words, sorted by path;
- objects whose JSON is larger than the API server's request limit are reported.

Input must already be bounded (`cli.manifest`): the walks here recurse over the schema, which is a
few levels deep, and descend into the object only where the schema does.

Cost (`make bench-lint`): each rule is compiled once per process and evaluated once per distinct
value of what it reads of a node (`_reads`: 50 steps that all have `sql` and nothing else cost
one evaluation of each step rule, not 50), on the node converted to CEL once for all its rules.
What depends on this package alone (the CRD parsed, the CEL grammar's parser tables, the rules'
parse trees) is kept in the user's cache directory for the next run (`_cache_file`), keyed by
what it comes from; a first run, or one without a writable cache, computes it (about 0.3 s).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import hashlib
import json
import os
import pickle
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

CRD_FILE = "datamigrations.datamigration.dev.yaml"
GROUP = "datamigration.dev"
KIND = "DataMigration"
#: The API server's limit on a request body (k8s.io/apiserver MaxRequestBodyBytes).
MAX_OBJECT_BYTES = 3 * 1024 * 1024

Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One error, where the API server would put it: `path: message`."""

    path: str
    message: str
    source: str = "schema"  # "schema" (OpenAPI), "cel" (x-kubernetes-validations), "size"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass
class Report:
    """The verdict on one manifest: every problem, and the CEL rules not evaluated offline."""

    problems: list[Problem] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # "path: rule"

    @property
    def ok(self) -> bool:
        return not self.problems


def crd_text() -> bytes:
    """The packaged copy of the CRD, byte for byte."""
    return (resources.files("datamigration") / "crds" / CRD_FILE).read_bytes()


@cache
def crd() -> Mapping[str, Any]:
    """The CRD, parsed (kept in the cache directory, keyed by the sha256 of its text)."""
    text = crd_text()
    key = hashlib.sha256(text).hexdigest()
    stored = _load_cached(_CRD_FILE, key)
    if isinstance(stored, Mapping):
        return stored
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded: Mapping[str, Any] = yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    _save_cached(_CRD_FILE, key, loaded)
    return loaded


def served_versions() -> dict[str, Mapping[str, Any]]:
    """`version name -> openAPIV3Schema` for every served version of the CRD."""
    return {
        version["name"]: version["schema"]["openAPIV3Schema"]
        for version in crd()["spec"]["versions"]
        if version.get("served")
    }


def validate_manifest(document: Mapping[str, Any]) -> Report:
    """Every problem the API server would report for this DataMigration on create."""
    report = Report()
    api_version = document.get("apiVersion")
    versions = served_versions()
    group, _, version = str(api_version).partition("/")
    if group != GROUP or version not in versions:
        supported = ", ".join(f'"{GROUP}/{v}"' for v in versions)
        report.problems.append(
            Problem(
                "apiVersion", f"Unsupported value: {api_version!r}: supported values: {supported}"
            )
        )
        return report
    size = len(json.dumps(document, default=str, separators=(",", ":")).encode("utf-8"))
    if size > MAX_OBJECT_BYTES:
        report.problems.append(
            Problem(
                "",
                f"Request entity too large: the object is {size:,} bytes as JSON; the API "
                f"server refuses request bodies over {MAX_OBJECT_BYTES:,} (3 MiB)",
                "size",
            )
        )
    schema = versions[version]
    report.problems += _metadata_problems(document.get("metadata"))
    # On create the API server resets the status (a subresource): only its unknown fields count.
    without_status = {k: v for k, v in document.items() if k != "status"}
    instance = _normalise(without_status, schema, (), report.problems)
    validator = _validator(version)
    report.problems += [p for e in validator.iter_errors(instance) for p in _problems(e)]
    if document.get("status") is not None:
        structure = _structure_validator(version)
        status_only = {"status": document["status"]}
        report.problems += [p for e in structure.iter_errors(status_only) for p in _problems(e)]
    bad_paths = {p.path for p in report.problems if p.source == "schema"}
    _check_rules(instance, schema, (), bad_paths, report, verdicts={})
    _save_compiled()
    report.problems = sorted(set(report.problems), key=lambda p: (_sort_key(p.path), p.message))
    return report


# -- the translation of a structural schema into JSON Schema ------------------------------------
@cache
def _validator(version: str) -> Any:
    return _validator_class()(_to_json_schema(served_versions()[version]))


@cache
def _structure_validator(version: str) -> Any:
    """Unknown fields of `status` only (its values are reset on create, its shape is not)."""
    status = served_versions()[version]["properties"]["status"]
    schema = {"type": "object", "properties": {"status": _structure_only(status)}}
    return _validator_class()(schema)


@cache
def _validator_class() -> Any:
    # OpenAPI v3 is JSON Schema draft 4, but the API server reads JSON numbers: 1.0 is an integer.
    from jsonschema import Draft4Validator, validators

    checker = Draft4Validator.TYPE_CHECKER.redefine(
        "integer",
        lambda _, v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
    )
    return validators.extend(Draft4Validator, type_checker=checker)  # type: ignore[no-untyped-call]


def _structure_only(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "properties" in schema:
        out["properties"] = {k: _structure_only(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _structure_only(schema["items"])
    return out


#: The fields of ObjectMeta (k8s.io/apimachinery): metadata is the API server's own type, not the
#: CRD's, so it is the one shape checked here from a list rather than from the CRD.
OBJECT_META_FIELDS = frozenset(
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    }
)  # fmt: skip
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _metadata_problems(metadata: object) -> list[Problem]:
    """What the API server's ObjectMeta validation refuses in a manifest being created."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        return [Problem("metadata", "Invalid value: must be an object")]
    problems = [
        Problem(f"metadata.{key}", "Unknown field")
        for key in metadata
        if key not in OBJECT_META_FIELDS
    ]
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if name is None and not metadata.get("generateName"):
        problems.append(
            Problem("metadata.name", "Required value: name or generateName is required")
        )
    elif name is not None and not (
        isinstance(name, str) and len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name)
    ):
        problems.append(
            Problem(
                "metadata.name",
                f"Invalid value: {name!r}: must be a lowercase RFC 1123 "
                "subdomain (a-z, 0-9, '-', '.'; at most 253)",
            )
        )
    if namespace is not None and not (
        isinstance(namespace, str) and len(namespace) <= 63 and _DNS_LABEL.fullmatch(namespace)
    ):
        problems.append(
            Problem(
                "metadata.namespace",
                f"Invalid value: {namespace!r}: must be a lowercase "
                "RFC 1123 label (a-z, 0-9, '-'; at most 63)",
            )
        )
    return problems


def _to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: v
        for k, v in schema.items()
        if not k.startswith("x-kubernetes-") and k not in ("default", "description", "nullable")
    }
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        out["properties"] = {k: _to_json_schema(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and (
            "additionalProperties" not in schema
        ):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _to_json_schema(schema["additionalProperties"])
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _to_json_schema(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [_to_json_schema(s) for s in schema[key]]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _normalise(value: Any, schema: Mapping[str, Any], path: Path, problems: list[Problem]) -> Any:
    """A copy of `value` as the API server sees it before validation: nulls of non-nullable
    fields pruned, defaults applied; duplicate keys of map-lists are reported.

    A list or map beyond its maxItems/maxProperties is reported here and only its first allowed
    entries are kept for the rest of the checks, so that their cost is bounded by the CRD's
    bounds, whatever the input (60,000 steps cost what 50 do)."""
    if isinstance(value, Mapping):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        limit = schema.get("maxProperties")
        entries = list(value.items())
        if isinstance(limit, int) and len(entries) > limit:
            problems.append(Problem(_render(path), _message("maxProperties", limit, value, "")))
            entries = entries[:limit]
        out: dict[Any, Any] = {}
        for key, item in entries:
            sub = properties.get(key) or (extra if isinstance(extra, Mapping) else None)
            if item is None and sub is not None and not sub.get("nullable"):
                continue
            out[key] = _normalise(item, sub, (*path, key), problems) if sub else item
        for key, sub in properties.items():
            if key not in out and "default" in sub:
                out[key] = _normalise(copy.deepcopy(sub["default"]), sub, (*path, key), problems)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        limit = schema.get("maxItems")
        if isinstance(limit, int) and len(value) > limit:
            problems.append(Problem(_render(path), _message("maxItems", limit, value, "")))
            value = value[:limit]
        out_list = [
            _normalise(v, items, (*path, i), problems) if isinstance(items, Mapping) else v
            for i, v in enumerate(value)
        ]
        _check_list_keys(out_list, schema, path, problems)
        return out_list
    return value


def _check_list_keys(
    items: Sequence[Any], schema: Mapping[str, Any], path: Path, problems: list[Problem]
) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys") or []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if list_type == "map" and isinstance(item, Mapping):
            identity = {k: item.get(k) for k in keys}
        elif list_type == "set":
            identity = item
        else:
            continue
        marker = json.dumps(identity, sort_keys=True, default=str)
        if marker in seen:
            problems.append(Problem(_render((*path, index)), f"Duplicate value: {marker}"))
        seen.add(marker)


# -- jsonschema errors in the API server's words ------------------------------------------------
def _problems(error: Any) -> Iterator[Problem]:
    path: Path = tuple(error.absolute_path)
    kind, bound, instance = error.validator, error.validator_value, error.instance
    where = _render(path)
    if kind == "additionalProperties" and bound is False:
        known = list(error.schema.get("properties") or {})
        for key in instance:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                yield Problem(_render((*path, key)), f"Unknown field{hint}")
        return
    if kind == "required":
        for key in bound:
            if isinstance(instance, Mapping) and key not in instance:
                yield Problem(_render((*path, key)), "Required value")
        return
    yield Problem(where, _message(kind, bound, instance, error.message))


def _message(kind: str, bound: Any, instance: Any, fallback: str) -> str:
    shown = json.dumps(instance, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if kind == "type":
        return f"Invalid value: {shown}: must be of type {_type_name(bound)}"
    if kind == "enum":
        supported = ", ".join(json.dumps(v) for v in bound if v is not None)
        return f"Unsupported value: {shown}: supported values: {supported}"
    if kind == "pattern":
        return f"Invalid value: {shown}: should match '{bound}'"
    if kind == "maxLength":
        return f"Too long: may not be longer than {bound}"
    if kind == "minLength":
        return f"Invalid value: {shown}: should be at least {bound} chars long"
    if kind in ("maxItems", "maxProperties"):
        return f"Too many: {_count(instance)}: must have at most {bound} items"
    if kind == "minItems":
        return f"Invalid value: {_count(instance)}: should have at least {bound} items"
    if kind == "minProperties":
        return f"Invalid value: {_count(instance)}: should have at least {bound} properties"
    if kind == "maximum":
        return f"Invalid value: {shown}: should be less than or equal to {bound}"
    if kind == "minimum":
        return f"Invalid value: {shown}: should be greater than or equal to {bound}"
    if kind == "anyOf":
        return f"Invalid value: {shown}: must be an integer or a string"
    return f"Invalid value: {shown}: {fallback}"


def _type_name(bound: str | list[str]) -> str:
    return bound if isinstance(bound, str) else " or ".join(t for t in bound if t != "null")


def _count(instance: object) -> int:
    return len(instance) if isinstance(instance, Sequence | Mapping) else 0


def _render(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _sort_key(path: str) -> tuple[Any, ...]:
    # Numeric order of list indexes: steps[2] before steps[10].
    parts: list[Any] = []
    for chunk in path.replace("[", ".[").split("."):
        if chunk.startswith("[") and chunk[1:-1].isdigit():
            parts.append((1, int(chunk[1:-1]), ""))
        else:
            parts.append((0, 0, chunk))
    return tuple(parts)


# -- x-kubernetes-validations (CEL) -------------------------------------------------------------
def _check_rules(
    value: Any,
    schema: Mapping[str, Any],
    path: Path,
    bad: set[str],
    report: Report,
    *,
    verdicts: dict[tuple[str, str], _Outcome],
) -> None:
    """Evaluate every CEL rule on the node it is attached to (the API server does so even when
    the schema finds errors, so the verdicts add up). `verdicts` holds the outcome of each rule
    on what it reads of a node (`_reads`), for the other nodes of the same object."""
    rules = schema.get("x-kubernetes-validations") or ()
    if rules:
        where = _render(path)
        node = _CelValue(value)  # converted once for every rule of this node
        for rule in rules:
            problem = _evaluate(rule, node, path, report, verdicts)
            if problem is None:
                continue
            # A rule that cannot be evaluated over a malformed node (a required field missing)
            # says nothing the schema error has not said.
            malformed = any(b == where or b.startswith((where + ".", where + "[")) for b in bad)
            if not (malformed and "could not be evaluated" in problem.message):
                report.problems.append(problem)
    if isinstance(value, Mapping):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key) or (extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                _check_rules(item, sub, (*path, key), bad, report, verdicts=verdicts)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _check_rules(item, schema["items"], (*path, index), bad, report, verdicts=verdicts)


class _CelValue:
    """One node of the object as CEL sees it (`self`), converted on first use and then shared
    by every rule of the node; a node that cannot be converted gives every rule that error."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._converted: Any = None
        self._error: Exception | None = None
        self._done = False

    def get(self) -> Any:
        if not self._done:
            from celpy.adapter import json_to_cel

            self._done = True
            try:
                self._converted = json_to_cel(self.value)
            except Exception as exc:  # a value JSON has no type for (a YAML date...)
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._converted


#: What evaluating a rule gave: ("value", the verdict) or ("error", the exception raised).
_Outcome = tuple[str, Any]


def _evaluate(
    rule: Mapping[str, Any],
    node: _CelValue,
    path: Path,
    report: Report,
    verdicts: dict[tuple[str, str], _Outcome],
) -> Problem | None:
    text = str(rule.get("rule", ""))
    where = _render(path) or "<root>"
    program = _program(text)
    if program is None:
        note = f"{_schema_path(path)}: {text}"
        if note not in report.unchecked:
            report.unchecked.append(note)
        return None
    from celpy.celtypes import BoolType

    field_path = str(rule.get("fieldPath") or "")
    target = where + field_path if field_path.startswith((".", "[")) else where
    key = _read_key(text, node)
    outcome = verdicts.get((text, key)) if key is not None else None
    if outcome is None:
        try:
            outcome = ("value", program.evaluate({"self": node.get()}))
        except Exception as exc:  # celpy raises its own error types for no-such-key and the like
            outcome = ("error", exc)
        if key is not None:
            verdicts[(text, key)] = outcome
    kind, verdict = outcome
    if kind == "error" or isinstance(verdict, Exception):
        return Problem(
            target, f"Invalid value: rule {text!r} could not be evaluated: {verdict}", "cel"
        )
    if not (isinstance(verdict, BoolType) and bool(verdict)):
        message = str(rule.get("message") or f"failed rule: {text}")
        return Problem(target, f"Invalid value: {message}", "cel")
    return None


# What a rule reads of `self`, from its text: `self.field` (not a macro or a method on self, such
# as `self.all(...)`), and `has(self.field)`, which reads only whether the field is there.
# Conservative: a string literal or a comment that looks like one of these only makes the rule
# read more.
_SELF = re.compile(r"\bself\b")
_SELF_FIELD = re.compile(r"\bself\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_HAS_FIELD = re.compile(r"(?<![.\w])has\s*\(\s*self\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")


@cache
def _reads(rule: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """`(fields whose value the rule reads, fields it only tests for presence)`, or None when
    the rule reads `self` in another way (whole, indexed, as a macro's range...)."""
    fields = _SELF_FIELD.findall(rule)
    if len(fields) != len(_SELF.findall(rule)):
        return None
    tested = _HAS_FIELD.findall(rule)
    read = frozenset(f for f in fields if fields.count(f) > tested.count(f))
    return read, frozenset(fields) - read


def _read_key(rule: str, node: _CelValue) -> str | None:
    """What the rule reads of the node, as text: nodes with the same key get the same outcome
    (the rule sees nothing else of them), so the rule is evaluated once per key. None (evaluate
    every time) for a rule that reads `self` otherwise, a node that is not a map of JSON values,
    or one celpy cannot convert."""
    reads = _reads(rule)
    if reads is None or not isinstance(node.value, Mapping):
        return None
    try:
        node.get()
    except Exception:  # the conversion's error is every rule's outcome: evaluate each
        return None
    read, tested = reads
    seen = [
        (field, value if field in read else None)  # presence only: not the value
        for field, value in node.value.items()
        if field in read or field in tested
    ]
    if not _text_keys(seen):  # JSON would write the key 1 as "1": not the same to CEL
        return None
    try:
        return json.dumps(seen)
    except (TypeError, ValueError):  # not JSON: compare nothing, evaluate
        return None


def _text_keys(value: Any) -> bool:
    """Every map in `value` has only string keys."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


@cache
def _program(rule: str) -> Any:
    """The compiled rule (once per process, its parse tree kept in the cache directory), or
    None when it cannot be evaluated offline."""
    if "oldSelf" in rule:  # transition rules need the stored object
        return None
    environment = _environment()
    compiled = _compiled()
    try:
        if rule not in compiled.trees:
            compiled.trees[rule] = environment.compile(rule)
            compiled.changed = True
        return environment.program(compiled.trees[rule])
    except Exception:  # celpy's compile errors (CELParseError and others)
        return None


@dataclass
class _Compiled:
    """The parse trees of CEL rules, by rule text (celpy's compile is lark's parse)."""

    key: str
    trees: dict[str, Any]
    changed: bool = False


@cache
def _compiled() -> _Compiled:
    """The rules compiled by earlier processes with the same celpy grammar and parser module,
    lark and Python (the key), from the cache directory."""
    import lark

    digest = hashlib.sha256()
    for source in ("cel.lark", "celparser.py"):  # the grammar, and how celpy drives lark
        digest.update((resources.files("celpy") / source).read_bytes())
    key = f"{digest.hexdigest()}/lark {lark.__version__}/python {sys.version.split()[0]}"
    stored = _load_cached(_RULES_FILE, key)
    return _Compiled(key, dict(stored) if isinstance(stored, dict) else {})


def _save_compiled() -> None:
    compiled = _compiled()
    if compiled.changed:
        _save_cached(_RULES_FILE, compiled.key, compiled.trees)
        compiled.changed = False


@cache
def _environment() -> Any:
    """The one celpy Environment of the process, with celpy's own parser built only when a rule
    must be compiled (`_LazyParser`): a process whose rules all come from the cache never
    builds it."""
    import celpy

    parser_class = vars(celpy)["CELParser"]
    setattr(celpy, "CELParser", _LazyParser)  # noqa: B010 (what Environment() instantiates)
    try:
        return celpy.Environment()
    finally:
        setattr(celpy, "CELParser", parser_class)  # noqa: B010


class _LazyParser:
    """Stands for celpy's CELParser in the Environment, and builds it on the first parse.

    The parser is lark's LALR parser of the CEL grammar, whose table construction costs more
    than everything else `lint` does with CEL (0.3 s): it is built with lark's own `cache`
    option, so that lark stores the tables in `cel-parser.lark` in the cache directory and later
    processes load them instead. lark keys the file by the sha256 of the grammar, its options,
    lark's version and Python's, and rebuilds on any mismatch or unreadable file. The parser is
    celpy's own (its grammar and options): only lark's `cache` argument is added."""

    def __init__(self, tree_class: type) -> None:
        self.tree_class = tree_class
        self._parser: Any = None

    def parse(self, text: str) -> Any:
        if self._parser is None:
            from celpy import celparser

            cache_file = _parser_cache_file()
            if celparser.CELParser.CEL_PARSER is not None or cache_file is None:
                self._parser = celparser.CELParser(tree_class=self.tree_class)
            else:
                build = vars(celparser)["Lark"]
                setattr(celparser, "Lark", functools.partial(build, cache=cache_file))  # noqa: B010
                try:
                    self._parser = celparser.CELParser(tree_class=self.tree_class)
                finally:
                    setattr(celparser, "Lark", build)  # noqa: B010
        return self._parser.parse(text)


def _parser_cache_file() -> str | None:
    return _cache_file("cel-parser.lark")  # lark's own format (a pickle too)


# -- the cache directory ------------------------------------------------------------------------
# What one run of `lint` or `plan` computes from this package alone (the CRD parsed, the CEL
# grammar's LALR tables, the rules' parse trees), later runs load: each file holds its key (the
# sha256 and versions of what it was computed from) and is used only when the key is the one
# this process computes; anything else (no file, another key, a file that does not load) is
# computed again and the file rewritten (write then rename: a reader never sees half a file).
# The files are pickles, read from the user's own cache directory (as lark reads its own cache).
_CRD_FILE = "crd.pickle"
_RULES_FILE = "cel-rules.pickle"


def _cache_file(name: str) -> str | None:
    """`name` under the cache root ($DATAMIGRATION_CACHE, else
    $XDG_CACHE_HOME/datamigration-operator, else ~/.cache/datamigration-operator, as
    hack/build-cluster-bins.sh), or None when the root cannot be made, or when the root or the
    file belongs to another user or others may write it (a pickle is code: only the user's own
    files are loaded)."""
    root = os.environ.get("DATAMIGRATION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "datamigration-operator",
    )
    path = os.path.join(root, name)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if not _own(root) or (os.path.exists(path) and not _own(path)):
            return None
    except OSError:
        return None
    return path


def _own(path: str) -> bool:
    """`path` is this user's, and only this user may write it."""
    found = os.stat(path)
    return found.st_uid == os.geteuid() and not found.st_mode & 0o022


def _load_cached(name: str, key: str) -> Any:
    """What `_save_cached(name, key, value)` stored, or None."""
    path = _cache_file(name)
    if path is None:
        return None
    try:
        with open(path, "rb") as stored:
            found_key, value = pickle.load(stored)  # noqa: S301 (the user's own cache files)
    except Exception:  # no file, or one that does not load: computed again
        return None
    return value if found_key == key else None


def _save_cached(name: str, key: str, value: Any) -> None:
    path = _cache_file(name)
    if path is None:
        return
    try:
        data = pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # something that does not pickle: not kept
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:  # a cache that cannot be written only costs the computation
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _schema_path(path: Path) -> str:
    return _render(tuple("[*]" if isinstance(p, int) else p for p in path)).replace(".[*]", "[*]")


def cel_rules() -> list[tuple[str, str]]:
    """Every `(schema path, rule)` of the CRD's served versions (for docs and tests)."""
    found: list[tuple[str, str]] = []

    def walk(schema: Mapping[str, Any], where: str) -> None:
        for rule in schema.get("x-kubernetes-validations") or ():
            found.append((where, str(rule.get("rule"))))
        for key, sub in (schema.get("properties") or {}).items():
            walk(sub, f"{where}.{key}" if where else key)
        if isinstance(schema.get("items"), Mapping):
            walk(schema["items"], where + "[*]")

    for schema in served_versions().values():
        walk(schema, "")
    return found
