"""Session-wide test plumbing: a real PostgreSQL and a real local Kubernetes cluster.

Both are started once per session, on demand (only when a selected test asks for them), and
stopped at the end if this session started them. A missing component is a test *failure* with
a message that says what is missing and how to get it, never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from localcluster.cluster import Cluster
    from localcluster.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 on 127.0.0.1 and a free port, for the whole session."""
    from localcluster.postgres import PostgresServer

    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for one test; returns its SQLAlchemy URL (postgresql+psycopg)."""
    return postgres.create_database(request.node.name)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local control plane (etcd, apiserver, controller-manager, scheduler, KWOK, executor).

    Reuses a cluster started by `make cluster-up`; otherwise starts one and stops it afterwards.
    """
    from localcluster import cluster as lc

    started_here = not lc.is_up()
    handle = lc.ensure_up()
    os.environ["KUBECONFIG"] = str(handle.kubeconfig)
    try:
        yield handle
    finally:
        if started_here:
            lc.down()
