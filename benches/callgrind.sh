#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: stable across machines
# and runs, unlike time. Only the harness's measured loops are counted, after
# an uncounted warm-up; each operation runs N and 2N times and the
# difference, over N, leaves out anything a loop pays once.
#
#   bash benches/callgrind.sh [N]        # default N = 20000
#
# Prints instructions per allowed request through an axum app (one route)
# without the crate, with the layer (wrapped around the Router, with and
# without the ClientIp extension, and added with Router::layer), with
# tower_governor alone in both placements, the same for an app answering
# from its fallback alone, and per decision (the layer's judgement alone,
# with the rate limiter; also with a peer scope, a ban list and CrowdSec's
# decisions), and per allowed keep-alive request end to end over a
# loopback socket, connection side included. Needs valgrind (apt-get install valgrind); it installs
# nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
command -v valgrind >/dev/null || { echo "needs valgrind"; exit 1; }
# The `instructions` profile (Cargo.toml): release with one codegen unit and
# LTO, so the counts do not move with how the compiler splits the code.
cargo build --profile instructions --quiet --features rustls,crowdsec --example callgrind
bin=${CARGO_TARGET_DIR:-target}/instructions/examples/callgrind
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # mode n
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure_*' \
    --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_op() { # mode
  local one two
  one=$(count "$1" "$N")
  two=$(count "$1" $((2 * N)))
  echo $(((two - one) / N))
}
without=$(per_op without)
row() { # mode label
  local n; n=$(per_op "$1")
  echo "| $2 | $n | $((n - without)) |"
}
echo "| allowed request through the same axum app | instructions | added to the app |"
echo "|---|---:|---:|"
echo "| without the crate | $without | 0 |"
row around "the layer wrapped around the Router"
row around_bare "the same, client_ip_extension(false)"
row with "the layer added with Router::layer (axum boxes each route)"
row governor_around "tower_governor alone, wrapped around the Router"
row governor "tower_governor alone, added with Router::layer"
fallback=$(per_op without_fallback)
around_fallback=$(per_op around_fallback)
echo "| an app answering from its fallback alone, without the crate | $fallback | |"
echo "| the same with the layer wrapped around it | $around_fallback | $((around_fallback - fallback)) |"
e2e_without=$(per_op e2e_without)
e2e_axum=$(per_op e2e_axum)
e2e_axum_around=$(per_op e2e_axum_around)
e2e_serve_loop=$(per_op e2e_serve_loop)
echo
echo "| allowed keep-alive request end to end, over a loopback socket | instructions | added |"
echo "|---|---:|---:|"
echo "| \`axum::serve\` and axum's listener, no crate | $e2e_without | 0 |"
echo "| the layer (\`Router::layer\`) and its listener, every timer on | $e2e_axum | $((e2e_axum - e2e_without)) |"
echo "| the same, the layer wrapped around the \`Router\` | $e2e_axum_around | $((e2e_axum_around - e2e_without)) |"
echo "| the same app in the crate's serve loop | $e2e_serve_loop | $((e2e_serve_loop - e2e_without)) |"
echo
echo "the layer's decision alone (rules and rate limiter): $(per_op decision) instructions;" \
  "for a browser's request (16 headers): $(per_op decision_browser);" \
  "with a peer scope, 10,000 bans and 100,000 CrowdSec decisions: $(per_op decision_every_rule)"
hello=$(per_op client_hello)
server_hello=$(per_op rustls_server_hello)
echo
echo "the TLS gate's read of a ClientHello (parse and JA4): $hello instructions;" \
  "rustls answering the same ClientHello as a server: $server_hello" \
  "($(python3 -c "print(f'{100 * $hello / $server_hello:.2f}')") % added)"
