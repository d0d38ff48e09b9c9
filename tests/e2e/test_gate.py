"""The gate holds where it is used, and the gated cannot write it (issue 9, items 1, 4 and 7).

- A token of the phase Job's ServiceAccount may patch `status.progress` and nothing else: every
  gate field is tried, one attempt each, and each is refused (the chart's
  ValidatingAdmissionPolicy, installed by the harness as `helm install` would, and RBAC).
- A runner that exits 75 (paused) is not run again: the Job's podFailurePolicy makes it final.
- `kubectl rollout undo` right after the contract Job appears: the DROP never runs, the Job ends
  with exit 8 (RolloutRegressed) naming the old pods, and the column is still there.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fixtures import rename_migration, setup_shop
from kubernetes import client as kube_client
from support import CRD, Kube, OperatorProcess, eventually

from datamigration.core.jobs import (
    EXIT_PAUSED,
    EXIT_ROLLOUT_REGRESSED,
    JobSettings,
    Owner,
    build_job,
    observe_job,
)
from datamigration.core.spec import parse_spec
from datamigration.k8s.client import KubeClient, KubeError, migration_path
from localcluster.operatorproc import EXECUTOR_LABEL

pytestmark = [pytest.mark.e2e]
JSON = dict[str, Any]
RUNNER_ROLE = "datamigration-runner"
LABEL_KEY, LABEL_VALUE = EXECUTOR_LABEL.split("=")
SETTINGS = JobSettings(
    runner_image="datamigration-operator:dev", extra_pod_labels={LABEL_KEY: LABEL_VALUE}
)


# -- helpers -------------------------------------------------------------------------------------
def service_account_client(kube: Kube, namespace: str, account: str) -> KubeClient:
    """API access with a fresh token of `account` (TokenRequest), as a pod of it would have."""
    token = kube.client.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    admin = kube.client.api_client.configuration
    config = kube_client.Configuration()
    config.host = admin.host
    config.ssl_ca_cert = admin.ssl_ca_cert
    config.api_key = {"authorization": token}
    config.api_key_prefix = {"authorization": "Bearer"}
    return KubeClient(kube_client.ApiClient(config))


def job_pods(kube: Kube, namespace: str, job: str) -> list[JSON]:
    return kube.pods(namespace, f"job-name={job}")


def failed_job(kube: Kube, namespace: str, name: str, timeout: float = 120) -> JSON:
    def failed() -> JSON | None:
        job = kube.client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        conditions = job.get("status", {}).get("conditions", [])
        if any(c["type"] == "Complete" and c["status"] == "True" for c in conditions):
            raise AssertionError(f"Job {name} succeeded; it should have failed")
        ok = any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)
        return job if ok else None

    result: JSON = eventually(failed, timeout=timeout, what=f"Job {name} to fail")
    return result


# -- item 4: the gated cannot write the gate ------------------------------------------------------
SEEDED_STATUS: JSON = {
    "phase": "AwaitingApproval",
    "message": "contract awaits approval",
    "phases": {
        "codeRollout": {"state": "Running", "image": "shop-api:2.0", "fromRevision": "1"},
        "contract": {"state": "Pending"},
    },
    "rollout": {"verified": False, "oldPods": 3, "message": "3 old pods"},
    "conditions": [
        {
            "type": "RolloutVerified",
            "status": "False",
            "reason": "RolloutInProgress",
            "message": "3 old pods",
            "lastTransitionTime": "2026-12-01T00:00:00Z",
        }
    ],
    "progress": {"phase": "backfill", "step": "copy", "rowsDone": 10},
}

#: Every attempt on the status subresource: (what, merge patch of status, field the denial names).
STATUS_ATTEMPTS: list[tuple[str, JSON, str]] = [
    (
        "status.phases.codeRollout.image",
        {"phases": {"codeRollout": {"image": "shop-api:1.0"}}},
        "status.phases.codeRollout",
    ),
    (
        "status.phases.codeRollout.fromRevision",
        {"phases": {"codeRollout": {"fromRevision": "0"}}},
        "status.phases.codeRollout",
    ),
    (
        "status.phases.codeRollout.state",
        {"phases": {"codeRollout": {"state": "Succeeded"}}},
        "status.phases.codeRollout",
    ),
    ("status.phase: Succeeded", {"phase": "Succeeded"}, "status.phase"),
    (
        "status.conditions",
        {"conditions": [{"type": "RolloutVerified", "status": "True", "reason": "RolloutProven"}]},
        "status.conditions",
    ),
    ("status.rollout.verified", {"rollout": {"verified": True}}, "status.rollout"),
    ("status.rollout.oldPods", {"rollout": {"oldPods": 0}}, "status.rollout"),
    ("status.contract.approvedDigest", {"contract": {"approvedDigest": "sha256:x"}}, "status"),
    ("status.message", {"message": "all good"}, "status.message"),
]
#: Attempts on spec and metadata: (what, merge patch of the object).
OBJECT_ATTEMPTS: list[tuple[str, JSON]] = [
    ("spec.contract.approved", {"spec": {"contract": {"approved": True}}}),
    ("spec.paused", {"spec": {"paused": True}}),
    ("metadata.annotations", {"metadata": {"annotations": {"datamigration.dev/retry": "1"}}}),
]


def policy_in_force(runner: KubeClient, status_path: str) -> None:
    """Wait until the API server enforces the admission policy (installed moments ago by the
    harness, it reaches the admission plugin through an informer)."""

    def refused() -> bool:
        try:
            runner.merge_patch(status_path, {"status": {"message": "probe"}})
        except KubeError as exc:
            if exc.status == 403:
                return True
            raise
        return False

    eventually(refused, timeout=30, what="the runner admission policy to be enforced")


def status_declares(field: str) -> bool:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return field in schema["properties"]["status"]["properties"]


@pytest.mark.parametrize("account", ["datamigration-runner", "shop-migrator"])
def test_a_phase_jobs_token_can_write_progress_and_no_gate_field(
    kube: Kube, namespace: str, account: str
) -> None:
    migration = rename_migration(namespace)
    if account != "datamigration-runner":
        migration["spec"]["runner"] = {"serviceAccountName": account}
    kube.apply(migration)
    obj = kube.migration(namespace, "rename-email")
    owner = Owner(namespace, "rename-email", obj["metadata"]["uid"])
    job = build_job(owner, parse_spec(obj["spec"]), "contract", 1, SETTINGS)
    job_account = job["spec"]["template"]["spec"]["serviceAccountName"]
    assert job_account == account
    # The phase Job's identity, exactly as the operator sets it up (manageRbac).
    kube.api.ensure_runner_identity(namespace, job_account, RUNNER_ROLE)
    runner = service_account_client(kube, namespace, job_account)
    status_path = migration_path(namespace, "rename-email", "status")
    object_path = migration_path(namespace, "rename-email")
    policy_in_force(runner, status_path)
    kube.api.patch_migration_status(namespace, "rename-email", SEEDED_STATUS)
    before = kube.migration(namespace, "rename-email")

    outcomes: dict[str, str] = {}
    for what, patch, field in STATUS_ATTEMPTS:
        declared = status_declares(next(iter(patch)))
        try:
            runner.merge_patch(status_path, {"status": patch})
        except KubeError as exc:
            assert exc.status == 403, (what, exc)
            assert f"refused change to {field}" in exc.message, (what, exc.message)
            assert f"ServiceAccount {job_account} may change only status.progress" in exc.message
            outcomes[what] = f"denied: {exc.message}"
        else:
            # Only a field the CRD does not declare gets through: pruned, so nothing is stored.
            assert not declared, f"{what}: the runner's patch was accepted"
            outcomes[what] = "pruned (not in the CRD), nothing stored"
    for what, patch in OBJECT_ATTEMPTS:
        with pytest.raises(KubeError) as on_object:
            runner.merge_patch(object_path, patch)
        assert on_object.value.status == 403, what  # RBAC: no write to the object at all
        # Through the status subresource the API server keeps spec and metadata as they were.
        runner.merge_patch(status_path, patch)
        outcomes[what] = "denied (object: 403), ignored (status subresource)"
    after = kube.migration(namespace, "rename-email")
    for part in ("spec", "status"):
        assert after[part] == before[part], f"{part} changed: {after[part]} != {before[part]}"
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert sorted(outcomes) == sorted(
        [w for w, _, _ in STATUS_ATTEMPTS] + [w for w, _ in OBJECT_ATTEMPTS]
    )
    print("\n".join(f"{what}: {outcome}" for what, outcome in outcomes.items()))

    # Progress is the runner's to write.
    runner.merge_patch(status_path, {"status": {"progress": {"rowsDone": 1234}}})
    progress = kube.migration(namespace, "rename-email")["status"]["progress"]
    assert progress["rowsDone"] == 1234


def test_the_policy_denies_spec_and_metadata_even_if_rbac_allowed_them(
    kube: Kube, namespace: str
) -> None:
    """Defence in depth: grant the runner's account a write on the object; the policy still
    refuses spec and metadata changes, naming the field."""
    kube.apply(rename_migration(namespace))
    kube.api.ensure_runner_identity(namespace, "datamigration-runner", RUNNER_ROLE)
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "too-much", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["datamigration.dev"],
                    "resources": ["datamigrations"],
                    "verbs": ["patch"],
                }
            ],
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "too-much", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "too-much",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "datamigration-runner", "namespace": namespace}
            ],
        }
    )
    runner = service_account_client(kube, namespace, "datamigration-runner")
    path = migration_path(namespace, "rename-email")
    for patch, field in (
        ({"spec": {"contract": {"approved": True}}}, "spec.contract"),
        ({"spec": {"paused": True}}, "spec.paused"),
        ({"metadata": {"annotations": {"datamigration.dev/retry": "1"}}}, "metadata.annotations"),
    ):

        def refused(patch: JSON = patch) -> KubeError | None:
            try:
                runner.merge_patch(path, patch)
            except KubeError as exc:
                if exc.status == 403 and "refused change to" in exc.message:
                    return exc
                raise
            raise AssertionError(f"{patch} was accepted")

        # The Role may take a moment to reach the authorizer's cache; the policy is what answers.
        denied = eventually(refused, timeout=30, what=f"the policy to refuse {field}")
        assert f"refused change to {field}" in denied.message


def test_identities_other_than_the_runners_are_left_to_rbac(kube: Kube, namespace: str) -> None:
    """Another release's operator (any ServiceAccount not named as a runner) may still write
    status if RBAC lets it: the policy matches the runner's identities only."""
    kube.apply(rename_migration(namespace))
    runner = service_account_client(
        *_runner_identity(kube, namespace, "datamigration-runner"), "datamigration-runner"
    )
    status_path = migration_path(namespace, "rename-email", "status")
    policy_in_force(runner, status_path)
    other = service_account_client(
        *_runner_identity(kube, namespace, "dm-b-datamigration-operator"),
        "dm-b-datamigration-operator",
    )
    other.merge_patch(status_path, {"status": {"message": "written by another operator"}})
    assert kube.migration(namespace, "rename-email")["status"]["message"] == (
        "written by another operator"
    )


def _runner_identity(kube: Kube, namespace: str, account: str) -> tuple[Kube, str]:
    """`account` with the runner ClusterRole's rights (patch datamigrations/status) here."""
    kube.api.ensure_runner_identity(namespace, account, RUNNER_ROLE)
    return kube, namespace


# -- item 7: the exit codes no retry can change end the Job ---------------------------------------
@pytest.mark.pg
def test_a_paused_runner_is_not_run_again(kube: Kube, namespace: str, pg_url: str) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=10)
    migration = rename_migration(namespace)
    migration["spec"]["paused"] = True
    migration["spec"]["runner"] = {"backoffLimit": 3}  # without the policy: 4 pods
    kube.apply(migration)
    obj = kube.migration(namespace, "rename-email")
    owner = Owner(namespace, "rename-email", obj["metadata"]["uid"])
    kube.api.ensure_runner_identity(namespace, "datamigration-runner", RUNNER_ROLE)
    job = kube.api.create_job(build_job(owner, parse_spec(obj["spec"]), "backfill", 1, SETTINGS))
    name = job["metadata"]["name"]

    failed = failed_job(kube, namespace, name)
    (reason,) = [c["reason"] for c in failed["status"]["conditions"] if c["type"] == "Failed"]
    assert reason == "PodFailurePolicy"
    pods = job_pods(kube, namespace, name)
    assert len(pods) == 1, f"the paused runner ran {len(pods)} times"
    seen = observe_job(failed, pods)
    assert seen.exit_code == EXIT_PAUSED
    assert "BackoffLimitExceeded" not in seen.message
    assert shop.columns() == {"id", "email"}  # backfill ran nothing


# -- item 1: the gate at the point of use ---------------------------------------------------------
DDL_LOG = """
CREATE TABLE ddl_log (at timestamptz NOT NULL, event text NOT NULL, query text NOT NULL);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ddl_log VALUES (clock_timestamp(), tg_event, current_query());
END $$;
CREATE EVENT TRIGGER log_ddl_start ON ddl_command_start EXECUTE FUNCTION log_ddl();
CREATE EVENT TRIGGER log_sql_drop ON sql_drop EXECUTE FUNCTION log_ddl();
"""
#: The verify query waits for a lock the test holds until the undo happened (pg_sleep is refused
#: in verify queries: a side-effect function); lock_timeout is raised so it waits, not retries.
VERIFY_LOCK_WAIT_MILLISECONDS = 60_000


def rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.pg
def test_rollout_undo_after_the_contract_job_appears_stops_the_drop(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    pg_url: str,
    cluster: Any,
) -> None:
    shop = setup_shop(kube, namespace, pg_url, rows=200)
    with shop.engine.begin() as c:
        c.exec_driver_sql(DDL_LOG)
    migration = rename_migration(namespace)
    migration["spec"]["runner"] = {"lockTimeoutMilliseconds": VERIFY_LOCK_WAIT_MILLISECONDS}
    kube.apply(migration)

    def contract_job() -> JSON | None:
        jobs = [
            j
            for j in kube.jobs(namespace)
            if j["metadata"]["labels"].get("datamigration.dev/phase") == "contract"
        ]
        return jobs[0] if jobs else None

    def old_pods() -> list[JSON]:
        return [
            p
            for p in kube.pods(namespace, "app=shop-api")
            if p["spec"]["containers"][0]["image"] == "registry.example/shop-api:1.0"
        ]

    job = eventually(contract_job, timeout=240, what="the contract Job")
    # The operator is stopped once the contract Job exists: it would otherwise withdraw a Job
    # that has not reached its destructive steps, and this test is about the Job's own re-check
    # at the point of use, which must hold even when nobody watches.
    operator.stop()
    with shop.engine.begin() as blocker:  # the contract's verify waits behind this lock
        blocker.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        undo_at = time.time()
        kubectl(cluster, "rollout", "undo", "deployment/shop-api", "--namespace", namespace)
        eventually(old_pods, timeout=60, what="old-revision pods after the undo")
    name = job["metadata"]["name"]

    failed = failed_job(kube, namespace, name, timeout=120)
    pods = job_pods(kube, namespace, name)
    seen = observe_job(failed, pods)
    assert seen.exit_code == EXIT_ROLLOUT_REGRESSED, seen.message
    assert len(pods) == 1, "exit 8 is final: the Job did not run the contract again"
    assert "the destructive step was not run" in seen.message
    assert "registry.example/shop-api:1.0" in seen.message  # the offending pods, named
    print(seen.message)

    # The DROP never ran: the column is there, and no DDL after the expand's ADD COLUMN.
    assert "email" in shop.columns()
    with shop.engine.connect() as c:
        ddl = c.execute(sa.text("SELECT at, event, query FROM ddl_log ORDER BY at")).all()
    assert not [row for row in ddl if "DROP" in row.query.upper()], ddl
    # Old-revision pods serve from the undo on; the contract Job ended after the undo, and its
    # DROP is nowhere in the DDL log.
    assert old_pods(), "rollout undo brought back old-revision pods"
    ended = rfc3339(pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
    assert ended.timestamp() >= undo_at - 1  # second precision
    print(f"undo at {datetime.fromtimestamp(undo_at, UTC):%H:%M:%S.%f}, contract Job ended {ended}")
    print("DDL log:", *(f"{row.at:%H:%M:%S.%f} {row.event}: {row.query}" for row in ddl), sep="\n")

    # Back on duty, the operator reads the Job's exit code 8: Stalled, RolloutRegressed, naming
    # the pods, and no new contract Job while old pods serve.
    operator.start()

    def stalled() -> JSON | None:
        body = kube.migration(namespace, "rename-email")
        found = [c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Stalled"]
        regressed = found and found[0]["status"] == "True"
        return body if regressed and found[0]["reason"] == "RolloutRegressed" else None

    body = eventually(stalled, timeout=60, what="Stalled RolloutRegressed")
    assert "registry.example/shop-api:1.0" in body["status"]["message"]
    contract = contract_job()
    assert contract is not None and contract["metadata"]["name"] == name  # none created again
    assert "email" in shop.columns()


def kubectl(cluster: Any, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    proc = subprocess.run(
        [str(Path(cluster.bin_dir) / "kubectl"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


# -- item 1 and 4 for `command` contract steps ----------------------------------------------------
#: The team's tool: exits 3 if it holds API credentials, else 0 (the executor hands a token to a
#: container only through a mounted service-account token volume, as a kubelet does).
TOOL = ["python", "-c", "import os, sys; sys.exit(3 if os.environ.get('KUBECONFIG') else 0)"]


def command_contract_job(kube: Kube, namespace: str, attempt: int, *, token: bool) -> str:
    migration = rename_migration(namespace)
    migration["spec"]["contract"] = {
        "approval": "Manual",  # no verify query: the spec rules want a person's approval
        "steps": [
            {
                "name": "tool",
                "command": {
                    "image": "registry.example/migrate-tool:1",
                    "command": TOOL,
                    "automountServiceAccountToken": token,
                },
            }
        ],
    }
    kube.apply(migration)
    obj = kube.migration(namespace, "rename-email")
    owner = Owner(namespace, "rename-email", obj["metadata"]["uid"])
    manifest = build_job(owner, parse_spec(obj["spec"]), "contract", attempt, SETTINGS)
    return str(kube.api.create_job(manifest)["metadata"]["name"])


def rolled_out(kube: Kube, namespace: str, image: str) -> None:
    kube.api.set_container_image(namespace, "shop-api", "api", image)

    def done() -> bool:
        pods = kube.pods(namespace, "app=shop-api")
        return len(pods) == 3 and all(
            p["spec"]["containers"][0]["image"] == image
            and not p["metadata"].get("deletionTimestamp")
            for p in pods
        )

    eventually(done, timeout=60, what=f"every shop-api pod to run {image}")


@pytest.mark.pg
def test_a_command_contract_starts_only_after_the_gate_and_without_a_token(
    kube: Kube, namespace: str, pg_url: str
) -> None:
    setup_shop(kube, namespace, pg_url, rows=10)
    kube.api.ensure_runner_identity(namespace, "datamigration-runner", RUNNER_ROLE)
    rolled_out(kube, namespace, "registry.example/shop-api:2.0")

    # Proven: the gate passes (with its own token), the tool runs without one.
    name = command_contract_job(kube, namespace, 1, token=False)

    def complete() -> bool:
        job = kube.client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        return observe_job(job, []).outcome == "Succeeded"

    eventually(complete, timeout=90, what=f"Job {name} to complete (the tool had no token)")

    # Asked for: the tool holds the token (and exits 3, an ordinary failure of its own).
    asked = command_contract_job(kube, namespace, 2, token=True)
    seen = observe_job(failed_job(kube, namespace, asked), job_pods(kube, namespace, asked))
    assert seen.exit_code == 3, seen.message

    # Rolled back: the gate, the last init container, stops the Job before the tool starts.
    rolled_out(kube, namespace, "registry.example/shop-api:1.0")
    gated = command_contract_job(kube, namespace, 3, token=False)
    failed = failed_job(kube, namespace, gated)
    (pod,) = job_pods(kube, namespace, gated)
    seen = observe_job(failed, [pod])
    assert seen.exit_code == EXIT_ROLLOUT_REGRESSED, seen.message
    assert [c["name"] for c in pod["status"]["initContainerStatuses"]] == ["rollout-gate"]
    (tool,) = pod["status"]["containerStatuses"]
    assert "terminated" not in tool["state"] or tool["state"]["terminated"].get("startedAt") is None
    assert tool.get("started") is not True
