#!/usr/bin/env bash
# Instance operator benchmark: our falco-operator against upstream's Go instance operator
# (github.com/falcosecurity/falco-operator v0.4.1, built from the Go module proxy), each on a fresh
# harness control plane (same kube-apiserver/etcd build) with its own CRDs and the same CRs.
#
# For each operator:
#   1. COUNT (default 1000) Falco CRs created in namespace `bench`; time until all COUNT DaemonSets exist;
#   2. RSS (current and peak) and CPU seconds of the operator process (/proc);
#   3. requests per no-op reconcile: every CR gets a new annotation (changes nothing the operator
#      builds from), and the operator's own client request counter is read before and after
#      (ours: falco_operator_api_requests_total; upstream: controller-runtime's rest_client_requests_total);
#   4. idle CPU over IDLE seconds;
#   5. p50/p99 from a spec change (spec.version) to the DaemonSet carrying the new image, with
#      RATE (default 100) changes per second, one per CR, with the API server's and etcd's CPU
#      meanwhile; then the same at RATE/2.
# Writes (or replaces) the "## Instance operator" section of docs/benchmarks.md.
#
# Needs: go (>= 1.26, module proxy reachable for the first build), kubectl, curl, cargo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT="${COUNT:-1000}"
RATE="${RATE:-100}"
IDLE="${IDLE:-30}"
UPSTREAM_VERSION=v0.4.1
die() { echo "bench/operator: $*" >&2; exit 1; }
for tool in go kubectl curl cargo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

export FALCO_TESTENV_BIN="$(bash "$root/hack/build-testenv.sh" | tail -1)"
# NO_BUILD=1 uses the release binaries already in target/release.
[ -n "${NO_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p falco-testenv --bin falco-testenv \
  && cargo build --release -q -p falco-operator --bin falco-operator --example operator-bench)
testenv="$root/target/release/falco-testenv"
ours="$root/target/release/falco-operator"
loadgen="$root/target/release/examples/operator-bench"

# Upstream's instance operator, built once per machine through a wrapper module.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/upstream-operator-$UPSTREAM_VERSION"
upstream="$cache/manager"
if [ ! -x "$upstream" ] || [ ! -d "$cache/crds" ]; then
  echo "bench/operator: building upstream falco-operator $UPSTREAM_VERSION (first run)" >&2
  mkdir -p "$cache"
  wrapper="$(mktemp -d)"
  (
    cd "$wrapper"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod
    go mod init falco-operator-upstream-bench >/dev/null 2>&1
    go get "github.com/falcosecurity/falco-operator/cmd/instance@$UPSTREAM_VERSION" >&2
    CGO_ENABLED=0 go build -o "$upstream" github.com/falcosecurity/falco-operator/cmd/instance
    src="$(go list -m -f '{{.Dir}}' "github.com/falcosecurity/falco-operator")"
    crds=""
    for d in chart/falco-operator/crds config/crd/bases; do
      [ -d "$src/$d" ] && { crds="$src/$d"; break; }
    done
    [ -n "$crds" ] || die "no CRD directory in $src"
    rm -rf "$cache/crds" && mkdir -p "$cache/crds" && cp "$crds"/*.yaml "$cache/crds/"
  )
  rm -rf "$wrapper"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_mib() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
counter() { curl -fsS "$1" | awk -v m="$2" 'index($1, m) == 1 { s += $NF } END { printf "%d", s }'; }
wait_quiet() { # wait until the request counter is unchanged for 5 s (at most 120 s)
  local url=$1 metric=$2 last now i
  last="$(counter "$url" "$metric")"
  for i in $(seq 1 24); do
    sleep 5
    now="$(counter "$url" "$metric")"
    [ "$now" = "$last" ] && return 0
    last=$now
  done
}

# run_one NAME METRIC COMMAND...: prints "settle rss hwm cpu_settle requests idle_cpu p50 p99 rss_after"
run_one() {
  local name=$1 metric=$2; shift 2
  local dir="$work/$name" extra=()
  pids=()
  trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT
  [ "$name" = upstream ] && extra=(--no-crds --apply "$cache/crds")
  "$testenv" up --dir "$dir" "${extra[@]}" >"$work/$name.testenv.out" 2>"$work/$name.testenv.err" &
  local tpid=$!; pids+=("$tpid")
  until grep -q '^export KUBECONFIG=' "$work/$name.testenv.out" 2>/dev/null; do
    kill -0 "$tpid" 2>/dev/null || { cat "$work/$name.testenv.err" >&2; die "control plane did not start"; }
    sleep 0.1
  done
  eval "$(grep '^export KUBECONFIG=' "$work/$name.testenv.out")"
  kubectl create namespace bench >/dev/null
  "$@" >"$work/$name.log" 2>&1 &
  local opid=$!; pids+=("$opid")
  local url="http://127.0.0.1:18080/metrics"
  until curl -fsS "$url" >/dev/null 2>&1; do
    kill -0 "$opid" 2>/dev/null || { tail -20 "$work/$name.log" >&2; die "$name exited"; }
    sleep 0.2
  done
  sleep 2
  local cpu0; cpu0="$(cpu_s "$opid")"
  "$loadgen" create --namespace bench --count "$COUNT" >/dev/null
  local settle; settle="$("$loadgen" settle --namespace bench --count "$COUNT" | awk '{ print $2 }')"
  wait_quiet "$url" "$metric"
  local cpu1 rss hwm anon; cpu1="$(cpu_s "$opid")"; rss="$(rss_mib "$opid" VmRSS)"; hwm="$(rss_mib "$opid" VmHWM)"
  anon="$(rss_mib "$opid" RssAnon)"
  local before after; before="$(counter "$url" "$metric")"
  "$loadgen" touch --namespace bench >/dev/null
  wait_quiet "$url" "$metric"
  after="$(counter "$url" "$metric")"
  local requests; requests="$(awk -v a="$before" -v b="$after" -v n="$COUNT" 'BEGIN { printf "%.2f", (b - a) / n }')"
  local i0 i1; i0="$(cpu_s "$opid")"; sleep "$IDLE"; i1="$(cpu_s "$opid")"
  local idle; idle="$(awk -v a="$i0" -v b="$i1" -v t="$IDLE" 'BEGIN { printf "%.2f", (b - a) * 100 / t }')"
  # CPU of the control plane (kube-apiserver + etcd of this run) while the changes are applied.
  local cp_pids cp0 cp1 l0 l1
  cp_pids="$(pgrep -P "$tpid" -f 'etcd|kube-apiserver' || true)"
  cp0="$(for p in $cp_pids; do cpu_s "$p"; echo; done | awk '{ s += $1 } END { printf "%.2f", s }')"
  l0="$(date +%s.%N)"
  local lat; lat="$("$loadgen" latency --namespace bench --count "$COUNT" --rate "$RATE" --version 0.43.0)"
  l1="$(date +%s.%N)"
  cp1="$(for p in $cp_pids; do cpu_s "$p"; echo; done | awk '{ s += $1 } END { printf "%.2f", s }')"
  local cp_load; cp_load="$(awk -v a="$cp0" -v b="$cp1" -v t0="$l0" -v t1="$l1" 'BEGIN { printf "%.0f", (b - a) * 100 / (t1 - t0) }')"
  local cp_ms; cp_ms="$(awk -v a="$cp0" -v b="$cp1" -v n="$COUNT" 'BEGIN { printf "%.1f", (b - a) * 1000 / n }')"
  local p50 p99; p50="$(sed -n 's/.*p50=\([0-9.]*\).*/\1/p' <<<"$lat")"; p99="$(sed -n 's/.*p99=\([0-9.]*\).*/\1/p' <<<"$lat")"
  echo "$name: $lat" >&2
  # The same at half the rate: what the latency is when the shared CPUs are not saturated.
  local lat2; lat2="$("$loadgen" latency --namespace bench --count "$COUNT" --rate "$((RATE / 2))" --version 0.42.0)"
  echo "$name at $((RATE / 2))/s: $lat2" >&2
  local p50h p99h; p50h="$(sed -n 's/.*p50=\([0-9.]*\).*/\1/p' <<<"$lat2")"; p99h="$(sed -n 's/.*p99=\([0-9.]*\).*/\1/p' <<<"$lat2")"
  local rss2; rss2="$(rss_mib "$opid" VmHWM)"
  local cpu2; cpu2="$(cpu_s "$opid")"
  kill -TERM "$opid"; wait "$opid" 2>/dev/null || true
  kill -TERM "$tpid"; wait "$tpid" 2>/dev/null || true
  echo "$settle $rss $hwm $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }') $requests $idle $p50 $p99 $rss2 $cpu2 $cp_load $anon $cp_ms $p50h $p99h"
}

read -r o_settle o_rss o_hwm o_cpu o_req o_idle o_p50 o_p99 o_hwm2 o_cpu_total o_cp o_anon o_cpms o_p50h o_p99h < <(
  run_one ours falco_operator_api_requests_total \
    "$ours" run --namespace bench --metrics-bind-address 127.0.0.1:18080 \
    --health-probe-bind-address 127.0.0.1:18081 --log-level warn)
read -r u_settle u_rss u_hwm u_cpu u_req u_idle u_p50 u_p99 u_hwm2 u_cpu_total u_cp u_anon u_cpms u_p50h u_p99h < <(
  run_one upstream rest_client_requests_total \
    "$upstream" --metrics-bind-address 127.0.0.1:18080 --metrics-secure=false \
    --health-probe-bind-address 127.0.0.1:18081)

[ -n "${o_cpu_total:-}" ] || die "the run of falco-operator failed (see above)"
[ -n "${u_cpu_total:-}" ] || die "the run of upstream's operator failed (see above)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "—"; else if (a / b < 0.01) printf "%.4f×", a / b; else printf "%.2f×", a / b }'; }
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
section="$work/section.md"
cat >"$section" <<MD
## Instance operator

Command: \`bench/operator.sh\` (\`COUNT=$COUNT RATE=$RATE IDLE=$IDLE\`). Machine: $(nproc) CPUs, $cpu_model,
$(free -g | awk '/Mem:/ { print $2 }') GiB; load average at the end $(cut -d' ' -f1 /proc/loadavg); $(date -u +%F).
Each operator runs alone against a fresh harness control plane (kube-apiserver v1.37.2 + etcd, same
build) with its own CRDs, release build / \`go build\` of upstream \`cmd/instance\` $UPSTREAM_VERSION
with its defaults (no leader election). No kube-controller-manager runs, so workloads never get pods;
both operators see the same objects.

| | falco-operator | upstream $UPSTREAM_VERSION | ours / upstream |
|---|---|---|---|
| $COUNT Falco CRs → $COUNT DaemonSets (s) | $o_settle | $u_settle | $(ratio "$o_settle" "$u_settle") |
| RSS after settling (MiB) | $o_rss | $u_rss | $(ratio "$o_rss" "$u_rss") |
| of which anonymous (heap, stacks; the rest is the mapped binary) (MiB) | $o_anon | $u_anon | $(ratio "$o_anon" "$u_anon") |
| peak RSS, whole run (MiB) | $o_hwm2 | $u_hwm2 | $(ratio "$o_hwm2" "$u_hwm2") |
| CPU to create $COUNT instances (s) | $o_cpu | $u_cpu | $(ratio "$o_cpu" "$u_cpu") |
| API requests per no-op reconcile | $o_req | $u_req | — |
| idle CPU (% of one core over $IDLE s) | $o_idle | $u_idle | $(ratio "$o_idle" "$u_idle") |
| change → applied DaemonSet, p50 (ms) at $RATE changes/s | $o_p50 | $u_p50 | $(ratio "$o_p50" "$u_p50") |
| change → applied DaemonSet, p99 (ms) at $RATE changes/s | $o_p99 | $u_p99 | $(ratio "$o_p99" "$u_p99") |
| CPU, whole run (s) | $o_cpu_total | $u_cpu_total | $(ratio "$o_cpu_total" "$u_cpu_total") |
| kube-apiserver + etcd CPU while the changes are applied (% of one core) | $o_cp | $u_cp | $(ratio "$o_cp" "$u_cp") |
| kube-apiserver + etcd CPU per change (ms) | $o_cpms | $u_cpms | $(ratio "$o_cpms" "$u_cpms") |
| change → applied DaemonSet, p50 (ms) at $((RATE / 2)) changes/s | $o_p50h | $u_p50h | $(ratio "$o_p50h" "$u_p50h") |
| change → applied DaemonSet, p99 (ms) at $((RATE / 2)) changes/s | $o_p99h | $u_p99h | $(ratio "$o_p99h" "$u_p99h") |

Goals: RSS ≤ 24 MiB, 0 requests per no-op reconcile, p99 < 1 s at 100 changes/s.
"No-op reconcile": every CR gets a new annotation, which changes nothing either operator builds;
requests are each operator's own client counter (ours: \`falco_operator_api_requests_total\`;
upstream: controller-runtime's \`rest_client_requests_total\`), divided by $COUNT.
MD
doc="$root/docs/benchmarks.md"
[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
python3 - "$doc" "$section" <<'PY'
import re, sys
doc, section = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
text = open(doc).read()
pattern = re.compile(r"^## Instance operator\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
open(doc, "w").write(text)
PY
cat "$section"
