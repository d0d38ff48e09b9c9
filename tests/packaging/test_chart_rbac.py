"""The chart grants the operator exactly what its code uses, no more, and says why for each rule.

What the code uses is in rbac_needs.py, read from the code where it can be. A new API call
without a row there, or a row without its call, fails these tests; so does a rule in the chart
that nothing needs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from chart_support import (
    CHART,
    NAMESPACED,
    Grant,
    find,
    grants,
    need,
    one,
    render,
    render_text,
)
from rbac_needs import (
    CLI_ONLY,
    CLUSTER_PY,
    HANDLERS_PY,
    KOPF_CLUSTER_NEEDS,
    LEASE_CLASS,
    NO_CALL,
    OPERATOR,
    OPERATOR_CALLS,
    RUNNER_CALLS,
    RUNNER_NEEDS,
    RUNNER_PY,
    RUNNER_ROLE,
    SHARED_READS_PY,
    kopf_watches,
    lease_calls,
    lease_needs,
    operator_needs,
)

LEADER_ROLE = "dm-datamigration-operator-leader-election"
LEASE = "dm-datamigration-operator"


def _public_methods(class_name: str = "ClusterApi") -> set[str]:
    tree = ast.parse(CLUSTER_PY.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    return {
        n.name for n in cls.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    }


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = doc.get("rules") or []
    return rules


# -- the table matches the code ------------------------------------------------------------
def test_every_clusterapi_method_is_accounted_for() -> None:
    methods = _public_methods()
    unknown = methods - set(OPERATOR_CALLS) - CLI_ONLY - NO_CALL
    assert not unknown, (
        f"ClusterApi gained {sorted(unknown)}: add its verb/resource to OPERATOR_CALLS (and a "
        "commented rule in charts/datamigration-operator/templates/_helpers.tpl), or to CLI_ONLY"
    )
    stale = (set(OPERATOR_CALLS) | CLI_ONLY | NO_CALL) - methods
    assert not stale, f"no longer in ClusterApi: {sorted(stale)}"


def test_operator_uses_exactly_the_operator_calls() -> None:
    sources = [*(OPERATOR / "controller").glob("*.py"), SHARED_READS_PY]
    controller = "\n".join(p.read_text() for p in sources)
    used = {m for m in _public_methods() if re.search(rf"\.{m}\(", controller)}
    assert used == set(OPERATOR_CALLS), "the operator's calls changed: update OPERATOR_CALLS"


def test_runner_uses_exactly_the_runner_calls() -> None:
    """The runner reads the workload through ClusterApi (the rollout gate) and nothing else."""
    runner = "\n".join(p.read_text() for p in [*RUNNER_PY.glob("*.py"), SHARED_READS_PY])
    used = {m for m in _public_methods() if re.search(rf"\.{m}\(", runner)}
    assert used == set(RUNNER_CALLS), "the runner's API calls changed: update RUNNER_CALLS"
    assert all(g.verb in {"get", "list"} for g in set().union(*RUNNER_CALLS.values()))


def test_kopf_watches_are_read_from_handlers() -> None:
    assert kopf_watches() == (
        need("datamigration.dev", "datamigrations", "list", "watch")
        | need("batch", "jobs", "list", "watch")
        | need("apps", "deployments", "list", "watch")
        | need("", "pods", "list", "watch")
        | need("apps", "statefulsets", "list", "watch")
        | need("apps", "daemonsets", "list", "watch")
        | need("batch", "cronjobs", "list", "watch")
        | need("apps", "replicasets", "list", "watch")
        | need("", "secrets", "list", "watch")
    )


def test_each_operator_call_is_named_in_its_cluster_py_section() -> None:
    """cluster.py's section comments (`# -- Jobs (create/list/delete jobs; ...)`) name the verbs;
    keep them and this table telling the same story."""
    text = CLUSTER_PY.read_text()
    sections = re.findall(r"# -- [^\n]*\(([^)]*)\)", text)
    words = set(re.findall(r"[a-z]+", " ".join(sections)))
    for grant in set().union(*OPERATOR_CALLS.values()):
        if grant.verb == "get" and grant.resource == "jobs":
            continue  # the adoption read after a 409, documented in create_job's comment
        assert grant.verb in words, f"{grant} not named in a cluster.py section comment"


# -- cluster-wide mode ---------------------------------------------------------------------
def test_cluster_wide_role_grants_exactly_the_needs() -> None:
    docs = render()
    role = one(docs, "ClusterRole", "dm-datamigration-operator")
    granted = grants(_rules(role))
    expected = operator_needs() | KOPF_CLUSTER_NEEDS
    assert granted - expected == set(), (
        f"granted but unused: {sorted(map(str, granted - expected))}"
    )
    assert expected - granted == set(), (
        f"needed, not granted: {sorted(map(str, expected - granted))}"
    )
    binding = one(docs, "ClusterRoleBinding", "dm-datamigration-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "dm-datamigration-operator", "namespace": "dm-system"}
    ]
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == [LEADER_ROLE]


def test_without_runner_identity_management_the_identity_rules_go() -> None:
    role = one(
        render("--set", "runner.manageRbac=false"), "ClusterRole", "dm-datamigration-operator"
    )
    assert grants(_rules(role)) == operator_needs(manage_runner_rbac=False) | KOPF_CLUSTER_NEEDS


# -- namespaced mode -----------------------------------------------------------------------
def test_namespaced_mode_grants_per_namespace_and_only_crd_reads_cluster_wide() -> None:
    docs = render(*NAMESPACED)
    roles = [r for r in find(docs, "Role") if r["metadata"]["name"] != LEADER_ROLE]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(_rules(role)) == operator_needs()
    bindings = [b for b in find(docs, "RoleBinding") if b["metadata"]["name"] != LEADER_ROLE]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "dm-datamigration-operator",
        }
        assert binding["subjects"][0]["namespace"] == "dm-system"
    cluster_roles = {
        r["metadata"]["name"]: grants(_rules(r))
        for r in find(docs, "ClusterRole")
        if not r["metadata"]["name"].endswith(("-view", "-edit"))
        and r["metadata"]["name"] != RUNNER_ROLE
    }
    assert cluster_roles == {"dm-datamigration-operator-crds": KOPF_CLUSTER_NEEDS}
    (crb,) = find(docs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == "dm-datamigration-operator-crds"


def test_namespaced_mode_can_leave_the_runner_identity_to_the_chart() -> None:
    docs = render(*NAMESPACED, "--set", "runner.manageRbac=false")
    for role in find(docs, "Role"):
        if role["metadata"]["name"] == LEADER_ROLE:
            continue
        assert grants(_rules(role)) == operator_needs(manage_runner_rbac=False)
    accounts = [
        (a["metadata"]["namespace"], a["metadata"]["name"])
        for a in find(docs, "ServiceAccount", "datamigration-runner")
    ]
    assert sorted(accounts) == [
        ("team-a", "datamigration-runner"),
        ("team-b", "datamigration-runner"),
    ]
    for binding in find(docs, "RoleBinding", "datamigration-runner"):
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] == RUNNER_ROLE
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "datamigration-runner",
                "namespace": binding["metadata"]["namespace"],
            }
        ]


# -- leader election (both modes: the release namespace only) ---------------------------------
def test_lease_calls_are_accounted_for_and_used() -> None:
    assert _public_methods(LEASE_CLASS) == set(lease_calls(LEASE))
    leadership = (OPERATOR / "controller" / "leadership.py").read_text()
    main = (OPERATOR / "controller" / "main.py").read_text()
    assert ".post_lease_event(" in leadership and ".ping" in main
    election = (OPERATOR / "k8s" / "leader.py").read_text()
    for method in ("get_lease", "create_lease", "replace_lease"):
        assert f".{method}(" in election


@pytest.mark.parametrize("args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_lease_role_grants_exactly_the_election_needs_in_the_release_namespace(
    args: tuple[str, ...],
) -> None:
    docs = render(*args)
    role = one(docs, "Role", LEADER_ROLE)
    assert role["metadata"]["namespace"] == "dm-system"
    assert grants(_rules(role)) == lease_needs(LEASE)
    binding = one(docs, "RoleBinding", LEADER_ROLE)
    assert binding["metadata"]["namespace"] == "dm-system"
    assert binding["roleRef"]["name"] == LEADER_ROLE
    renamed = render(*args, "--set", "leaderElection.leaseName=my-lease")
    assert grants(_rules(one(renamed, "Role", LEADER_ROLE))) == lease_needs("my-lease")
    env = {
        e["name"]: e.get("value")
        for e in one(renamed, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DATAMIGRATION_LEASE_NAME"] == "my-lease"
    assert env["DATAMIGRATION_LEASE_NAMESPACE"] == "dm-system"
    off = render(*args, "--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    assert not find(off, "Role", LEADER_ROLE)


# -- the runner and the people ---------------------------------------------------------------
def test_runner_cluster_role() -> None:
    role = one(render(), "ClusterRole", RUNNER_ROLE)
    assert grants(_rules(role)) == RUNNER_NEEDS
    renamed = render("--set", "runner.clusterRole.name=dm-runner-2")
    assert grants(_rules(one(renamed, "ClusterRole", "dm-runner-2"))) == RUNNER_NEEDS
    operator_role = one(renamed, "ClusterRole", "dm-datamigration-operator")
    assert Grant("rbac.authorization.k8s.io", "clusterroles", "bind", "dm-runner-2") in grants(
        _rules(operator_role)
    )
    assert not find(render("--set", "runner.clusterRole.create=false"), "ClusterRole", RUNNER_ROLE)


def test_aggregated_roles_for_people() -> None:
    docs = render()
    view = one(docs, "ClusterRole", "dm-datamigration-operator-view")
    edit = one(docs, "ClusterRole", "dm-datamigration-operator-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert not any(g.resource.endswith("/status") for g in grants(_rules(edit)))
    off = render("--set", "rbac.aggregateToDefaultRoles=false")
    assert not find(off, "ClusterRole", "dm-datamigration-operator-view")


# -- properties of every rule the chart renders ----------------------------------------------
ALL_LAYOUTS = {
    "cluster-wide": (),
    "namespaced": NAMESPACED,
    "namespaced-chart-runner-identity": (*NAMESPACED, "--set", "runner.manageRbac=false"),
}


@pytest.mark.parametrize("args", ALL_LAYOUTS.values(), ids=ALL_LAYOUTS.keys())
def test_no_wildcards_and_secrets_read_only(args: tuple[str, ...]) -> None:
    """Secrets: get (a key's presence), list and watch (a migration waiting for its Secret is
    woken by the Secret's event; the cache keeps key names only); never a write."""
    for doc in render(*args):
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in _rules(doc):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{doc['metadata']['name']}: * in {field}"
        secrets = {g.verb for g in grants(_rules(doc)) if g.resource == "secrets"}
        assert secrets <= {"get", "list", "watch"}, (
            f"{doc['metadata']['name']} may {secrets} secrets"
        )
        assert "escalate" not in {g.verb for g in grants(_rules(doc))}
        assert "impersonate" not in {g.verb for g in grants(_rules(doc))}


RULE_START = re.compile(r"^(?P<indent>\s*)- apiGroups:")


def _rule_comments(text: str) -> list[tuple[str, str]]:
    """(comment, rule text) for every `- apiGroups:` rule; template-only lines are skipped when
    looking for the comment above a rule."""
    lines = text.splitlines()
    out: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if not RULE_START.match(line):
            continue
        j, comment = i - 1, list[str]()
        while j >= 0 and re.fullmatch(r"\s*\{\{-?[^}]*\}\}\s*", lines[j]):
            j -= 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip().lstrip("#").strip())
            j -= 1
        body = [line]
        k = i + 1
        while k < len(lines) and lines[k].startswith(" " * (len(line) - len(line.lstrip()) + 2)):
            body.append(lines[k])
            k += 1
        out.append((" ".join(comment), "\n".join(body)))
    return out


RBAC_SOURCES = [
    "_helpers.tpl",
    "runner-rbac.yaml",
    "aggregate-roles.yaml",
    "rbac.yaml",
    "leader-rbac.yaml",
]


@pytest.mark.parametrize("template", RBAC_SOURCES)
def test_every_rule_in_the_templates_has_a_comment(template: str) -> None:
    text = (CHART / "templates" / template).read_text()
    for comment, rule in _rule_comments(text):
        assert comment, f"{template}: rule without a comment saying why:\n{rule}"


def test_operator_and_runner_rules_name_each_verb_and_the_code_that_needs_it() -> None:
    for template in ("_helpers.tpl", "runner-rbac.yaml", "leader-rbac.yaml"):
        for comment, rule in _rule_comments((CHART / "templates" / template).read_text()):
            verbs = re.search(r"verbs: \[([^\]]*)\]", rule)
            assert verbs, rule
            for verb in (v.strip() for v in verbs[1].split(",")):
                assert re.search(rf"\b{verb}\b", comment), f"{verb!r} not explained: {comment}"
            assert re.search(
                r"ClusterApi\.|ClusterLeaseApi\.|kopf|handlers|runner/progress\.py|runner/gate\.py",
                comment,
            ), comment


@pytest.mark.parametrize("args", ALL_LAYOUTS.values(), ids=ALL_LAYOUTS.keys())
def test_every_rendered_rule_keeps_its_comment(args: tuple[str, ...]) -> None:
    text = render_text(*args)
    rules = _rule_comments(text)
    assert rules
    for comment, rule in rules:
        assert comment, f"rendered rule without a comment:\n{rule}"


def test_rbac_create_false_renders_no_rbac() -> None:
    kinds = {d["kind"] for d in render(*NAMESPACED, "--set", "rbac.create=false")}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_paths() -> None:
    assert Path(CLUSTER_PY).is_file() and Path(HANDLERS_PY).is_file()
