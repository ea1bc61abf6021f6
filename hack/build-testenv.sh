#!/usr/bin/env bash
# Builds the real components the tests and the demo run from the Go module proxy through the
# wrapper modules in hack/, once per machine:
#   control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (hack/etcd-bin,
#                  hack/k8s-bins; the Kubernetes commands in one `go build`, so the packages they
#                  share compile once)
#   node:          kubelet (hack/k8s-bins, same build), containerd 2.x + containerd-shim-runc-v2
#                  and the CNI loopback plugin (hack/node-bins, one `go build`)
# runc comes from Debian (hack/install-deps.sh).
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
key="$( (echo "$K8S_VERSION"; cat "$here"/{k8s-bins,etcd-bin,node-bins}/{go.mod,go.sum,tools.go} 2>/dev/null) | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/testenv/$key"
bin="${FALCO_TESTENV_BIN:-$cache/bin}"
mkdir -p "$bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

# build <module dir> <tags> <ldflags> <name=package>...: builds the missing binaries of one
# module in one `go build` (into a temporary directory, then renamed into place).
build() {
  local dir="$1" tags="$2" ldf="$3"; shift 3
  local missing=() pkgs=() spec name
  for spec in "$@"; do
    name="${spec%%=*}"
    if [ -x "$bin/$name" ]; then
      echo "build-testenv: $name cached at $bin/$name" >&2
    else
      missing+=("$name"); pkgs+=("${spec#*=}")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return
  echo "build-testenv: building ${missing[*]} (first run on this machine; several minutes)" >&2
  local start=$SECONDS tmp="$bin/.build.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$dir" && go mod download -x >/dev/null 2>"$bin/.download.log") ||
    die "cannot download the Go modules of $dir from the Go module proxy ($(go env GOPROXY)); see $bin/.download.log"
  # One package: name the output (a module path ending in /vN would name it after the path).
  local out="$tmp/"; [ "${#pkgs[@]}" -eq 1 ] && out="$tmp/${missing[0]}"
  (cd "$dir" && go build -trimpath -tags "$tags" -ldflags "-s -w $ldf" -o "$out" "${pkgs[@]}") ||
    die "go build of ${missing[*]} failed"
  for name in "${missing[@]}"; do
    [ -x "$tmp/$name" ] || die "go build did not produce $name"
    mv -f "$tmp/$name" "$bin/$name"
  done
  rm -rf "$tmp"
  echo "build-testenv: built ${missing[*]} in $((SECONDS - start)) s" >&2
}

ldf=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean"
done

k8s=k8s.io/kubernetes/cmd
build "$here/etcd-bin" "" "" etcd=go.etcd.io/etcd/server/v3
build "$here/k8s-bins" selinux,notest,grpcnotrace "$ldf" \
  kube-apiserver=$k8s/kube-apiserver kube-controller-manager=$k8s/kube-controller-manager \
  kube-scheduler=$k8s/kube-scheduler kubelet=$k8s/kubelet
# containerd without the snapshotters that need cgo (btrfs, devmapper); overlayfs is used.
CONTAINERD_VERSION="$(awk '$1 == "github.com/containerd/containerd/v2" { print $2 }' "$here/node-bins/go.mod")"
build "$here/node-bins" no_btrfs,no_devmapper,no_zfs \
  "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
  containerd=github.com/containerd/containerd/v2/cmd/containerd \
  containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  loopback=github.com/containernetworking/plugins/plugins/main/loopback

echo "$bin"
