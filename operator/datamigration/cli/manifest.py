"""Reading a manifest file for the offline verbs (`lint`, `plan`) with every input bounded.

Why: `lint` and `plan` run on whatever a pull request contains. A file of any size or shape must
end in a clear `error: ...` line, never in a traceback, a hang or a crash. PyYAML's composer and
constructor, jsonschema, CEL and the spec parser all recurse over the document, and libyaml's C
composer does so on the C stack, where no recursion limit applies. So, before anything recursive
runs, this module checks:

- the file size (`MAX_FILE_BYTES`), before reading more than that;
- the shape of the YAML on its event stream (libyaml's parser is iterative): nesting depth
  (`MAX_DEPTH`), the node count with aliases expanded (`MAX_NODES`, which stops "billion laughs"
  alias bombs) and duplicate mapping keys (which `kubectl` refuses and PyYAML would silently
  resolve to the last one).

Only then are the documents composed. Every refusal is a `CliError` naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from datamigration.cli.errors import CliError

#: Larger files are refused unread. The API server refuses request bodies over 3 MiB
#: (`schema.MAX_OBJECT_BYTES` reports that per object); the file may hold several documents and
#: its YAML is a little larger than the JSON kubectl sends, hence a bound a little above it.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: The deepest DataMigration field is about 8 levels down (spec.expand.steps[].command.env[].name);
#: metadata.managedFields reaches about 15. 64 leaves room and keeps every recursive walk short.
MAX_DEPTH = 64
#: Nodes (scalars, lists, maps, keys included) per file with aliases expanded. A DataMigration
#: with every list of the CRD at its maximum has about 100,000; typical ones a few hundred.
MAX_NODES = 200_000


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader, reading timestamps as strings, as kubectl's YAML-to-JSON does."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


@dataclass
class _Frame:
    """An open collection in the event stream."""

    is_mapping: bool
    children: int = 0  # node starts seen directly inside it
    keys: set[str] = field(default_factory=set)
    nodes: int = 1  # nodes inside it, itself included, aliases expanded
    anchor: str | None = None


def read_manifest(path: str) -> str:
    """The text of the file, refused if it is too large or not UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        size = Path(path).stat().st_size
        raise CliError(
            f"{path} is {size:,} bytes, more than the {MAX_FILE_BYTES:,} (4 MiB) the offline "
            "tools read: it was not checked",
            "the API server refuses objects over 3 MiB; split the file, one DataMigration each",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {path}: not UTF-8 (byte {exc.start})") from None


def check_shape(text: str, path: str) -> None:
    """Refuse YAML that is too deep, too large once aliases expand, or has duplicate keys.

    Iterative over libyaml's event stream: nothing here recurses, whatever the input.
    """
    stack: list[_Frame] = []
    anchors: dict[str, int] = {}  # anchor -> nodes of the anchored node
    total = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            line = event.start_mark.line + 1 if event.start_mark else 0
            if isinstance(event, yaml.DocumentStartEvent):  # anchors are per document
                stack.clear()
                anchors.clear()
                continue
            if not isinstance(event, yaml.NodeEvent | yaml.CollectionEndEvent):
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                if done.anchor is not None:
                    anchors[done.anchor] = done.nodes
                if stack:
                    stack[-1].nodes += done.nodes
                continue
            # A node starts: a scalar, an alias, a sequence or a mapping.
            if stack:
                parent = stack[-1]
                is_key = parent.is_mapping and parent.children % 2 == 0
                parent.children += 1
                if is_key and isinstance(event, yaml.ScalarEvent):
                    if event.value in parent.keys:
                        raise CliError(
                            f'{path}: line {line}: mapping key "{event.value}" appears twice',
                            "kubectl refuses duplicate keys; keep one",
                        )
                    parent.keys.add(event.value)
            size = anchors.get(event.anchor or "", 1) if isinstance(event, yaml.AliasEvent) else 1
            total += size
            if total > MAX_NODES:
                raise CliError(
                    f"{path}: line {line}: more than {MAX_NODES:,} YAML nodes (aliases "
                    "expanded): the file was not checked",
                    "no DataMigration within the CRD's bounds is this large: split the file, "
                    "or look for aliases that multiply",
                )
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep(path, line)
                stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), anchor=event.anchor))
            else:
                if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                    anchors[event.anchor] = 1
                if stack:
                    stack[-1].nodes += size
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own bound (flow style)
            mark = getattr(exc, "problem_mark", None)
            raise _too_deep(path, mark.line + 1 if mark is not None else 0) from None
        raise _yaml_error(path, exc) from None


def _too_deep(path: str, line: int) -> CliError:
    return CliError(
        f"{path}: line {line}: nesting deeper than {MAX_DEPTH} levels: the file was not checked",
        "no DataMigration is nested this deep; look for a runaway list or map",
    )


def load_documents(path: str) -> list[Mapping[str, Any]]:
    """The YAML documents of a file (empty ones dropped; a non-mapping becomes `{}`).

    Unreadable, oversized or malformed input is a `CliError`; nothing recursive runs on input
    that `check_shape` has not accepted.
    """
    text = read_manifest(path)
    check_shape(text, path)
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    return [d if isinstance(d, Mapping) else {} for d in documents]


def _yaml_error(path: str, exc: yaml.YAMLError) -> CliError:
    mark = getattr(exc, "problem_mark", None)
    line = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    return CliError(f"{path} is not valid YAML: {problem}{line}")
