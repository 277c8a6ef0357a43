#!/usr/bin/env bash
# Reproduces the reports in this directory: ray-server (supervising llama-server with the
# fixture's `large` model) on this machine, the email workload and the short-prompts workload,
# each once directly against llama-server and once through Ray, each run on a fresh backend.
#
#   tools/llama-fixture/setup.sh && cargo build --release -p ray-server
#   examples/benchmarks/run-fixture.sh
#
# RAY_SERVER (default target/release/ray-server) and RAY_FIXTURE_CACHE (default
# ~/.cache/ray-llama-fixture) say where things are.
set -euo pipefail
cd "$(dirname "$0")/../.."

ray_server="${RAY_SERVER:-${CARGO_TARGET_DIR:-target}/release/ray-server}"
fixture="${RAY_FIXTURE_CACHE:-$HOME/.cache/ray-llama-fixture}"
config=examples/benchmarks/ray.fixture-large.json
out=examples/benchmarks
export RAY_LLAMA_CPP_BINARY_PATH="$fixture/bin/llama-server"
export RAY_MODEL_PATH="$fixture/models/ray-large.gguf"

for path in "$ray_server" "$RAY_LLAMA_CPP_BINARY_PATH" "$RAY_MODEL_PATH"; do
  [[ -e "$path" ]] || { echo "missing $path" >&2; exit 1; }
done

start() {
  "$ray_server" serve --config "$config" >"$out/.serve.log" 2>&1 &
  ray_pid=$!
  for _ in $(seq 1 300); do
    if curl -fs http://127.0.0.1:3091/readyz >/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "ray-server did not become ready; see $out/.serve.log" >&2
  kill "$ray_pid"; exit 1
}

stop() {
  kill -TERM "$ray_pid"
  wait "$ray_pid" || true
}

run() { # name, bench arguments...
  local name=$1; shift
  start
  "$ray_server" bench --config "$config" --label "$name" --output "$out/$name.json" "$@" >/dev/null
  stop
  echo "wrote $out/$name.json"
}

echo "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
run fixture-large-email-direct --direct --workload examples/workloads/email-workload.jsonl \
  --concurrency 2 --requests 32
run fixture-large-email --workload examples/workloads/email-workload.jsonl \
  --concurrency 2 --requests 32 --baseline examples/baselines/fixture-large.json
run fixture-large-short-direct --direct --workload examples/workloads/short-prompts.jsonl \
  --concurrency 2 --requests 64
run fixture-large-short --no-cache --workload examples/workloads/short-prompts.jsonl \
  --concurrency 2 --requests 64
rm -f "$out/.serve.log"
