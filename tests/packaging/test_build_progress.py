"""A cold build of the local cluster says what it is doing: a line per step with its elapsed time
and its typical duration, and a run waiting for the build lock names the holder.

The real build takes minutes, so these tests run hack/build-cluster-bins.sh against an empty
temporary cache with a stand-in `go` on PATH (it writes an executable where `go build` /
`go install` would): the script's own logic (steps, lock, staging, publishing) is what runs.
kubectl and helm are copied in from the real cache, so their steps are the cached no-ops.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "build-cluster-bins.sh"

FAKE_GO = r"""#!/usr/bin/env bash
# A stand-in for the go tool: produces an executable wherever the build would.
set -euo pipefail
out=""
case "$1 ${2:-}" in
  "mod download")
    gomod="$PWD/fake-kubernetes.mod"
    printf 'module k8s.io/kubernetes\nrequire (\n\tk8s.io/api v0.0.0\n)\n' >"$gomod"
    printf '{"GoMod": "%s"}\n' "$gomod"; exit 0 ;;
  "mod init"*) printf 'module %s\n' "$3" >go.mod; exit 0 ;;
  "mod edit"*) exit 0 ;;
  "get "*) echo "require k8s.io/kubernetes v0" >>go.mod; : >go.sum; exit 0 ;;
esac
args=("$@")
for i in "${!args[@]}"; do [ "${args[$i]}" = "-o" ] && out=${args[$((i + 1))]}; done
if [ "$1" = install ]; then out="$GOBIN/$(basename "${args[-1]%@*}")"; fi
case "$out" in */) out="$out$(basename "${args[-1]}")" ;; esac
printf '#!/bin/sh\necho fake\n' >"$out"; chmod +x "$out"
"""


def fake_env(tmp: Path) -> dict[str, str]:
    tools = tmp / "tools"
    tools.mkdir()
    (tools / "go").write_text(FAKE_GO)
    (tools / "go").chmod(0o755)
    cache = tmp / "cache"
    env = {**os.environ, "DATAMIGRATION_CACHE": str(cache), "PATH": f"{tools}:{os.environ['PATH']}"}
    target = Path(
        subprocess.run(
            [str(SCRIPT), "--print-bin-dir"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    target.mkdir(parents=True)
    # The real cache's kubectl and helm (located without building anything).
    real = Path(
        subprocess.run(
            [str(SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    for tool in ("kubectl", "helm"):
        shutil.copy2(real / tool, target / tool)
    return env


def test_cold_build_prints_a_line_per_step_with_elapsed_and_typical_time(tmp_path: Path) -> None:
    env = fake_env(tmp_path)
    result = subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr
    for name in ("kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert re.search(rf"step \d/7 {name}: building .*\(typical cold: \S+", err), err
        assert re.search(rf"step \d/7 {name}: done in \d+s", err), err
    # kubectl and helm were in the cache: no line for them, but they keep their step numbers.
    assert "kubectl:" not in err and "helm:" not in err
    numbers = [int(n) for n in re.findall(r"step (\d)/7 \S+: building", err)]
    assert numbers == [3, 4, 5, 6, 7], err
    assert re.search(r"all steps done in \d+s", err), err
    assert result.stdout.strip().endswith("kwok-v0.8.0")
    # Nothing to do the second time: no step line at all.
    again = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    assert "step" not in again.stderr, again.stderr


def test_a_waiting_build_names_the_lock_holder_and_since_when(tmp_path: Path) -> None:
    env = {**fake_env(tmp_path), "BUILD_LOCK_REPORT_SECONDS": "1"}
    cache = Path(env["DATAMIGRATION_CACHE"])
    owner = "pid 4242 (hack/build-cluster-bins.sh), holding the lock since 2026-12-01T22:55:00Z"
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (cache / ".build.lock.owner").write_text(owner + "; now: step 5/7 kube-apiserver\n")
        waiter = subprocess.Popen(
            [str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert waiter.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("still waiting" in ln for ln in lines):
            lines.append(waiter.stderr.readline())
        fcntl.flock(lock, fcntl.LOCK_UN)
    _, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert f"another build holds the lock; waiting for it. Holder: {owner}" in lines[0]
    assert "now: step 5/7 kube-apiserver" in lines[0]
    assert any(re.search(r"still waiting for the build lock \(\d+s so far\)", ln) for ln in lines)
    assert "build lock acquired after" in err
    assert not (cache / ".build.lock.owner").exists(), "the holder's note goes with the holder"
