#!/usr/bin/env bash
# Builds the static musl binaries the project's images are made of (the Dockerfile's binaries
# and the tests' falco-standin), for the same target the Dockerfile's builder uses.
# Prints the directory holding them on its last line (cargo's own cache keeps it warm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-musl
command -v musl-gcc >/dev/null || { echo "build-images: musl-gcc is missing (Debian package musl-tools)" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >&2
cargo build -q --locked --target "$target" \
  -p falco-operator -p falco-artifact-operator -p falco-driver-repo -p falco-driver-loader \
  -p falco-standin --bins >&2
dir="${CARGO_TARGET_DIR:-$PWD/target}/$target/debug"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
echo "$dir"
