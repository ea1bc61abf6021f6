#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   1. a real control plane (etcd + kube-apiserver on loopback) with the project's CRDs;
#   2. a local OCI registry holding a sample rules artifact;
#   3. the instance operator, turning a Falco CR and a Component into workloads (Reconciled=True);
#   4. two simulated nodes: Node objects, each with an artifact-operator sidecar process (its own
#      NODE_NAME and directories) delivering a Rulesfile from the registry, an inline Rulesfile
#      selected by node label, and a Config;
#   5. a local driver repository: a sample driver published with a checksum and a signed
#      index, served over HTTP, fetched and verified by the driver loader for a fake host,
#      the coverage report of a sample fleet against it, and the download statistics;
#   6. where to look; then it runs until Ctrl-C and cleans up after itself.
# DEMO_ONESHOT=1 runs the steps, checks them and exits (CI uses it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$(realpath -m "${1:-.demo}")"
mkdir -p "$dir"
bin="${CARGO_TARGET_DIR:-target}/debug"
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
"$bin/falco-testenv" up --dir "$dir" --namespace default \
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

export KUBECONFIG="$kubeconfig"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL PID LOG: until URL answers 200, or the process died
  for _ in $(seq 1 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited; see $3" >&2; tail -20 "$3" >&2; return 1; }
    sleep 0.2
  done
  echo "$1 did not answer; see $3" >&2; return 1
}

step "Starting a local OCI registry (docker-registry) with a sample rules artifact"
"$bin/falco-testenv" registry --dir "$dir/registry" \
  --push "rulesfile:demo/custom-rules:1.0:hack/demo/custom-rules.yaml" \
  >"$dir/registry.out" 2>"$dir/registry.log" &
pids+=($!)
for _ in $(seq 1 150); do
  grep -q '^export FALCO_REGISTRY=' "$dir/registry.out" 2>/dev/null && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "the registry failed; see $dir/registry.log" >&2; exit 1; }
  sleep 0.2
done
registry="$(sed -n 's/^export FALCO_REGISTRY=//p' "$dir/registry.out")"
[ -n "$registry" ] || { echo "the registry did not start; see $dir/registry.log" >&2; exit 1; }
cat "$dir/registry.log"

step "Starting the instance operator (falco-operator run)"
op_metrics=$(free_port) op_health=$(free_port)
"$bin/falco-operator" run --metrics-bind-address "127.0.0.1:$op_metrics" \
  --health-probe-bind-address "127.0.0.1:$op_health" >"$dir/operator.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$op_health/readyz" "${pids[-1]}" "$dir/operator.log"
echo "operator ready: http://127.0.0.1:$op_health/readyz, metrics on http://127.0.0.1:$op_metrics/metrics"

step "Applying a Falco instance and a falcosidekick Component (examples/)"
"$bin/falco-testenv" apply examples/falco.yaml examples/component.yaml 2>&1
"$bin/falco-testenv" wait falco/falco --for Reconciled=True --timeout 60
"$bin/falco-testenv" wait component/falcosidekick --for Reconciled=True --timeout 60

step "Two simulated nodes (node-a: tier=frontend, node-b: tier=backend) and the demo's artifacts"
"$bin/falco-testenv" apply hack/demo/nodes.yaml 2>&1
sed "s/@REGISTRY@/$registry/" hack/demo/artifacts.yaml.in >"$dir/artifacts.yaml"
"$bin/falco-testenv" apply "$dir/artifacts.yaml" 2>&1

step "One artifact-operator sidecar per node (falco-artifact-operator run, own NODE_NAME and directories)"
for node in node-a node-b; do
  root="$dir/nodes/$node"
  rm -rf "$root"; mkdir -p "$root/rules.d" "$root/config.d" "$root/plugins" "$root/state"
  port=$(free_port)
  NODE_NAME="$node" POD_NAMESPACE=default "$bin/falco-artifact-operator" run \
    --rules-dir "$root/rules.d" --config-dir "$root/config.d" --plugins-dir "$root/plugins" \
    --state-dir "$root/state" --probe-addr "127.0.0.1:$port" --insecure-registry "$registry" \
    >"$dir/sidecar-$node.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/readyz" "${pids[-1]}" "$dir/sidecar-$node.log"
  echo "$node: ready (the startup gate opened after the first full sync); its files:"
  (cd "$root" && find rules.d config.d -type f | sort | sed 's/^/    /')
done
"$bin/falco-testenv" wait rulesfile/custom-rules --for Programmed=True --timeout 60

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

step "Coverage before a kmod rollout: which nodes of a fleet get a prebuilt driver (falco-operator driver-coverage)"
echo "(a sample fleet, hack/demo/fleet.json, as \`kubectl get nodes -o json\` prints it; without --nodes it reads the cluster)"
"$bin/falco-operator" driver-coverage --nodes hack/demo/fleet.json --repo "http://$addr/driver" \
  --driver-version "$version" --trusted-key "$dir/repo.pub" | tee "$dir/coverage.txt"

step "Download statistics"
for _ in $(seq 1 50); do
  "$bin/falco-driver-repo" stats --storage "file://$repo" --format json 2>/dev/null | grep -q "$kr" && break
  sleep 0.2
done
"$bin/falco-driver-repo" stats --storage "file://$repo"

step "Where to look"
cat <<MSG
  export KUBECONFIG=$kubeconfig
  kubectl get falcos,components,rulesfiles,plugins,configs   (if kubectl is installed)
  kubectl get daemonset falco -o yaml; kubectl get events
  $bin/falco-testenv wait falco/falco --for Reconciled=True
  ls -R $dir/nodes                               (the two simulated nodes' rules.d and config.d)
  curl -s http://127.0.0.1:$op_metrics/metrics | grep falco_operator
  logs: $dir/operator.log, $dir/sidecar-node-a.log, $dir/sidecar-node-b.log
  curl -I http://$addr/driver/8.0.0%2Bdriver/x86_64/$driver
  curl -s http://$addr/driver/8.0.0%2Bdriver/x86_64/index.json
  curl -s http://$addr/metrics | grep -v '^#'
  $bin/falco-driver-repo stats --storage file://$repo
MSG

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
  check() { [ -f "$1" ] || { echo "demo check failed: $1 is missing" >&2; exit 1; }; }
  check "$dir/nodes/node-a/rules.d/50-01-custom-rules-oci.yaml"
  check "$dir/nodes/node-b/rules.d/50-01-custom-rules-oci.yaml"
  check "$dir/nodes/node-a/rules.d/60-03-frontend-rules-inline.yaml"
  [ ! -e "$dir/nodes/node-b/rules.d/60-03-frontend-rules-inline.yaml" ] ||
    { echo "demo check failed: node-b got a rules file its labels do not select" >&2; exit 1; }
  check "$dir/nodes/node-a/config.d/60-03-json-output-inline.yaml"
  grep -q "7 nodes: 0 prebuilt, 3 likely prebuilt, 3 would compile, 1 not applicable" "$dir/coverage.txt" ||
    { echo "demo check failed: unexpected coverage report (see $dir/coverage.txt)" >&2; exit 1; }
  echo "demo check passed (Falco and Component reconciled, artifacts delivered per node, driver installed)"
  exit 0
fi
step "Running. Press Ctrl-C to stop and clean up."
wait "${pids[0]}"
