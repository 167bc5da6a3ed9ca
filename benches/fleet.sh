#!/usr/bin/env bash
# The fleet bench: N demo replicas (separate processes) share one rate limit
# in one Redis, under keep-alive load spread over all of them.
#
#   bash benches/fleet.sh [REPLICAS] [RUNS] [SECS]   # default: 3 replicas, 5 runs of 4 s
#
# Three fleets of REPLICAS processes each, started once; runs alternate
# between them (A B C A B C ...) so drift on a shared machine hits each alike:
#
#   local      each replica's own in-process limiter (no Redis): the baseline
#   shared     --redis, with the local pre-check (the demo's default)
#   no-check   --redis --redis-precheck off: every request asks Redis
#
# Three workloads from examples/loadgen.rs (keep-alive connections, each new
# one to the next replica):
#
#   light      one connection at a time: the latency Redis adds to a request
#              when nothing queues
#   polite     16 connections, 65,536 clients (X-Forwarded-For), each far
#              below the limit
#   mixed      the same, with every other request from one of 4 clients that
#              are far over it (10 r/s, burst 20, nginx's limit_req terms)
#
# Reported, as medians over the runs:
#   - served/s and dropped/s over the whole fleet;
#   - p50 and p99 of a served request's time, and, in the light workload,
#     what Redis adds to each against the local fleet in the same run (under
#     saturation the percentiles measure queues on the shared core instead);
#   - Redis round trips per request: script calls (`EVALSHA`, `EVAL` in
#     `INFO commandstats`) over requests sent, with and without the
#     pre-check; the commands a script runs inside Redis are not round trips;
#   - Redis CPU per request (`used_cpu_user + used_cpu_sys`), and from it the
#     requests per second one Redis sustains at 100% of its one core for this
#     workload.
#
# Replicas and Redis are pinned to CPU 0, the load generator to CPU 1. Needs
# redis-server and redis-cli (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

REPLICAS=${1:-3}
RUNS=${2:-5}
SECS=${3:-4}
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs: the fleet on one, the load on the other"; exit 1; }
for tool in taskset redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 1; }
done

cargo build --release --quiet --features redis --example nginx_444 --example loadgen
demo=target/release/examples/nginx_444
loadgen=target/release/examples/loadgen
# shellcheck source=benches/lib.sh
source benches/lib.sh

redis_port=$(free_port)
taskset -c 0 redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --loglevel warning >/dev/null 2>&1 &
pids+=($!)
wait_port "$redis_port"
redis_url="redis://127.0.0.1:$redis_port/"
rcli() { redis-cli -p "$redis_port" "$@"; }

# fleet name -> "--addr A --addr B ..."
declare -A fleet_addrs
start_fleet() { # name demo-args...
  local name=$1; shift
  local addrs="" i port
  for i in $(seq "$REPLICAS"); do
    port=$(free_port)
    taskset -c 0 "$demo" --listen "127.0.0.1:$port" --quiet "$@" >/dev/null 2>"$work/$name.$i.err" &
    pids+=($!)
    wait_port "$port"
    addrs+=" --addr 127.0.0.1:$port"
  done
  fleet_addrs[$name]=$addrs
}

start_fleet local
start_fleet shared --redis "$redis_url"
start_fleet no-check --redis "$redis_url" --redis-precheck off

stat() { # the Redis counters: script calls (one per round trip), CPU seconds
  rcli info commandstats | awk -F'[:=,]' '/^cmdstat_eval(sha)?:/ {s += $3} END {print s + 0}'
  rcli info cpu | awk -F: '/^used_cpu_(user|sys):/ {gsub("\r",""); s += $2} END {printf "%.6f\n", s}'
}

results="$work/results"
: >"$results"
echo "fleet bench: $REPLICAS replicas per fleet, $RUNS runs of ${SECS}s, $(nproc) CPUs"
for workload in light polite mixed; do
  hot=0; [ $workload = mixed ] && hot=4
  conns=16; [ $workload = light ] && conns=1
  for run in $(seq "$RUNS"); do
    for name in local shared no-check; do
      rcli flushall >/dev/null
      read -r -d '' cmds0 cpu0 < <(stat) || true
      # shellcheck disable=SC2086
      line=$(taskset -c 1 "$loadgen" --mode keepalive --conns $conns --secs "$SECS" --hot $hot \
        ${fleet_addrs[$name]})
      read -r -d '' cmds1 cpu1 < <(stat) || true
      echo "$workload $name $line redis_cmds=$((cmds1 - cmds0)) redis_cpu=$(python3 -c "print($cpu1 - $cpu0)")" >>"$results"
      echo "  $workload run $run $name: $line"
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    workload, name, *pairs = line.split()
    kv = dict(p.split("=", 1) for p in pairs)
    rows.setdefault((workload, name), []).append(kv)

def med(runs, f):
    return statistics.median(f(r) for r in runs)

print()
print("| workload | fleet | served/s | dropped/s | p50 µs | p99 µs | added p50 | added p99 "
      "| Redis round trips/request | Redis CPU µs/request | one Redis sustains req/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for workload in ("light", "polite", "mixed"):
    base = rows[(workload, "local")]
    b50 = med(base, lambda r: float(r["p50_us"]))
    b99 = med(base, lambda r: float(r["p99_us"]))
    for name in ("local", "shared", "no-check"):
        runs = rows[(workload, name)]
        secs = lambda r: float(r["secs"])
        served = med(runs, lambda r: int(r["done"]) / secs(r))
        dropped = med(runs, lambda r: int(r["dropped"]) / secs(r))
        p50 = med(runs, lambda r: float(r["p50_us"]))
        p99 = med(runs, lambda r: float(r["p99_us"]))
        sent = lambda r: max(1, int(r["done"]) + int(r["dropped"]))
        cmds = med(runs, lambda r: int(r["redis_cmds"]) / sent(r))
        cpu = med(runs, lambda r: float(r["redis_cpu"]) * 1e6 / sent(r))
        redis = name != "local"
        # Under saturation the percentiles measure queues, not Redis: the
        # added time is read from the light workload only.
        added = lambda v: f"{v:+,.0f}" if redis and workload == "light" else "-"
        print(f"| {workload} | {name} | {served:,.0f} | {dropped:,.0f} | {p50:,.0f} | {p99:,.0f} "
              f"| {added(p50 - b50)} | {added(p99 - b99)} "
              f"| {cmds:.3f} | {cpu:.1f} | "
              + (f"{1e6 / cpu:,.0f}" if redis and cpu > 0 else "-") + " |")
PY
