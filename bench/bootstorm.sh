#!/usr/bin/env bash
# bench/bootstorm.sh: how fast N real guests come up under nervesfleet, against
# two baselines measured in the same invocation on the same host:
#   - the CPU-bound limit: one guest booted alone (naive, via storm) gives its
#     boot CPU seconds C; N guests cannot be ready before N*C/cores;
#   - the naive loop: the identical qemu command started N times at once.
# Per-guest time-to-ready counts from the start of the storm (supervisor start
# or first spawn), as a user waiting for "guest k is usable" sees it.
#
#   N=6 BATCH= bench/run.sh bootstorm
#
# Targets (issue 17): all ready <= 1.05 x the limit; p50 time-to-ready <= 0.5
# x the naive p50.
#
# PROFILE=1 (default when `perf stat` works) counts, per guest, what the lone
# guest and the naive storm's guests cost (task-clock, instructions, context
# switches, CPU migrations, page faults): the storm's extra CPU per guest is
# where contention goes (bench/README.md, "Where a storm's CPU goes").
source "$(dirname "$0")/lib.sh"
bench_init bootstorm

N=${N:-6}
BATCH=${BATCH:-}
TIMEOUT=${TIMEOUT:-900}
PROFILE=${PROFILE:-$(perf stat -e instructions true >/dev/null 2>&1 && echo 1 || echo 0)}
PERF_EVENTS=task-clock,instructions,cycles,context-switches,cpu-migrations,page-faults
batch_args=()
# perf_wrap FILE CMD...: CMD under `perf stat` (counting, inherited by its
# children) when PROFILE=1, else CMD.
perf_wrap() {
  local out=$1
  shift
  if [ "$PROFILE" = 1 ]; then
    perf stat -x, -e "$PERF_EVENTS" -o "$out" -- "$@"
  else
    "$@"
  fi
}
# perf_per FILE EVENT N: EVENT's count / N from a perf_wrap file.
# Empty when perf could not count it ("<not supported>": no hardware
# counters in this VM, so instructions and cycles stay out of the table).
perf_per() { awk -F, -v e="$2" -v n="$3" '$3 == e && $1 ~ /^[0-9.]+$/ {printf "%.1f", $1 / n}' "$1" 2>/dev/null; }
[ -n "$BATCH" ] && batch_args=(--batch "$BATCH")

mapfile -d '' NAIVE < <(naive_argv)

echo "bootstorm: N=$N on $CORES cores; single guest first (the CPU-bound limit)"
single=$(perf_wrap "$T/perf-single.csv" "$STORM" -n 1 -t "$TIMEOUT" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
  echo "bootstorm: a single guest did not become ready: $single" >&2
  cat "$T/storm.err" >&2
  exit 1
}
single_cpu=$(jget cpu_s "$single")
single_wall=$(jget all_ready_s "$single")
limit=$(calc "$single_cpu * $N / $CORES")

echo "bootstorm: nervesfleet run $N ${batch_args[*]}"
c0=$(cpu_snap)
sup_start "$N" "${batch_args[@]}" --boot-timeout "$TIMEOUT"
if ! sup_wait "all $N guests ready" "$TIMEOUT"; then
  echo "bootstorm: the fleet did not become ready; its output:" >&2
  cat "$SUP_LOG" >&2
  exit 1
fi
c1=$(cpu_snap)
sup_jiffies=$(proc_jiffies "$SUP_PID")
for p in $(sup_children); do sup_jiffies=$((sup_jiffies + $(proc_jiffies "$p" 2>/dev/null || echo 0))); done
sup_load=$(loadavg1)
sup_psi=$(psi_cpu10)
sup_all=$(sed -n "s/^\[ *\([0-9.]*\)s\] all $N guests ready.*/\1/p" "$SUP_LOG")
sup_ready=$(sed -n 's/^\[ *\([0-9.]*\)s\] vm-[0-9]* ready .*/\1/p' "$SUP_LOG")
sup_batch=$(sed -n 's/.*, \([0-9]*\) booting at once.*/\1/p' "$SUP_LOG" | head -1)
sup_failed=$(grep -c ' failed' "$SUP_LOG" || true)
sup_stop
sup_busy=$(cpu_busy_pct "$c0" "$c1")
sup_foreign=$(foreign_cores "$c0" "$c1" "$sup_jiffies")

echo "bootstorm: naive loop, $N at once"
c0=$(cpu_snap)
naive=$(perf_wrap "$T/perf-naive.csv" "$STORM" -n "$N" -t "$TIMEOUT" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
  echo "bootstorm: the naive loop did not get every guest ready: $naive" >&2
  exit 1
}
c1=$(cpu_snap)
naive_load=$(loadavg1)
naive_psi=$(psi_cpu10)
naive_busy=$(cpu_busy_pct "$c0" "$c1")
naive_all=$(jget all_ready_s "$naive")
naive_ready=$(jget ready_s "$naive")
naive_cpu_mean=$(jget cpu_s "$naive" | awk '{s+=$1} END{printf "%.3f", NR?s/NR:0}')
naive_jiffies=$(jget cpu_s "$naive" | awk -v hz="$(getconf CLK_TCK)" '{s+=$1} END{printf "%d", s*hz}')
naive_foreign=$(foreign_cores "$c0" "$c1" "$naive_jiffies")
# The limit with the cores other processes took during our storm removed.
limit_adj=$(calc "$single_cpu * $N / ($CORES - $sup_foreign > 0.1 ? $CORES - $sup_foreign : 0.1)")

s50=$(pctl 50 <<<"$sup_ready"); s90=$(pctl 90 <<<"$sup_ready"); smax=$(pctl 100 <<<"$sup_ready")
n50=$(pctl 50 <<<"$naive_ready"); n90=$(pctl 90 <<<"$naive_ready"); nmax=$(pctl 100 <<<"$naive_ready")

r=$(ratio "$sup_all" "$limit")
row "all ready vs CPU-bound limit" "$sup_all" "$limit" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" s
r=$(ratio "$sup_all" "$limit_adj")
row "all ready vs limit, contention-adjusted" "$sup_all" "$limit_adj" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" s
r=$(ratio "$sup_all" "$naive_all")
row "all ready vs naive loop" "$sup_all" "$naive_all" "$r" "-" "-" s
r=$(ratio "$s50" "$n50")
row "p50 time-to-ready" "$s50" "$n50" "$r" "<= 0.5x naive" "$(met "$r" '<=' 0.5)" s
row "p90 time-to-ready" "$s90" "$n90" "$(ratio "$s90" "$n90")" "-" "-" s
row "max time-to-ready" "$smax" "$nmax" "$(ratio "$smax" "$nmax")" "-" "-" s
row "host CPU busy during storm" "$sup_busy" "$naive_busy" "$(ratio "$sup_busy" "$naive_busy")" "-" "-" "%"
row "load avg (1 min) at all-ready" "$sup_load" "$naive_load" "$(ratio "$sup_load" "$naive_load")" "-" "-" ""
row "cores used by other processes" "$sup_foreign" "$naive_foreign" "-" "-" "-" "cores"
row "PSI cpu some avg10 at all-ready" "$sup_psi" "$naive_psi" "-" "-" "-" "%"
if [ "$PROFILE" = 1 ]; then
  # Per guest: alone (the baseline) vs in the naive storm of N. Every guest
  # runs until the last is ready, so a guest that is ready early adds its
  # idle CPU meanwhile.
  for ev in task-clock instructions cycles context-switches cpu-migrations page-faults; do
    a=$(perf_per "$T/perf-single.csv" "$ev" 1)
    b=$(perf_per "$T/perf-naive.csv" "$ev" "$N")
    [ -n "$a" ] && [ -n "$b" ] && row "per guest in naive storm: $ev" "$b" "$a" "$(ratio "$b" "$a")" "-" "-" "(baseline: alone)"
  done
fi
print_table "N=$N, batch $sup_batch, $CORES cores; single guest: ${single_wall}s wall, ${single_cpu} CPU s; naive mean boot CPU ${naive_cpu_mean} s"

arr() { tr '\n' ' ' <<<"$1" | sed 's/ *$//; s/ /, /g'; }
jfield n "$N"
jfield batch "$(jnum "$sup_batch")"
jfield single_guest "{\"wall_s\": $single_wall, \"cpu_s\": $single_cpu}"
jfield cpu_bound_limit_s "$limit"
jfield cpu_bound_limit_adjusted_s "$limit_adj"
jfield nervesfleet "{\"all_ready_s\": $sup_all, \"ready_s\": [$(arr "$sup_ready")], \"failed_lines\": $sup_failed, \"host_busy_pct\": $sup_busy, \"load1\": $sup_load, \"psi_cpu_avg10\": $sup_psi, \"foreign_cores\": $sup_foreign, \"stop_s\": $SUP_STOP_S, \"exit\": $SUP_RC}"
jfield naive "{\"all_ready_s\": $naive_all, \"ready_s\": [$(arr "$naive_ready")], \"mean_boot_cpu_s\": $naive_cpu_mean, \"host_busy_pct\": $naive_busy, \"load1\": $naive_load, \"psi_cpu_avg10\": $naive_psi, \"foreign_cores\": $naive_foreign}"
write_json
