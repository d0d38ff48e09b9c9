"""The local cluster behaves like a real one where the product depends on it.

Real controllers drive Deployments and Jobs; KWOK plays the kubelet for ordinary pods (including
the test-only never-ready and honor-grace-period behaviours); the job-pod executor really runs
executor-labelled pods, with Secrets resolved and a service-account identity, and reports their
real outcome. Each test works in a fresh namespace and waits by polling with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import names, paths, processes
from localcluster.api import Api, ApiError
from localcluster.cluster import Cluster
from localcluster.waiting import wait_for

pytestmark = pytest.mark.e2e

JSON = dict[str, Any]
EXECUTOR_LABELS = {names.EXECUTOR_LABEL: names.EXECUTOR_VALUE}


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Api]:
    client = Api(cluster.kubeconfig)
    yield client
    client.close()


@pytest.fixture
def namespace(api: Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (so pods can be admitted)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"lc-{slug}-{uuid.uuid4().hex[:6]}"
    api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    until(
        "the default ServiceAccount",
        lambda: bool(api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")),
    )
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


def until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    wait_for(what, condition, timeout=timeout, interval=0.2)


def get_or_none(api: Api, path: str) -> JSON | None:
    try:
        return api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def pods(api: Api, ns: str, selector: str) -> list[JSON]:
    items: list[JSON] = api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=selector)["items"]
    return items


def container(command: list[str], **extra: Any) -> JSON:
    # The image is ignored by the executor (and never pulled by KWOK): any name will do.
    return {"name": "main", "image": "registry.invalid/app:1", "command": command, **extra}


def job(name: str, command: list[str], **container_extra: Any) -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": EXECUTOR_LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container(command, **container_extra)],
                },
            },
        },
    }


def deployment(name: str, image: str, replicas: int = 3, labels: JSON | None = None) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **(labels or {})}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def job_condition(api: Api, ns: str, name: str) -> str | None:
    status = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}").get("status", {})
    for cond in status.get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def finished_job_pod(api: Api, ns: str, name: str, outcome: str) -> JSON:
    until(f"job {name} {outcome}", lambda: job_condition(api, ns, name) == outcome)
    (pod,) = pods(api, ns, f"job-name={name}")
    return pod


def pod_log(cluster: Cluster, pod: JSON, container_name: str = "main") -> str:
    meta = pod["metadata"]
    path = cluster.logs_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{container_name}.log"
    return path.read_text()


def terminated(pod: JSON) -> JSON:
    state: JSON = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def run_pod(api: Api, ns: str, name: str, spec: JSON, **meta: Any) -> JSON:
    body = {"metadata": {"name": name, **meta}, "spec": spec}
    return api.create(f"/api/v1/namespaces/{ns}/pods", body)


def pod_phase(api: Api, ns: str, name: str) -> str | None:
    pod = get_or_none(api, f"/api/v1/namespaces/{ns}/pods/{name}")
    return None if pod is None else str(pod.get("status", {}).get("phase"))


# --- (e) versions and nodes -------------------------------------------------------------------


def test_kubectl_sees_pinned_server_version_and_ready_nodes(cluster: Cluster) -> None:
    versions = dict(
        line.split("=", 1)
        for line in (paths.REPO_ROOT / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    env = os.environ | {"KUBECONFIG": str(cluster.kubeconfig)}
    kubectl = str(cluster.bin_dir / "kubectl")

    out = subprocess.run(
        [kubectl, "version", "-o", "json"], env=env, check=True, capture_output=True
    )
    reported = json.loads(out.stdout)
    assert reported["serverVersion"]["gitVersion"] == f"v{versions['KUBE_VERSION']}"
    assert reported["clientVersion"]["gitVersion"] == f"v{versions['KUBECTL_VERSION']}"

    out = subprocess.run(
        [kubectl, "get", "nodes", "-o", "json"], env=env, check=True, capture_output=True
    )
    nodes = json.loads(out.stdout)["items"]
    assert {n["metadata"]["name"] for n in nodes} >= set(names.NODE_NAMES)
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
        assert not node["spec"].get("taints")


# --- (a) Deployment rollout through the real controllers ---------------------------------------


def test_deployment_rollout_completes_through_real_controllers(api: Api, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}"
    api.create(f"{base}/deployments", deployment("web", "registry.invalid/web:1"))

    def rolled_out(generation: int) -> bool:
        d = api.get(f"{base}/deployments/web")
        s = d.get("status", {})
        return bool(
            s.get("observedGeneration", 0) >= generation
            and s.get("updatedReplicas") == s.get("availableReplicas") == s.get("replicas") == 3
        )

    until("first rollout", lambda: rolled_out(1))
    (old_rs,) = api.get(f"{base}/replicasets", labelSelector="app=web")["items"]

    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/web:2"}]}
            }
        }
    }
    updated = api.patch(f"{base}/deployments/web", patch)
    until("second rollout", lambda: rolled_out(updated["metadata"]["generation"]))

    sets = api.get(f"{base}/replicasets", labelSelector="app=web")["items"]
    new_rs = [rs for rs in sets if rs["metadata"]["uid"] != old_rs["metadata"]["uid"]]
    assert len(new_rs) == 1
    assert (
        new_rs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/web:2"
    )
    old_hash = old_rs["metadata"]["labels"]["pod-template-hash"]
    until(
        "no pod of the old ReplicaSet left",
        lambda: not pods(api, namespace, f"app=web,pod-template-hash={old_hash}"),
    )
    final = api.get(f"{base}/deployments/web")["status"]
    assert final["updatedReplicas"] == final["availableReplicas"] == 3


# --- (b) Job outcomes from really executed pods -------------------------------------------------


def test_job_pods_report_their_real_outcome(api: Api, namespace: str, cluster: Cluster) -> None:
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    api.create(jobs, job("ok", ["python", "-c", "print('all good')"]))
    noisy = "import sys\nfor i in range(100): print(f'line {i:03d} ' + 'x' * 30)\nsys.exit(3)"
    api.create(
        jobs,
        job("bad", ["python", "-c", noisy], terminationMessagePolicy="FallbackToLogsOnError"),
    )

    ok = finished_job_pod(api, namespace, "ok", "Complete")
    assert ok["status"]["phase"] == "Succeeded"
    assert terminated(ok)["exitCode"] == 0
    assert terminated(ok)["reason"] == "Completed"
    assert pod_log(cluster, ok) == "all good\n"

    bad = finished_job_pod(api, namespace, "bad", "Failed")
    assert bad["status"]["phase"] == "Failed"
    state = terminated(bad)
    assert state["exitCode"] == 3
    assert state["reason"] == "Error"
    # The kubelet's fallback message: the log's tail, at most 80 lines and 2 KiB.
    message = state["message"]
    assert message.endswith("line 099 " + "x" * 30 + "\n")
    assert len(message.encode()) <= 2048
    assert len(message.splitlines()) <= 80
    assert pod_log(cluster, bad).endswith(message)


# --- (c) Secrets and the rest of the environment, resolved like a kubelet ------------------------


def test_executed_pod_reads_secrets_like_a_kubelet_provides_them(
    api: Api, namespace: str, cluster: Cluster
) -> None:
    core = f"/api/v1/namespaces/{namespace}"
    api.create(
        f"{core}/secrets",
        {"metadata": {"name": "db"}, "stringData": {"password": "s3cr3t!", "user": "app"}},
    )
    api.create(f"{core}/configmaps", {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    script = (
        "import json, os\n"
        "keys = ['PASSWORD', 'DB_user', 'DB_password', 'MODE', 'POD', 'DSN', 'ABSENT', 'HOME']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
    )
    spec = job("env", ["python", "-c", script])
    spec["spec"]["template"]["spec"]["containers"][0] |= {
        "envFrom": [
            {"secretRef": {"name": "db"}, "prefix": "DB_"},
            {"secretRef": {"name": "missing-but-optional", "optional": True}},
        ],
        "env": [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DSN", "value": "postgresql://$(DB_user):$(PASSWORD)@db/$(NOPE)"},
            {
                "name": "ABSENT",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": True}},
            },
        ],
    }
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", spec)
    pod = finished_job_pod(api, namespace, "env", "Complete")

    seen = json.loads(pod_log(cluster, pod))
    assert seen["PASSWORD"] == seen["DB_password"] == "s3cr3t!"
    assert seen["DB_user"] == "app"
    assert seen["MODE"] == "fast"
    assert seen["POD"] == pod["metadata"]["name"]
    assert seen["DSN"] == "postgresql://app:s3cr3t!@db/$(NOPE)"  # undefined stays as written
    assert seen["ABSENT"] is None
    assert seen["HOME"] != os.environ.get("HOME")  # not the executor's own home


def test_missing_secret_keeps_container_waiting_until_it_exists(
    api: Api, namespace: str, cluster: Cluster
) -> None:
    spec = job("late", ["python", "-c", "import os; print(os.environ['TOKEN'])"])
    spec["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}
    ]
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", spec)

    def waiting_reason() -> tuple[str, str] | None:
        for pod in pods(api, namespace, "job-name=late"):
            for status in pod.get("status", {}).get("containerStatuses", []):
                waiting = status["state"].get("waiting") or {}
                if waiting.get("reason"):
                    return str(waiting["reason"]), str(waiting.get("message", ""))
        return None

    until(
        "CreateContainerConfigError",
        lambda: (waiting_reason() or ("",))[0] == "CreateContainerConfigError",
    )
    assert waiting_reason() == ("CreateContainerConfigError", 'secret "late" not found')
    assert pods(api, namespace, "job-name=late")[0]["status"]["phase"] == "Pending"

    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "late"}, "stringData": {"token": "finally"}},
    )
    pod = finished_job_pod(api, namespace, "late", "Complete")
    assert pod_log(cluster, pod) == "finally\n"


# --- (d) the pod's own service-account identity ---------------------------------------------------

WHOAMI = """
import json
from kubernetes import client, config
config.load_kube_config()  # $KUBECONFIG, as the product's in-cluster code paths read it first
review = client.AuthenticationV1Api().create_self_subject_review(client.V1SelfSubjectReview())
print(json.dumps({"user": review.status.user_info.username}))
try:
    client.CoreV1Api().list_namespaced_secret("kube-system")
    print(json.dumps({"secrets": "allowed"}))
except client.exceptions.ApiException as exc:
    print(json.dumps({"secrets": exc.status}))
"""


def test_executed_pod_authenticates_as_its_service_account(
    api: Api, namespace: str, cluster: Cluster
) -> None:
    api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "migrator"}}
    )
    spec = job("whoami", ["python", "-c", WHOAMI])
    spec["spec"]["template"]["spec"]["serviceAccountName"] = "migrator"
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", spec)
    pod = finished_job_pod(api, namespace, "whoami", "Complete")

    lines = [json.loads(line) for line in pod_log(cluster, pod).splitlines()]
    assert lines[0]["user"] == f"system:serviceaccount:{namespace}:migrator"
    assert lines[1]["secrets"] == 403  # RBAC applies: the account was granted nothing


def test_pod_without_token_gets_no_credentials(api: Api, namespace: str, cluster: Cluster) -> None:
    script = "import os; print(os.environ.get('KUBECONFIG'))"
    spec = job("notoken", ["python", "-c", script])
    spec["spec"]["template"]["spec"]["automountServiceAccountToken"] = False
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", spec)
    pod = finished_job_pod(api, namespace, "notoken", "Complete")
    assert pod_log(cluster, pod) == "None\n"


# --- (f) never-ready rollouts, finalizers, grace periods ------------------------------------------


def test_never_ready_rollout_never_completes(api: Api, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}"
    spec = deployment("stuck", "registry.invalid/stuck:1", 2, {names.NEVER_READY_LABEL: "true"})
    spec["spec"]["progressDeadlineSeconds"] = 3
    api.create(f"{base}/deployments", spec)

    def deadline_exceeded() -> bool:
        status = api.get(f"{base}/deployments/stuck").get("status", {})
        return any(
            c["type"] == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            for c in status.get("conditions", [])
        )

    until("ProgressDeadlineExceeded", deadline_exceeded)
    status = api.get(f"{base}/deployments/stuck")["status"]
    assert status["updatedReplicas"] == 2
    assert status.get("availableReplicas", 0) == 0
    for pod in pods(api, namespace, "app=stuck"):
        assert pod["status"]["phase"] == "Running"
        assert all(c["state"].get("running") for c in pod["status"]["containerStatuses"])
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "False"


def test_finalizer_keeps_pod_terminating_until_removed(api: Api, namespace: str) -> None:
    core = f"/api/v1/namespaces/{namespace}/pods"
    spec = {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    run_pod(api, namespace, "held", spec, finalizers=["test.datamigration.dev/hold"])
    run_pod(api, namespace, "free", spec)
    until(
        "both pods Running",
        lambda: pod_phase(api, namespace, "held") == pod_phase(api, namespace, "free") == "Running",
    )

    api.delete(f"{core}/held")
    api.delete(f"{core}/free")
    # KWOK handles both deletions alike; once it has removed `free`, it has had its go at `held`.
    until("the pod without finalizer gone", lambda: get_or_none(api, f"{core}/free") is None)
    held = api.get(f"{core}/held")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["test.datamigration.dev/hold"]

    api.patch(f"{core}/held", {"metadata": {"finalizers": None}})
    until("the released pod gone", lambda: get_or_none(api, f"{core}/held") is None)


def test_grace_period_honoured_only_when_annotated(api: Api, namespace: str) -> None:
    core = f"/api/v1/namespaces/{namespace}/pods"
    spec = {
        "terminationGracePeriodSeconds": 6,
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
    }
    annotation = {names.HONOR_GRACE_PERIOD_ANNOTATION: "true"}
    run_pod(api, namespace, "patient", spec, annotations=annotation)
    run_pod(api, namespace, "hasty", spec)
    until(
        "both pods Running",
        lambda: (
            pod_phase(api, namespace, "patient") == pod_phase(api, namespace, "hasty") == "Running"
        ),
    )

    deleted = api.delete(f"{core}/patient")
    api.delete(f"{core}/hasty")
    ends = dt.datetime.fromisoformat(
        deleted["metadata"]["deletionTimestamp"].replace("Z", "+00:00")
    )
    until("the unannotated pod gone", lambda: get_or_none(api, f"{core}/hasty") is None, 10)
    assert dt.datetime.now(dt.UTC) < ends - dt.timedelta(seconds=2), "hasty pod took too long"
    assert get_or_none(api, f"{core}/patient") is not None

    until("the annotated pod gone", lambda: get_or_none(api, f"{core}/patient") is None, 30)
    # deletionTimestamp has whole seconds; KWOK acts at that instant, not before.
    assert dt.datetime.now(dt.UTC) >= ends - dt.timedelta(seconds=1)


# --- the executor's handling of deadlines, deletion and its own restarts --------------------------


def _process_of(pod: JSON) -> int:
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    assert container_id.startswith("local://")
    return int(container_id.removeprefix("local://"))


def _running_pid(api: Api, ns: str, name: str) -> int:
    def running() -> bool:
        pod = get_or_none(api, f"/api/v1/namespaces/{ns}/pods/{name}")
        statuses = (pod or {}).get("status", {}).get("containerStatuses", [])
        return bool(statuses and statuses[0]["state"].get("running"))

    until(f"pod {name} running", running)
    return _process_of(api.get(f"/api/v1/namespaces/{ns}/pods/{name}"))


def _gone(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat")
    return not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] in "ZX"


SLEEPER = "import time, signal, sys\nprint('up', flush=True)\ntime.sleep(600)"


def _run_script(api: Api, ns: str, name: str, script: str, **fields: Any) -> int:
    """Run `script` as an executor pod that is never restarted (more pod spec `fields` may be
    given); its process id once running."""
    spec = {"restartPolicy": "Never", **fields, "containers": [container(["python", "-c", script])]}
    run_pod(api, ns, name, spec, labels=EXECUTOR_LABELS)
    return _running_pid(api, ns, name)


def test_active_deadline_stops_the_process(api: Api, namespace: str) -> None:
    pid = _run_script(
        api, namespace, "late", SLEEPER, activeDeadlineSeconds=2, terminationGracePeriodSeconds=1
    )
    until("pod Failed", lambda: pod_phase(api, namespace, "late") == "Failed", 30)
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/late")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert terminated(pod)["exitCode"] == 128 + 15  # it died of the SIGTERM
    assert _gone(pid)


def test_deleting_a_pod_terminates_its_process_group(api: Api, namespace: str) -> None:
    # The child ignores SIGTERM: it must still die, by SIGKILL, once the grace period is over.
    script = (
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    pid = _run_script(api, namespace, "victim", script)
    api.delete(f"/api/v1/namespaces/{namespace}/pods/victim", grace_seconds=3)
    until("the pod's process gone", lambda: _gone(pid), 20)
    until("the pod object gone", lambda: pod_phase(api, namespace, "victim") is None, 20)
    group = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_group(int(p.name), pid)]
    assert not group


def test_a_deleted_pod_stays_until_its_process_has_exited(
    api: Api, namespace: str, tmp_path: Path
) -> None:
    # As with a kubelet: whoever watches the pod (the operator, waiting for a paused runner to
    # stop) must not see it go while its process may still write to a database.
    marker = tmp_path / "finished-cleanup"
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(2)\n"
        f"    open({str(marker)!r}, 'w').write('done')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    pid = _run_script(api, namespace, "careful", script)
    deleted = api.delete(f"/api/v1/namespaces/{namespace}/pods/careful", grace_seconds=20)
    assert deleted["metadata"]["deletionTimestamp"]
    until("the pod object gone", lambda: pod_phase(api, namespace, "careful") is None, 30)
    assert marker.read_text() == "done", "the pod went before its process had finished"
    assert _gone(pid)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid and not _gone(pid)
    except ProcessLookupError:
        return False


def test_executor_restart_fails_pods_it_lost(api: Api, namespace: str, cluster: Cluster) -> None:
    from localcluster import cluster as lc

    pid = _run_script(api, namespace, "orphan", SLEEPER)

    lc.restart_executor(kill=True)  # SIGKILL: the executor cannot clean up after itself
    until("the lost pod Failed", lambda: pod_phase(api, namespace, "orphan") == "Failed", 30)
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/orphan")
    assert pod["status"]["reason"] == "ExecutorRestarted"
    assert terminated(pod)["reason"] == "ContainerStatusUnknown"
    assert _gone(pid)

    # And the new executor runs new pods.
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job("after", ["true"]))
    finished_job_pod(api, namespace, "after", "Complete")


# --- (g) a second, independent cluster: idempotent up, repair, and a clean down -------------------


def test_second_cluster_up_repair_and_down_leave_nothing(cluster: Cluster, tmp_path: Path) -> None:
    state_dir = tmp_path / "second-cluster"
    env = os.environ | {
        paths.STATE_DIR_ENV: str(state_dir),
        "PYTHONPATH": str(paths.REPO_ROOT / "hack"),
    }
    env.pop("KUBECONFIG", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "localcluster", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        second = Api(state_dir / "kubeconfig")
        assert second.get("/version")["gitVersion"].startswith("v1.")
        assert (
            json.loads((state_dir / "cluster.json").read_text())["ports"]["apiserver"]
            != (cluster.ports["apiserver"])
        )

        began = time.monotonic()
        again = cli("up")
        assert again.returncode == 0, again.stderr
        assert time.monotonic() - began < 5, "up on a healthy cluster must return at once"

        kwok = next(r for r in processes.read_records(state_dir / "pids") if r.name == "kwok")
        processes.stop([kwok])
        assert cli("status").returncode == 1
        repaired = cli("up")
        assert repaired.returncode == 0, repaired.stderr
        assert cli("status").returncode == 0

        # A pod process the executor runs must go down with the cluster, too.
        second = Api(state_dir / "kubeconfig")
        until(
            "the default ServiceAccount",
            lambda: bool(second.get("/api/v1/namespaces/default/serviceaccounts/default")),
        )
        spec = {"restartPolicy": "Never", "containers": [container(["python", "-c", SLEEPER])]}
        run_pod(second, "default", "lingering", spec, labels=EXECUTOR_LABELS)
        pod_pid = _running_pid(second, "default", "lingering")
        records = processes.read_records(state_dir / "pids")
        assert {r.name for r in records} >= {"etcd", "kube-apiserver", "kwok", "executor"}
        second.close()
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not processes.sweep(state_dir)
    assert all(_gone(r.pid) for r in records)
    assert _gone(pod_pid)
    assert not list((state_dir / "pids").glob("*.pid"))
    # The first cluster is untouched.
    assert Api(cluster.kubeconfig).get("/version")["gitVersion"]


def test_free_ports_come_from_below_the_ephemeral_range_and_differ() -> None:
    """A port from the ephemeral range can be taken by any outgoing connection before the
    server we start binds it (an operator in CI exited with "address already in use")."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [processes.free_port() for _ in range(20)]
    assert all(1024 <= port < low for port in ports)
    assert len(set(ports)) == len(ports)


def test_an_operator_whose_port_was_taken_starts_on_another(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from localcluster import operatorproc

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed = iter([taken.getsockname()[1]])
    monkeypatch.setattr(
        operatorproc, "free_port", lambda: next(handed, None) or processes.free_port()
    )
    log = tmp_path / "operator.log"
    operator = operatorproc.OperatorProcess(
        Path(cluster.kubeconfig), log, env={"DATAMIGRATION_NAMESPACES": "lc-port-taken"}
    )
    try:
        operator.start()
        assert operator.running
        assert "address already in use" in log.read_text().lower()  # the first try's exit
    finally:
        operator.stop()
        taken.close()
