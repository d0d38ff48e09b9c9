"""Phase Job manifests and what a Job's state means to the operator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import spec, with_contract

from datamigration.core.jobs import (
    EXIT_CHECKSUM_CHANGED,
    EXIT_PAUSED,
    EXIT_ROLLOUT_REGRESSED,
    EXIT_VERIFY_FAILED,
    JobSettings,
    Owner,
    build_job,
    job_name,
    observe_job,
)
from datamigration.core.spec import parse_spec

OWNER = Owner(namespace="shop", name="rename-email", uid="0123456789abcdef")
SETTINGS = JobSettings(runner_image="runner:1", extra_pod_labels={"team": "db"})


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_names_are_deterministic_and_fit_63_characters() -> None:
    assert job_name(OWNER, "backfill", 2) == "rename-email-backfill-2-01234"
    long = Owner(namespace="x", name="a" * 253, uid="u" * 36)
    assert len(job_name(long, "contract", 10)) <= 63


def test_runner_job_shape() -> None:
    job = build_job(OWNER, parse_spec(spec()), "backfill", 1, SETTINGS)
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert job["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert job["spec"]["backoffLimit"] == 0
    assert pod["metadata"]["labels"]["team"] == "db"
    assert pod["metadata"]["labels"]["datamigration.dev/phase"] == "backfill"
    assert container["image"] == "runner:1"
    values = env(container)
    assert values["DATABASE_URL"] == {"secretKeyRef": {"name": "shop-db", "key": "url"}}
    plan = json.loads(values["DATAMIGRATION_PLAN"])
    assert plan["migration"] == "shop/rename-email" and plan["phase"] == "backfill"
    assert [s["name"] for s in plan["steps"]] == ["copy"]
    assert plan["report"] == {"namespace": "shop", "name": "rename-email"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_contract_runs_verify_before_destructive_steps_in_one_job() -> None:
    job = build_job(OWNER, parse_spec(spec()), "contract", 1, SETTINGS)
    plan = json.loads(env(job["spec"]["template"]["spec"]["containers"][0])["DATAMIGRATION_PLAN"])
    assert [s["name"] for s in plan["steps"]] == ["copied", "drop-old"]
    assert "verify" in plan["steps"][0]


def test_contract_command_step_is_gated_by_a_verify_init_container() -> None:
    raw = with_contract(
        steps=[
            {
                "name": "tool",
                "command": {
                    "image": "postgres:15",
                    "command": ["psql"],
                    "args": ["-c", "DROP TABLE legacy"],
                },
            }
        ]
    )
    pod = build_job(OWNER, parse_spec(raw), "contract", 1, SETTINGS)["spec"]["template"]["spec"]
    main, init = pod["containers"][0], pod["initContainers"][0]
    assert main["image"] == "postgres:15" and main["command"] == ["psql"]
    assert init["name"] == "verify" and init["command"] == ["datamigration-runner"]
    plan = json.loads(env(init)["DATAMIGRATION_PLAN"])
    assert [s["name"] for s in plan["steps"]] == ["copied"]


def job_with(conditions: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "j",
            "labels": {"datamigration.dev/phase": "expand", "datamigration.dev/attempt": "2"},
        },
        "status": {"conditions": conditions},
    }


def failed_pod(exit_code: int, log: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    name = "verify" if init else "runner"
    return {
        "status": {
            key: [
                {
                    "name": name,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": log,
                            "finishedAt": "2026-11-21T10:00:00Z",
                        }
                    },
                }
            ]
        }
    }


@pytest.mark.parametrize(
    ("conditions", "pods", "outcome", "exit_code", "fragment"),
    [
        pytest.param([], [], "Running", None, "", id="no-condition-is-running"),
        pytest.param(
            [{"type": "Complete", "status": "True"}], [], "Succeeded", None, "", id="complete"
        ),
        pytest.param(
            [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            [failed_pod(7, "step x failed\nSQL error in step add-col: syntax error")],
            "Failed",
            7,
            "exit code 7: SQL error in step add-col",
            id="failed-with-log",
        ),
        pytest.param(
            [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            [failed_pod(4, "verify copied: expected 0, got 3", init=True)],
            "Failed",
            4,
            "expected 0, got 3",
            id="verify-init-container-failed",
        ),
    ],
)
def test_observe_job(
    conditions: list[dict[str, str]],
    pods: list[dict[str, Any]],
    outcome: str,
    exit_code: int | None,
    fragment: str,
) -> None:
    seen = observe_job(job_with(conditions), pods)
    assert (seen.outcome, seen.exit_code, seen.attempt, seen.phase) == (
        outcome,
        exit_code,
        2,
        "expand",
    )
    assert fragment in seen.message


COMMAND_CONTRACT = [
    {
        "name": "tool",
        "command": {"image": "postgres:15", "command": ["psql"], "args": ["-c", "DROP TABLE x"]},
    }
]


def pod_spec(raw: dict[str, Any], phase: str, **kwargs: Any) -> dict[str, Any]:
    job = build_job(OWNER, parse_spec(raw), phase, 1, SETTINGS, **kwargs)
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def plan_of(container: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(env(container)["DATAMIGRATION_PLAN"])
    return result


def mounts_token(container: dict[str, Any]) -> bool:
    return any(
        m["name"] == "api-token"
        and m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
        for m in container["volumeMounts"]
    )


def test_contract_plan_carries_the_rollout_gate_the_operator_proved() -> None:
    runner = pod_spec(spec(), "contract")["containers"][0]
    assert plan_of(runner)["rolloutGate"] == {
        "workload": {"kind": "Deployment", "namespace": "shop", "name": "shop-api"},
        "container": "api",
        "expectedImage": "shop-api:2.0",
    }
    observed = pod_spec(spec(), "contract", expected_image="shop-api:2.0@sha256:abc")
    assert plan_of(observed["containers"][0])["rolloutGate"]["expectedImage"] == (
        "shop-api:2.0@sha256:abc"
    )
    for phase in ("expand", "backfill"):
        assert "rolloutGate" not in plan_of(pod_spec(spec(), phase)["containers"][0])


def test_exit_codes_no_retry_can_change_fail_the_job_at_once() -> None:
    assert (EXIT_VERIFY_FAILED, EXIT_CHECKSUM_CHANGED, EXIT_ROLLOUT_REGRESSED, EXIT_PAUSED) == (
        4,
        5,
        8,
        75,
    )
    for phase in ("expand", "backfill", "contract"):
        job = build_job(OWNER, parse_spec(spec()), phase, 1, SETTINGS)
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert job["spec"]["podFailurePolicy"] == {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": "runner",
                        "operator": "In",
                        "values": [4, 5, 8, 10, 75],
                    },
                },
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        }


def test_a_command_steps_own_exit_codes_keep_the_ordinary_retries() -> None:
    job = build_job(
        OWNER, parse_spec(with_contract(steps=COMMAND_CONTRACT)), "contract", 1, SETTINGS
    )
    rules = job["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r["onExitCodes"]["containerName"] for r in rules if r["action"] == "FailJob"]
    assert fail_job == ["verify", "rollout-gate"]  # the runner's containers, never the tool
    without_verify = with_contract(verify=[], approval="Manual", steps=COMMAND_CONTRACT)
    job = build_job(OWNER, parse_spec(without_verify), "contract", 1, SETTINGS)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert [r["onExitCodes"]["containerName"] for r in rules if "onExitCodes" in r] == [
        "rollout-gate"
    ]  # a rule may only name a container the pod has
    expand = build_job(
        OWNER, parse_spec(spec(expand={"steps": COMMAND_CONTRACT})), "expand", 1, SETTINGS
    )
    assert [r["action"] for r in expand["spec"]["podFailurePolicy"]["rules"]] == ["Ignore"]


def test_contract_command_step_proves_the_rollout_again_right_before_the_tool() -> None:
    pod = pod_spec(with_contract(steps=COMMAND_CONTRACT), "contract")
    assert [c["name"] for c in pod["initContainers"]] == ["verify", "rollout-gate"]
    gate = pod["initContainers"][-1]
    assert gate["command"] == ["datamigration-runner"] and gate["args"] == ["gate"]
    assert "DATABASE_URL" not in env(gate)  # the gate reads the API only
    assert plan_of(gate)["rolloutGate"]["expectedImage"] == "shop-api:2.0"
    expand = pod_spec(spec(expand={"steps": COMMAND_CONTRACT}), "expand")
    assert "initContainers" not in expand  # no rollout to prove before expand


def test_only_the_runners_containers_get_an_api_token() -> None:
    runner_pod = pod_spec(spec(), "backfill")
    assert runner_pod["automountServiceAccountToken"] is False
    assert mounts_token(runner_pod["containers"][0])
    (volume,) = [v for v in runner_pod["volumes"] if v["name"] == "api-token"]
    assert {"serviceAccountToken"} <= {k for src in volume["projected"]["sources"] for k in src}

    command_pod = pod_spec(with_contract(steps=COMMAND_CONTRACT), "contract")
    assert command_pod["automountServiceAccountToken"] is False
    assert not mounts_token(command_pod["containers"][0])  # the team's tool: no token
    assert all(mounts_token(c) for c in command_pod["initContainers"])

    asked = [{**COMMAND_CONTRACT[0]}]
    asked[0]["command"] = {**asked[0]["command"], "automountServiceAccountToken": True}
    assert mounts_token(pod_spec(with_contract(steps=asked), "contract")["containers"][0])


def test_a_job_failed_by_its_pod_failure_policy_reports_the_exit_code_without_its_pod() -> None:
    message = (
        "Container runner for pod shop/j-abc failed with exit code 75 matching FailJob rule at "
        "index 0"
    )
    failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message}
    seen = observe_job(job_with([failed]), [])
    assert (seen.outcome, seen.exit_code) == ("Failed", 75)
    assert "PodFailurePolicy" in seen.message
    with_pod = observe_job(job_with([failed]), [failed_pod(75, "PAUSED exit=75: paused")])
    assert with_pod.exit_code == 75


def test_a_rollback_job_runs_the_rollback_steps_without_a_rollout_gate() -> None:
    raw = spec(rollback={"steps": [{"name": "drop-new", "sql": "ALTER TABLE users DROP COLUMN x"}]})
    raw["operations"] = [
        {"renameColumn": {"table": "orders", "from": "a", "to": "b", "type": "text"}}
    ]
    job = build_job(OWNER, parse_spec(raw), "rollback", 2, SETTINGS)
    assert job["metadata"]["name"] == "rename-email-rollback-2-01234"
    assert job["metadata"]["labels"]["datamigration.dev/phase"] == "rollback"
    assert "podFailurePolicy" in job["spec"]
    plan = json.loads(env(job["spec"]["template"]["spec"]["containers"][0])["DATAMIGRATION_PLAN"])
    assert plan["phase"] == "rollback" and "rolloutGate" not in plan
    # the hand-written rollback steps first, then the operations' undo
    assert [s["name"] for s in plan["steps"]] == ["drop-new", "undo-rename-orders-a"]
