#!/usr/bin/env bash
# Builds falcoctl (github.com/falcosecurity/falcoctl, pinned by the wrapper module
# hack/falcoctl-bin) from the Go module proxy once per machine: the reference client of the
# driver tests (`falcoctl driver install` against this project's repository server).
# `go install falcoctl@v0.13.0` refuses the module because its go.mod has a `replace`
# directive; the wrapper module restates it.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/falcoctl/<key>/bin/falcoctl, <key>
# hashing the wrapper module. Prints the bin directory on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "build-falcoctl: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 on PATH to build falcoctl)"

key="$(cat "$here/falcoctl-bin/go.mod" "$here/falcoctl-bin/go.sum" | sha256sum | cut -c1-16)"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/falcoctl/$key/bin"
if [ -x "$bin/falcoctl" ]; then
  echo "build-falcoctl: falcoctl cached at $bin/falcoctl" >&2
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
version="$(awk '$1 == "require" && $2 == "github.com/falcosecurity/falcoctl" { print $3 }' "$here/falcoctl-bin/go.mod")"
echo "build-falcoctl: building falcoctl $version (first run on this machine; a few minutes)" >&2
start=$SECONDS
(cd "$here/falcoctl-bin" && go mod download >/dev/null 2>"$bin/.download.log") ||
  die "cannot download the Go modules for falcoctl from the Go module proxy ($(go env GOPROXY)); see $bin/.download.log"
(cd "$here/falcoctl-bin" && go build -trimpath \
  -ldflags "-s -w -X github.com/falcosecurity/falcoctl/cmd/version.semVersion=${version#v}" \
  -o "$bin/.falcoctl.tmp" github.com/falcosecurity/falcoctl) || die "go build of falcoctl failed"
mv -f "$bin/.falcoctl.tmp" "$bin/falcoctl"
echo "build-falcoctl: built falcoctl in $((SECONDS - start)) s" >&2
echo "$bin"
