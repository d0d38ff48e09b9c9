"""Each gate on its own: blocked (with the reason and the field or object it names) or go."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from factories import Cluster, spec

from datamigration.core import gates
from datamigration.core.observed import Observed, Peer, Workload
from datamigration.core.spec import MigrationSpec, parse_spec

Gate = Callable[[MigrationSpec, Observed], gates.Blocked | None]
CLUSTER = Cluster()
WORKLOAD = Workload(CLUSTER.deployment(), CLUSTER.rs, CLUSTER.pods)
OK = Observed(generation=1, secret_exists=True, workload=WORKLOAD, name="m", created="2026-01-02")


def with_(**fields: object) -> Observed:
    return Observed(**{**OK.__dict__, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gate", "observed", "reason", "names"),
    [
        (gates.secret, OK, None, ""),
        (gates.secret, with_(secret_exists=False), "SecretNotFound", "secretKeyRef.name"),
        (gates.secret, with_(secret_has_key=False), "SecretKeyNotFound", "secretKeyRef.key"),
        (gates.workload_exists, OK, None, ""),
        (gates.workload_exists, with_(workload=None), "WorkloadNotFound", "spec.workload.name"),
        (gates.workload_owner, OK, None, ""),
        (
            gates.workload_owner,
            with_(peers=(Peer("old", "2026-01-01", "shop-api", "api", "x:9", "Expanding"),)),
            "WorkloadConflict",
            "old",
        ),
        (
            gates.workload_owner,
            with_(peers=(Peer("old", "2026-01-01", "shop-api", "api", "shop-api:2.0", "Pending"),)),
            None,
            "",
        ),
        (
            gates.workload_owner,
            with_(peers=(Peer("old", "2026-01-01", "shop-api", "sidecar", "x:9", "Pending"),)),
            None,
            "",
        ),
        (
            gates.workload_owner,
            with_(peers=(Peer("old", "2026-01-01", "shop-api", "api", "x:9", "Aborted"),)),
            None,
            "",
        ),
    ],
    ids=[
        "secret-ok",
        "no-secret",
        "no-key",
        "workload-ok",
        "no-workload",
        "alone",
        "older-other-image",
        "same-image",
        "other-container",
        "older-finished",
    ],
)
def test_gate(gate: Gate, observed: Observed, reason: str | None, names: str) -> None:
    blocked = gate(parse_spec(spec()), observed)
    if reason is None:
        assert blocked is None
    else:
        assert blocked is not None and blocked.reason == reason and names in blocked.message
