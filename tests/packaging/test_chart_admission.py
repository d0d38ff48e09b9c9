"""The chart's ValidatingAdmissionPolicy that keeps phase Jobs to `status.progress`: rendered for
the release's own identities, one per release, and optional. (tests/e2e/test_gate.py proves what
it denies on a real API server.)"""

from __future__ import annotations

from typing import Any

from chart_support import find, one, render

POLICY = "dm-datamigration-operator-runner-progress-only"


def _match_condition(docs: list[Any]) -> str:
    policy = one(docs, "ValidatingAdmissionPolicy", POLICY)
    (condition,) = policy["spec"]["matchConditions"]
    expression: str = condition["expression"]
    return expression


def test_policy_and_binding_deny_for_the_runners_identities() -> None:
    docs = render()
    policy = one(docs, "ValidatingAdmissionPolicy", POLICY)
    binding = one(docs, "ValidatingAdmissionPolicyBinding", POLICY)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["datamigrations", "datamigrations/status"]
    assert rule["operations"] == ["UPDATE"]
    condition = _match_condition(docs)
    assert "endsWith(':datamigration-runner')" in condition
    assert "o.spec.runner.serviceAccountName" in condition
    # The operator's own identity is never matched, even if a migration names it as its runner.
    assert "!= 'system:serviceaccount:dm-system:dm-datamigration-operator'" in condition
    assert len(policy["spec"]["validations"]) == 3


def test_policy_follows_the_runner_and_operator_account_names() -> None:
    docs = render(
        "--set", "runner.serviceAccountName=shop-runner", "--set", "serviceAccount.name=dm-op"
    )
    condition = _match_condition(docs)
    assert "endsWith(':shop-runner')" in condition
    assert "!= 'system:serviceaccount:dm-system:dm-op'" in condition


def test_policy_is_optional() -> None:
    docs = render("--set", "runner.admissionPolicy.create=false")
    assert not find(docs, "ValidatingAdmissionPolicy")
    assert not find(docs, "ValidatingAdmissionPolicyBinding")
