#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: stable across machines
# and runs, unlike time. Only the harness's measured loops are counted, after
# an uncounted warm-up; each operation runs N and 2N times and the
# difference, over N, leaves out anything a loop pays once.
#
#   bash benches/callgrind.sh [N]        # default N = 20000
#
# Prints instructions per allowed request through an axum app with the
# layer and without it, their difference (what the crate adds), and per
# decision (the layer's judgement alone, with the rate limiter). Needs
# valgrind (apt-get install valgrind); it installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
command -v valgrind >/dev/null || { echo "needs valgrind"; exit 1; }
cargo build --release --quiet --example callgrind
bin=${CARGO_TARGET_DIR:-target}/release/examples/callgrind
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
with=$(per_op with)
around=$(per_op around)
without=$(per_op without)
decision=$(per_op decision)
echo "| operation | instructions |"
echo "|---|---:|"
echo "| allowed request, app without the crate | $without |"
echo "| allowed request, layer added with Router::layer (axum boxes each route) | $with |"
echo "| what Router::layer and the layer add per allowed request | $((with - without)) |"
echo "| allowed request, layer wrapped around the Router | $around |"
echo "| what the layer adds per allowed request | $((around - without)) |"
echo "| the layer's decision alone (rules and rate limiter) | $decision |"
