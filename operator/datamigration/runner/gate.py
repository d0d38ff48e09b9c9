"""The rollout gate at the point of use: the contract Job proves the rollout again itself.

Why: the operator proves that every pod runs the new code before it creates the contract Job, but
the Job may wait, and its verify queries may run for a while; a `kubectl rollout undo` in that time
brings old pods back. So right before each destructive step, the runner reads the workload, its
ReplicaSets and its pods (read-only: get deployments, list replicasets, list pods) and runs the
same pure `core.rollout.evaluate_rollout` the operator used, with the image the operator proved
(`plan.rolloutGate`). If the proof no longer holds, `RolloutRegressed` (exit 8) ends the run before
the step, naming the pods that break it. A workload that cannot be read is not proven either: the
gate fails closed.

What this guarantees: no destructive runner step starts while a pod of another revision, or one not
running the expected image, exists in the API's view at that moment (terminating pods included).
What it cannot: a pod created in the milliseconds between the check and the statement. For
`command` steps the team's tool runs in its own container; the runner proves the rollout once, as
the last init container, right before that container starts (`datamigration-runner gate`), and
cannot interpose between the tool's statements (docs/runner.md).

Every workload of `spec.workloads` is proven, each with its kind's gate (`core/workloads.py`),
from the same reads the operator makes (`k8s/workloads.read_workload`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from datamigration.core.rollout import POD_TEMPLATE_HASH, REVISION_ANNOTATION
from datamigration.core.workloads import evaluate_workload
from datamigration.runner.errors import RolloutRegressed
from datamigration.runner.plan import RolloutGate

if TYPE_CHECKING:
    from datamigration.k8s.workloads import WorkloadReader

log = logging.getLogger(__name__)

JSON = dict[str, Any]
#: At most this many pod names in the message (the count is always given).
NAMED_PODS = 3


def check_rollout(gate: RolloutGate, api: WorkloadReader) -> str:
    """Prove the rollout again; the verdict's message when proven, else `RolloutRegressed`."""
    from datamigration.k8s.workloads import read_workload

    workload = gate.label
    try:
        seen = read_workload(api, gate.namespace, gate.kind, gate.name, gate.selector)
    except Exception as exc:  # KubeError or transport: not proven, so not run
        raise RolloutRegressed(
            f"the destructive step was not run: cannot re-prove the rollout of {workload} "
            f"({_one_line(exc)})"
        ) from None
    if seen is None:
        raise RolloutRegressed(f"{workload} no longer exists; the destructive step was not run")
    if seen.unreadable:
        raise RolloutRegressed(
            f"the destructive step was not run: cannot read {workload}: {seen.unreadable}"
        )
    verdict = evaluate_workload(
        gate.kind,
        seen.deployment,
        seen.replicasets,
        seen.pods,
        container=gate.container,
        expected_image=gate.expected_image,
        selector=gate.selector,
    )
    if verdict.complete:
        return verdict.message
    pods_text = ""
    if gate.kind == "Deployment":  # the other kinds' verdicts name their pods already
        offending = offending_pods(seen.deployment, seen.replicasets, seen.pods, gate)
        named = ", ".join(offending[:NAMED_PODS]) + (" ..." if len(offending) > NAMED_PODS else "")
        pods_text = f"; {len(offending)} pod(s) break it: {named}" if offending else ""
    raise RolloutRegressed(
        f"the destructive step was not run: the rollout of {workload} is no longer proven "
        f"({verdict.message}){pods_text}"
    )


def offending_pods(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    gate: RolloutGate,
) -> list[str]:
    """The pods that break the proof, sorted: those not running the expected image in the gate's
    container, or (no image named) not of the newest ReplicaSet. Terminating ones are marked."""
    revision = str(deployment.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION))
    newest_hash = next(
        (
            str(rs["metadata"].get("labels", {}).get(POD_TEMPLATE_HASH, ""))
            for rs in replicasets
            if str(rs.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION))
            == revision
        ),
        None,
    )
    found = []
    for pod in pods:
        meta = pod.get("metadata", {})
        if gate.expected_image is not None:
            images = [
                c.get("image")
                for c in pod.get("spec", {}).get("containers", [])
                if c.get("name") == gate.container
            ]
            bad = images != [gate.expected_image]
            detail = str(images[0]) if images else f"no container {gate.container}"
        else:
            template_hash = meta.get("labels", {}).get(POD_TEMPLATE_HASH)
            bad = template_hash != newest_hash
            detail = f"pod-template-hash {template_hash}"
        if bad:
            terminating = ", terminating" if meta.get("deletionTimestamp") else ""
            found.append(f"{meta.get('name')} ({detail}{terminating})")
    return sorted(found)


def before_destructive(
    gates: RolloutGate | Sequence[RolloutGate] | None,
) -> Callable[[], None] | None:
    """The callable `phase.run_phase` calls right before each destructive step, or None when the
    plan carries no rollout gate (a plan a person wrote, or a phase other than contract). Every
    gate (every workload container) is proven in the same call. The API client is created on the
    first call, with the pod's ServiceAccount token."""
    if gates is None:
        return None
    all_gates = (gates,) if isinstance(gates, RolloutGate) else tuple(gates)
    if not all_gates:
        return None
    readers: list[WorkloadReader] = []

    def check() -> None:
        if not readers:
            readers.append(_connect())
        for gate in all_gates:
            message = check_rollout(gate, readers[0])
            log.info("rollout gate: proven again before the destructive step: %s", message)

    return check


def _connect() -> WorkloadReader:
    from datamigration.k8s.cluster import ClusterApi

    try:
        return ClusterApi()
    except Exception as exc:  # the kubernetes client raises its own config errors
        raise RolloutRegressed(
            "the destructive step was not run: cannot re-prove the rollout without Kubernetes "
            f"API access ({_one_line(exc)})"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
