#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v3, pinned by the wrapper module hack/helm-bin) from the Go module
# proxy once per machine, for the chart tests and `deploy/install.yaml`.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/helm/<key>/bin/helm, <key> hashing the
# wrapper module. Prints the bin directory on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "build-helm: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 on PATH to build helm)"

key="$(cat "$here/helm-bin/go.mod" "$here/helm-bin/go.sum" | sha256sum | cut -c1-16)"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/helm/$key/bin"
if [ -x "$bin/helm" ]; then
  echo "build-helm: helm cached at $bin/helm" >&2
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3 }' "$here/helm-bin/go.mod")"
echo "build-helm: building helm $version (first run on this machine; a few minutes)" >&2
start=$SECONDS
(cd "$here/helm-bin" && go mod download >/dev/null 2>"$bin/.download.log") ||
  die "cannot download the Go modules for helm from the Go module proxy ($(go env GOPROXY)); see $bin/.download.log"
(cd "$here/helm-bin" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  -o "$bin/.helm.tmp" helm.sh/helm/v3/cmd/helm) || die "go build of helm failed"
mv -f "$bin/.helm.tmp" "$bin/helm"
echo "build-helm: built helm in $((SECONDS - start)) s" >&2
echo "$bin"
