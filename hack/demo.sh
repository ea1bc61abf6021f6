#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   1. a real control plane (etcd + kube-apiserver on loopback) with the project's CRDs;
#   2. the sample resources of examples/ (Falco, Component, Rulesfile, Plugin, Config);
#   3. a local driver repository: a sample driver published with a checksum and a signed
#      index, served over HTTP, fetched and verified by the driver loader for a fake host,
#      and the download statistics;
#   4. where to look; then it runs until Ctrl-C and cleans up after itself.
# DEMO_ONESHOT=1 runs the steps, checks them and exits (CI uses it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$(realpath -m "${1:-.demo}")"
mkdir -p "$dir"
bin=target/debug
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    step "Stopping (control plane and every process of the demo)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$dir/kubeconfig"
  echo "Stopped; nothing is left running."
}
trap cleanup INT TERM EXIT

step "Starting a local Kubernetes control plane (etcd + kube-apiserver) with the Falco CRDs"
"$bin/falco-testenv" up --dir "$dir" --namespace default --apply examples/ \
  >"$dir/testenv.out" 2>"$dir/testenv.log" &
pids+=($!)
for _ in $(seq 1 600); do
  grep -q '^export KUBECONFIG=' "$dir/testenv.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the control plane failed to start; see $dir/testenv.log" >&2; exit 1; }
  sleep 0.2
done
grep -q '^export KUBECONFIG=' "$dir/testenv.out" || { echo "the control plane did not become ready" >&2; exit 1; }
kubeconfig="$dir/kubeconfig"
grep -E '^(build-testenv|control plane ready)' "$dir/testenv.log" || true

step "Sample resources (examples/*.yaml) applied"
if command -v kubectl >/dev/null 2>&1; then
  kubectl --kubeconfig "$kubeconfig" get falcos,components,rulesfiles,plugins,configs 2>/dev/null
else
  grep '^applied' "$dir/testenv.log" || true
fi

step "Publishing a sample driver to a local driver repository (signed index, .sha256)"
repo="$dir/driver-repo"
rm -rf "$repo" "$dir/driverkit-out" "$dir/host" "$dir/home"
version="8.0.0+driver" kr="6.8.0-45-generic" kv="45"
driver="falco_ubuntu-generic_${kr}_${kv}.ko"
mkdir -p "$dir/driverkit-out/$version/x86_64" "$dir/host/etc" "$dir/home"
head -c $((256 * 1024)) /dev/urandom >"$dir/driverkit-out/$version/x86_64/$driver"
"$bin/falco-driver-repo" keygen --private-key "$dir/repo.key" --public-key "$dir/repo.pub" >/dev/null
"$bin/falco-driver-repo" publish "$dir/driverkit-out" --storage "file://$repo" --signing-key "$dir/repo.key"

step "Serving it (the same URL layout as download.falco.org)"
"$bin/falco-driver-repo" serve --listen 127.0.0.1:0 --storage "file://$repo" --stats-flush-interval 1 \
  >"$dir/driver-repo.out" 2>"$dir/driver-repo.log" &
pids+=($!)
for _ in $(seq 1 100); do
  addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/driver-repo.out" 2>/dev/null | head -1 || true)
  [ -n "$addr" ] && curl -fs "http://$addr/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
[ -n "${addr:-}" ] || { echo "the driver repository did not start; see $dir/driver-repo.log" >&2; exit 1; }
echo "driver repository on http://$addr/driver"

step "The driver loader fetches and verifies it for a fake Ubuntu host (host commands only printed)"
printf 'ID=ubuntu\nVERSION_ID="24.04"\n' >"$dir/host/etc/os-release"
loader=(env HOME="$dir/home" "$bin/falco-driver-loader" --dry-run --config "$dir/falcoctl.yaml"
  --host-root "$dir/host" --kernelrelease "$kr" --kernelversion "#$kv-Ubuntu SMP PREEMPT_DYNAMIC"
  --version "$version" --repo "http://$addr/driver" --type kmod)
"${loader[@]}" printenv | grep -E '^(TARGET_ID|DRIVER_FILENAME|DRIVER_URLS)='
"${loader[@]}" install --compile=false --trusted-key "$dir/repo.pub" --require-verified
installed="$dir/home/.falco/$version/x86_64/$driver"
cmp -s "$installed" "$dir/driverkit-out/$version/x86_64/$driver" || { echo "the installed driver differs from the published one" >&2; exit 1; }
echo "installed and verified: $installed"

step "Download statistics"
for _ in $(seq 1 50); do
  "$bin/falco-driver-repo" stats --storage "file://$repo" --format json 2>/dev/null | grep -q "$kr" && break
  sleep 0.2
done
"$bin/falco-driver-repo" stats --storage "file://$repo"

step "Where to look"
cat <<MSG
  kubectl --kubeconfig $kubeconfig get falcos,components,rulesfiles,plugins,configs
  kubectl --kubeconfig $kubeconfig get rulesfile falco-rules -o yaml
  kubectl --kubeconfig $kubeconfig explain falco.spec
  (or: export KUBECONFIG=$kubeconfig)
  curl -I http://$addr/driver/8.0.0%2Bdriver/x86_64/$driver
  curl -s http://$addr/driver/8.0.0%2Bdriver/x86_64/index.json
  curl -s http://$addr/metrics | grep -v '^#'
  $bin/falco-driver-repo stats --storage file://$repo
MSG

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
  count=$(grep -c '^applied' "$dir/testenv.log" || true)
  [ "$count" -ge 6 ] || { echo "demo check failed: expected 6 applied resources, got $count" >&2; exit 1; }
  echo "demo check passed ($count resources applied)"
  exit 0
fi
step "Running. Press Ctrl-C to stop and clean up."
wait "${pids[0]}"
