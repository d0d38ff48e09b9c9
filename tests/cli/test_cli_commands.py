"""The cluster verbs' decisions (refuse or patch, and what they say), against a fake `ClusterApi`,
and the kubeconfig resolution of the global flags. The same verbs run against a real API server
in test_cli_e2e.py.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cli_docs as d
import pytest
import yaml

from datamigration.cli import commands, connect
from datamigration.cli.errors import CliError
from datamigration.k8s.client import KubeError

JSON = dict[str, Any]


def merge(target: JSON, patch: JSON) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class FakeApi:
    objects: list[JSON] = field(default_factory=list)
    events: list[JSON] = field(default_factory=list)
    patches: list[tuple[str, str, JSON]] = field(default_factory=list)
    list_error: KubeError | None = None

    def _find(self, namespace: str, name: str) -> JSON | None:
        for obj in self.objects:
            meta = obj["metadata"]
            if (meta["namespace"], meta["name"]) == (namespace, name):
                return obj
        return None

    def get_migration(self, namespace: str, name: str) -> JSON | None:
        found = self._find(namespace, name)
        return copy.deepcopy(found) if found else None

    def list_migrations(self, namespace: str | None = None) -> list[JSON]:
        if self.list_error:
            raise self.list_error
        return [
            copy.deepcopy(o)
            for o in self.objects
            if namespace is None or o["metadata"]["namespace"] == namespace
        ]

    def patch_migration(self, namespace: str, name: str, patch: JSON) -> JSON:
        obj = self._find(namespace, name)
        assert obj is not None
        self.patches.append((namespace, name, patch))
        merge(obj, patch)
        return copy.deepcopy(obj)

    def list_events(self, namespace: str, name: str) -> list[JSON]:
        return copy.deepcopy(self.events)


def api_with(status: JSON | None, **served_args: Any) -> FakeApi:
    return FakeApi(objects=[d.served(status, **served_args)])


# -- refusals -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    verb: str
    status: JSON | None
    message: str
    served_args: dict[str, Any] = field(default_factory=dict)


REFUSALS = {
    "approve a succeeded migration": Refusal(
        "approve", d.SUCCEEDED, "is already Succeeded: there is nothing to approve"
    ),
    "approve with automatic approval": Refusal(
        "approve",
        d.AWAITING,
        "does not need approval: spec.contract.approval is Automatic, so the contract starts by "
        "itself once the rollout is proven and its verify queries pass",
        {"approval": "Automatic"},
    ),
    "abort after contract started": Refusal(
        "abort",
        d.CONTRACTING,
        "its contract has already started (state Running, Job rename-email-contract-1-0f1e2)",
    ),
    "abort a succeeded migration": Refusal("abort", d.SUCCEEDED, "has already Succeeded"),
    "retry a running migration": Refusal(
        "retry", d.BACKFILLING, 'datamigration "rename-email" is Backfilling, not Failed'
    ),
    "retry an invalid migration": Refusal(
        "retry",
        {"phase": "Invalid", "message": "spec.workload.container: is required"},
        "is Invalid, not Failed",
    ),
    "pause a succeeded migration": Refusal("pause", d.SUCCEEDED, "nothing to pause"),
}


def run(verb: str, api: FakeApi, name: str = "rename-email", namespace: str = "shop") -> str:
    out = io.StringIO()
    if verb == "abort":
        commands.abort(api, namespace, name, out=out, confirm=lambda q: True)
    elif verb == "retry":
        commands.retry(api, namespace, name, out=out, now=lambda: d.NOW)
    else:
        getattr(commands, verb)(api, namespace, name, out=out)
    return out.getvalue()


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_patch_nothing_and_say_why(case: Refusal) -> None:
    api = api_with(case.status, **case.served_args)
    with pytest.raises(CliError) as caught:
        run(case.verb, api)
    assert case.message in caught.value.message
    assert api.patches == []


def test_approve_refuses_while_the_digest_is_unknown() -> None:
    status = {k: v for k, v in d.AWAITING.items() if k != "contract"}
    status["contract"] = {"message": "the digest is known once the rollout is observed"}
    api = api_with(status)
    with pytest.raises(CliError, match="known once the rollout is observed"):
        run("approve", api)
    assert api.patches == []


def test_approve_refuses_a_digest_of_an_older_generation() -> None:
    api = api_with(d.AWAITING)
    api.objects[0]["metadata"]["generation"] = 2
    with pytest.raises(CliError, match="has not computed the new digest"):
        run("approve", api)
    assert api.patches == []


@dataclass
class StatusWriterApi(FakeApi):
    """Someone else (the runner's progress, the operator) writes status between the approver's
    read and its write, `writes` times: the approver's resourceVersion is stale each time."""

    writes: int = 0

    def patch_migration(self, namespace: str, name: str, patch: JSON) -> JSON:
        obj = self._find(namespace, name)
        assert obj is not None
        if self.writes > 0:
            self.writes -= 1
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        if patch.get("metadata", {}).get("resourceVersion") != obj["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return super().patch_migration(namespace, name, patch)


def test_approve_reads_again_when_status_changed_in_between() -> None:
    api = StatusWriterApi(objects=[d.served(d.AWAITING)], writes=2)
    run("approve", api)
    [(_, _, patch)] = api.patches
    assert patch["spec"]["contract"]["approvedDigest"] == d.DIGEST
    assert patch["metadata"]["resourceVersion"] == "102"  # the third read, the one that wrote


def test_approve_gives_up_when_the_object_keeps_changing() -> None:
    api = StatusWriterApi(objects=[d.served(d.AWAITING)], writes=commands.APPROVE_ATTEMPTS)
    with pytest.raises(CliError, match="kept changing while it was being approved"):
        run("approve", api)
    assert api.patches == []


def test_approve_without_contract_is_refused() -> None:
    api = api_with(d.AWAITING)
    del api.objects[0]["spec"]["contract"]
    with pytest.raises(CliError, match="has no contract steps"):
        run("approve", api)


# -- patches ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    verb: str
    status: JSON | None
    patch: JSON
    says: list[str]
    served_args: dict[str, Any] = field(default_factory=dict)


APPROVE_PATCH = {
    "metadata": {"resourceVersion": "100"},
    "spec": {"contract": {"approved": True, "approvedDigest": d.DIGEST}},
}
PATCHES = {
    "approve while awaiting approval": Patch(
        "approve",
        d.AWAITING,
        APPROVE_PATCH,
        [
            f'datamigration "rename-email" approved: contract {d.DIGEST[:19]} '
            f"(spec.contract.approvedDigest: {d.DIGEST})",
            "an edit of its steps, verify queries or target image needs a new approval",
            "Next: the operator re-checks that every pod still runs the new code, then starts the "
            "contract Job",
            "kubectl datamigration status rename-email -n shop --watch",
        ],
    ),
    "approve ahead of time": Patch(
        "approve",
        d.BACKFILLING,
        APPROVE_PATCH,
        ["nothing changes now (phase Backfilling)"],
    ),
    "pause": Patch("pause", d.BACKFILLING, {"spec": {"paused": True}}, ["paused", "resume"]),
    "resume": Patch(
        "resume", d.BACKFILLING, {"spec": {"paused": False}}, ["resumed"], {"paused": True}
    ),
    "abort": Patch(
        "abort", d.BACKFILLING, {"spec": {"abort": True}}, ["abort requested", "never runs"]
    ),
    "retry a failed backfill": Patch(
        "retry",
        d.FAILED,
        {"metadata": {"annotations": {"datamigration.dev/retry": "2026-03-01T12:00:00.000000Z"}}},
        [
            "retry requested (datamigration.dev/retry: 2026-03-01T12:00:00.000000Z)",
            "re-arms phase backfill and starts attempt 2",
        ],
    ),
}


@pytest.mark.parametrize("case", PATCHES.values(), ids=PATCHES.keys())
def test_verbs_patch_the_one_field_and_say_what_next(case: Patch) -> None:
    api = api_with(case.status, **case.served_args)
    out = run(case.verb, api)
    assert api.patches == [("shop", "rename-email", case.patch)]
    for text in case.says:
        assert text in out


@pytest.mark.parametrize(
    ("verb", "served_args", "status", "says"),
    [
        ("approve", {"approved_digest": d.DIGEST}, d.AWAITING, "already approved"),
        ("pause", {"paused": True}, d.BACKFILLING, "already paused"),
        ("resume", {}, d.BACKFILLING, "is not paused"),
        ("abort", {}, {"phase": "Aborted"}, "already aborted"),
    ],
    ids=["approve", "pause", "resume", "abort"],
)
def test_repeating_a_verb_is_a_no_op(
    verb: str, served_args: dict[str, Any], status: JSON, says: str
) -> None:
    api = api_with(status, **served_args)
    assert says in run(verb, api)
    assert api.patches == []


def test_abort_needs_confirmation() -> None:
    api = api_with(d.BACKFILLING)
    with pytest.raises(CliError) as caught:
        commands.abort(api, "shop", "rename-email", out=io.StringIO(), confirm=None)
    assert "refusing to abort without confirmation: stdin is not a terminal" in caught.value.message
    assert caught.value.hints == ("pass --yes to abort without asking",)
    questions: list[str] = []

    def say_no(question: str) -> bool:
        questions.append(question)
        return False

    out = io.StringIO()
    assert commands.abort(api, "shop", "rename-email", out=out, confirm=say_no) == 1
    assert questions and 'Abort datamigration "rename-email" in namespace "shop"' in questions[0]
    assert out.getvalue() == "not aborted\n"
    assert api.patches == []


def test_retry_tokens_are_fresh() -> None:
    first = commands.retry_token(datetime(2026, 1, 1, tzinfo=UTC))
    second = commands.retry_token(datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    assert first != second


# -- not found ----------------------------------------------------------------------------------
def test_not_found_names_the_namespaces_that_have_it() -> None:
    api = FakeApi(objects=[d.served(d.BACKFILLING, namespace="shop-prod")])
    with pytest.raises(CliError) as caught:
        run("status", api, namespace="shop")
    assert caught.value.message == 'datamigration "rename-email" not found in namespace "shop"'
    assert caught.value.hints == ("it exists in namespace shop-prod: add -n shop-prod",)


def test_not_found_without_permission_to_list_everywhere() -> None:
    api = FakeApi(list_error=KubeError(403, "Forbidden", "cannot list"))
    with pytest.raises(CliError) as caught:
        run("approve", api)
    assert caught.value.hints == ("list them with: kubectl datamigration list -A",)


def test_missing_crd_is_said_plainly() -> None:
    api = FakeApi(list_error=KubeError(404, "NotFound", "the server could not find it"))
    with pytest.raises(
        CliError, match=r"resource type \(datamigrations.datamigration.dev\) is not"
    ):
        run("status", api)
    with pytest.raises(CliError, match="is not installed"):
        commands.list_migrations(
            api, "shop", all_namespaces=False, out=io.StringIO(), err=io.StringIO()
        )


def test_empty_list_says_so_on_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert commands.list_migrations(FakeApi(), "shop", all_namespaces=False, out=out, err=err) == 0
    assert (out.getvalue(), err.getvalue()) == ("", "No datamigrations found in shop namespace.\n")


# -- status --watch -----------------------------------------------------------------------------
def test_watch_renders_until_a_terminal_phase() -> None:
    api = api_with(d.BACKFILLING)
    states = [d.AWAITING, d.FAILED]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # each tick the "operator" moves the object on
        sleeps.append(seconds)
        obj = api.objects[0]
        obj["status"] = copy.deepcopy(states.pop(0))
        obj["metadata"]["resourceVersion"] = str(len(sleeps) + 100)

    out = io.StringIO()
    code = commands.status(
        api, "shop", "rename-email", out=out, watch=True, interval=5, now=lambda: d.NOW, sleep=sleep
    )
    assert code == 1  # ended Failed
    assert sleeps == [5, 5]
    text = out.getvalue()
    assert [ln for ln in text.splitlines() if ln.startswith("Phase:")] == [
        "Phase:      Backfilling",
        "Phase:      AwaitingApproval",
        "Phase:      Failed",
    ]


def test_watch_prints_only_changes_when_not_on_a_terminal() -> None:
    api = api_with(d.BACKFILLING)
    ticks = 0

    def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            api.objects[0]["status"] = copy.deepcopy(d.SUCCEEDED)
            api.objects[0]["metadata"]["resourceVersion"] = "200"

    out = io.StringIO()
    assert commands.status(api, "shop", "rename-email", out=out, watch=True, sleep=sleep) == 0
    assert out.getvalue().count("Name:       rename-email") == 2


# -- kubeconfig resolution ----------------------------------------------------------------------
def kubeconfig(path: Path, current: str | None, contexts: dict[str, str | None]) -> Path:
    doc: JSON = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://user:pw@10.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "s3cr3t-token"}}],
        "contexts": [
            {
                "name": n,
                "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})},
            }
            for n, ns in contexts.items()
        ],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_namespace_comes_from_the_flag_then_the_context_then_default(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config", "dev", {"dev": "shop", "bare": None})
    env = {"KUBECONFIG": str(cfg)}
    resolve = connect.resolve
    assert resolve(kubeconfig=None, context=None, namespace=None, env=env).namespace == "shop"
    assert resolve(kubeconfig=None, context=None, namespace="x", env=env).namespace == "x"
    assert resolve(kubeconfig=None, context="bare", namespace=None, env=env).namespace == "default"
    target = resolve(kubeconfig=str(cfg), context=None, namespace=None, env={})
    assert (target.context, target.server) == ("dev", "https://10.0.0.1:6443")  # no user:pw


def test_kubeconfig_list_merges_like_kubectl(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", None, {"one": "ns-a"})
    second = kubeconfig(tmp_path / "b", "one", {"one": "ns-b", "two": "ns-two"})
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    target = connect.resolve(kubeconfig=None, context=None, namespace=None, env=env)
    assert (target.context, target.namespace) == ("one", "ns-a")  # first definition wins
    assert target.files == (first, second)


@pytest.mark.parametrize(
    ("setup", "flags", "message"),
    [
        ("none", {}, "no kubeconfig: KUBECONFIG={tmp}/nope does not exist"),
        ("none", {"kubeconfig": "{tmp}/nope"}, "no kubeconfig: --kubeconfig {tmp}/nope does not"),
        ("no-current", {}, "no current context in {tmp}/config"),
        ("ok", {"context": "prod"}, 'context "prod" not found in kubeconfig (contexts: dev)'),
        ("garbage", {}, "cannot read kubeconfig {tmp}/config: "),
    ],
    ids=["no file", "flag to a missing file", "no current context", "unknown context", "bad yaml"],
)
def test_kubeconfig_problems_are_one_line_without_secrets(
    tmp_path: Path, setup: str, flags: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "config"
    if setup == "ok":
        kubeconfig(cfg, "dev", {"dev": None})
    elif setup == "no-current":
        kubeconfig(cfg, None, {"dev": None})
    elif setup == "garbage":
        cfg.write_text("users:\n- name: u\n  user: {token: s3cr3t-token\n")
    env = {"KUBECONFIG": str(cfg if setup != "none" else tmp_path / "nope")}
    args = {k: v.format(tmp=tmp_path) for k, v in flags.items()}
    with pytest.raises(CliError) as caught:
        connect.resolve(
            kubeconfig=args.get("kubeconfig"),
            context=args.get("context"),
            namespace=None,
            env=env,
        )
    assert caught.value.message.startswith(message.format(tmp=tmp_path))
    assert "s3cr3t" not in caught.value.message


def test_unreachable_cluster_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamigration.cli.main import main

    cfg = tmp_path / "config"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dead",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "s3cr3t-token"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "c", "user": "u"}}],
    }
    cfg.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        'error: cannot reach the Kubernetes API server at http://127.0.0.1:9 (context "dead"): '
    )
    assert err.count("\n") == 1
    assert "s3cr3t" not in err
