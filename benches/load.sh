#!/usr/bin/env bash
# The load bench: the demo app under load from examples/loadgen.rs, side by
# side with its own baseline and with nginx, in one run.
#
#   bash benches/load.sh [RUNS] [SECS]      # default: 5 runs of 4 s per case
#   CASES=a bash benches/load.sh 9 4        # only the cases named (a to e)
#
# Servers are pinned to CPU 0 and the load generator to CPU 1 (taskset).
# Every server of a scenario is started once; runs then alternate between
# them (A B C A B C ...), so drift on this shared machine hits every case
# alike. Server CPU is read from /proc/<pid>/stat (user + system time of the
# whole process; for nginx, of its one worker) before and after each run.
# The table gives medians over the runs, and the ratios the performance
# targets are stated in:
#
#   (a) keep-alive, allowed: the demo with its full rule set against the same
#       app without the crate: req/s and server CPU per request; also the
#       throughput ratio run by run (each run against its neighbour), whose
#       spread shows how much one run's ratio can be trusted.
#   (b) new connection, request, 444 close (FIN): server CPU per dropped
#       connection and drops/s, against nginx `return 444` with the same rule.
#   (c) the same with the crate's RST close mode. nginx has no RST mode for
#       444 (it closes with a FIN), so its row there is its FIN close again.
#   (d) the same as (b) with a log line per drop: nginx's access_log to a
#       file, the demo's 444 event on stdout (to /dev/null).
#   Rows (b) to (d) show the demo with `--defer-accept 5` (TCP_DEFER_ACCEPT:
#   a connection is accepted once its request is there) against nginx with
#   the same option (`listen ... deferred`); (b) also both without it.
#   (e) clients refused at accept, connecting from 127.0.1.0/24, which every
#       server denies: nginx reads the request and returns 444 (geo); the
#       crate's own loop bans them after one drop and then refuses them at
#       accept, in user space; with the kernel filter their SYNs go
#       unanswered (the load generator gives up after 20 ms). CPU is the
#       server process's per connection attempt. On loopback the kernel's
#       receive work runs on the sender's CPU, so no row includes it.
#   (f) a refused ClientHello, a new connection each: an unknown server name,
#       against nginx's `listen ... ssl default_server; ssl_reject_handshake
#       on;`, which answers with an `unrecognized_name` alert; the demo
#       writes nothing, or with `--sni-alert` the same alert. Both with and
#       without deferred accept (`listen ... deferred`, `--defer-accept 5`).
#   (g) a full TLS handshake per request (new connection, handshake, one
#       request, close): the demo with the TLS gate, without it
#       (`--no-tls-gate`), and nginx serving the same 200 over TLS. The
#       gate's cost is the first row over the second.
#   Rows (f) and (g) use one ECDSA P-256 certificate, made by openssl.
#
# Row (a) also has the peer users pick for rate limiting alone: the same app
# with tower_governor keyed by the leftmost X-Forwarded-For
# (examples/governor_peer.rs), at the demo's rate.
#
# nginx is used when installed; this script installs nothing. On Debian:
#   apt-get install nginx-light
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-5}
SECS=${2:-4}
CASES=${CASES:-abcdefg}
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs: the server on one, the load on the other"; exit 1; }
command -v taskset >/dev/null || { echo "needs taskset (util-linux)"; exit 1; }

cargo build --release --quiet --features rustls --example nginx_444 --example loadgen --example governor_peer
demo=target/release/examples/nginx_444
loadgen=target/release/examples/loadgen
governor=target/release/examples/governor_peer
tick=$(getconf CLK_TCK)
# shellcheck source=benches/lib.sh
source benches/lib.sh

# name -> "port pid-to-measure"
declare -A server_port server_pid

start_demo() { # name args... (a name ending in _logged prints its 444 lines)
  local name=$1; shift
  local port; port=$(free_port)
  local quiet=--quiet
  case $name in *_logged) quiet= ;; esac
  # shellcheck disable=SC2086
  taskset -c 0 "$demo" --listen "127.0.0.1:$port" $quiet "$@" >/dev/null 2>"$work/$name.err" &
  pids+=($!)
  server_port[$name]=$port
  server_pid[$name]=$!
  wait_port "$port"
}

have_nginx=0
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then have_nginx=1; fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

start_governor() { # name
  local name=$1 port; port=$(free_port)
  taskset -c 0 "$governor" --listen "127.0.0.1:$port" >/dev/null 2>"$work/$name.err" &
  pids+=($!)
  server_port[$name]=$port
  server_pid[$name]=$!
  wait_port "$port"
}

# nginx with the demo's rules (the same nginx configuration), one worker,
# access_log off unless the name has _logged; a name ending in _refuse
# also returns 444 to every client from 127.0.1.0/24, before anything else;
# one ending in _deferred listens with `deferred` (TCP_DEFER_ACCEPT), as the
# demo does with `--defer-accept`.
start_nginx() { # name
  local name=$1 port; port=$(free_port)
  local access_log="access_log off;" refuse="" deferred=""
  case $name in *_logged*) access_log="access_log $work/$name/access.log;" ;; esac
  case $name in *_refuse) refuse='if ($refused) { return 444; }' ;; esac
  case $name in *_deferred) deferred=" deferred" ;; esac
  mkdir -p "$work/$name"
  cat >"$work/$name/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  $access_log
  keepalive_requests 1000000;
  geo \$realip_remote_addr \$refused { default 0; 127.0.1.0/24 1; }
  client_body_temp_path $work/$name;
  proxy_temp_path $work/$name;
  fastcgi_temp_path $work/$name;
  uwsgi_temp_path $work/$name;
  scgi_temp_path $work/$name;
  map \$http_user_agent \$bad_agent { default 0; ~*masscan 1; ~*zgrab 1; ~*python-requests 0; "" 1; }
  limit_req_zone \$binary_remote_addr zone=req_limit:10m rate=10r/s;
  set_real_ip_from 127.0.0.0/8;
  real_ip_header X-Forwarded-For;
  real_ip_recursive on;
  server { listen 127.0.0.1:$port default_server$deferred; server_name _; $refuse return 444; }
  server {
    listen 127.0.0.1:$port;
    server_name example.com www.example.com;
    deny 198.51.100.0/24;
    $refuse
    limit_req zone=req_limit burst=20 nodelay;
    limit_req_status 444;
    location / {
      if (\$remote_addr = "203.0.113.7") { return 444; }
      if (\$bad_agent) { return 444; }
      return 200 "ok";
    }
  }
}
EOF
  taskset -c 0 "$nginx_bin" -c "$work/$name/nginx.conf" -p "$work/$name" 2>"$work/$name.err" &
  pids+=($!)
  wait_port "$port"
  local worker=""
  for _ in $(seq 50); do
    worker=$(pgrep -P "${pids[-1]}" | head -n1 || true)
    [ -n "$worker" ] && break
    sleep 0.05
  done
  [ -n "$worker" ] || { echo "no nginx worker"; exit 1; }
  server_port[$name]=$port
  server_pid[$name]=$worker
}

# nginx over TLS with one worker: a default server that rejects every
# handshake (`ssl_reject_handshake on`) and the served names answering 200.
# A name ending in _deferred listens with `deferred`.
start_nginx_tls() { # name
  local name=$1 port; port=$(free_port)
  local deferred=""
  case $name in *_deferred) deferred=" deferred" ;; esac
  mkdir -p "$work/$name"
  cat >"$work/$name/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name;
  proxy_temp_path $work/$name;
  fastcgi_temp_path $work/$name;
  uwsgi_temp_path $work/$name;
  scgi_temp_path $work/$name;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off;
  server { listen 127.0.0.1:$port ssl default_server$deferred; ssl_reject_handshake on; }
  server {
    listen 127.0.0.1:$port ssl;
    server_name example.com www.example.com;
    ssl_certificate $work/tls/cert.pem;
    ssl_certificate_key $work/tls/key.pem;
    location / { return 200 "ok"; }
  }
}
EOF
  taskset -c 0 "$nginx_bin" -c "$work/$name/nginx.conf" -p "$work/$name" 2>"$work/$name.err" &
  pids+=($!)
  wait_port "$port"
  local worker=""
  for _ in $(seq 50); do
    worker=$(pgrep -P "${pids[-1]}" | head -n1 || true)
    [ -n "$worker" ] && break
    sleep 0.05
  done
  [ -n "$worker" ] || { echo "no nginx worker"; exit 1; }
  server_port[$name]=$port
  server_pid[$name]=$worker
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One run against one server: appends
# "rate cpu_us_per_request fin rst bytes errors timeouts".
measure() { # case name mode host conns [loadgen args...]
  local case=$1 name=$2 mode=$3 host=$4 conns=$5; shift 5
  local pid=${server_pid[$name]} before after line
  before=$(cpu_ticks "$pid")
  line=$(taskset -c 1 "$loadgen" --addr "127.0.0.1:${server_port[$name]}" --mode "$mode" \
    --host "$host" --conns "$conns" --secs "$SECS" "$@")
  after=$(cpu_ticks "$pid")
  python3 - "$line" "$before" "$after" "$tick" >>"$work/$case.$name.runs" <<'PY'
import sys
kv = dict(p.split("=") for p in sys.argv[1].split())
ticks = int(float(sys.argv[3])) - int(float(sys.argv[2]))
done = int(kv["done"])
cpu_us = ticks / int(sys.argv[4]) * 1e6 / max(done, 1)
print(kv["rate"], f"{cpu_us:.2f}", kv["fin"], kv["rst"], kv["bytes"], kv["errors"], kv["timeouts"])
PY
}

# Extra load generator arguments for a case, such as (e)'s sources.
declare -A case_args
scenario() { # case title mode host conns names...
  local case=$1 title=$2 mode=$3 host=$4 conns=$5; shift 5
  [[ $CASES == *$case* ]] || return 0
  echo "-- ($case) $title: $RUNS runs of ${SECS}s, alternating $*" >&2
  for run in $(seq "$RUNS"); do
    for name in "$@"; do
      # shellcheck disable=SC2086
      measure "$case" "$name" "$mode" "$host" "$conns" ${case_args[$case]:-}
      echo "   run $run $name: $(tail -n1 "$work/$case.$name.runs")" >&2
    done
  done
}

start_demo layer
start_demo no_layer --no-layer
start_governor governor
start_demo layer_own --server own
start_demo layer_own_defer --server own --defer-accept 5
start_demo layer_defer --defer-accept 5
start_demo layer_rst --close rst --defer-accept 5
start_demo layer_own_rst --server own --close rst --defer-accept 5
start_demo layer_logged --defer-accept 5
start_demo layer_own_logged --server own --defer-accept 5
# Loopback is no trusted proxy here: the denied sources are the clients.
refuse_args=(--deny-ip 127.0.1.0/24 --trusted-proxy 192.0.2.1/32)
start_demo layer_own_refuse --server own --ban-after 1 "${refuse_args[@]}"
start_demo layer_kernel_refuse --server own --kernel-filter "${refuse_args[@]}"
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" -subj /CN=example.com \
  -addext subjectAltName=DNS:example.com,DNS:www.example.com \
  -addext basicConstraints=critical,CA:FALSE 2>/dev/null
tls_args=(--tls-cert "$work/tls/cert.pem" --tls-key "$work/tls/key.pem")
start_demo_tls() { # name args...
  local name=$1 port; shift
  port=$(free_port)
  taskset -c 0 "$demo" --listen "127.0.0.1:$port" --quiet "${tls_args[@]}" "$@" \
    >/dev/null 2>"$work/$name.err" &
  pids+=($!)
  server_port[$name]=$port
  server_pid[$name]=$!
  wait_port "$port"
}
start_demo_tls tls_gate
start_demo_tls tls_gate_alert --sni-alert
start_demo_tls tls_gate_defer --defer-accept 5
start_demo_tls tls_no_gate --no-tls-gate
nginx_names=() nginx_logged=() nginx_refuse=() nginx_tls=() nginx_tls_deferred=()
nginx_deferred=() nginx_logged_deferred=()
if [ $have_nginx = 1 ]; then
  start_nginx nginx
  start_nginx nginx_deferred
  start_nginx nginx_logged
  start_nginx nginx_logged_deferred
  start_nginx nginx_refuse
  start_nginx_tls nginx_tls
  start_nginx_tls nginx_tls_deferred
  nginx_names=(nginx) nginx_logged=(nginx_logged) nginx_refuse=(nginx_refuse)
  nginx_deferred=(nginx_deferred) nginx_logged_deferred=(nginx_logged_deferred)
  nginx_tls=(nginx_tls) nginx_tls_deferred=(nginx_tls_deferred)
else
  echo "nginx is not installed: the drop rows have no nginx baseline (apt-get install nginx-light)" >&2
fi

case_args[e]="--source-net 1 --connect-timeout 20"
scenario a "keep-alive, allowed" keepalive example.com 32 layer no_layer governor
scenario b "new connection, 444 with FIN" drop unknown.example 64 "${nginx_names[@]}" layer layer_own "${nginx_deferred[@]}" layer_defer layer_own_defer
scenario c "new connection, 444 with RST" drop unknown.example 64 "${nginx_deferred[@]}" layer_rst layer_own_rst
scenario d "new connection, 444 with FIN, logged" drop unknown.example 64 "${nginx_logged_deferred[@]}" layer_logged layer_own_logged
scenario e "refused clients, per connection attempt" drop example.com 64 "${nginx_refuse[@]}" layer_own_refuse layer_kernel_refuse
scenario f "refused ClientHello, unknown name" tls-drop unknown.example 64 "${nginx_tls[@]}" tls_gate tls_gate_alert "${nginx_tls_deferred[@]}" tls_gate_defer
case_args[g]="--ca $work/tls/cert.pem"
scenario g "new connection, full TLS handshake, one request" tls-new example.com 32 tls_gate tls_no_gate "${nginx_tls[@]}"

python3 - "$work" "$RUNS" "$SECS" <<'PY'
import os, statistics, sys, platform, datetime
work, runs, secs = sys.argv[1], sys.argv[2], sys.argv[3]
def load(case, name):
    path = os.path.join(work, f"{case}.{name}.runs")
    if not os.path.exists(path):
        return None
    rows = [l.split() for l in open(path)]
    col = lambda i: [float(r[i]) for r in rows]
    return {
        "rate": statistics.median(col(0)),
        "cpu": statistics.median(col(1)),
        "fin": sum(col(2)), "rst": sum(col(3)), "bytes": sum(col(4)), "errors": sum(col(5)),
        "timeouts": sum(col(6)),
    }
label = {
    "no_layer": "same app, no crate (axum::serve, TcpListener)",
    "layer": "demo, full rule set (axum::serve, the layer's listener)",
    "nginx": "nginx 1 worker, return 444 (FIN)",
    "nginx_deferred": "nginx 1 worker, return 444, `listen ... deferred`",
    "nginx_logged_deferred": "nginx 1 worker, return 444, access_log on, `listen ... deferred`",
    ("c", "nginx_deferred"): "nginx 1 worker, return 444 (FIN; nginx has no RST), `listen ... deferred`",
    "layer_own": "demo, `--server own`",
    "layer_rst": "demo, `--close rst --defer-accept 5`",
    "layer_own_rst": "demo, `--server own --close rst --defer-accept 5`",
    "layer_defer": "demo, `--defer-accept 5` (axum::serve)",
    "governor": "same app, tower_governor alone (leftmost X-Forwarded-For)",
    "nginx_logged": "nginx 1 worker, return 444, access_log on",
    "layer_logged": "demo, `--defer-accept 5`, 444 event per drop",
    "layer_own_logged": "demo, `--server own --defer-accept 5`, 444 event per drop",
    "layer_own_defer": "demo, `--server own --defer-accept 5`",
    "nginx_refuse": "nginx 1 worker, geo + return 444",
    "layer_own_refuse": "demo, `--server own`, banned: refused at accept",
    "layer_kernel_refuse": "demo, `--kernel-filter`: SYN unanswered",
    "nginx_tls": "nginx 1 worker, `ssl_reject_handshake on` (an alert)",
    "nginx_tls_deferred": "nginx 1 worker, `ssl_reject_handshake on`, `listen ... deferred`",
    "tls_gate": "demo, `--server own` over TLS, the gate (nothing written)",
    "tls_gate_alert": "demo, the gate with `--sni-alert` (the same alert as nginx)",
    "tls_gate_defer": "demo, the gate, `--defer-accept 5`",
    "tls_no_gate": "demo over TLS, `--no-tls-gate`",
    ("g", "nginx_tls"): "nginx 1 worker over TLS, the same 200",
    ("g", "tls_gate"): "demo over TLS, the gate",
}
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" :\t")
print(f"\n{datetime.date.today()} · {cpu} · {os.cpu_count()} CPUs · Linux {platform.release()} · "
      f"medians of {runs} runs of {secs} s, alternating\n")
print("| case | server | rate/s | server CPU µs per request | closes (FIN/RST/no SYN-ACK) | bytes to client |")
print("|---|---|---:|---:|---|---:|")
def row(case, name):
    r = load(case, name)
    if r is None:
        return
    closes = "-" if case in "ag" else f"{int(r['fin'])}/{int(r['rst'])}/{int(r['timeouts'])}"
    nbytes = "-" if case in "ag" else str(int(r["bytes"]))
    text = label.get((case, name), label[name])
    print(f"| {case} | {text} | {r['rate']:.0f} | {r['cpu']:.2f} | {closes} | {nbytes} |")
cases = (("a", ["no_layer", "layer", "governor"]),
         ("b", ["nginx", "layer", "layer_own", "nginx_deferred", "layer_defer", "layer_own_defer"]),
         ("c", ["nginx_deferred", "layer_rst", "layer_own_rst"]),
         ("d", ["nginx_logged_deferred", "layer_logged", "layer_own_logged"]),
         ("e", ["nginx_refuse", "layer_own_refuse", "layer_kernel_refuse"]),
         ("f", ["nginx_tls", "tls_gate", "tls_gate_alert", "nginx_tls_deferred", "tls_gate_defer"]),
         ("g", ["tls_gate", "tls_no_gate", "nginx_tls"]))
for case, names in cases:
    for n in names:
        row(case, n)
print()
def paired(case, name, base):
    # Run i of one server beside run i of the other, seconds apart: a ratio
    # per pair cancels the machine's slow drift, and its spread shows how
    # far one run's ratio can be trusted.
    rates = lambda n: [float(l.split()[0]) for l in open(os.path.join(work, f"{case}.{n}.runs"))]
    ratios = sorted(x / y for x, y in zip(rates(name), rates(base)))
    return f"median {statistics.median(ratios):.3f}, from {ratios[0]:.3f} to {ratios[-1]:.3f}"
a, b, g = load("a", "layer"), load("a", "no_layer"), load("a", "governor")
if a and b and g:
    print(f"(a) throughput with the crate / without: {a['rate'] / b['rate']:.3f} (target >= 0.97); "
          f"CPU per request: {a['cpu'] / b['cpu']:.3f}")
    print(f"(a) throughput with the crate / tower_governor alone: {a['rate'] / g['rate']:.3f} "
          f"(target > 1); CPU per request: {a['cpu'] / g['cpu']:.3f}")
    print(f"(a) the same, run by run: without the crate {paired('a', 'layer', 'no_layer')}; "
          f"tower_governor alone {paired('a', 'layer', 'governor')}")
# Like with like: a row that defers accept against nginx with `deferred`,
# one that does not against nginx without it. Deferred, both sides' target
# is 1.10; without it, 1.10 for the serve loop and 1.25 for axum::serve.
def target(case, name):
    if case == "e":
        return 0.3
    return 1.10 if "own" in name or "defer" in base_of[(case, name)] else 1.25
base_of = {}
for case, base, names in (("b", "nginx", ["layer", "layer_own"]),
                          ("b", "nginx_deferred", ["layer_defer", "layer_own_defer"]),
                          ("c", "nginx_deferred", ["layer_rst", "layer_own_rst"]),
                          ("d", "nginx_logged_deferred", ["layer_logged", "layer_own_logged"]),
                          ("e", "nginx_refuse", ["layer_own_refuse", "layer_kernel_refuse"])):
    n = load(case, base)
    if not n:
        continue
    for name in names:
        base_of[(case, name)] = base
        r = load(case, name)
        print(f"({case}) {label[name]}: CPU per connection / {base}'s {r['cpu'] / n['cpu']:.3f} "
              f"(target <= {target(case, name)}); rate / {base}'s {r['rate'] / n['rate']:.3f}")
for case, base, names in (("f", "nginx_tls", ["tls_gate", "tls_gate_alert"]),
                          ("f", "nginx_tls_deferred", ["tls_gate_defer"])):
    n = load(case, base)
    if not n:
        continue
    for name in names:
        r = load(case, name)
        print(f"({case}) {label[name]}: CPU per refused ClientHello / nginx's "
              f"{r['cpu'] / n['cpu']:.3f}; rate / nginx's {r['rate'] / n['rate']:.3f}")
g, ng = load("g", "tls_gate"), load("g", "tls_no_gate")
if g and ng:
    print(f"(g) CPU per handshake and request, the gate / no gate: {g['cpu'] / ng['cpu']:.3f} "
          f"({g['cpu'] - ng['cpu']:+.2f} µs)")
ours = [(c, x) for c, names in cases for x in names if not x.startswith("nginx")]
errors = sum(load(c, x)["errors"] for c, x in ours if load(c, x))
# The alert is the one byte count a refusal may have: 7 per connection.
leaked = sum(load(c, x)["bytes"] for c, x in ours
             if c not in "ag" and x != "tls_gate_alert" and load(c, x))
print(f"client errors: {int(errors)}; bytes received on dropped connections: {int(leaked)}")
PY
