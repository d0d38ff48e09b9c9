"""Progress patches and pausing, through a tiny in-test HTTP server standing in for the API.

Only the HTTP boundary is fake: the real runner (a subprocess) uses the real Kubernetes client
with a kubeconfig that points at `FakeApi`, which records every request and answers like the API
server does for a status merge-patch (the whole object, including `spec.paused`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from runner_support import Database, Outcome, backfill_step, finish, make_plan, spawn

STATUS_PATH = "/apis/datamigration.dev/v1alpha1/namespaces/shop/datamigrations/users/status"
PROGRESS_FIELDS = {
    "phase",
    "step",
    "stepIndex",
    "stepCount",
    "rowsDone",
    "rowsEstimated",
    "percent",
    "rowsPerSecond",
    "batchSize",
    "summary",
    "lockRetries",
    "updatedAt",
}
INTEGER_FIELDS = PROGRESS_FIELDS - {"phase", "step", "summary", "updatedAt"}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ADD = {"name": "add", "sql": "ALTER TABLE items ADD COLUMN extra text"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content_type: str
    authorization: str
    body: dict[str, Any]


class FakeApi:
    """Answers PATCHes of the DataMigration status; `paused_after` = patches before pausing."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.paused_after: int | None = None
        self.status_code = 200
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw or b"{}")
                with api._lock:
                    api.requests.append(
                        Request(
                            "PATCH",
                            self.path,
                            self.headers.get("Content-Type", ""),
                            self.headers.get("Authorization", ""),
                            body,
                        )
                    )
                    count = len(api.requests)
                    paused = api.paused_after is not None and count > api.paused_after
                    code = api.status_code
                obj = {
                    "apiVersion": "datamigration.dev/v1alpha1",
                    "kind": "DataMigration",
                    "metadata": {"name": "users", "namespace": "shop"},
                    "spec": {"paused": paused},
                    "status": body.get("status", {}),
                }
                if code != 200:
                    obj = {"kind": "Status", "reason": "InternalError", "message": "etcd is sad"}
                payload = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def progress(self) -> list[dict[str, Any]]:
        with self._lock:
            return [request.body["status"]["progress"] for request in self.requests]

    def kubeconfig(self, directory: Path) -> Path:
        host, port = self.server.server_address[:2]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{host!s}:{port}"}}],
            "users": [{"name": "runner", "user": {"token": "runner-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
            "current-context": "fake",
        }
        path = directory / "kubeconfig"
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.close()


REPORT: dict[str, Any] = {"report": {"namespace": "shop", "name": "users"}}


def run_reporting(
    db_url: str,
    plan: dict[str, Any],
    api: FakeApi,
    tmp_path: Path,
    processes: list[Popen[bytes]],
    *args: str,
) -> Outcome:
    log = tmp_path / f"runner-{len(processes)}.log"
    process = spawn(db_url, plan, log, *args, KUBECONFIG=str(api.kubeconfig(tmp_path)))
    processes.append(process)
    return finish(process, log)


def test_progress_patches_have_the_documented_shape(
    db: Database, db_url: str, api: FakeApi, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    db.make_items(2000)
    # Batches of 100 rows, 10 ms apart: the reports (sent in the background, never queued)
    # keep up with most of them.
    step = backfill_step(batchSize=100, targetBatchMilliseconds=1, pauseMilliseconds=10)
    plan = make_plan(ADD, step, phase="backfill", **REPORT)
    outcome = run_reporting(db_url, plan, api, tmp_path, processes, "--report-interval", "0")
    assert outcome.code == 0, outcome.out

    for request in api.requests:
        assert request.path == STATUS_PATH
        assert request.content_type == "application/merge-patch+json"
        assert request.authorization == "Bearer runner-token"
        assert list(request.body) == ["status"]
        assert list(request.body["status"]) == ["progress"]
    for progress in api.progress:
        assert set(progress) == PROGRESS_FIELDS
        assert all(type(progress[field]) is int for field in INTEGER_FIELDS), progress
        assert 0 <= progress["percent"] <= 100
        assert RFC3339_UTC.fullmatch(progress["updatedAt"])
        assert progress["phase"] == "backfill"
        assert progress["stepCount"] == 2

    first, add_done, *batches, last = api.progress
    assert (first["step"], first["stepIndex"], first["summary"]) == ("add", 1, "backfill step 1/2")
    assert (add_done["step"], add_done["percent"]) == ("add", 50)
    assert len(batches) >= 5  # with --report-interval 0, a patch per batch unless one is in flight
    assert all(b["step"] == "copy" and b["stepIndex"] == 2 for b in batches)
    assert [b["rowsDone"] for b in batches] == sorted(b["rowsDone"] for b in batches)
    assert [b["percent"] for b in batches] == sorted(b["percent"] for b in batches)
    assert all(b["batchSize"] >= 100 for b in batches)
    middle = batches[len(batches) // 2]
    assert 0 < middle["percent"] < 100
    assert middle["summary"] == (
        f"backfill {middle['percent']}% {middle['rowsDone']}/{middle['rowsEstimated']} rows"
    )
    assert last == {
        **last,
        "step": "copy",
        "percent": 100,
        "rowsDone": 2000,
        "rowsEstimated": 2000,
        "summary": "backfill 100% 2000/2000 rows",
    }


def test_progress_is_throttled_but_every_step_end_is_reported(
    db: Database, db_url: str, api: FakeApi, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    db.make_items(500)
    plan = make_plan(ADD, backfill_step(batchSize=100, targetBatchMilliseconds=1), **REPORT)
    outcome = run_reporting(db_url, plan, api, tmp_path, processes, "--report-interval", "3600")
    assert outcome.code == 0, outcome.out
    # The start, then the end of each step; the batches in between were throttled away.
    assert [(p["step"], p["percent"]) for p in api.progress] == [
        ("add", 0),
        ("add", 50),
        ("copy", 100),
    ]


def test_pause_stops_after_a_committed_batch_and_the_next_run_resumes(
    db: Database, db_url: str, api: FakeApi, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    rows = 3000
    db.make_items(rows)
    plan = make_plan(backfill_step(batchSize=100, targetBatchMilliseconds=1), **REPORT)
    api.paused_after = 5  # the start and four batches, then spec.paused is true
    paused = run_reporting(db_url, plan, api, tmp_path, processes, "--report-interval", "0")
    assert paused.code == 75, paused.out
    assert "PAUSED exit=75" in paused.last_line
    assert "paused (spec.paused is true) after a committed batch" in paused.out
    row = db.ledger()["copy"]
    assert row["state"] == "running"
    assert 0 < row["rows_done"] < rows
    assert db.scalar("SELECT sum(hits) FROM items") == row["rows_done"]  # the checkpoint is exact

    api.paused_after = None
    resumed = run_reporting(db_url, plan, api, tmp_path, processes, "--report-interval", "0")
    assert resumed.code == 0, resumed.out
    assert db.scalar("SELECT sum(hits) FROM items") == rows
    assert db.scalar("SELECT count(*) FROM items WHERE hits <> 1") == 0


def test_paused_before_the_first_step_runs_nothing(
    sqlite_url: str, api: FakeApi, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    api.paused_after = 0
    plan = make_plan({"name": "make", "sql": "CREATE TABLE made (a int)"}, **REPORT)
    outcome = run_reporting(sqlite_url, plan, api, tmp_path, processes)
    assert outcome.code == 75
    assert "before the first step; nothing was run" in outcome.last_line
    assert not Database(sqlite_url).has_table("made")


def test_api_errors_are_one_warning_and_the_work_goes_on(
    sqlite_url: str, api: FakeApi, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    api.status_code = 500
    plan = make_plan({"name": "make", "sql": "CREATE TABLE made (a int)"}, **REPORT)
    outcome = run_reporting(sqlite_url, plan, api, tmp_path, processes)
    assert outcome.code == 0, outcome.out
    warnings = [line for line in outcome.out.splitlines() if "progress report to" in line]
    assert len(api.requests) == 2  # the start and the end of the step
    assert len(warnings) == 1  # one warning while the failures last
    assert "failed (work continues): 500 InternalError: etcd is sad" in warnings[0]
    assert Database(sqlite_url).has_table("made")


def test_no_credentials_disables_reporting(
    sqlite_url: str, tmp_path: Path, processes: list[Popen[bytes]]
) -> None:
    plan = make_plan({"name": "make", "sql": "CREATE TABLE made (a int)"}, **REPORT)
    log = tmp_path / "runner.log"
    missing = tmp_path / "no-such-kubeconfig"
    processes.append(spawn(sqlite_url, plan, log, KUBECONFIG=str(missing)))
    outcome = finish(processes[0], log)
    assert outcome.code == 0, outcome.out
    assert outcome.out.count("progress reporting disabled") == 1
