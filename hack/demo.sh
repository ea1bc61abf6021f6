#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   1. a real single-node cluster on loopback (etcd, kube-apiserver, controller manager,
#      scheduler, containerd + kubelet) with the project's CRDs, and a local registry holding the
#      project's images, built without a container engine from the static binaries;
#   2. a local OCI registry holding a sample rules artifact;
#   3. the instance operator installed by its Helm chart, running in the cluster, turning a Falco
#      CR and a Component into workloads whose pods run on the node (Falco's container runs
#      falco-standin, a stand-in that lists the files Falco would load: Falco cannot run here);
#   4. two more, simulated nodes (Node objects tainted so that no pod lands there), each with an
#      artifact-operator sidecar process (its own NODE_NAME and directories) delivering a
#      Rulesfile from the registry, an inline Rulesfile selected by node label, and a Config;
#   5. a local driver repository: a sample driver published with a checksum and a signed
#      index, served over HTTP, fetched and verified by the driver loader for a fake host,
#      the coverage report of a sample fleet against it, and the download statistics;
#   6. a kmod Falco instance using that repository: its loader init container run (kubelet
#      simulated) for two simulated nodes, one kernel served, one not; the sidecars carry the
#      loaders' status files into the nodes' records and the Falco status says which failed;
#   7. where to look; then it runs until Ctrl-C and cleans up after itself.
# DEMO_ONESHOT=1 runs the steps, checks them and exits (CI uses it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$(realpath -m "${1:-.demo}")"
mkdir -p "$dir"
bin="${CARGO_TARGET_DIR:-target}/debug"
image_bins="$(bash hack/build-images.sh | tail -1)"
helm="$(bash hack/build-helm.sh)/helm"
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

step "Starting a local Kubernetes cluster (control plane + one node: containerd, kubelet) with the Falco CRDs"
"$bin/falco-testenv" up --node --image-bins "$image_bins" --dir "$dir" --namespace default \
  >"$dir/testenv.out" 2>"$dir/testenv.log" &
pids+=($!)
for _ in $(seq 1 1200); do
  grep -q '^export KUBECONFIG=' "$dir/testenv.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the control plane failed to start; see $dir/testenv.log" >&2; exit 1; }
  sleep 0.2
done
grep -q '^export KUBECONFIG=' "$dir/testenv.out" || { echo "the control plane did not become ready" >&2; exit 1; }
kubeconfig="$dir/kubeconfig"
images="$(sed -n 's/^export .*FALCO_REGISTRY=//p' "$dir/testenv.out")"
grep -E '^(control plane ready|node .* Ready|pushed image)' "$dir/testenv.log" || true

export KUBECONFIG="$kubeconfig"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL PID LOG [TRIES]: until URL answers 200 (every 0.2 s), or the process died
  for _ in $(seq 1 "${4:-300}"); do
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

step "Installing the instance operator with its Helm chart (helm template | apply; images from $images)"
# The node runs pods in the host network: the operator's ports stay clear of the sidecar's 8081.
op_metrics=18080 op_health=18081
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: falco-system}\n' >"$dir/falco-system.yaml"
"$helm" template op deploy/helm/falco-operator --namespace falco-system \
  --set image.repository="$images/falco-operator" --set image.tag=dev \
  --set artifactOperatorImage="$images/falco-artifact-operator:dev" \
  --set driverLoaderImage="$images/falco-driver-loader:dev" \
  --set metrics.port=$op_metrics --set healthPort=$op_health >"$dir/operator-chart.yaml"
"$bin/falco-testenv" apply "$dir/falco-system.yaml" 2>&1
"$bin/falco-testenv" apply -n falco-system "$dir/operator-chart.yaml" 2>&1 | sed -n '1,3p;$p'
# The operator's pod on the node; the cluster's log names the node's log directory.
wait_http "http://127.0.0.1:$op_health/readyz" "${pids[0]}" "$dir/testenv.log" 600
echo "operator running in the cluster: http://127.0.0.1:$op_health/readyz, metrics on http://127.0.0.1:$op_metrics/metrics"

step "Two simulated nodes (node-a: tier=frontend, node-b: tier=backend) and the demo's artifacts"
"$bin/falco-testenv" apply hack/demo/nodes.yaml 2>&1
sed "s/@REGISTRY@/$registry/" hack/demo/artifacts.yaml.in >"$dir/artifacts.yaml"
"$bin/falco-testenv" apply "$dir/artifacts.yaml" 2>&1

step "A Falco instance and a falcosidekick Component (examples/, with the stand-in images)"
echo "(falco-standin:dev is a stand-in for Falco and falcosidekick: it prints the files Falco would"
echo " load and answers the health port; Falco cannot run here)"
standin="$images/falco-standin:dev"
python3 - "$standin" >"$dir/falco.yaml" <<'PY'
import sys, json
standin = sys.argv[1]
probe = {"initialDelaySeconds": 1, "periodSeconds": 2}
falco = {"apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
         "metadata": {"name": "falco"},
         "spec": {"version": "0.44.1", "podTemplateSpec": {"spec": {"containers": [
             {"name": "falco", "image": standin, "readinessProbe": probe}]}}}}
sidekick = {"apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Component",
            "metadata": {"name": "falcosidekick"},
            "spec": {"component": {"type": "falcosidekick"}, "podTemplateSpec": {"spec": {"containers": [
                {"name": "falcosidekick", "image": standin, "readinessProbe": probe,
                 "env": [{"name": "FALCO_STANDIN_PORT", "value": "2801"}]}]}}}}
print(json.dumps(falco)); print("---"); print(json.dumps(sidekick))
PY
"$bin/falco-testenv" apply "$dir/falco.yaml" 2>&1
"$bin/falco-testenv" wait falco/falco --for Available=True --timeout 180
"$bin/falco-testenv" wait component/falcosidekick --for Available=True --timeout 180
echo
echo "\$ kubectl get pods     (falco-testenv get: the same table from the API server)"
"$bin/falco-testenv" get pods | tee "$dir/pods.txt"
echo
node_dir="$(sed -n 's/^node .*(kubelet and containerd logs in \(.*\))$/\1/p' "$dir/testenv.log")"
falco_log="$(find "${node_dir:-/nonexistent}/pod-logs" -path '*/default_falco-*/falco/*.log' 2>/dev/null | head -1)"
echo "Falco's container (the stand-in) on the node, from its log ${falco_log:-(not found)}:"
[ -n "$falco_log" ] && sed 's/^[^ ]* [^ ]* [^ ]* /    /' "$falco_log" | head -12

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

step "A kmod Falco instance (namespace falco-kmod) whose loader uses the demo's repository"
key="$(cat "$dir/repo.pub")"
cat >"$dir/kmod.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: falco-kmod}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: driver-repo-key, namespace: falco-kmod}
data: {ed25519.pub: "$key"}
---
apiVersion: instance.falcosecurity.dev/v1alpha1
kind: Falco
metadata: {name: falco, namespace: falco-kmod}
spec:
  version: "0.44.1"
  # Only the simulated nodes: the demo runs their loaders below (the real node's kernel has no
  # module support, and its pod would wait on a loader that cannot succeed).
  podTemplateSpec:
    spec:
      nodeSelector: {falco-demo/simulated: "true"}
      containers: [{name: falco}]
  driver:
    kind: kmod
    version: "$version"
    repos: ["http://$addr/driver"]
    compile: false
    requireVerified: true
    trustedKey: {configMapKeyRef: {name: driver-repo-key, key: ed25519.pub}}
YAML
sed -n '/^kind: Falco/,$p' "$dir/kmod.yaml"
"$bin/falco-testenv" apply "$dir/kmod.yaml" 2>&1
"$bin/falco-testenv" wait falco/falco -n falco-kmod --for Reconciled=True --timeout 60 >/dev/null
"$bin/falco-testenv" get daemonset/falco -n falco-kmod -o json >"$dir/kmod-daemonset.json"
echo "the operator's DaemonSet runs this init container before Falco (from $dir/kmod-daemonset.json):"
python3 - "$dir/kmod-daemonset.json" <<'PY'
import json, sys
c = next(c for c in json.load(open(sys.argv[1]))["spec"]["template"]["spec"]["initContainers"]
         if c["name"] == "driver-loader")
print("  driver-loader:", " ".join(c["args"]))
print("  env:", " ".join(f'{e["name"]}={e.get("value", "")}' for e in c.get("env", [])))
PY

step "Its loader on the two simulated nodes: node-a runs Ubuntu 6.8.0-45-generic, node-b Amazon Linux 2 4.14"
cat <<'MSG'
(simulated: kubelet. The demo runs falco-driver-loader with the init container's own arguments
and environment from the DaemonSet, its mount paths mapped to a directory per node, a fake host
root per node (os-release, kernel release and version) and --dry-run: the insmod is only
printed, as this kernel cannot load modules, so "loaded" is what the loader reports once the
module is in place. Download, verification against the signed index, the cache and the status
file are real.)
MSG
loader_run() { # loader_run NODE KERNELRELEASE KERNELVERSION OS-RELEASE
  local node=$1 kroot="$dir/kmod/$1"
  rm -rf "$kroot"; mkdir -p "$kroot/host/etc" "$kroot/home" "$kroot/trusted-key" "$kroot/driver" \
    "$kroot/config.d" "$kroot/rules.d" "$kroot/plugins" "$kroot/state"
  printf '%b' "$4" >"$kroot/host/etc/os-release"
  printf '%s' "$key" >"$kroot/trusted-key/key"   # what kubelet mounts from the ConfigMap
  local args=() envs=()
  pod_local() { python3 - "$dir/kmod-daemonset.json" "$kroot" "$1" <<'PY'
import json, sys
ds, root, what = sys.argv[1:4]
c = next(c for c in json.load(open(ds))["spec"]["template"]["spec"]["initContainers"]
         if c["name"] == "driver-loader")
# The pod's paths on this simulated node (longest prefix first).
paths = {"/etc/falco-driver/trusted-key": f"{root}/trusted-key", "/run/falco-driver": f"{root}/driver",
         "/etc/falco": root, "/host": f"{root}/host", "/root": f"{root}/home"}
def local(v):
    for pod in sorted(paths, key=len, reverse=True):
        if v == pod or v.startswith(pod + "/"):
            return paths[pod] + v[len(pod):]
    return v
def arg(a):
    k, eq, v = a.partition("=")
    return k + eq + local(v) if eq else a
out = [arg(a) for a in c["args"]] if what == "args" else \
      [f'{e["name"]}={local(e.get("value", ""))}' for e in c.get("env", [])]
sys.stdout.write("".join(x + "\0" for x in out))
PY
  }
  mapfile -d '' args < <(pod_local args)
  mapfile -d '' envs < <(pod_local env)
  echo "$node: falco-driver-loader ${args[*]}"
  if env "${envs[@]}" "$bin/falco-driver-loader" --dry-run --log-format text --config "$kroot/falcoctl.yaml" \
      --kernelrelease "$2" --kernelversion "$3" "${args[@]}" >"$dir/loader-$node.log" 2>&1; then
    echo "$node: the loader exited 0 (Falco would start)"
  else
    echo "$node: the loader failed (kubelet would retry it, Falco does not start):"
    grep -iE 'error|unable' "$dir/loader-$node.log" | tail -2 | sed 's/^/    /'
  fi
  echo "$node: its status file, $kroot/driver/status.json:"
  sed 's/^/    /' "$kroot/driver/status.json"; echo
}
loader_run node-a "$kr" "#$kv-Ubuntu SMP PREEMPT_DYNAMIC" 'ID=ubuntu\nVERSION_ID="24.04"\n'
loader_run node-b 4.14.355-275.570.amzn2.x86_64 "#1 SMP" 'ID="amzn"\nVERSION_ID="2"\n'

step "Each node's sidecar of the kmod instance carries its status file into the node's NodeArtifacts record"
for node in node-a node-b; do
  kroot="$dir/kmod/$node" port=$(free_port)
  NODE_NAME="$node" POD_NAMESPACE=falco-kmod "$bin/falco-artifact-operator" run \
    --rules-dir "$kroot/rules.d" --config-dir "$kroot/config.d" --plugins-dir "$kroot/plugins" \
    --state-dir "$kroot/state" --probe-addr "127.0.0.1:$port" \
    --driver-status-file "$kroot/driver/status.json" >"$dir/sidecar-kmod-$node.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/readyz" "${pids[-1]}" "$dir/sidecar-kmod-$node.log"
  echo "$node: sidecar ready"
done
echo "the instance operator aggregates the records into the Falco status (DriverReady, status.driver):"
"$bin/falco-testenv" wait falco/falco -n falco-kmod --for DriverReady=False --timeout 60 | tee "$dir/kmod-conditions.txt"
echo
echo "\$ kubectl get falco -n falco-kmod     (falco-testenv get: the same table from the API server)"
"$bin/falco-testenv" get falco -n falco-kmod | tee "$dir/kmod-get.txt"
echo
echo "status.driver:"
"$bin/falco-testenv" get falco/falco -n falco-kmod -o json >"$dir/kmod-falco.json"
python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["status"]["driver"], indent=2))' \
  "$dir/kmod-falco.json" | tee "$dir/kmod-summary.json"

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
  $bin/falco-testenv get pods; $bin/falco-testenv get pods -n falco-system
  logs: $dir/testenv.log (the node's kubelet and containerd logs, and the pods' logs, in the
        directory it names), $dir/sidecar-node-a.log, $dir/sidecar-node-b.log
  kubectl get falco -n falco-kmod; $bin/falco-testenv get nodeartifacts -n falco-kmod -o json
  ls -R $dir/kmod                                (the kmod instance's nodes: status files, driver cache)
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
  grep -qE '^falco-[a-z0-9]+ +2/2 +Running' "$dir/pods.txt" ||
    { echo "demo check failed: no Running Falco pod (see $dir/pods.txt)" >&2; exit 1; }
  [ -n "$falco_log" ] && grep -q 'custom-rules' "$falco_log" ||
    { echo "demo check failed: the Falco stand-in did not list the registry's rules (${falco_log:-no log})" >&2; exit 1; }
  grep -q "7 nodes: 0 prebuilt, 3 likely prebuilt, 3 would compile, 1 not applicable" "$dir/coverage.txt" ||
    { echo "demo check failed: unexpected coverage report (see $dir/coverage.txt)" >&2; exit 1; }
  grep -q '^  DriverReady=False (DriverNotFound: 1 of 2 nodes have no driver: amazonlinux2 4.14.355-275.570.amzn2.x86_64 (DriverNotFound, 1 node)' "$dir/kmod-conditions.txt" ||
    { echo "demo check failed: DriverReady does not name node-b's kernel (see $dir/kmod-conditions.txt)" >&2; exit 1; }
  python3 - "$dir/kmod-falco.json" "$dir/kmod/node-a/driver/status.json" "$dir/kmod/node-b/driver/status.json" <<'PY' ||
import json, sys
falco, a, b = (json.load(open(p)) for p in sys.argv[1:4])
d = falco["status"]["driver"]
assert tuple(d.get(k, 0) for k in ("nodes", "loaded", "downloaded", "compiled", "failed")) == (2, 1, 1, 0, 1), d
assert [k["kernelRelease"] for k in d["failingKernels"]] == ["4.14.355-275.570.amzn2.x86_64"], d
assert a["loaded"] and a["origin"] == "downloaded" and a["verification"] == "signature", a
assert not b["loaded"] and b["reason"] == "DriverNotFound", b
PY
    { echo "demo check failed: unexpected driver status (see $dir/kmod-falco.json and $dir/kmod/*/driver/status.json)" >&2; exit 1; }
  awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "DRIVER") c = i } NR == 2 { exit !(c && $c == "False") }' "$dir/kmod-get.txt" ||
    { echo "demo check failed: the Driver column does not say False (see $dir/kmod-get.txt)" >&2; exit 1; }
  echo "demo check passed (operator from its chart, Falco and Component pods Running on the node, artifacts delivered per node, driver installed, kmod instance's per-node driver status aggregated)"
  exit 0
fi
step "Running. Press Ctrl-C to stop and clean up."
wait "${pids[0]}"
