#!/usr/bin/env bash
# The container images' build check, for machines without a container engine (CI):
#  1. lints the Dockerfile: every path it copies from the build context exists, every binary a
#     final stage copies out of the builder is one the builder builds, and every ENTRYPOINT is a
#     file its stage copied in;
#  2. compiles the same binaries for the same static musl target the builder uses
#     (hack/build-images.sh, with the tests' falco-standin);
#  3. checks each one is statically linked and runs (`--help`);
#  4. builds the OCI images from them without a container engine (`falco-testenv images`: a
#     base layer with CA certificates and the non-root user, the binary, the Dockerfile's
#     user, entrypoint and command), pushes them to a local registry and pulls each back.
# The release profile is left to the real image build; the code, features and target are the same.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-musl
bins=(falco-operator falco-artifact-operator falco-driver-repo falco-driver-loader)
fail() { echo "check-images: $*" >&2; exit 1; }

# 1. Dockerfile lint.
df=Dockerfile
[ -f "$df" ] || fail "$df is missing"
# COPY from the build context: every source must exist.
while read -r src; do
  [ -e "$src" ] || fail "$df copies $src from the build context, which does not exist"
done < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) print $i }' "$df")
# The builder's cargo command must build every binary, and nothing else is copied out of it.
built="$(tr -d '\\\n' < "$df" | grep -o 'cargo build [^&]*' | grep -o -- '-p [a-z-]*' | awk '{print $2}' | sort | tr '\n' ' ')"
want="$(printf '%s\n' "${bins[@]}" | sort | tr '\n' ' ')"
[ "$built" = "$want" ] || fail "the builder builds [$built], expected [$want]"
while read -r stage bin dest; do
  printf '%s\n' "${bins[@]}" | grep -qx "$bin" || fail "stage $stage copies /out/$bin, which the builder does not build"
  entry="$(awk -v s="$stage" '/^FROM / { cur = $NF } cur == s && /^ENTRYPOINT/ { print }' "$df" | grep -o '"/[^"]*"' | head -1 | tr -d '"')"
  [ "$entry" = "$dest" ] || fail "stage $stage: ENTRYPOINT $entry is not the copied binary $dest"
done < <(awk '/^FROM / { stage = $NF } /^COPY --from=builder/ { n = split($3, p, "/"); print stage, p[n], $4 }' "$df")
for bin in "${bins[@]}"; do
  grep -q "^FROM .* AS $bin\$" "$df" || fail "no image stage for $bin"
done
echo "check-images: Dockerfile paths, stages and entrypoints are consistent" >&2

# 2. Static musl build.
bindir="$(bash hack/build-images.sh | tail -1)"

# 3. Static and runnable.
for bin in "${bins[@]}" falco-standin; do
  path="$bindir/$bin"
  [ -x "$path" ] || fail "$path was not built"
  if readelf -l "$path" | grep -q 'Requesting program interpreter'; then
    fail "$bin is dynamically linked"
  fi
  "$path" --help >/dev/null || fail "$bin --help failed"
  echo "check-images: $bin is static and runs ($(du -h "$path" | cut -f1))" >&2
done

# 4. The images, engine-free, pushed and pulled back.
cargo build -q -p falco-testenv --bin falco-testenv
regdir="$(mktemp -d)"
trap 'rm -rf "$regdir"' EXIT
"${CARGO_TARGET_DIR:-target}/debug/falco-testenv" images --bins "$bindir" --dir "$regdir" |
  while IFS=$'\t' read -r ref size; do echo "check-images: built, pushed and pulled $ref ($size)" >&2; done
