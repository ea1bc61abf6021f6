#!/usr/bin/env bash
# Builds the real components the tests and the demo run (kube-apiserver, etcd) from the
# Go module proxy through the wrapper modules in hack/, once per machine.
#
# Output: $FALCO_TESTENV_BIN (default: ${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/testenv/<key>/bin)
# where <key> hashes the wrapper modules, so a version bump rebuilds and a warm machine skips.
# Prints the bin directory on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION=v1.37.2

die() { echo "build-testenv: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 on PATH to build kube-apiserver and etcd)"
gov="$(go env GOVERSION)"
case "$gov" in
  go1.2[6-9]*|go1.[3-9]*) ;;
  *) die "Go $gov is too old: kube-apiserver $K8S_VERSION needs Go >= 1.26" ;;
esac

# The key covers what decides the binaries' content: the pinned modules and the version stamp.
key="$( (echo "$K8S_VERSION"; cat "$here/k8s-bins/go.mod" "$here/k8s-bins/go.sum" "$here/etcd-bin/go.mod" "$here/etcd-bin/go.sum") | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/testenv/$key"
bin="${FALCO_TESTENV_BIN:-$cache/bin}"
mkdir -p "$bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

build() { # build <name> <module dir> <package> [ldflags]
  local name="$1" dir="$2" pkg="$3" ldf="${4:-}"
  if [ -x "$bin/$name" ]; then
    echo "build-testenv: $name cached at $bin/$name" >&2
    return
  fi
  echo "build-testenv: building $name (first run on this machine; several minutes)" >&2
  local start=$SECONDS
  (cd "$dir" && go mod download -x >/dev/null 2>"$bin/.$name.download.log") ||
    die "cannot download the Go modules for $name from the Go module proxy ($(go env GOPROXY)); see $bin/.$name.download.log"
  (cd "$dir" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "-s -w $ldf" -o "$bin/.$name.tmp" "$pkg") ||
    die "go build of $name failed"
  mv -f "$bin/.$name.tmp" "$bin/$name"
  echo "build-testenv: built $name in $((SECONDS - start)) s" >&2
}

ldf=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean"
done

build etcd "$here/etcd-bin" go.etcd.io/etcd/server/v3
build kube-apiserver "$here/k8s-bins" k8s.io/kubernetes/cmd/kube-apiserver "$ldf"

echo "$bin"
