#!/usr/bin/env bash
# Builds (or reuses) one of the project's small Go test programs (hack/argo-lua, hack/kstatus)
# from the Go module proxy, into the cache outside the repo, keyed by the hash of its sources
# (go.mod, go.sum, *.go): an edit builds a new one, an unchanged one is reused at once.
# Prints the binary's path on its last line.
#
#   hack/build-go-tool.sh hack/argo-lua
#
# The cache root is the one of hack/build-cluster-bins.sh ($DATAMIGRATION_CACHE, else
# $XDG_CACHE_HOME/datamigration-operator, else ~/.cache/datamigration-operator). The binary is
# built elsewhere and renamed in, so an interrupted build is never taken for a finished one.
set -euo pipefail
src=$(cd "${1:?usage: $0 <program dir>}" && pwd)
name=$(basename "$src")
cache_root=${DATAMIGRATION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datamigration-operator}
key=$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
out="$cache_root/go-tools/$name-$key/$name"
if [ ! -x "$out" ]; then
  command -v go >/dev/null || { echo "Go is required to build $name (go >= 1.26)" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  began=$SECONDS
  echo "[build-go-tool] building $name from the Go module proxy (typical cold: 30s)" >&2
  tmp=$(mktemp -d "$(dirname "$out")/.partial.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/$name" .)
  mv -f "$tmp/$name" "$out"
  echo "[build-go-tool] $name built in $((SECONDS - began))s" >&2
fi
echo "$out"
