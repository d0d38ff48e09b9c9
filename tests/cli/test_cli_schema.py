"""The offline tools agree with the cluster: `lint` and `plan` check a manifest against the CRD's
own schema and CEL rules, report every error with its path, and refuse oversized or too-deep input
with one clear line.

Every bound of the CRD is taken from the CRD itself (`test_every_crd_bound_is_enforced_offline`),
so a bound added to the CRD is tested without a line here. The last test compares the offline
verdict with the real API server's (server-side dry run with strict field validation).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_docs as d
import pytest
import yaml

from datamigration.cli import manifest, schema
from datamigration.cli.main import main
from localcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


def write(tmp_path: Path, *docs: Any) -> str:
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def problems(doc: dict[str, Any]) -> list[str]:
    return [str(p) for p in schema.validate_manifest(doc).problems]


# -- one source of truth ------------------------------------------------------------------------
def test_packaged_crd_is_byte_identical_with_crds_dir() -> None:
    source = REPO / "crds" / schema.CRD_FILE
    assert schema.crd_text() == source.read_bytes(), (
        f"cp {source} operator/datamigration/crds/ (lint and plan validate with that copy)"
    )


def test_every_cel_rule_of_the_crd_is_evaluated_offline() -> None:
    doc = full_manifest()
    del doc["spec"]["workload"]  # full_manifest() has both forms; a valid one has one of them
    report = schema.validate_manifest(doc)
    assert report.problems == []
    assert report.unchecked == []
    rules = schema.cel_rules()
    assert rules, "the CRD has CEL rules"
    assert all(schema._program(rule) is not None for _, rule in rules)


def test_a_rule_that_needs_the_stored_object_is_not_guessed() -> None:
    assert schema._program("self.approved == oldSelf.approved || self.approved") is None


# -- unknown fields, several errors -------------------------------------------------------------
def test_unknown_field_is_reported_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["codeRollout"]["timeoutSecond"] = 600
    code, out, _ = run(["lint", write(tmp_path, doc)], capsys)
    assert code == 1
    assert "spec.codeRollout.timeoutSecond: Unknown field; did you mean timeoutSeconds?" in out


def test_every_error_of_a_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["codeRollout"]["timeoutSecond"] = 600
    doc["spec"]["runner"] = {"backoffLimit": 11}
    doc["spec"]["contract"]["approval"] = "Sometimes"
    doc["spec"]["expand"]["steps"][0]["name"] = "Add_Column"
    doc["metadata"]["labels"] = {"a": "b"}
    doc["metadata"]["label"] = "typo"
    code, out, _ = run(["lint", write(tmp_path, doc)], capsys)
    assert code == 1
    for expected in [
        "metadata.label: Unknown field",
        "spec.codeRollout.timeoutSecond: Unknown field",
        "spec.runner.backoffLimit: Invalid value: 11: should be less than or equal to 10",
        'spec.contract.approval: Unsupported value: "Sometimes": supported values: '
        '"Automatic", "Manual"',
        'spec.expand.steps[0].name: Invalid value: "Add_Column": should match',
        "5 errors, 0 warnings",
    ]:
        assert expected in out, out


def test_plan_lists_every_schema_error_under_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["codeRollout"]["timeoutSecond"] = 600
    doc["spec"]["runner"] = {"backoffLimit": 11}
    code, out, _ = run(["plan", write(tmp_path, doc)], capsys)
    assert code == 1
    assert "  Verdict:    INVALID (the CRD's schema and rules): the API server refuses it" in out
    assert "    spec.codeRollout.timeoutSecond: Unknown field" in out
    assert "    spec.runner.backoffLimit: Invalid value: 11" in out


def test_schema_errors_come_with_the_sql_lint_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["codeRollout"]["timeoutSecond"] = 600
    doc["spec"]["expand"]["steps"][0]["sql"] = "ALTER TABLE users DROP COLUMN legacy"
    code, out, _ = run(["lint", write(tmp_path, doc)], capsys)
    assert code == 1
    assert "spec.codeRollout.timeoutSecond: Unknown field" in out
    assert "drop-column" in out


def test_null_for_a_field_that_is_not_nullable_is_pruned_like_the_api_server() -> None:
    doc = d.manifest()
    doc["spec"]["runner"] = {"image": None}
    assert problems(doc) == []


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    doc = d.manifest()
    doc["spec"]["runner"] = {"backoffLimit": 1.0}
    assert problems(doc) == []


def test_status_values_are_ignored_but_unknown_status_fields_are_not() -> None:
    doc = d.manifest()
    doc["status"] = {"phase": "NoSuchPhase"}
    assert problems(doc) == []  # the API server resets the status on create
    doc["status"]["bogus"] = 1
    assert problems(doc) == ["status.bogus: Unknown field"]


# -- CEL rules ----------------------------------------------------------------------------------
def test_cel_exactly_one_kind_per_step() -> None:
    doc = d.manifest()
    doc["spec"]["expand"]["steps"][0]["command"] = {"image": "tool:1", "command": ["migrate"]}
    assert problems(doc) == [
        "spec.expand.steps[0]: Invalid value: a step has exactly one of sql, backfill, verify, "
        "command"
    ]


def test_cel_transactional_only_on_sql_steps() -> None:
    doc = d.manifest()
    doc["spec"]["backfill"]["steps"][0]["transactional"] = False
    assert problems(doc) == [
        "spec.backfill.steps[0]: Invalid value: transactional applies to sql steps only"
    ]


@pytest.mark.parametrize(
    ("code_rollout", "refused"),
    [({"mode": "Apply"}, True), (None, True), ({"mode": "Observe"}, False)],
    ids=["Apply", "mode defaulted to Apply", "Observe"],
)
def test_cel_apply_mode_requires_the_workload_image(
    code_rollout: dict[str, str] | None, refused: bool
) -> None:
    doc = d.manifest()
    del doc["spec"]["workload"]["image"]
    if code_rollout is None:
        del doc["spec"]["codeRollout"]
    else:
        doc["spec"]["codeRollout"] = code_rollout
    expected = (
        "spec.workload.image: Invalid value: spec.workload.image is required when "
        "spec.codeRollout.mode is Apply"
    )
    assert problems(doc) == ([expected] if refused else [])


# -- every bound of the CRD ---------------------------------------------------------------------
def full_manifest() -> dict[str, Any]:
    """A valid DataMigration with every field of the spec present at least once."""
    steps = [
        {
            "name": "add-column",
            "sql": "ALTER TABLE t ADD COLUMN c text",
            "transactional": True,
            "lint": {"allow": ["prefer-text-field"], "reason": "reviewed"},
            "lockTimeoutMilliseconds": 500,
            "statementTimeoutMilliseconds": 1000,
            "lockRetries": 3,
        },
        {
            "name": "copy",
            "backfill": {
                "table": "public.t",
                "key": "id",
                "set": {"c": "b"},
                "where": "c IS NULL",
                "batchSize": 1000,
                "targetBatchMilliseconds": 200,
                "pauseMilliseconds": 10,
            },
        },
        {"name": "check", "verify": {"query": "SELECT 0", "expect": 0}},
        {
            "name": "tool",
            "command": {
                "image": "tool:1",
                "command": ["migrate"],
                "args": ["--go"],
                "env": [{"name": "MODE", "value": "x"}],
            },
        },
    ]
    doc = d.manifest()
    spec = doc["spec"]
    spec["runner"] = {
        "image": "runner:1",
        "serviceAccountName": "runner",
        "backoffLimit": 1,
        "activeDeadlineSeconds": 3600,
        "lockTimeoutSeconds": 30,
        "allowChecksumChange": False,
        "lockTimeoutMilliseconds": 2000,
        "statementTimeoutMilliseconds": 60000,
        "lockRetries": 5,
    }
    spec["paused"] = False
    spec["abort"] = False
    spec["contract"]["approvedDigest"] = "sha256:" + "0" * 64
    for phase in ("expand", "backfill", "contract"):
        spec[phase]["steps"] = copy.deepcopy(steps)
    spec["rollback"] = {"steps": copy.deepcopy(steps)}
    spec["database"]["dialect"] = "postgresql"
    spec["operations"] = full_operations()
    spec["codeRollout"]["together"] = False
    spec["contract"]["databaseSessions"] = {
        "applicationNamePattern": "shop-api:1\\.",
        "role": "shop",
        "olderThanRolloutProof": True,
    }
    spec["workloads"] = [
        {"kind": "StatefulSet", "name": "db", "container": "api", "image": "a:2", "mode": "Apply"},
        {"kind": "Deployment", "name": "web", "containers": ["api"], "image": "a:2"},
        {
            "kind": "Pods",
            "selector": {
                "matchLabels": {"app": "legacy"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["old"]}],
            },
            "container": "api",
            "image": "a:2",
            "mode": "Observe",
        },
    ]
    return doc


def full_operations() -> list[dict[str, Any]]:
    """One operation of each kind, with every field it has."""
    batch = {"key": "id", "batchSize": 1000}
    col = {"table": "public.t", "column": "c"}
    return [
        {"addColumn": {**col, "type": "text", "default": "'x'", "notNull": True, "up": "b"}
         | batch},
        {"renameColumn": {"table": "t", "from": "a", "to": "b", "type": "text"} | batch},
        {"changeColumnType": {**col, "to": "c2", "type": "bigint", "up": "c::bigint",
                              "down": "c2::int"} | batch},
        {"splitColumn": {**col, "into": [{"column": "c1", "type": "text", "up": "c"},
                                  {"column": "c2", "type": "text", "up": "c"}],
                         "down": "c1 || c2"} | batch},
        {"mergeColumns": {"table": "t", "columns": ["a", "b"],
                          "into": {"column": "ab", "type": "text", "up": "a || b"},
                          "down": {"a": "ab", "b": "ab"}} | batch},
        {"setNotNull": {**col, "fill": "'x'"} | batch},
        {"addCheck": {"table": "t", "name": "c_positive", "check": "c > 0"}},
        {"addForeignKey": {"table": "t", "name": "t_u_fk", "columns": ["u"],
                           "references": {"table": "u", "columns": ["id"]},
                           "onDelete": "CASCADE"}},
        {"addUnique": {"table": "t", "name": "t_c_key", "columns": ["c"]}},
        {"addIndex": {"table": "t", "name": "t_c_idx", "columns": ["c"], "unique": False,
                      "method": "btree", "where": "c IS NOT NULL"}},
        {"dropIndex": {"name": "t_old_idx"}},
        {"dropColumn": col},
        {"dropTable": {"table": "old_t"}},
        {"copyField": {**col, "from": "f", "to": "g"} | batch},
        {"renameField": {**col, "from": "f", "to": "g"} | batch},
        {"deleteField": {**col, "field": "f"} | batch},
        {"upcast": {**col, "versionField": "v", "initialVersion": 1,
                    "transforms": [{"to": 2, "expression": "c"}]} | batch},
    ]  # fmt: skip


BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "minimum", "minLength",
          "minItems", "minProperties", "enum", "pattern")  # fmt: skip


def crd_bounds() -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """(schema path, keyword, value) for every bound in the CRD's spec."""
    (version,) = schema.served_versions().values()

    def walk(
        node: dict[str, Any], path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], str, Any]]:
        for keyword in BOUNDS:
            if keyword in node:
                yield path, keyword, node[keyword]
        for key, sub in (node.get("properties") or {}).items():
            yield from walk(sub, (*path, key))
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], (*path, "[*]"))
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], (*path, "{*}"))

    yield from walk(version["properties"]["spec"], ("spec",))


def violate(doc: dict[str, Any], path: tuple[str, ...], keyword: str, bound: Any) -> str:
    """Break `bound` at the first instance of `path` in `doc`; returns the concrete path."""
    parent: Any = doc
    concrete = ""
    for depth, part in enumerate(path[:-1]):
        if part == "[*]":  # the first item that has the next field
            following = path[depth + 1]
            index = next(
                (
                    i
                    for i, item in enumerate(parent)
                    if following in ("[*]", "{*}") or following in item
                ),
                0,
            )
            parent, concrete = parent[index], f"{concrete}[{index}]"
        elif part == "{*}":
            key = next(iter(parent))
            parent, concrete = parent[key], f"{concrete}.{key}"
        else:
            assert part in parent, f"full_manifest() lacks {'.'.join(path)}: add it"
            parent, concrete = parent[part], f"{concrete}.{part}" if concrete else part
    last = path[-1]
    key: Any = 0 if last == "[*]" else next(iter(parent)) if last == "{*}" else last
    concrete += "[0]" if last == "[*]" else f".{key}"
    assert key in parent if isinstance(parent, dict) else True, f"full_manifest() lacks {path}"
    current = parent[key]
    bad: Any = {
        "maxLength": lambda: "a" * (bound + 1),
        "minLength": lambda: "",
        "maxItems": lambda: [copy.deepcopy(current[0]) for _ in range(bound + 1)],
        "minItems": lambda: [],
        "maxProperties": lambda: {f"c{i}": "x" for i in range(bound + 1)},
        "minProperties": lambda: {},
        "maximum": lambda: bound + 1,
        "minimum": lambda: bound - 1,
        "enum": lambda: "NoSuchValue",
        # Matches none of the CRD's patterns: identifiers, DNS labels, "non-blank" (\S).
        "pattern": lambda: "  ",
    }[keyword]()
    parent[key] = bad
    return concrete


EXPECTED_MESSAGE = {
    "maxLength": "Too long: may not be longer than",
    "minLength": "should be at least",
    "maxItems": "Too many:",
    "minItems": "should have at least",
    "maxProperties": "Too many:",
    "minProperties": "should have at least",
    "maximum": "should be less than or equal to",
    "minimum": "should be greater than or equal to",
    "enum": "Unsupported value",
    "pattern": "should match",
}
CRD_BOUNDS = list(crd_bounds())


def test_the_crd_bounds_every_list_string_and_map_of_the_spec() -> None:
    (version,) = schema.served_versions().values()
    unbounded: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        kind = node.get("type")
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if (kind == "string" or node.get("x-kubernetes-int-or-string")) and (
            "maxLength" not in node
        ):
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[*]")

    walk(version["properties"]["spec"], "spec")
    assert unbounded == []


@pytest.mark.parametrize(
    ("path", "keyword", "bound"),
    CRD_BOUNDS,
    ids=[f"{'.'.join(p).replace('.[*]', '[*]')} {k}" for p, k, _ in CRD_BOUNDS],
)
def test_every_crd_bound_is_enforced_offline(
    path: tuple[str, ...], keyword: str, bound: Any
) -> None:
    doc = full_manifest()
    where = violate(doc, path, keyword, bound)
    found = [p for p in schema.validate_manifest(doc).problems if p.path == where]
    assert any(EXPECTED_MESSAGE[keyword] in p.message for p in found), (where, found)


# -- oversized and too-deep input ---------------------------------------------------------------
def test_60000_steps_are_refused_unchecked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["expand"]["steps"] = [
        {"name": f"s{i}", "sql": "ALTER TABLE t DROP COLUMN c"} for i in range(60_000)
    ]
    path = str(tmp_path / "migration.yaml")
    Path(path).write_text(json.dumps(doc, separators=(",", ":")))  # JSON is YAML, quick to write
    for verb in ("lint", "plan"):
        code, out, err = run([verb, path], capsys)
        assert code == 1
        assert re.fullmatch(
            rf"error: {re.escape(path)}: line \d+: more than 200,000 YAML nodes \(aliases "
            r"expanded\): the file was not checked\nhint: .*\n",
            err,
        ), err
        assert out == ""


def test_too_many_steps_are_reported_and_not_linted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    doc["spec"]["expand"]["steps"] = [
        {"name": f"s{i}", "sql": "ALTER TABLE t DROP COLUMN c"} for i in range(5_000)
    ]
    code, out, _ = run(["lint", write(tmp_path, doc)], capsys)
    assert code == 1
    assert "spec.expand.steps: Too many: 5000: must have at most 50 items" in out
    assert "semantic checks and SQL lint not run" in out
    assert "drop-column" not in out  # not linted: the API server would not store it


def test_a_file_over_the_size_bound_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(d.manifest()) + "# " + "x" * manifest.MAX_FILE_BYTES + "\n")
    for verb in ("lint", "plan"):
        code, out, err = run([verb, str(path)], capsys)
        assert (code, out) == (1, "")
        assert err.startswith(f"error: {path} is {path.stat().st_size:,} bytes, more than the ")
        assert "it was not checked" in err


def test_an_object_over_the_api_servers_request_limit_is_an_error() -> None:
    doc = d.manifest()
    doc["metadata"]["annotations"] = {"note": "x" * schema.MAX_OBJECT_BYTES}
    [problem] = schema.validate_manifest(doc).problems
    assert problem.message.startswith("Request entity too large: the object is ")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [500, 100_000])
@pytest.mark.parametrize("verb", ["lint", "plan"])
def test_deep_nesting_is_refused_with_one_line(
    verb: str, depth: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(
        yaml.safe_dump(d.manifest()).replace("spec:\n", f"spec:\n  deep: {nested(depth)}\n", 1)
    )
    code, out, err = run([verb, str(path)], capsys)
    assert code == 1
    assert re.fullmatch(
        rf"error: {re.escape(str(path))}: line \d+: nesting deeper than 64 levels: the file was "
        r"not checked\nhint: no DataMigration is nested this deep; look for a runaway list or "
        r"map\n",
        err,
    ), err
    assert out == ""


def test_nesting_within_the_bound_is_checked_normally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(
        yaml.safe_dump(d.manifest()).replace("spec:\n", f"spec:\n  deep: {nested(40)}\n", 1)
    )
    code, out, _ = run(["lint", str(path)], capsys)
    assert code == 1
    assert "spec.deep: Unknown field" in out


def test_an_alias_bomb_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(d.manifest()) + "\n".join(lines) + "\n")
    code, _, err = run(["lint", str(path)], capsys)
    assert code == 1
    assert "more than 200,000 YAML nodes (aliases expanded)" in err


def test_a_duplicate_key_is_refused_like_kubectl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(d.manifest(), sort_keys=False)
    path.write_text(text.replace("spec:\n", "spec:\n  abort: true\n  abort: false\n", 1))
    code, _, err = run(["lint", str(path)], capsys)
    assert code == 1
    assert 'mapping key "abort" appears twice' in err


def test_aliases_within_bounds_are_expanded(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("a: &x [1, 2]\nb: *x\n")
    assert manifest.load_documents(str(path)) == [{"a": [1, 2], "b": [1, 2]}]


# -- command steps cannot be linted -------------------------------------------------------------
def with_command_step() -> dict[str, Any]:
    doc = d.manifest()  # a command step is its phase's only step (the operator's rule)
    doc["spec"]["backfill"]["steps"] = [
        {"name": "seed-data", "command": {"image": "tool:1", "command": ["seed"]}}
    ]
    return doc


def test_lint_marks_command_steps_unchecked_and_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, with_command_step())
    code, out, _ = run(["lint", path], capsys)
    assert code == 0
    assert (
        f'{path} shop/rename-email: unchecked: backfill step "seed-data" (command): the SQL lint '
        "cannot see what a program does to the database: review its image and command" in out
    )
    assert "run your tool's own dry run against a copy of the database" in out


def test_plan_marks_command_steps_unchecked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["plan", write(tmp_path, with_command_step())], capsys)
    assert code == 0
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if "seed-data" in line and "command" in line)
    assert "unchecked: see Unchecked below" in lines[index + 1]
    assert '  Unchecked:  backfill step "seed-data" (command)' in lines
    assert (
        "    the SQL lint cannot see what a program does to the database: review its image" in out
    )


# -- the offline verdict is the API server's ----------------------------------------------------
def broken(change: Any) -> dict[str, Any]:
    doc = d.manifest()
    change(doc)
    return doc


def spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec


AGREEMENT_CASES: dict[str, dict[str, Any]] = {
    "valid": d.manifest(),
    "valid, null runner image pruned": broken(lambda m: spec_of(m).update(runner={"image": None})),
    "unknown field": broken(lambda m: spec_of(m)["codeRollout"].update(timeoutSecond=5)),
    "unknown metadata field": broken(lambda m: m["metadata"].update(label="x")),
    "bad metadata.name": broken(lambda m: m["metadata"].update(name="Bad_Name")),
    "above maximum": broken(lambda m: spec_of(m).update(runner={"backoffLimit": 11})),
    "enum": broken(lambda m: spec_of(m)["contract"].update(approval="Sometimes")),
    "pattern": broken(lambda m: spec_of(m)["expand"]["steps"][0].update(name="Add_Col")),
    "too many steps": broken(
        lambda m: spec_of(m)["expand"].update(
            steps=[{"name": f"s{i}", "sql": "SELECT 1"} for i in range(51)]
        )
    ),
    "sql too long": broken(lambda m: spec_of(m)["expand"]["steps"][0].update(sql="x" * 65537)),
    "duplicate step names": broken(
        lambda m: spec_of(m)["expand"]["steps"].append(spec_of(m)["expand"]["steps"][0])
    ),
    "expect is a float": broken(lambda m: spec_of(m)["contract"]["verify"][0].update(expect=1.5)),
    "CEL: two kinds in a step": broken(
        lambda m: spec_of(m)["expand"]["steps"][0].update(verify={"query": "x", "expect": 0})
    ),
    "CEL: Apply without image": broken(lambda m: spec_of(m)["workload"].pop("image")),
    "valid, whole float as integer": broken(
        lambda m: spec_of(m).update(runner={"backoffLimit": 2.0})
    ),
    "valid, status values reset": broken(lambda m: m.update(status={"phase": "NoSuchPhase"})),
    "unknown status field": broken(lambda m: m.update(status={"bogus": 1})),
    "too many set columns": broken(
        lambda m: spec_of(m)["backfill"]["steps"][0]["backfill"].update(
            set={f"c{i}": "1" for i in range(65)}
        )
    ),
    "CEL: transactional on a backfill step": broken(
        lambda m: spec_of(m)["backfill"]["steps"][0].update(transactional=True)
    ),
    "several errors": broken(
        lambda m: (
            spec_of(m).update(runner={"backoffLimit": -1}),
            spec_of(m)["workload"].update(container="API"),
            spec_of(m)["codeRollout"].update(timeoutSeconds=5),
        )
    ),
}


@pytest.mark.e2e
def test_the_offline_verdict_is_the_api_servers(cluster: Any, tmp_path: Path) -> None:
    """`kubectl create --dry-run=server --validate=strict` and `schema.validate_manifest` agree on
    accept/refuse for every case, and every field the server names is named offline too (the
    server stops at unknown fields and skips CEL after schema errors; offline reports all)."""
    kubectl = str(Path(cluster.bin_dir) / "kubectl")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def k(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60,
            check=False,
        )  # fmt: skip

    crd = REPO / "crds" / schema.CRD_FILE
    assert k("apply", "--server-side", "--force-conflicts", "-f", str(crd)).returncode == 0
    # Polled, not `kubectl wait`: that fails on a CRD whose conditions are not written yet.
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_for(
        "the CRD to be established",
        lambda: k("get", "crd/" + crd.stem, "-o", established).stdout == "True",
        timeout=60,
    )
    k("create", "namespace", "schema-agreement")
    disagreements = []
    for name, doc in AGREEMENT_CASES.items():
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = "schema-agreement"
        offline = schema.validate_manifest(doc)
        server = k("create", "--dry-run=server", "--validate=strict", "-f", "-",
                   stdin=yaml.safe_dump(doc))  # fmt: skip
        said = server.stdout + server.stderr
        server_paths = set(re.findall(r'unknown field "([^"]+)"', said))
        server_paths |= set(re.findall(r"^(?:\* )?([a-zA-Z][\w.\[\]]*): ", said, re.M))
        server_paths |= set(re.findall(r"is invalid: ([a-zA-Z][\w.\[\]]*): ", said))
        offline_paths = {p.path for p in offline.problems}
        if server.returncode != 0 and not server_paths:
            disagreements.append(f"{name}: no field path read from the server's answer: {said}")
        if (server.returncode == 0) != offline.ok or not server_paths <= offline_paths:
            disagreements.append(
                f"{name}: server exit {server.returncode}: {said.strip()}\n"
                f"  offline: {json.dumps([str(p) for p in offline.problems])}"
            )
    assert disagreements == [], "\n".join(disagreements)


def test_timestamps_are_strings_as_for_kubectl(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("expect: 2026-03-01\n")
    assert manifest.load_documents(str(path)) == [{"expect": "2026-03-01"}]


@pytest.mark.parametrize(
    ("structural", "value", "valid"),
    [
        ({"type": "string", "nullable": True}, None, True),
        ({"type": "string"}, None, False),
        ({"type": "string", "enum": ["a"], "nullable": True}, None, True),
        ({"x-kubernetes-int-or-string": True}, 3, True),
        ({"x-kubernetes-int-or-string": True}, "3", True),
        ({"x-kubernetes-int-or-string": True}, 1.5, False),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, {"b": "x"}, False),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
            {"b": "x"},
            True,
        ),
        ({"type": "integer"}, 2.0, True),
        ({"type": "integer"}, True, False),
    ],
    ids=[
        "nullable",
        "not nullable",
        "nullable enum",
        "int-or-string: int",
        "int-or-string: string",
        "int-or-string: float",
        "unknown field",
        "preserve-unknown-fields",
        "whole float is an integer",
        "a boolean is not an integer",
    ],
)
def test_structural_schema_conventions(structural: dict[str, Any], value: Any, valid: bool) -> None:
    validator = schema._validator_class()(schema._to_json_schema(structural))
    assert validator.is_valid(value) is valid


def test_workload_and_workloads_are_exclusive_and_pods_never_apply() -> None:
    doc = full_manifest()
    problems = [p.message for p in schema.validate_manifest(doc).problems]
    assert any("set exactly one of spec.workload" in m for m in problems), problems
    del doc["spec"]["workload"]
    doc["spec"]["workloads"][2]["mode"] = "Apply"
    doc["spec"]["workloads"][0]["selector"] = {"matchLabels": {"a": "b"}}
    problems = [p.message for p in schema.validate_manifest(doc).problems]
    assert any("mode must be Observe" in m for m in problems), problems
    assert any("kind Pods takes selector" in m for m in problems), problems


# -- CEL: the same verdicts, computed once ------------------------------------------------------
def test_a_rule_reads_only_the_fields_it_names() -> None:
    presence = "!has(self.transactional) || has(self.sql)"
    assert schema._reads(presence) == (frozenset(), frozenset({"transactional", "sql"}))
    value = "self.kind != 'Pods' || !has(self.mode) || self.mode == 'Observe'"
    assert schema._reads(value) == (frozenset({"kind", "mode"}), frozenset())
    nested = "!has(self.workload) || has(self.workload.image)"  # has() of a nested field
    assert schema._reads(nested) == (frozenset({"workload"}), frozenset())
    for whole in ["size(self) > 0", "self['a'] != ''", "self.all(k, k != 'x')", "self.size() > 1"]:
        assert schema._reads(whole) is None, whole  # reads self otherwise: evaluated every time


def test_each_node_gets_its_own_verdict_when_rules_are_evaluated_once() -> None:
    doc = d.manifest()
    doc["spec"]["expand"]["steps"] = [
        {"name": "both-1", "sql": "SELECT 1", "command": {"image": "x", "command": ["a"]}},
        {"name": "fine", "sql": "SELECT 2"},
        {"name": "both-2", "sql": "SELECT 3", "command": {"image": "y", "command": ["b"]}},
        {"name": "tx", "verify": {"query": "SELECT 1", "expect": 1}, "transactional": True},
        {"name": "none"},
    ]
    found = [p for p in problems(doc) if "exactly one of" in p or "transactional" in p]
    assert found == [
        "spec.expand.steps[0]: Invalid value: a step has exactly one of sql, backfill, verify, "
        "command",
        "spec.expand.steps[2]: Invalid value: a step has exactly one of sql, backfill, verify, "
        "command",
        "spec.expand.steps[3]: Invalid value: transactional applies to sql steps only",
        "spec.expand.steps[4]: Invalid value: a step has exactly one of sql, backfill, verify, "
        "command",
    ]


def test_a_node_celpy_cannot_convert_shares_no_verdict() -> None:
    # A YAML date is no JSON value: step a's rules cannot be evaluated (which its schema error
    # already says), and neither that nor step b's pass, on what reads the same, leaks across.
    doc = d.manifest()
    doc["spec"]["expand"]["steps"] = [
        {"name": "a", "sql": "SELECT 1", "lint": dt.date(2024, 1, 1)},
        {"name": "b", "sql": "SELECT 1", "transactional": True},
        {"name": "c", "transactional": True, "command": {"image": "x", "command": ["a"]}},
    ]
    assert problems(doc) == [
        'spec.expand.steps[0].lint: Invalid value: "2024-01-01": must be of type object',
        "spec.expand.steps[2]: Invalid value: transactional applies to sql steps only",
    ]


def test_what_lint_computes_from_the_package_is_cached_between_processes(tmp_path: Path) -> None:
    doc = d.manifest()
    doc["spec"]["codeRollout"]["timeoutSecond"] = 600
    doc["spec"]["expand"]["steps"][0]["transactional"] = False
    doc["spec"]["expand"]["steps"][0]["command"] = {"image": "x", "command": ["a"]}
    manifest_file = write(tmp_path, doc)
    cache = tmp_path / "cache"
    env = {**os.environ, "DATAMIGRATION_CACHE": str(cache)}
    command = [str(Path(sys.executable).with_name("kubectl-datamigration")), "lint"]

    def lint() -> str:
        done = subprocess.run(
            [*command, manifest_file], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 1 and not done.stderr, done.stderr
        return done.stdout

    first = lint()
    assert "Unknown field; did you mean timeoutSeconds?" in first
    assert "a step has exactly one of sql, backfill, verify, command" in first  # a CEL rule
    files = [cache / name for name in ("crd.pickle", "cel-rules.pickle", "cel-parser.lark")]
    assert all(f.is_file() for f in files)
    written = [f.stat().st_mtime_ns for f in files]
    assert lint() == first  # loaded, not computed again: the files are left as they were
    assert [f.stat().st_mtime_ns for f in files] == written
    for f in files:
        f.write_bytes(b"not what was stored\n")  # unreadable: computed again, same verdict
    assert lint() == first
    assert all(f.read_bytes() != b"not what was stored\n" for f in files)
    assert lint() == first
    # A file others may write is not loaded (a pickle is code): here, trees that would break
    # every rule.
    rules = cache / "cel-rules.pickle"
    key, trees = pickle.loads(rules.read_bytes())  # noqa: S301 (written by this test run)
    rules.write_bytes(pickle.dumps((key, dict.fromkeys(trees, "not a tree"))))
    rules.chmod(0o666)
    planted = rules.read_bytes()
    assert lint() == first
    assert rules.read_bytes() == planted  # neither loaded nor replaced
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env["DATAMIGRATION_CACHE"] = str(blocked / "cache")  # a cache root that cannot be made
    assert lint() == first  # only costs the computation
