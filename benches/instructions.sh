#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the same total for the same binary and traffic, whatever else
# the machine is doing. patchbay (one serving runtime) runs under valgrind in front of a fixed-answer upstream;
# wrk warms it (and fills what a setup fills), callgrind's counters are zeroed, wrk -t1 -c16 runs DURATION, the
# counters are dumped: instructions ÷ requests.
#   bash benches/instructions.sh                    # every setup; DURATION=8s
#   SETUPS="open token keyed" bash benches/instructions.sh
# Setups:
#   open        the Sweet Spot PATCH of load.sh, no [[clients]]
#   token       the same with one client's bearer token
#   keyed       open, every PATCH with a new Idempotency-Key
#   clients-N   token, with N clients configured (N: 100, 10000)
#   records-N   keyed, after N keyed PATCHes were recorded (N: 10, 100000)
#   customers-N a read-merge-write (partial Juice billing_address) over N distinct customers (N: 1, 100000)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
SETUPS=${SETUPS:-"open token keyed clients-100 clients-10000 records-10 records-100000 customers-1 customers-100000"}

missing=()
for tool in wrk nginx valgrind python3; do command -v $tool >/dev/null || missing+=($tool); done
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ -n "${BENCH_BIN:-}" ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release --locked --bin patchbay
  BIN=$PWD/target/release/patchbay
fi

. benches/upstream.sh

UP=$(free_port)
upstream_conf "$WORK" "$UP"
nginx -p "$WORK" -c "$WORK/upstream.conf" -g 'daemon off;' & PIDS+=($!)
wait_port "$UP"

TOKEN=tok-bench-4f3e2d1c
# clients_toml N FILE: N clients, the first holding TOKEN.
clients_toml() {
  python3 - "$1" "$TOKEN" >"$2" <<'PY'
import hashlib, sys
n, token = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    secret = token if i == 0 else f"other-{i}"
    print(f'[[clients]]\nname = "client{i}"\ntoken_sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n')
PY
}

patchbay_scripts "$WORK" "$TOKEN"

# measure SETUP SCRIPT CONFIG FILL [env…]: one line of the table. CONFIG: a configuration file or "-"; FILL: how
# many warm-up requests at least (keyed records made, customers met) before the counters are zeroed.
measure() {
  local setup=$1 script=$2 config=$3 fill=$4; shift 4
  local port args=(); port=$(free_port)
  [[ $config == - ]] || args=(--config "$config")
  env PATCHBAY_SANDBOX__ENABLED=false PATCHBAY_SERVER__WORKERS=1 \
    PATCHBAY_SERVER__LISTEN=127.0.0.1:"$port" PATCHBAY_SERVER__ADMIN_LISTEN=127.0.0.1:0 \
    PATCHBAY_PROVIDERS__SWEETSPOT__BASE_URL=http://127.0.0.1:"$UP" PATCHBAY_PROVIDERS__SWEETSPOT__API_KEY=$KEY \
    PATCHBAY_PROVIDERS__JUICE__BASE_URL=http://127.0.0.1:"$UP"/juice PATCHBAY_PROVIDERS__JUICE__API_KEY=test_bench \
    PATCHBAY_PROVIDERS__JUICE__RATE_LIMIT__WINDOWS='[]' PATCHBAY_PROVIDERS__COUNT__RATE_LIMIT__WINDOWS='[]' \
    PATCHBAY_IDEMPOTENCY__MAX_ENTRIES=1000000 "$@" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$setup.%p" "$BIN" "${args[@]}" >"$WORK/$setup.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 3000); do grep -q "patchbay ready" "$WORK/$setup.log" 2>/dev/null && break; sleep 0.02; done
  grep -q "patchbay ready" "$WORK/$setup.log" || { cat "$WORK/$setup.log"; exit 1; }
  local warmed=0 round=0 out
  while ((warmed < fill || round == 0)); do
    round=$((round + 1))
    out=$(KEY_PREFIX=warm$round wrk -t1 -c16 -d2s -s "$WORK/$script" "http://127.0.0.1:$port")
    warmed=$((warmed + $(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")))
  done
  callgrind_control -z "$pid" >/dev/null 2>&1
  out=$(KEY_PREFIX=run wrk -t1 -c16 -d"$DURATION" -s "$WORK/$script" "http://127.0.0.1:$port")
  callgrind_control -d "$pid" >/dev/null 2>&1
  local rss; rss=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx" <<<"$out"; then echo "$setup: not every answer was 2xx" >&2; grep "Non-2xx" <<<"$out" >&2; fi
  local requests; requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
  # The dump asked for after zeroing holds the measured run only (`<file>.1`; the exit writes `<file>`).
  local dump; dump=$(ls "$WORK/$setup".*.1)
  local total; total=$(awk '/^(summary|totals):/ { print $2 }' "$dump" | tail -1)
  printf '%-17s %8s warm-up %8s measured %8.1f k instructions/request   peak RSS %6.1f MiB (under valgrind)\n' \
    "$setup" "$warmed" "$requests" "$(python3 -c "print($total / $requests / 1000)")" "$(python3 -c "print($rss / 1024)")"
}

echo "instructions per request (callgrind, one serving runtime, wrk -t1 -c16 -d$DURATION after a warm-up)"
for setup in $SETUPS; do
  n=${setup##*-}
  case $setup in
    open) measure open patchbay.lua - 0 ;;
    token) clients_toml 1 "$WORK/token.toml"; measure token token.lua "$WORK/token.toml" 0 ;;
    keyed) measure keyed keyed.lua - 0 ;;
    clients-*) clients_toml "$n" "$WORK/$setup.toml"; measure "$setup" token.lua "$WORK/$setup.toml" 0 ;;
    records-*) measure "$setup" keyed.lua - "$n" ;;
    customers-*) DISTINCT=$n measure "$setup" rmw.lua - "$n" ;;
    *) echo "unknown setup $setup" >&2; exit 2 ;;
  esac
done
