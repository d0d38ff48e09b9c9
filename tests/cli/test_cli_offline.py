"""The offline verbs, `plan` and `lint`, through `main([...])`: their text and their exit codes.

Manifests are written to temporary files; nothing contacts a cluster (KUBECONFIG points nowhere
to prove it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cli_docs as d
import pytest
import yaml

from datamigration.cli import plan
from datamigration.cli.main import main


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


def write(tmp_path: Path, *docs: Any, name: str = "migration.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return str(path)


def with_expand_sql(sql: str) -> dict[str, Any]:
    doc = d.manifest()
    doc["spec"]["expand"]["steps"][0]["sql"] = sql
    return doc


def without_container() -> dict[str, Any]:
    doc = d.manifest()
    del doc["spec"]["workload"]["container"]
    return doc


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop-api"}}


# -- plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanCase:
    docs: list[Any]
    code: int
    shows: list[str]
    hides: list[str] = field(default_factory=list)


PLAN_CASES = {
    "valid, manual approval": PlanCase(
        [d.manifest()],
        0,
        [
            "DataMigration shop/rename-email",
            "  Verdict:    valid: the operator will accept it",
            "  Database:   URL from Secret shop-db, key url",
            "  Jobs:       rename-email-<phase>-<attempt>-<uid5> (one per phase and attempt)",
            "  1. expand (Job rename-email-expand-<attempt>-<uid5>)",
            "       add-email-address   sql        ALTER TABLE users ADD COLUMN email_address text",
            "  2. backfill (Job rename-email-backfill-<attempt>-<uid5>)",
            "       copy-email          backfill   users SET email_address = email; key id, "
            "batches of 5,000",
            "  3. codeRollout",
            "       Apply: set container api of Deployment shop-api to "
            "registry.example/shop-api:2.0",
            "  4. contract (Job rename-email-contract-<attempt>-<uid5>)",
            "       gate: code-rollout proven and still true: Deployment shop-api, container api, "
            "image registry.example/shop-api:2.0 (mode Apply, timeout 10m)",
            "       approval: Manual (not approved yet): waits for "
            "`kubectl datamigration approve rename-email`",
            "       all-copied          verify     SELECT count(*) FROM users WHERE email_address "
            "IS DISTINCT FROM e... -> expect 0",
            "       drop-email          sql        ALTER TABLE users DROP COLUMN email",
            "  Lint:       no findings",
        ],
        hides=["INVALID", "lint error"],
    ),
    "valid, automatic approval, other kinds ignored": PlanCase(
        [DEPLOYMENT, d.manifest(approval="Automatic")],
        0,
        [
            "Plan for ",
            ": 1 DataMigration (ignored 1 other document: Deployment)",
            "       approval: Automatic: starts as soon as the gate holds",
        ],
    ),
    "invalid spec": PlanCase(
        [without_container()],
        1,
        [
            "  Verdict:    INVALID (the CRD's schema and rules): the API server refuses it",
            "    spec.workload.container: Required value",
        ],
        hides=["1. expand"],
    ),
    "lint error in expand": PlanCase(
        [with_expand_sql("ALTER TABLE users DROP COLUMN legacy")],
        1,
        [
            "  Verdict:    INVALID (InvalidSpec, lint errors): the operator will run nothing",
            "       add-email-address   sql        ALTER TABLE users DROP COLUMN legacy",
            "                           lint error: drop-column",
            '    error: expand step "add-email-address": drop-column',
            "    1 error, 0 warnings",
        ],
    ),
    "several statements, non-transactional": PlanCase(
        [
            with_expand_sql(
                "-- two indexes\nCREATE INDEX CONCURRENTLY a ON users (id);\n"
                "CREATE INDEX CONCURRENTLY b ON users (email);"
            )
        ],
        1,  # CONCURRENTLY inside a transactional step is a lint error
        [
            "       add-email-address   sql        CREATE INDEX CONCURRENTLY a ON users (id) "
            "(+1 more statement)",
            "                           lint error: concurrently-in-transaction",
        ],
    ),
    "two migrations, one invalid": PlanCase(
        [d.manifest(name="good"), {**without_container(), "metadata": {"name": "bad"}}],
        1,
        [": 2 DataMigrations", "DataMigration shop/good", "DataMigration bad", "INVALID"],
    ),
    "no metadata.name": PlanCase(
        [{**d.manifest(), "metadata": {}}],
        1,
        ["DataMigration <no metadata.name>", "    metadata.name: Required value"],
    ),
}


@pytest.mark.parametrize("case", PLAN_CASES.values(), ids=PLAN_CASES.keys())
def test_plan(case: PlanCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, *copy.deepcopy(case.docs))
    code = main(["plan", path])
    out = capsys.readouterr().out
    assert code == case.code, out
    lines = out.splitlines()
    for expected in case.shows:
        assert any(expected in line for line in lines), f"missing: {expected}\n{out}"
    for unexpected in case.hides:
        assert unexpected not in out, f"unexpected: {unexpected}\n{out}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: cannot read {path}: No such file or directory"),
        ("kind: [unclosed", "error: {path} is not valid YAML: "),
        (yaml.safe_dump(DEPLOYMENT), "error: no DataMigration in {path}"),
    ],
    ids=["missing file", "bad yaml", "no DataMigration"],
)
def test_plan_of_an_unusable_file(
    content: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["plan", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message.format(path=path))
    assert "Traceback" not in captured.err


def test_job_pattern_truncates_long_names_like_the_operator() -> None:
    pattern = plan.job_pattern("x" * 70, "ns", "backfill")
    assert pattern == "x" * (63 - len("-backfill-1-uuuuu")) + "-backfill-<attempt>-<uid5>"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", ("SELECT 1", 0)),
        ("-- note\nALTER TABLE t\n  ADD COLUMN c int;\n", ("ALTER TABLE t ADD COLUMN c int", 0)),
        ("SELECT 1; SELECT 2; SELECT 3;", ("SELECT 1", 2)),
    ],
    ids=["one", "comment and whitespace", "three"],
)
def test_first_statement(sql: str, expected: tuple[str, int]) -> None:
    assert plan.first_statement(sql) == expected


# -- lint ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LintCase:
    docs: list[Any]
    code: int
    shows: str


LINT_CASES = {
    "clean": LintCase([d.manifest()], 0, "no findings"),
    "warning only": LintCase(
        [with_expand_sql("ALTER TABLE users ADD COLUMN visits int")],
        0,
        "prefer-bigint",
    ),
    "error": LintCase(
        [with_expand_sql("ALTER TABLE users DROP COLUMN legacy")], 1, "1 error, 0 warnings"
    ),
    "no DataMigration in the file": LintCase([DEPLOYMENT], 1, "no DataMigration document"),
}


@pytest.mark.parametrize("case", LINT_CASES.values(), ids=LINT_CASES.keys())
def test_lint_exit_codes(
    case: LintCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, *case.docs)
    assert main(["lint", path]) == case.code
    captured = capsys.readouterr()
    assert case.shows in captured.out + captured.err


def test_lint_several_files_fails_if_any_has_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, d.manifest(), name="good.yaml")
    bad = write(tmp_path, with_expand_sql("TRUNCATE users"), name="bad.yaml")
    assert main(["lint", good, bad]) == 1
    out = capsys.readouterr().out
    assert f"{good}: no findings" in out
    assert "truncate" in out


def test_lint_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


# -- usage --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["status"], ["lint"], ["abort", "x", "--bogus"]],
    ids=["no verb", "unknown verb", "status without name", "lint without file", "unknown flag"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: kubectl datamigration" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("list", "status", "approve", "pause", "resume", "abort", "retry", "lint", "plan"):
        assert verb in out


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "shop", "--context", "dev", "status", "x"],
        ["status", "x", "-n", "shop", "--context", "dev"],
        ["--context", "dev", "status", "--namespace", "shop", "x"],
    ],
    ids=["before the verb", "after the verb", "mixed"],
)
def test_global_flags_go_before_or_after_the_verb(argv: list[str]) -> None:
    from datamigration.cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verb, args.name, args.namespace, args.context, args.kubeconfig) == (
        "status",
        "x",
        "shop",
        "dev",
        None,
    )


def test_plan_of_several_workloads_names_each_and_digests_every_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = d.manifest()
    single = doc["spec"].pop("workload")
    worker = {**single, "name": "worker", "image": "shop-api:2.0"}
    doc["spec"]["workloads"] = [{**single, "image": "shop-api:2.0"}, worker]
    assert main(["plan", write(tmp_path, doc)]) == 0
    out = capsys.readouterr().out
    assert "2 workloads, in list order" in out, out
    assert "Deployment worker" in out
    first = next(line for line in out.splitlines() if "digest: sha256:" in line)
    worker["image"] = "shop-api:2.1"
    assert main(["plan", write(tmp_path, doc, name="other.yaml")]) == 0
    other = next(ln for ln in capsys.readouterr().out.splitlines() if "digest: sha256:" in ln)
    assert first != other  # the worker's image is part of what an approval names
