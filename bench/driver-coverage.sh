#!/usr/bin/env bash
# Benchmark of `falco-operator driver-coverage` on 5,000 synthetic Nodes (issue 19): wall time
# and index requests, against the per-kernel approach a script would take (one HEAD request per
# distinct driver file, with curl reusing one connection).
# Writes (or replaces) the "## Driver coverage" section of docs/benchmarks.md.
# Needs: cargo, hyperfine, curl, python3.
set -euo pipefail
LOAD="$(cut -d" " -f1-3 /proc/loadavg)"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RUNS="${RUNS:-20}"
NODES="${NODES:-5000}"
for tool in cargo hyperfine curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

cargo build --release -p falco-operator -p falco-driver-repo --manifest-path "$ROOT/Cargo.toml" >&2
OPERATOR="$TARGET_DIR/release/falco-operator"
REPO="$TARGET_DIR/release/falco-driver-repo"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

VERSION="8.0.0+driver"
# 5,000 Nodes over 250 Ubuntu AWS kernels and 250 Amazon Linux 2 kernels; the repository holds
# the first 200 of each (the rest would compile).
python3 - "$WORK" "$NODES" "$VERSION" <<'PY'
import json, os, sys
work, n, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = os.path.join(work, "src", version, "x86_64")
os.makedirs(out)
items, urls = [], set()
for i in range(n):
    k = i % 500
    if k < 250:
        os_image, kr = "Ubuntu 22.04.4 LTS", f"6.5.0-{1000 + k}-aws"
        file = f"falco_ubuntu-aws_{kr}_{k}~22.04.1.ko"
    else:
        os_image, kr = "Amazon Linux 2", f"5.10.{k}-{k}.amzn2.x86_64"
        file = f"falco_amazonlinux2_{kr}_1.ko"
    if k % 250 < 200 and i < 500:
        open(os.path.join(out, file), "wb").write(b"\0" * 64)
    urls.add(file)
    items.append({"metadata": {"name": f"node-{i}"}, "status": {"nodeInfo": {
        "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": kr, "osImage": os_image,
        "containerRuntimeVersion": "containerd://2.0.0", "kubeletVersion": "v1.37.2",
        "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}})
json.dump({"kind": "List", "apiVersion": "v1", "items": items}, open(os.path.join(work, "nodes.json"), "w"))
open(os.path.join(work, "files.txt"), "w").write("\n".join(sorted(urls)) + "\n")
PY

export FALCO_DRIVER_REPO_STORAGE="file://$WORK/store"
"$REPO" keygen --private-key "$WORK/key" --public-key "$WORK/key.pub" >/dev/null
"$REPO" publish "$WORK/src" --signing-key "$WORK/key" >&2
"$REPO" serve --listen 127.0.0.1:0 --no-stats > "$WORK/serve.out" 2>/dev/null &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
ADDR="$(sed -n 's/^listening on //p' "$WORK/serve.out")"
BASE="http://$ADDR"
ESCAPED="${VERSION//+/%2B}"
sed "s|^|url = \"$BASE/driver/$ESCAPED/x86_64/|; s|$|\"|" "$WORK/files.txt" > "$WORK/curl.cfg"

index_requests() {
  curl -fsS "$BASE/metrics" | awk '/^driver_repo_http_requests_total\{/ && /kind="index"/ { s += $NF } END { print s + 0 }'
}
COVERAGE=("$OPERATOR" driver-coverage --nodes "$WORK/nodes.json" --repo "$BASE/driver"
  --driver-version "$VERSION" --trusted-key "$WORK/key.pub" --format json)
printf -v COVERAGE_CMD '%q ' "${COVERAGE[@]}"

before="$(index_requests)"
"${COVERAGE[@]}" > "$WORK/report.json"
after="$(index_requests)"
# One version, one arch: index.json and index.json.sig, nothing per kernel.
[[ "$((after - before))" -eq 2 ]] || { echo "error: $((after - before)) index requests for one report (want 2)" >&2; exit 1; }
python3 - "$WORK/report.json" "$NODES" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["nodes"] == int(sys.argv[2]), r["nodes"]
assert r["likely"] + r["prebuilt"] > 0 and r["compile"] > 0, r
PY

hyperfine --warmup 2 --runs "$RUNS" --export-json "$WORK/coverage.json" \
  -n coverage "${COVERAGE_CMD} >/dev/null" \
  -n per-kernel-head "curl -sS -I -o /dev/null -K '$WORK/curl.cfg'" >&2

python3 - "$ROOT/docs/benchmarks.md" "$WORK/coverage.json" "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$RUNS" "$NODES" \
  "$((after - before))" "$(wc -l < "$WORK/files.txt")" "$WORK/report.json" "$LOAD" <<'PY'
import json, sys, re, datetime
doc, res, nproc, cpu, runs, nodes, requests, files, report = sys.argv[1:10]
d = {r["command"]: r for r in json.load(open(res))["results"]}
rep = json.load(open(report))
ms = lambda r: f'{r["mean"]*1000:.1f} ± {r["stddev"]*1000:.1f} ms (median {r["median"]*1000:.1f})'
cov, head = d["coverage"], d["per-kernel-head"]
section = f"""## Driver coverage

Command: `bench/driver-coverage.sh` (hyperfine, {runs} runs after 2 warm-ups; `NODES=n`, `RUNS=n`).
Machine: {nproc} CPUs, {cpu}; {datetime.date.today().isoformat()}; load average at the start
{sys.argv[-1]} (shared with other builds: compare the ratios of one run).

`falco-operator driver-coverage` on {nodes} synthetic Nodes (`kubectl get nodes -o json` format:
500 distinct kernels, Ubuntu AWS and Amazon Linux 2) against this project's repository server on
loopback holding 400 of those kernels in a signed index, with `--trusted-key`. The reference is
the per-kernel approach a script would take: one `HEAD` per distinct driver file ({files}
requests, `curl -K` reusing one connection), which answers less (no grouping, no report).

| Command | Wall time |
|---|---|
| `driver-coverage`, {nodes} Nodes, JSON report | {ms(cov)} |
| `curl -I` of each distinct driver file | {ms(head)} |

Index requests per report: **{requests}** (`index.json` and its signature, for the one version and
arch present; goal: one per version and arch). Ratio coverage / per-kernel HEADs:
**{cov["mean"]/head["mean"]:.2f}×** (goal: under 1 s: {cov["mean"]*1000:.0f} ms). Report: {rep["prebuilt"]}
prebuilt, {rep["likely"]} likely, {rep["compile"]} compile.
"""
try:
    text = open(doc).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"^## Driver coverage\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
else:
    text = text.rstrip("\n") + "\n\n" + section
open(doc, "w").write(text)
print(f"coverage {cov['mean']*1000:.1f} ms for {nodes} nodes, {requests} index requests; per-kernel HEAD {head['mean']*1000:.1f} ms")
PY
