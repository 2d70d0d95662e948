#!/usr/bin/env bash
# The load benchmark (issue 4): in ONE run on this machine, with wrk at 64 and 256 connections,
#   (a) direct   — wrk → a fixed-answer upstream (an nginx of its own returning a Sweet Spot customer)
#   (b) nginx    — wrk → nginx (worker_processes auto, keep-alive upstream) → the same upstream, sending
#                  the already-translated Sweet Spot PUT
#   (c) patchbay — wrk → patchbay translating the canonical PATCH into that PUT (rate limits off)
#   (d) rmw      — wrk → patchbay, a partial Juice billing_address patch (GET + PATCH upstream) over
#                  1 000 customers
# Setups alternate (nginx, patchbay, nginx, patchbay, …) for ROUNDS rounds; the summary prints medians of
# requests/s, p50, p99 and the serving process's CPU time per request (user and system), patchbay's peak
# RSS, its time to readiness, and the ratios.
#   bash benches/load.sh                  # DURATION=10s ROUNDS=3 CONNS="64 256" THREADS=2 BENCH_BIN=…
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"64 256"}
THREADS=${THREADS:-2}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# BENCH_BIN: measure a binary built elsewhere (e.g. a profiling build) instead of building one.
if [[ -n "${BENCH_BIN:-}" ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release --locked --bin patchbay
  BIN=$PWD/target/release/patchbay
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "nothing listens on port $1" >&2
  return 1
}

UP=$(free_port); PX=$(free_port); PB=$(free_port)
SWEET='{"id":"cus_demo_alice","userId":"usr_demo_alice","createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z","creditStatus":"passed","identityVerificationStatus":"verified","firstName":"Alicia","lastName":"Walker","phone":"+14155550101","address1":"1 Market St","address2":"Suite 5","city":"Oakland","state":"CA","zip":"94105","country":"US"}'
JUICE='{"data":{"id":"$customer","first_name":"Test","last_name":"Customer","email":"test@custom.er","phone_number":"+2348012345678","billing_address":{"line1":"123 Test lane","line2":"3456 Mike Drive","city":"Lagos","state":"Acme","zip_code":"12345","country":"US"},"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}}'

cat >"$WORK/upstream.conf" <<CONF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP backlog=4096;
    default_type application/json;
    # Echoes the requested id, so that every customer is its own record (and its own lock).
    location ~ ^/juice/customers/(?<customer>[^/]+)$ { return 200 '$JUICE'; }
    location / { return 200 '$SWEET'; }
  }
}
CONF
cat >"$WORK/proxy.conf" <<CONF
worker_processes auto;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream sweetspot { server 127.0.0.1:$UP; keepalive 512; }
  server {
    listen 127.0.0.1:$PX backlog=4096;
    location / {
      proxy_pass http://sweetspot;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk_test_bench";
    }
  }
}
CONF
nginx -p "$WORK" -c "$WORK/upstream.conf" -g 'daemon off;' & PIDS+=($!)
nginx -p "$WORK" -c "$WORK/proxy.conf" -g 'daemon off;' & PIDS+=($!)
wait_port "$UP"; wait_port "$PX"

start=$(date +%s%N)
PATCHBAY_SANDBOX__ENABLED=false \
PATCHBAY_SERVER__LISTEN=127.0.0.1:$PB \
PATCHBAY_PROVIDERS__SWEETSPOT__BASE_URL=http://127.0.0.1:$UP \
PATCHBAY_PROVIDERS__SWEETSPOT__API_KEY=sk_test_bench \
PATCHBAY_PROVIDERS__JUICE__BASE_URL=http://127.0.0.1:$UP/juice \
PATCHBAY_PROVIDERS__JUICE__API_KEY=test_bench \
PATCHBAY_PROVIDERS__JUICE__RATE_LIMIT__WINDOWS='[]' \
PATCHBAY_PROVIDERS__COUNT__RATE_LIMIT__WINDOWS='[]' \
  "$BIN" >"$WORK/patchbay.log" 2>&1 & PB_PID=$!; PIDS+=($PB_PID)
wait_port "$PB" || { cat "$WORK/patchbay.log"; exit 1; }
READY_MS=$(( ($(date +%s%N) - start) / 1000000 ))

cat >"$WORK/direct.lua" <<'LUA'
wrk.method = "PUT"
wrk.path = "/v1/customers/cus_demo_alice"
wrk.body = '{"firstName":"Alicia","city":"Oakland"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk_test_bench"
LUA
cat >"$WORK/nginx.lua" <<'LUA'
wrk.method = "PUT"
wrk.path = "/v1/customers/cus_demo_alice"
wrk.body = '{"firstName":"Alicia","city":"Oakland"}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$WORK/patchbay.lua" <<'LUA'
wrk.method = "PATCH"
wrk.path = "/customers/sweetspot:cus_demo_alice"
wrk.body = '{"first_name":"Alicia","billing_address":{"city":"Oakland"}}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
LUA
# Read-merge-write over 1 000 customers: writes to ONE customer are serialised by design, which would
# measure that lock rather than the cost of the extra read.
cat >"$WORK/rmw.lua" <<'LUA'
wrk.method = "PATCH"
wrk.body = '{"billing_address":{"city":"Lagos"}}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
local n = 0
request = function()
  n = n + 1
  local path = string.format("/customers/juice:6f7e1e7f-93d1-4fcc-b7a4-%012d", n % 1000)
  return wrk.format(nil, path)
end
LUA

# Check each setup answers 200 before measuring anything.
for check in "direct $UP" "nginx $PX" "patchbay $PB" "rmw $PB"; do
  set -- $check
  out=$(wrk -t1 -c1 -d1s -s "$WORK/$1.lua" "http://127.0.0.1:$2" 2>&1)
  if grep -q "Non-2xx" <<<"$out"; then echo "setup $1 does not answer 2xx:"; echo "$out"; exit 1; fi
done

# CPU time of the process serving each setup (the nginx proxy's workers, or patchbay), per request: where
# the throughput gap is spent, in user space (translation, HTTP) or in the kernel (the socket calls).
PROXY_WORKERS=$(pgrep -P "$(cat "$WORK/proxy.pid")" | tr '\n' ' ')
UPSTREAM_WORKERS=$(pgrep -P "$(cat "$WORK/upstream.pid")" | tr '\n' ' ')
TICK=$(getconf CLK_TCK)
cpu_ticks() { # pids… → "user system" clock ticks summed over their threads
  local user=0 system=0 stat
  for pid in "$@"; do
    for stat in /proc/"$pid"/task/*/stat; do
      read -r -a f <"$stat" || continue
      user=$((user + f[13])); system=$((system + f[14]))
    done
  done
  echo "$user $system"
}

RESULTS=$WORK/results.tsv
run() { # setup port conns round
  local out pids before after
  case $1 in nginx) pids=$PROXY_WORKERS ;; direct) pids=$UPSTREAM_WORKERS ;; *) pids=$PB_PID ;; esac
  before=$(cpu_ticks $pids)
  out=$(wrk -t"$THREADS" -c"$3" -d"$DURATION" --latency -s "$WORK/$1.lua" "http://127.0.0.1:$2")
  after=$(cpu_ticks $pids)
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "$out" | grep "Non-2xx\|Socket errors" | sed "s/^/  $1 c=$3: /" >&2; fi
  awk -v setup="$1" -v conns="$3" -v round="$4" -v before="$before" -v after="$after" -v tick="$TICK" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
    $2 == "requests" && $3 == "in" { requests = $1 }
    END {
      split(before, b, " "); split(after, a, " ")
      us = 1e6 / tick / (requests > 0 ? requests : 1)
      printf "%s\t%s\t%s\t%.1f\t%.3f\t%.3f\t%.2f\t%.2f\n", setup, conns, round, rps, p50, p99, (a[1] - b[1]) * us, (a[2] - b[2]) * us
    }' <<<"$out" >>"$RESULTS"
  tail -n1 "$RESULTS" | awk -F'\t' '{ printf "  %-9s c=%-4s round %s: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu/req user %5.1f us system %5.1f us\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; wrk -t$THREADS -d$DURATION; rounds: $ROUNDS"
for conns in $CONNS; do
  run direct "$UP" "$conns" 1
  for round in $(seq 1 "$ROUNDS"); do
    run nginx "$PX" "$conns" "$round"
    run patchbay "$PB" "$conns" "$round"
  done
  # Peak so far: the single-call rounds up to this many connections (and the smaller rmw runs before).
  SINGLE_RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PB_PID/status"); SINGLE_CONNS=$conns
  run rmw "$PB" "$conns" 1
done
PEAK_RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PB_PID/status")

python3 - "$RESULTS" "$PEAK_RSS_KB" "$READY_MS" "$SINGLE_RSS_KB" "$SINGLE_CONNS" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
peak_mib = int(sys.argv[2]) / 1024
ready_ms = int(sys.argv[3])
single_mib, single_conns = int(sys.argv[4]) / 1024, sys.argv[5]
def med(setup, conns, col):
    values = [float(r[col]) for r in rows if r[0] == setup and r[1] == conns]
    return statistics.median(values) if values else float("nan")
print("\nmedians                 req/s      p50 ms    p99 ms   CPU µs/request of the serving process: user system")
conns_list = sorted({r[1] for r in rows}, key=int)
for conns in conns_list:
    for setup in ["direct", "nginx", "patchbay", "rmw"]:
        print(f"  c={conns:<4} {setup:<9} {med(setup, conns, 3):10.0f} {med(setup, conns, 4):10.3f} {med(setup, conns, 5):9.3f}"
              f"   {med(setup, conns, 6):6.1f} {med(setup, conns, 7):6.1f}")
print("\nratios (medians)")
for conns in conns_list:
    pb, ng, di, rmw = (med(s, conns, 3) for s in ["patchbay", "nginx", "direct", "rmw"])
    p99 = med("patchbay", conns, 5) / med("nginx", conns, 5)
    cpu = lambda s: med(s, conns, 6) + med(s, conns, 7)
    print(f"  c={conns:<4} throughput patchbay/nginx {pb/ng:.2f}  patchbay/direct {pb/di:.2f}  "
          f"p99 patchbay/nginx {p99:.2f}  read-merge-write/single-call {rmw/pb:.2f}  "
          f"CPU per request patchbay/nginx {cpu('patchbay')/cpu('nginx'):.2f}")
print(f"\npatchbay peak RSS {single_mib:.1f} MiB through the single-call rounds at {single_conns} connections, "
      f"{peak_mib:.1f} MiB over the whole run (read-merge-write opens Juice's own upstream connections); "
      f"ready to serve {ready_ms} ms after start")
PY
