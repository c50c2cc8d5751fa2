#!/usr/bin/env bash
# bench/run.sh [NAME...]: runs benchmarks (all of them, in order, without a
# name). NAME is bench/NAME.sh if it exists, else the binary
# $BENCH_BIN_DIR/NAME (built from bench/NAME.c); a binary's "name value unit"
# lines are also kept as bench/results/NAME.json. `make bench` calls this with
# NF_BIN, NF_GUEST_DIR and BENCH_BIN_DIR set; sizes come from variables
# (N=, WINDOW=, ...; see bench/README.md). One failing benchmark does not stop
# the others; the exit status says whether any failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${BENCH_BIN_DIR:=$here/../build/rel/bench}"
export BENCH_BIN_DIR
ALL=(bootstorm density scale restart overlay snapshot)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")

run_binary() {
  local name=$1 bin=$BENCH_BIN_DIR/$1 out rc
  mkdir -p "$here/results"
  local tmp
  tmp=$(mktemp)
  "$bin" 2>&1 | tee "$tmp" # (not tee /dev/stderr: that reopens and truncates a log file)
  rc=${PIPESTATUS[0]}
  out=$(cat "$tmp")
  rm -f "$tmp"
  {
    printf '{\n  "bench": "%s",\n  "date": "%s",\n  "cores": %s,\n  "lines": [' \
      "$name" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)"
    awk 'NF>=2 && $2 ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/ {
           printf "%s\n    {\"name\": \"%s\", \"value\": %s, \"unit\": \"%s\"}", (n++ ? "," : ""), $1, $2, $3 }' <<<"$out"
    printf '\n  ]\n}\n'
  } >"$here/results/$name.json"
  echo "results: $here/results/$name.json"
  return "$rc"
}

failed=()
for name in "${names[@]}"; do
  start=$SECONDS
  echo "=== bench $name"
  if [ -f "$here/$name.sh" ]; then
    bash "$here/$name.sh" || failed+=("$name")
  elif [ -x "$BENCH_BIN_DIR/$name" ]; then
    run_binary "$name" || failed+=("$name")
  else
    echo "bench: no benchmark named '$name' (no bench/$name.sh, no $BENCH_BIN_DIR/$name)" >&2
    failed+=("$name")
  fi
  echo "=== bench $name: $((SECONDS - start)) s"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed: ${failed[*]}" >&2
  exit 1
fi
