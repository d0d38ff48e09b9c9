"""Phase Job manifests and what a Job's state means to the operator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import spec, with_contract

from datamigration.core.jobs import JobSettings, Owner, build_job, job_name, observe_job
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
