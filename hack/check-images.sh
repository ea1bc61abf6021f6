#!/usr/bin/env bash
# The container images' build check, for machines without a container engine (CI):
#  1. lints the Dockerfile: every path it copies from the build context exists, every binary a
#     final stage copies out of the builder is one the builder builds, and every ENTRYPOINT is a
#     file its stage copied in;
#  2. compiles the same binaries for the same static musl target the builder uses;
#  3. checks each one is statically linked and runs (`--help`).
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
command -v musl-gcc >/dev/null || fail "musl-gcc is missing (Debian package musl-tools)"
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"
pkgs=(); for bin in "${bins[@]}"; do pkgs+=(-p "$bin"); done
cargo build --locked --target "$target" "${pkgs[@]}" --bins

# 3. Static and runnable.
for bin in "${bins[@]}"; do
  path="${CARGO_TARGET_DIR:-target}/$target/debug/$bin"
  [ -x "$path" ] || fail "$path was not built"
  if readelf -l "$path" | grep -q 'Requesting program interpreter'; then
    fail "$bin is dynamically linked"
  fi
  "$path" --help >/dev/null || fail "$bin --help failed"
  echo "check-images: $bin is static and runs ($(du -h "$path" | cut -f1))" >&2
done
