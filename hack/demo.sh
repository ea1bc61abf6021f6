#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   1. a real control plane (etcd + kube-apiserver on loopback) with the project's CRDs;
#   2. the sample resources of examples/ (Falco, Component, Rulesfile, Plugin, Config);
#   3. where to look; then it runs until Ctrl-C and cleans up after itself.
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

step "Where to look"
cat <<MSG
  kubectl --kubeconfig $kubeconfig get falcos,components,rulesfiles,plugins,configs
  kubectl --kubeconfig $kubeconfig get rulesfile falco-rules -o yaml
  kubectl --kubeconfig $kubeconfig explain falco.spec
  (or: export KUBECONFIG=$kubeconfig)
MSG

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
  count=$(grep -c '^applied' "$dir/testenv.log" || true)
  [ "$count" -ge 6 ] || { echo "demo check failed: expected 6 applied resources, got $count" >&2; exit 1; }
  echo "demo check passed ($count resources applied)"
  exit 0
fi
step "Running. Press Ctrl-C to stop and clean up."
wait "${pids[0]}"
