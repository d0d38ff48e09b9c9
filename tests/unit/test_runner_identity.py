"""The runner identity (ServiceAccount + RoleBinding) the operator makes before a Job: made sure
of once however many reconciles of a namespace ask at the same moment, and, when a Job is
likely, while the live reads before the decision run rather than after them."""

from __future__ import annotations

import threading
from typing import Any

from test_controller import NS, FakeApi

from datamigration.controller.reconciler import Reconciler
from datamigration.controller.settings import OperatorSettings
from datamigration.k8s.cluster import ClusterApi

WAIT = 10.0  # a bound on every wait below, so a regression fails instead of hanging


class BlockingKube:
    """A KubeClient whose first create waits for `release`; every create answers 201."""

    def __init__(self) -> None:
        self.creates: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.creates.append(path)
            first = len(self.creates) == 1
        if first:
            assert self.release.wait(WAIT)
        return body


class CountingLock:
    """A lock that counts the threads that asked for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.asked = 0
        self.all_asked = threading.Event()
        self.expected = 0

    def __enter__(self) -> None:
        self.asked += 1
        if self.asked >= self.expected:
            self.all_asked.set()
        self._lock.acquire()

    def __exit__(self, *_: Any) -> None:
        self._lock.release()


def test_reconciles_that_ask_at_once_share_one_check_of_the_identity() -> None:
    kube = BlockingKube()
    api = ClusterApi(kube)  # type: ignore[arg-type]
    key = (NS, "datamigration-runner", "datamigration-runner")
    lock = CountingLock()
    lock.expected = 8
    api._identity_locks[key] = lock  # type: ignore[assignment]
    threads = [
        threading.Thread(target=api.ensure_runner_identity, args=key) for _ in range(lock.expected)
    ]
    for t in threads:
        t.start()
    assert lock.all_asked.wait(WAIT)  # all eight are in, one of them inside its first create
    kube.release.set()
    for t in threads:
        t.join(WAIT)
    assert len(kube.creates) == 2  # one ServiceAccount, one RoleBinding, not sixteen creates


class IdentityFirstApi(FakeApi):
    """The live migration read waits until the runner identity is being made sure of."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity_started = threading.Event()
        self.live_reads_waited = False

    def ensure_runner_identity(self, namespace: str, account: str, cluster_role: str) -> None:
        self.identity_started.set()

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.live_reads_waited = self.identity_started.wait(WAIT)
        return super().get_migration(namespace, name)


def test_a_likely_job_has_its_runner_identity_made_sure_of_beside_the_live_reads() -> None:
    from factories import spec

    live = IdentityFirstApi(spec())
    cached = FakeApi(spec())
    rec = Reconciler(api=live, settings=OperatorSettings(manage_runner_rbac=True), reads=cached)
    rec.reconcile_once(NS, "m")
    assert live.live_reads_waited, "the identity was made sure of only after the live reads"
    assert live.job_creates == 1
