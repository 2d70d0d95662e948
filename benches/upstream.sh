# Sourced by the benchmark scripts: a scratch directory (WORK) and the processes to stop (PIDS), both cleaned
# up on exit; free ports, waiting for a listener, and the fixed-answer upstream (an nginx of its own, one
# worker) that answers a Sweet Spot customer, or a Juice customer echoing its id.

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

KEY=sk_test_bench
SWEET='{"id":"cus_demo_alice","userId":"usr_demo_alice","createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z","creditStatus":"passed","identityVerificationStatus":"verified","firstName":"Alicia","lastName":"Walker","phone":"+14155550101","address1":"1 Market St","address2":"Suite 5","city":"Oakland","state":"CA","zip":"94105","country":"US"}'
JUICE='{"data":{"id":"$customer","first_name":"Test","last_name":"Customer","email":"test@custom.er","phone_number":"+2348012345678","billing_address":{"line1":"123 Test lane","line2":"3456 Mike Drive","city":"Lagos","state":"Acme","zip_code":"12345","country":"US"},"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}}'

# upstream_conf DIR PORT: the upstream's nginx configuration, written to DIR/upstream.conf.
upstream_conf() {
  cat >"$1/upstream.conf" <<CONF
worker_processes 1;
pid $1/upstream.pid;
error_log $1/upstream-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2 backlog=4096;
    default_type application/json;
    # Echoes the requested id, so that every customer is its own record (and its own lock).
    location ~ ^/juice/customers/(?<customer>[^/]+)$ { return 200 '$JUICE'; }
    location / { return 200 '$SWEET'; }
  }
}
CONF
}

# patchbay_scripts DIR TOKEN: the wrk scripts of patchbay's setups, written to DIR:
#   patchbay.lua  the canonical Sweet Spot PATCH;   token.lua  the same with TOKEN as a client's bearer token;
#   keyed.lua     the same with a new Idempotency-Key on every PATCH (KEY_PREFIX, and each wrk thread's own);
#   rmw.lua       a partial Juice billing_address patch (GET + PATCH upstream) over DISTINCT customers
#                 (default 1 000: writes to ONE customer are serialised by design, which would measure that
#                 lock rather than the cost of the extra read).
patchbay_scripts() {
  cat >"$1/patchbay.lua" <<'LUA'
wrk.method = "PATCH"
wrk.path = "/customers/sweetspot:cus_demo_alice"
wrk.body = '{"first_name":"Alicia","billing_address":{"city":"Oakland"}}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
LUA
  cp "$1/patchbay.lua" "$1/token.lua"
  echo "wrk.headers[\"Authorization\"] = \"Bearer $2\"" >>"$1/token.lua"
  cat >"$1/keyed.lua" <<'LUA'
wrk.method = "PATCH"
wrk.body = '{"first_name":"Alicia","billing_address":{"city":"Oakland"}}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
local thread = tostring({}):gsub("[^%w]", "")
local prefix = (os.getenv("KEY_PREFIX") or "k") .. "-" .. thread
local n = 0
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. n
  return wrk.format(nil, "/customers/sweetspot:cus_demo_alice")
end
LUA
  cat >"$1/rmw.lua" <<'LUA'
wrk.method = "PATCH"
wrk.body = '{"billing_address":{"city":"Lagos"}}'
wrk.headers["Content-Type"] = "application/merge-patch+json"
local distinct = tonumber(os.getenv("DISTINCT") or "1000")
local n = 0
request = function()
  n = n + 1
  local path = string.format("/customers/juice:6f7e1e7f-93d1-4fcc-b7a4-%012d", n % distinct)
  return wrk.format(nil, path)
end
LUA
}
