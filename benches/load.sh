#!/usr/bin/env bash
# The load benchmark: in ONE run on this machine, with wrk at 64 and 256 connections,
#   (a) direct   — wrk → a fixed-answer upstream (an nginx of its own returning a Sweet Spot customer)
#   (b) nginx    — wrk → nginx (worker_processes auto, keep-alive upstream) → the same upstream, sending
#                  the already-translated Sweet Spot PUT
#   (c) patchbay — wrk → patchbay translating the canonical PATCH into that PUT (rate limits off)
#   (d) rmw      — wrk → patchbay, a partial Juice billing_address patch (GET + PATCH upstream) over
#                  1 000 customers
#   (f) token    — (c) with a client's bearer token (a second patchbay, one [[clients]] entry)
#   (g) keyed    — (c) with a new Idempotency-Key on every PATCH
#   (e) nginx-lua — wrk → nginx with its Lua module (the engine Kong's plugins run on) doing (c)'s work in
#                  benches/lua/translate.lua: the checks, the canonical PATCH → the same Sweet Spot PUT through
#                  a keep-alive upstream, the answer back to canonical; the same request as (c)
# Setups alternate (nginx, nginx-lua, patchbay, nginx, …) for ROUNDS rounds; the summary prints medians of
# requests/s, p50, p99 and the serving process's CPU time per request (user and system), patchbay's peak
# RSS, its time to readiness, and the ratios; then, per request, the CPU of all three processes sharing the
# cores (serving, wrk, upstream), the serving process's wakeups and preemptions, and (perf, a round of
# their own; SYSCALLS=0 skips them) its system calls by name.
#   bash benches/load.sh                  # DURATION=10s ROUNDS=3 CONNS="64 256" THREADS=2 BENCH_BIN=…
#   SETUPS="direct nginx nginx-lua" bash benches/load.sh     # a subset; without patchbay and rmw, no build
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"64 256"}
THREADS=${THREADS:-2}
SETUPS=${SETUPS:-"direct nginx nginx-lua patchbay token keyed rmw"}
has() { [[ " $SETUPS " == *" $1 "* ]]; }
# Where Debian's libnginx-mod-http-* packages put nginx's dynamic modules.
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v python3 >/dev/null || missing+=(python3)
[[ ${SYSCALLS:-1} == 0 ]] || command -v perf >/dev/null || missing+=(linux-perf)
if has nginx-lua; then
  [[ -e $NGINX_MODULES/ngx_http_lua_module.so ]] || missing+=(libnginx-mod-http-lua)
  dpkg -s lua-cjson >/dev/null 2>&1 || missing+=(lua-cjson)
fi
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# BENCH_BIN: measure a binary built elsewhere (e.g. a profiling build) instead of building one.
if ! has patchbay && ! has rmw && ! has token && ! has keyed; then
  BIN=
elif [[ -n "${BENCH_BIN:-}" ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release --locked --bin patchbay
  BIN=$PWD/target/release/patchbay
fi


. benches/upstream.sh

UP=$(free_port); PX=$(free_port); PL=$(free_port); PB=$(free_port); PT=$(free_port); PK=$(free_port)
declare -A PORT=([direct]=$UP [nginx]=$PX [nginx-lua]=$PL [patchbay]=$PB [rmw]=$PB [keyed]=$PK [token]=$PT)
TOKEN=tok-bench-4f3e2d1c
upstream_conf "$WORK" "$UP"
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
      proxy_set_header Authorization "Bearer $KEY";
    }
  }
}
CONF
# The Lua peer: translate.lua translates, and makes its upstream call through an internal location, so that
# the call goes through nginx's keep-alive pool as the proxy's does. Body limit: patchbay's default 64 KiB.
cat >"$WORK/lua.conf" <<CONF
load_module $NGINX_MODULES/ndk_http_module.so;
load_module $NGINX_MODULES/ngx_http_lua_module.so;
worker_processes auto;
pid $WORK/lua.pid;
error_log $WORK/lua-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  lua_package_path "$PWD/benches/lua/?.lua;;";
  upstream sweetspot { server 127.0.0.1:$UP; keepalive 512; }
  server {
    listen 127.0.0.1:$PL backlog=4096;
    client_max_body_size 64k;
    client_body_buffer_size 64k;
    location /customers/ { content_by_lua_block { require("translate").serve() } }
    location /_sweetspot/ { # the write
      internal;
      proxy_pass http://sweetspot/;
      proxy_http_version 1.1;
      proxy_pass_request_headers off;
      proxy_set_header Connection "";
      proxy_set_header Accept application/json;
      proxy_set_header Content-Type application/json;
      proxy_set_header Authorization "Bearer $KEY";
      proxy_set_header Idempotency-Key \$http_idempotency_key;
    }
    location /_sweetspot_read/ { # the same, for the GET of a patch that writes nothing: no Content-Type
      internal;
      proxy_pass http://sweetspot/;
      proxy_http_version 1.1;
      proxy_pass_request_headers off;
      proxy_set_header Connection "";
      proxy_set_header Accept application/json;
      proxy_set_header Authorization "Bearer $KEY";
    }
  }
}
CONF
nginx -p "$WORK" -c "$WORK/upstream.conf" -g 'daemon off;' & PIDS+=($!)
wait_port "$UP"
if has nginx; then nginx -p "$WORK" -c "$WORK/proxy.conf" -g 'daemon off;' & PIDS+=($!); wait_port "$PX"; fi
if has nginx-lua; then
  nginx -p "$WORK" -c "$WORK/lua.conf" -g 'daemon off;' & PIDS+=($!)
  wait_port "$PL" || { cat "$WORK/lua-error.log"; exit 1; }
fi

# start_patchbay NAME PORT [env…]: a patchbay in front of the upstream (rate limits off); its pid in LAST_PID.
start_patchbay() {
  local name=$1 port=$2; shift 2
  env PATCHBAY_SANDBOX__ENABLED=false \
    PATCHBAY_SERVER__LISTEN=127.0.0.1:"$port" PATCHBAY_SERVER__ADMIN_LISTEN=127.0.0.1:0 \
    PATCHBAY_PROVIDERS__SWEETSPOT__BASE_URL=http://127.0.0.1:$UP \
    PATCHBAY_PROVIDERS__SWEETSPOT__API_KEY=$KEY \
    PATCHBAY_PROVIDERS__JUICE__BASE_URL=http://127.0.0.1:$UP/juice \
    PATCHBAY_PROVIDERS__JUICE__API_KEY=test_bench \
    PATCHBAY_PROVIDERS__JUICE__RATE_LIMIT__WINDOWS='[]' \
    PATCHBAY_PROVIDERS__COUNT__RATE_LIMIT__WINDOWS='[]' \
    "$@" "$BIN" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!; PIDS+=($LAST_PID)
  wait_port "$port" || { cat "$WORK/$name.log"; exit 1; }
}
if [[ -n $BIN ]]; then
  start=$(date +%s%N)
  start_patchbay patchbay "$PB"; PB_PID=$LAST_PID
  READY_MS=$(( ($(date +%s%N) - start) / 1000000 ))
  # Keyed PATCHes in a process of their own: its records would count in the single-call peak RSS.
  if has keyed; then start_patchbay keyed "$PK"; PK_PID=$LAST_PID; fi
  if has token; then
    HASH=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
    start_patchbay token "$PT" PATCHBAY_CLIENTS="[{name=\"bench\",token_sha256=\"$HASH\"}]"; PT_PID=$LAST_PID
  fi
fi

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
patchbay_scripts "$WORK" "$TOKEN"
cp "$WORK/patchbay.lua" "$WORK/nginx-lua.lua" # the very request patchbay gets: the same work to do

# Check each setup answers 200 before measuring anything.
for setup in $SETUPS; do
  out=$(wrk -t1 -c1 -d1s -s "$WORK/$setup.lua" "http://127.0.0.1:${PORT[$setup]}" 2>&1)
  if grep -q "Non-2xx" <<<"$out"; then echo "setup $setup does not answer 2xx:"; echo "$out"; exit 1; fi
done
# …and that the Lua peer answers what patchbay answers (as JSON values: member order aside).
if has nginx-lua && has patchbay; then
  python3 - "$PL" "$PB" <<'PY' || echo "WARNING: nginx-lua and patchbay answer the benchmark's PATCH differently" >&2
import json, sys, urllib.request
def answer(port):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/customers/sweetspot:cus_demo_alice", method="PATCH",
        data=b'{"first_name":"Alicia","billing_address":{"city":"Oakland"}}',
        headers={"Content-Type": "application/merge-patch+json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)
lua, patchbay = answer(sys.argv[1]), answer(sys.argv[2])
if lua != patchbay:
    print("nginx-lua:", json.dumps(lua, sort_keys=True), "\npatchbay: ", json.dumps(patchbay, sort_keys=True),
          file=sys.stderr)
    sys.exit(1)
PY
fi

# CPU time of the process serving each setup (the workers of the nginx proxy or of the Lua peer, or patchbay),
# per request: where the throughput gap is spent, in user space (translation, HTTP) or in the kernel (the
# socket calls).
workers() { if [[ -e $WORK/$1.pid ]]; then pgrep -P "$(cat "$WORK/$1.pid")" | tr '\n' ' '; fi; }
PROXY_WORKERS=$(workers proxy)
LUA_WORKERS=$(workers lua)
UPSTREAM_WORKERS=$(workers upstream)
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

# Context switches of those threads: voluntary ones are wakeups (a thread slept in epoll_wait or on a lock and
# was woken), involuntary ones preemptions (another process took the core).
switches() { # pids… → "voluntary involuntary"
  local voluntary=0 involuntary=0 key value status
  for pid in "$@"; do
    for status in /proc/"$pid"/task/*/status; do
      while read -r key value _; do
        case $key in
          voluntary_ctxt_switches:) voluntary=$((voluntary + value)) ;;
          nonvoluntary_ctxt_switches:) involuntary=$((involuntary + value)) ;;
        esac
      done <"$status" || true
    done
  done
  echo "$voluntary $involuntary"
}
serving() { # setup → the pids serving it
  case $1 in
    nginx) echo "$PROXY_WORKERS" ;; nginx-lua) echo "$LUA_WORKERS" ;; direct) echo "$UPSTREAM_WORKERS" ;;
    token) echo "$PT_PID" ;; keyed) echo "$PK_PID" ;; *) echo "$PB_PID" ;;
  esac
}

# Each row: setup conns round req/s p50 p99, then per request (µs of CPU, or counts): the serving process's
# user and system time, its voluntary and involuntary context switches, wrk's CPU and the upstream's CPU (the
# two share the machine's cores with the serving process: with them, the whole cost of a request).
RESULTS=$WORK/results.tsv
run() { # setup port conns round
  local out pids before after switched_before switched_after upstream_before upstream_after
  pids=$(serving "$1")
  before=$(cpu_ticks $pids); switched_before=$(switches $pids); upstream_before=$(cpu_ticks $UPSTREAM_WORKERS)
  # `times` after wrk: the CPU time of this subshell's children, wrk alone ("0m1.230s 0m2.340s").
  out=$(wrk -t"$THREADS" -c"$3" -d"$DURATION" --latency -s "$WORK/$1.lua" "http://127.0.0.1:$2"; times)
  after=$(cpu_ticks $pids); switched_after=$(switches $pids); upstream_after=$(cpu_ticks $UPSTREAM_WORKERS)
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "$out" | grep "Non-2xx\|Socket errors" | sed "s/^/  $1 c=$3: /" >&2; fi
  awk -v setup="$1" -v conns="$3" -v round="$4" -v before="$before" -v after="$after" -v tick="$TICK" \
    -v sb="$switched_before" -v sa="$switched_after" -v ub="$upstream_before" -v ua="$upstream_after" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    function seconds(t) { split(t, p, "m"); return p[1] * 60 + p[2] }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
    $2 == "requests" && $3 == "in" { requests = $1 }
    $1 ~ /^[0-9]+m[0-9.]+s$/ && $2 ~ /^[0-9]+m[0-9.]+s$/ { wrk = seconds($1) + seconds($2) }
    END {
      n = requests > 0 ? requests : 1
      split(before, b, " "); split(after, a, " "); split(sb, vb, " "); split(sa, va, " ")
      split(ub, xb, " "); split(ua, xa, " ")
      us = 1e6 / tick / n
      printf "%s\t%s\t%s\t%.1f\t%.3f\t%.3f\t%.2f\t%.2f\t%.3f\t%.3f\t%.2f\t%.2f\n", setup, conns, round, rps, p50, p99,
        (a[1] - b[1]) * us, (a[2] - b[2]) * us, (va[1] - vb[1]) / n, (va[2] - vb[2]) / n, wrk * 1e6 / n,
        (xa[1] + xa[2] - xb[1] - xb[2]) * us
    }' <<<"$out" >>"$RESULTS"
  tail -n1 "$RESULTS" | awk -F'\t' '{ printf "  %-10s c=%-4s round %s: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu/req user %5.1f us system %5.1f us\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
}

# System calls per request of the serving process, counted by perf on the kernel's syscall tracepoints in a
# round of their own (counting costs a little on every call, so it stays out of the measured rounds).
CALLS=$WORK/calls.tsv
count_calls() { # setup port conns
  local pids out requests
  pids=$(serving "$1" | xargs | tr ' ' ',')
  perf stat -x, -o "$WORK/perf.out" -e 'raw_syscalls:sys_enter,syscalls:sys_enter_*' -p "$pids" &
  local perf_pid=$!
  sleep 0.5 # perf attaches
  out=$(wrk -t"$THREADS" -c"$3" -d"$DURATION" -s "$WORK/$1.lua" "http://127.0.0.1:$2")
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
  awk -F, -v setup="$1" -v conns="$3" -v n="$requests" '
    $1 + 0 > 0 && $3 == "raw_syscalls:sys_enter" { total = $1 }
    $1 + 0 > 0 && $3 ~ /^syscalls:sys_enter_/ { name = substr($3, 20); count[name] = $1 }
    END {
      line = ""
      for (name in count) if (count[name] / n >= 0.01) line = line sprintf(" %s=%.2f", name, count[name] / n)
      printf "%s\t%s\t%.2f\t%s\n", setup, conns, total / n, line
    }' "$WORK/perf.out" >>"$CALLS"
}
COUNTING=
if [[ ${SYSCALLS:-1} == 1 ]] && command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  COUNTING=1
fi

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; wrk -t$THREADS -d$DURATION; rounds: $ROUNDS"
SINGLE_RSS_KB=0; SINGLE_CONNS=0; PEAK_RSS_KB=0; READY_MS=${READY_MS:-0}
rss() { awk '/VmHWM/ {print $2}' "/proc/$PB_PID/status"; }
for conns in $CONNS; do
  if has direct; then run direct "$UP" "$conns" 1; fi
  for round in $(seq 1 "$ROUNDS"); do
    for setup in nginx nginx-lua patchbay token keyed; do
      if has $setup; then run $setup "${PORT[$setup]}" "$conns" "$round"; fi
    done
  done
  # Peak so far: the single-call rounds up to this many connections (and the smaller rmw runs before).
  if [[ -n $BIN ]]; then SINGLE_RSS_KB=$(rss); SINGLE_CONNS=$conns; fi
  if has rmw; then run rmw "$PB" "$conns" 1; fi
done
if [[ -n $COUNTING ]]; then
  echo "counting system calls per request (perf, one round per setup)"
  for conns in $CONNS; do
    for setup in direct nginx nginx-lua patchbay token keyed rmw; do
      if has $setup; then count_calls $setup "${PORT[$setup]}" "$conns"; fi
    done
  done
else
  echo "system calls not counted: perf cannot read the kernel's syscall tracepoints here (SYSCALLS=0, no perf, or no permission)"
fi
if [[ -n $BIN ]]; then PEAK_RSS_KB=$(rss); fi

touch "$CALLS"
python3 - "$RESULTS" "$PEAK_RSS_KB" "$READY_MS" "$SINGLE_RSS_KB" "$SINGLE_CONNS" "$CALLS" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
calls = list(csv.reader(open(sys.argv[6]), delimiter="\t"))
peak_mib = int(sys.argv[2]) / 1024
ready_ms = int(sys.argv[3])
single_mib, single_conns = int(sys.argv[4]) / 1024, sys.argv[5]
def med(setup, conns, col):
    values = [float(r[col]) for r in rows if r[0] == setup and r[1] == conns]
    return statistics.median(values) if values else float("nan")
setups = [s for s in ["direct", "nginx", "nginx-lua", "patchbay", "token", "keyed", "rmw"] if any(r[0] == s for r in rows)]
print("\nmedians                  req/s      p50 ms    p99 ms   CPU µs/request of the serving process: user system")
conns_list = sorted({r[1] for r in rows}, key=int)
for conns in conns_list:
    for setup in setups:
        print(f"  c={conns:<4} {setup:<10} {med(setup, conns, 3):10.0f} {med(setup, conns, 4):10.3f} {med(setup, conns, 5):9.3f}"
              f"   {med(setup, conns, 6):6.1f} {med(setup, conns, 7):6.1f}")
# a ÷ b in throughput, p99 and CPU time per request (user + system), all from this run.
pairs = [("patchbay", "nginx"), ("patchbay", "nginx-lua"), ("token", "nginx-lua"), ("keyed", "nginx-lua"),
         ("nginx-lua", "nginx"), ("patchbay", "direct"),
         ("rmw", "patchbay")]
print("\nratios (medians)                       throughput      p99  CPU/request")
for conns in conns_list:
    cpu = lambda s: med(s, conns, 6) + med(s, conns, 7)
    for a, b in pairs:
        if a in setups and b in setups:
            name = "read-merge-write ÷ single-call" if a == "rmw" else f"{a} ÷ {b}"
            print(f"  c={conns:<4} {name:<31} {med(a, conns, 3) / med(b, conns, 3):10.2f} "
                  f"{med(a, conns, 5) / med(b, conns, 5):8.2f} {cpu(a) / cpu(b):12.2f}")
print("\nper request (medians)        CPU µs: serving  wrk  upstream  all   context switches of the serving process:")
print("                                                                     wakeups  preemptions")
for conns in conns_list:
    for setup in setups:
        serving = med(setup, conns, 6) + med(setup, conns, 7)
        wrk, upstream = med(setup, conns, 10), med(setup, conns, 11)
        # direct: the upstream is the serving process.
        whole = serving + wrk + (0 if setup == "direct" else upstream)
        print(f"  c={conns:<4} {setup:<10}      {serving:15.1f} {wrk:5.1f} {upstream:8.1f} {whole:6.1f}"
              f"   {med(setup, conns, 8):8.3f} {med(setup, conns, 9):10.3f}")
if calls:
    print("\nsystem calls per request of the serving process (perf, a round of their own)")
    for setup, conns, total, names in calls:
        print(f"  c={conns:<4} {setup:<10} {float(total):5.2f}  {names.strip()}")
if "patchbay" in setups or "rmw" in setups:
    print(f"\npatchbay peak RSS {single_mib:.1f} MiB through the single-call rounds at {single_conns} connections, "
          f"{peak_mib:.1f} MiB over the whole run (read-merge-write opens Juice's own upstream connections); "
          f"ready to serve {ready_ms} ms after start")
PY
