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
