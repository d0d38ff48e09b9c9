"""What the operator and the runner need from the Kubernetes API, kept next to the code it is
read from: every public method of `ClusterApi` (operator/datamigration/k8s/cluster.py, the only
place the product calls the API, each method's section comment naming its verb) has a row here,
and kopf's watches are read from the decorators of operator/datamigration/controller/handlers.py.
test_chart_rbac.py holds the chart to exactly this; test_chart_dryrun.py asks the API server.
"""

from __future__ import annotations

import ast

from chart_support import REPO, Grant, need

OPERATOR = REPO / "operator" / "datamigration"
CLUSTER_PY = OPERATOR / "k8s" / "cluster.py"
HANDLERS_PY = OPERATOR / "controller" / "handlers.py"
RUNNER_ROLE = "datamigration-runner"

#: What each ClusterApi method the operator calls needs (its comment in cluster.py says so too).
OPERATOR_CALLS: dict[str, set[Grant]] = {
    "get_migration": need("datamigration.dev", "datamigrations", "get"),
    "patch_migration_status": need("datamigration.dev", "datamigrations/status", "patch"),
    "list_jobs": need("batch", "jobs", "list"),
    "create_job": need("batch", "jobs", "create", "get"),  # get: adopt the Job a 409 names
    "delete_job": need("batch", "jobs", "delete"),
    "list_pods": need("", "pods", "list"),
    "get_deployment": need("apps", "deployments", "get"),
    "list_replicasets": need("apps", "replicasets", "list"),
    "set_container_image": (
        need("apps", "deployments", "patch")
        | need("apps", "statefulsets", "patch")
        | need("apps", "daemonsets", "patch")
        | need("batch", "cronjobs", "patch")
        | need("argoproj.io", "rollouts", "patch", "get")  # get: the container's index
    ),
    "get_workload": (
        need("apps", "statefulsets", "get")
        | need("apps", "daemonsets", "get")
        | need("batch", "cronjobs", "get")
        | need("argoproj.io", "rollouts", "get")
    ),
    "list_controller_revisions": need("apps", "controllerrevisions", "list"),
    "secret_key_names": need("", "secrets", "get"),
    "list_migrations": need("datamigration.dev", "datamigrations", "list"),
    "post_event": need("", "events", "create"),
    "ensure_runner_identity": (
        need("", "serviceaccounts", "create")
        | need("rbac.authorization.k8s.io", "rolebindings", "create")
        | need("rbac.authorization.k8s.io", "clusterroles", "bind", name=RUNNER_ROLE)
    ),
}
#: The leader election's calls (ClusterLeaseApi in cluster.py), granted in the release namespace
#: only, on the one named Lease where resourceNames can say so (create cannot be limited).
LEASE_CLASS = "ClusterLeaseApi"


def lease_calls(lease: str) -> dict[str, set[Grant]]:
    return {
        "get_lease": need("coordination.k8s.io", "leases", "get", name=lease),
        "replace_lease": need("coordination.k8s.io", "leases", "update", name=lease),
        "create_lease": need("coordination.k8s.io", "leases", "create"),
        "post_lease_event": need("", "events", "create"),
        "ping": set(),  # GET /version: public to every authenticated client
    }


def lease_needs(lease: str) -> set[Grant]:
    return set().union(*lease_calls(lease).values())


#: ClusterApi methods only the CLI calls, with the user's own credentials.
CLI_ONLY = {"patch_migration", "list_events", "watch_migration", "watch_events"}
#: ClusterApi methods that make no API call.
NO_CALL = {"from_kubeconfig"}
RUNNER_PY = OPERATOR / "runner"
#: The workload reads both the operator (observe) and the runner (its gate) make through it.
SHARED_READS_PY = OPERATOR / "k8s" / "workloads.py"
#: The runner's progress call (runner/progress.py): a merge patch of the status subresource.
#: The response carries the object, spec.paused included, so no get is needed.
RUNNER_PROGRESS = need("datamigration.dev", "datamigrations/status", "patch")
#: The ClusterApi methods the runner calls (runner/gate.py, the rollout gate): reads only.
RUNNER_CALLS: dict[str, set[Grant]] = {
    "get_deployment": OPERATOR_CALLS["get_deployment"],
    "list_replicasets": OPERATOR_CALLS["list_replicasets"],
    "list_pods": OPERATOR_CALLS["list_pods"],
    "get_workload": OPERATOR_CALLS["get_workload"],
    "list_controller_revisions": OPERATOR_CALLS["list_controller_revisions"],
    "list_jobs": OPERATOR_CALLS["list_jobs"],  # a CronJob's Jobs
}
RUNNER_NEEDS = RUNNER_PROGRESS.union(*RUNNER_CALLS.values())
#: kopf itself, cluster-scoped: runtime observation of CRDs (kopf/_core/reactor/observation.py).
KOPF_CLUSTER_NEEDS = need("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch")
#: Needed only while the operator manages the runner's identity (runner.manageRbac).
IDENTITY = OPERATOR_CALLS["ensure_runner_identity"]


def kopf_watches() -> set[Grant]:
    """list + watch for every resource a kopf handler or index in handlers.py is registered on."""
    tree = ast.parse(HANDLERS_PY.read_text())
    constants: dict[str, str] = {}  # GROUP, VERSION, PLURAL = "...", "...", "..."
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target, value = statement.targets[0], statement.value
        pairs = (
            list(zip(target.elts, value.elts, strict=False))
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
            else [(target, value)]
        )
        for name, constant in pairs:
            if isinstance(name, ast.Name) and isinstance(constant, ast.Constant):
                constants[name.id] = str(constant.value)
    found: set[Grant] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            function = ast.unparse(decorator.func)
            if not (function.startswith("kopf.on.") or function == "kopf.index"):
                continue
            if function.endswith(("startup", "cleanup", "login", "probe")):
                continue
            args = [
                str(a.value) if isinstance(a, ast.Constant) else constants[ast.unparse(a)]
                for a in decorator.args
            ]
            group, _version, plural = args
            found |= need(group, plural, "list", "watch")
    return found


def operator_needs(
    *, manage_runner_rbac: bool = True, runner_role: str = RUNNER_ROLE
) -> set[Grant]:
    """Everything the operator needs on namespaced resources (in cluster-wide mode, plus
    KOPF_CLUSTER_NEEDS); without runner identity management, no identity rights."""
    needs: set[Grant] = set().union(*OPERATOR_CALLS.values()) | kopf_watches()
    if not manage_runner_rbac:
        return needs - IDENTITY
    if runner_role != RUNNER_ROLE:
        bind = Grant("rbac.authorization.k8s.io", "clusterroles", "bind", RUNNER_ROLE)
        needs = (needs - {bind}) | {Grant(bind.group, bind.resource, bind.verb, runner_role)}
    return needs
