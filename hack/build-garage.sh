#!/usr/bin/env bash
# Builds Garage (a real S3 server, crates.io `garage`) once per machine for the driver
# repository's tests and benchmark. Skipped when the binary is already in the cache.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/garage-2.5.0/bin/garage
# Prints the bin directory on its last line. The test harness finds the binary through
# FALCO_GARAGE_BIN or that path.
set -euo pipefail

GARAGE_VERSION=2.5.0
root="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/garage-$GARAGE_VERSION"
bin="$root/bin"

die() { echo "build-garage: $*" >&2; exit 1; }

if [ -x "$bin/garage" ]; then
  echo "build-garage: garage $GARAGE_VERSION cached at $bin/garage" >&2
  echo "$bin"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo is not installed"
echo "build-garage: building garage $GARAGE_VERSION (first run on this machine; about 10 minutes on 2 cores)" >&2
start=$SECONDS
# A private target directory (GARAGE_TARGET_DIR, default inside the cache, removed after the
# install) keeps this build from contending with the workspace's lock.
export CARGO_TARGET_DIR="${GARAGE_TARGET_DIR:-$root/target}"
# lmdb, metrics and k2v are not needed by the tests: dropping them shortens the build.
cargo install garage --version "$GARAGE_VERSION" --locked --root "$root" \
  --no-default-features --features bundled-libs,sqlite ||
  die "cargo install garage $GARAGE_VERSION failed"
[ -x "$bin/garage" ] || die "cargo install finished but $bin/garage is missing"
rm -rf "$root/target"
echo "build-garage: built garage in $((SECONDS - start)) s" >&2
echo "$bin"
