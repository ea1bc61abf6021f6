#!/usr/bin/env bash
# Benchmark of the driver repository against NGINX serving the same directory, with the same
# load tool (wrk) on the same host: 1 KB GET, 404 and 10 MiB GET, as ratios; statistics on
# versus off; and the same with the S3 backend (Garage, from hack/build-garage.sh).
#
# Needs: nginx (Debian nginx-light), wrk, a release build of falco-driver-repo (built here).
# Writes the "## Driver repository" section of docs/benchmarks.md, leaving other sections.
#
# Env: DURATION (s, default 10), CONNECTIONS (default 50), THREADS (default 2),
#      SKIP_S3=1 to leave out the S3 backend.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
die() { echo "bench/driver-repo: $*" >&2; exit 1; }
command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx-light)"
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
echo "bench/driver-repo: building falco-driver-repo (release)" >&2
cargo build --release -q -p falco-driver-repo --manifest-path "$root/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/falco-driver-repo"

loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
work="$(mktemp -d /tmp/falco-driver-repo-bench.XXXXXX)"
# NGINX workers run as www-data: the tree they serve must be readable by others.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL: until it answers (any status), 30 s deadline
  local deadline=$((SECONDS + 30))
  until curl -s -o /dev/null "$1"; do
    [ $SECONDS -lt $deadline ] || die "$1 did not come up"
    sleep 0.1
  done
}

# Same files for everyone: the local repository directory is also NGINX's root.
V="8.0.0+driver"; VU="8.0.0%2Bdriver"
data="$work/repo"
mkdir -p "$data/driver/$V/x86_64"
small="falco_ubuntu-generic_5.15.0-100-generic_110.ko"
large="falco_ubuntu-generic_6.8.0-40-generic_40.ko"
head -c 1024 /dev/urandom >"$data/driver/$V/x86_64/$small"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$data/driver/$V/x86_64/$large"
missing="falco_ubuntu-generic_0.0.0-missing_1.ko"

# NGINX: Debian's defaults for a static server (sendfile on), access log off, as many
# workers as CPUs.
nport="$(free_port)"
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
daemon off;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  access_log off;
  log_not_found off;
  server {
    listen 127.0.0.1:$nport;
    root $data;
    etag on;
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
wait_http "http://127.0.0.1:$nport/"

rps() { # rps URL -> "requests/s MB/s"
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$1")"
  printf '%s\n%s\n' "$1" "$out" >>"$work/wrk.log"
  if grep -q "Non-2xx" <<<"$out" && [[ "$1" != *missing* ]]; then
    die "errors from $1: $(grep Non-2xx <<<"$out")"
  fi
  local r t
  r="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  t="$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")"
  case "$t" in
    *GB) t="$(awk -v v="${t%GB}" 'BEGIN {printf "%.0f", v * 1024}')" ;;
    *MB) t="$(awk -v v="${t%MB}" 'BEGIN {printf "%.0f", v}')" ;;
    *KB) t="$(awk -v v="${t%KB}" 'BEGIN {printf "%.1f", v / 1024}')" ;;
  esac
  echo "$r $t"
}

start_repo() { # start_repo NAME ARGS... ; sets repo_port
  repo_port="$(free_port)"
  "$bin" serve --listen "127.0.0.1:$repo_port" "${@:2}" >"$work/$1.out" 2>"$work/$1.err" &
  pids+=($!)
  repo_pid=$!
  wait_http "http://127.0.0.1:$repo_port/healthz"
}
stop_repo() { kill -TERM "$repo_pid"; wait "$repo_pid" 2>/dev/null || true; }

declare -A R
measure() { # measure LABEL PORT
  local v
  v="$(rps "http://127.0.0.1:$2/driver/$VU/x86_64/$small")"; R["$1,small"]="$v"
  v="$(rps "http://127.0.0.1:$2/driver/$VU/x86_64/$missing")"; R["$1,404"]="$v"
  v="$(rps "http://127.0.0.1:$2/driver/$VU/x86_64/$large")"; R["$1,large"]="$v"
}

echo "bench/driver-repo: nginx" >&2
measure nginx "$nport"
echo "bench/driver-repo: repo, local storage, stats on" >&2
start_repo local-on --storage "file://$data" --stats-flush-interval 10
measure local_on "$repo_port"
stop_repo
echo "bench/driver-repo: repo, local storage, stats off" >&2
start_repo local-off --storage "file://$data" --no-stats
measure local_off "$repo_port"
stop_repo

# The overhead of the statistics is a few percent at most, less than the run-to-run noise of
# one wrk run on a shared host: measure it with both servers up at once, alternating ROUNDS
# (default 3) runs of the 1 KB GET on each, and compare the medians.
ROUNDS="${ROUNDS:-3}"
echo "bench/driver-repo: statistics overhead, $ROUNDS alternating rounds" >&2
start_repo ovh-on --storage "file://$data" --stats-flush-interval 10
on_port=$repo_port; on_pid=$repo_pid
start_repo ovh-off --storage "file://$data" --no-stats
off_port=$repo_port; off_pid=$repo_pid
on_runs=(); off_runs=()
for _ in $(seq "$ROUNDS"); do
  v="$(rps "http://127.0.0.1:$on_port/driver/$VU/x86_64/$small")"; on_runs+=("${v%% *}")
  v="$(rps "http://127.0.0.1:$off_port/driver/$VU/x86_64/$small")"; off_runs+=("${v%% *}")
done
kill -TERM "$on_pid" "$off_pid"; wait "$on_pid" "$off_pid" 2>/dev/null || true
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
on_median="$(median "${on_runs[@]}")"; off_median="$(median "${off_runs[@]}")"

# Slowloris: one GET while 2,000 connections each hold half a request head (goal < 1 s).
slowloris_ms() { # slowloris_ms PORT -> milliseconds of the GET
  python3 - "$1" "$VU" "$small" <<'PY'
import re, socket, sys, time, urllib.request
port, vu, small = int(sys.argv[1]), sys.argv[2], sys.argv[3]
socks = []
for _ in range(2000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /driver/{vu}/x86_64/falco_".encode())
    socks.append(s)
deadline = time.monotonic() + 30
while True:  # until the server has accepted all of them
    m = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    if float(re.search(r"^driver_repo_connections_open (\S+)", m, re.M).group(1)) >= 2000:
        break
    if time.monotonic() > deadline:
        sys.exit("the server did not accept 2000 connections")
    time.sleep(0.05)
t = time.monotonic()
with urllib.request.urlopen(f"http://127.0.0.1:{port}/driver/{vu}/x86_64/{small}", timeout=30) as r:
    r.read()
print(f"{(time.monotonic() - t) * 1000:.1f}")
PY
}
echo "bench/driver-repo: GET under slowloris" >&2
start_repo slowloris --storage "file://$data" --no-stats
slowloris="$(slowloris_ms "$repo_port")"
stop_repo

s3=""
if [ "${SKIP_S3:-}" != 1 ]; then
  garage_bin="${FALCO_GARAGE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/garage-2.5.0/bin/garage}"
  [ -x "$garage_bin" ] || die "garage not found at $garage_bin: run hack/build-garage.sh or SKIP_S3=1"
  g="$work/garage"; mkdir -p "$g"
  rpc="$(free_port)"; s3p="$(free_port)"; adm="$(free_port)"
  cat >"$g/garage.toml" <<CONF
metadata_dir = "$g/meta"
data_dir = "$g/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3p"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$adm"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONF
  export AWS_ACCESS_KEY_ID="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export AWS_SECRET_ACCESS_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3p" AWS_REGION=garage
  GARAGE_DEFAULT_ACCESS_KEY="$AWS_ACCESS_KEY_ID" GARAGE_DEFAULT_SECRET_KEY="$AWS_SECRET_ACCESS_KEY" \
    GARAGE_DEFAULT_BUCKET=bench RUST_LOG=garage=warn \
    "$garage_bin" -c "$g/garage.toml" server --single-node --default-bucket >"$g/log" 2>&1 &
  pids+=($!)
  deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$adm/health")" = 200 ]; do
    [ $SECONDS -lt $deadline ] || die "garage did not become healthy: $(tail -5 "$g/log")"
    sleep 0.1
  done
  # Publish the same two files (with checksums and a signed index) into the bucket.
  "$bin" keygen --private-key "$work/key" --public-key "$work/key.pub" >/dev/null
  mkdir -p "$work/out/$V"; cp -r "$data/driver/$V/x86_64" "$work/out/$V/"
  "$bin" publish "$work/out" --storage s3://bench/repo --signing-key "$work/key" >/dev/null
  echo "bench/driver-repo: repo, S3 (Garage) storage, stats on" >&2
  start_repo s3-on --storage s3://bench/repo
  measure s3_on "$repo_port"
  stop_repo
  s3=1
fi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "-" }'; }
first() { echo "${1%% *}"; }
second() { echo "${1##* }"; }
row() { # row NAME LABEL
  local s="${R[$2,small]}" n="${R[$2,404]}" l="${R[$2,large]}"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" \
    "$(first "$s")" "$(ratio "$(first "$s")" "$(first "${R[nginx,small]}")")" \
    "$(first "$n")" "$(ratio "$(first "$n")" "$(first "${R[nginx,404]}")")" \
    "$(second "$l")" "$(ratio "$(second "$l")" "$(second "${R[nginx,large]}")")" \
    "$(first "$l")"
}

section="$work/section.md"
{
  echo "## Driver repository"
  echo
  echo "\`bench/driver-repo.sh\` on $(date -u +%Y-%m-%d), $(nproc) CPUs ($cpu), loopback;"
  echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s against each server in turn (the load tool shares the CPUs)."
  echo "NGINX $(nginx -v 2>&1 | sed 's/.*\///') serves the same directory (sendfile on, access and not-found logs off,"
  echo "\`worker_processes auto\`). Goals: >= 60 % of NGINX for 1 KB and 404, >= 90 % for 10 MiB;"
  echo "statistics overhead < 5 %."
  echo
  echo "| server | 1 KB GET req/s | vs NGINX | 404 req/s | vs NGINX | 10 MiB GET MB/s | vs NGINX | 10 MiB req/s |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '| NGINX | %s | 100 %% | %s | 100 %% | %s | 100 %% | %s |\n' \
    "$(first "${R[nginx,small]}")" "$(first "${R[nginx,404]}")" "$(second "${R[nginx,large]}")" "$(first "${R[nginx,large]}")"
  row "falco-driver-repo, local, stats on" local_on
  row "falco-driver-repo, local, stats off" local_off
  [ -n "$s3" ] && row "falco-driver-repo, S3 (Garage), stats on" s3_on
  echo
  echo "Statistics overhead, 1 KB GET, both servers up at once, medians of $ROUNDS alternating runs:"
  echo "stats on ${on_median} req/s (runs: ${on_runs[*]}), stats off ${off_median} req/s (runs: ${off_runs[*]}):"
  echo "$(awk -v a="$on_median" -v b="$off_median" 'BEGIN { o = 100 * (b - a) / b; if (o >= 0) printf "**%.1f %% overhead**", o; else printf "**no measurable overhead** (stats on %.1f %% faster, within the run-to-run noise)", -o }')"
  echo "(goal < 5 %). Single runs in the table: 10 MiB with statistics at"
  echo "$(ratio "$(second "${R[local_on,large]}")" "$(second "${R[local_off,large]}")") of the throughput without."
  echo "404s are answered from the negative cache after the first miss, so they cost no storage call."
  echo "Slowloris: a 1 KB GET answered in **${slowloris} ms** while 2,000 connections each hold half a"
  echo "request head (goal < 1 s; they are closed by the 10 s header-read timeout)."
  echo "The goals compare like with like (NGINX and the local backend serve one directory); the S3 row"
  echo "adds a Garage round trip, on the same 2 CPUs, to every request: behind a CDN, as the seed"
  echo "deploys it, the S3 backend sees only the CDN's cache misses."
  echo "Load average at the start: $loadavg (the host is shared; figures vary by tens of"
  echo "percent between runs, so compare ratios from the same run)."
  echo
}>"$section"

doc="$root/docs/benchmarks.md"
mkdir -p "$(dirname "$doc")"
[ -f "$doc" ] || printf '# Benchmarks\n\n' >"$doc"
python3 - "$doc" "$section" <<'PY'
import re, sys
doc, section = sys.argv[1], sys.argv[2]
text = open(doc).read()
new = open(section).read()
pattern = re.compile(r"^## Driver repository\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda _: new, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + new
open(doc, "w").write(text)
PY
cat "$section"
