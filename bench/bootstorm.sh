#!/usr/bin/env bash
# bench/bootstorm.sh: how fast N real guests come up under nervesfleet, against
# two baselines measured in the same invocation on the same host:
#   - the CPU-bound limit: one guest booted alone (naive, via storm) gives its
#     boot CPU seconds C; N guests cannot be ready before N*C/cores. C is
#     measured twice: back to back (the boot gets the pages the one before
#     freed) and on settled memory (host_memory_settle first), which is what
#     a fleet's guests get: the cold-boot limit;
#   - the naive loop: the identical qemu command started N times at once.
# Per-guest time-to-ready counts from the start of the storm (supervisor start
# or first spawn), as a user waiting for "guest k is usable" sees it.
#
#   N=6 BATCH= bench/run.sh bootstorm
#   N=20 REPEAT=2 VARIANTS="off:--ready-sched normal;idle:--ready-sched idle" \
#     bench/run.sh bootstorm    # A/B: off idle off idle, one table per run
#
# A/B levers: VARIANTS lists label:run-options entries separated by ';', each
# run REPEAT times alternating, so every variant sees the same mix of other
# people's load (this host is shared); a table gives every run's ratio to
# its own contention-adjusted limit, and each variant's means.
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
# Empty too when the file is not there (the naive loop was not run).
perf_per() {
  [ -f "$1" ] || return 0
  awk -F, -v e="$2" -v n="$3" '$3 == e && $1 ~ /^[0-9.]+$/ {printf "%.1f", $1 / n}' "$1" 2>/dev/null
}
[ -n "$BATCH" ] && batch_args=(--batch "$BATCH")

mapfile -d '' NAIVE < <(naive_argv)

# single_guest PERF_FILE: one guest alone, SINGLE_RUNS times; prints the
# median of its boot CPU seconds and of its wall seconds. Run before and
# after the fleets: the limit takes the mean, so a change in other people's
# load during the invocation weighs on both sides. (One boot alone varied by
# up to 20 % between runs minutes apart on this shared host: 1.28-1.57 s.)
#
# single_guest PERF_FILE cold: the same, each boot after host_memory_settle.
# Back to back, a lone guest gets the pages the one before it freed a second
# earlier; a fleet's guests cannot (N x 100+ MiB), and where the host reports
# free pages to its hypervisor each fresh page is faulted in again there. On
# this VM a cold boot costs ~15-30 % more CPU (bench/README.md, sixth pass).
SINGLE_RUNS=${SINGLE_RUNS:-3}
single_guest() {
  local out cpus=() walls=() i
  for ((i = 0; i < SINGLE_RUNS; i++)); do
    [ "${2:-}" = cold ] && host_memory_settle
    out=$(perf_wrap "$1" "$STORM" -n 1 -t "$TIMEOUT" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
      echo "bootstorm: a single guest did not become ready: $out" >&2
      cat "$T/storm.err" >&2
      exit 1
    }
    cpus+=("$(jget cpu_s "$out")") walls+=("$(jget all_ready_s "$out")")
  done
  echo "$(printf '%s\n' "${cpus[@]}" | pctl 50) $(printf '%s\n' "${walls[@]}" | pctl 50)"
}
# core_pair: as many guests as cores, at once: their mean boot CPU. Not the
# limit (that is one guest alone), but what the host gives when every core
# boots a guest; on this VM its two vCPUs boot two guests at 1.02-1.16x the
# CPU of one alone, depending on where the hypervisor puts them.
core_pair() {
  local out
  out=$("$STORM" -n "$CORES" -t "$TIMEOUT" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
    echo "bootstorm: $CORES guests at once did not all become ready: $out" >&2
    exit 1
  }
  jget cpu_s "$out" | awk '{s+=$1} END{printf "%.3f", NR?s/NR:0}'
}
# The price of memory. The limit counts what one guest's boot costs, but a
# fleet also holds N guests' memory at once: where this host is a VM whose
# kernel reports free pages to its hypervisor (page_reporting), every page
# the fleet takes beyond what the host last freed faults in there too, at
# several times a warm page's CPU (bench/README.md, twelfth pass).
# touch-memory measures both prices after the host has settled: they go
# into the table's heading and the JSON, so a ratio can be read against them.
#
# MEMORY=warm (root, a kernel with page_reporting): the host keeps the
# memory it frees for the whole run (page_reporting_order above the
# largest order: nothing is reported; the setting comes back at exit), and
# the memory the fleet will hold (N x 200 MiB, at most MemAvailable less
# 2 GiB) is faulted in once before anything boots, so that the lone guest
# and every guest of the fleet get pages on the same terms, as the
# seventh to ninth passes arranged by hand. MEMORY=as-is (default): the
# host as found.
MEMORY=${MEMORY:-as-is}
TOUCH=$BENCH_BIN_DIR/touch-memory
REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
case $MEMORY in
as-is) ;;
warm)
  if [ ! -w "$REPORTING" ]; then
    echo "bootstorm: MEMORY=warm needs root and a kernel with free page reporting ($REPORTING); run as root, or MEMORY=as-is" >&2
    exit 2
  fi
  BENCH_RESTORE="echo $(cat "$REPORTING") >$REPORTING"
  echo 11 >"$REPORTING"
  warm_mib=$((N * 200))
  avail_mib=$(($(mem_available_kib) / 1024 - 2048))
  [ "$warm_mib" -gt "$avail_mib" ] && warm_mib=$avail_mib
  echo "bootstorm: MEMORY=warm: free page reporting held (order 11), faulting in $warm_mib MiB"
  [ "$warm_mib" -gt 0 ] && "$TOUCH" "$warm_mib" >/dev/null
  ;;
*)
  echo "bootstorm: MEMORY=$MEMORY: expected as-is or warm" >&2
  exit 2
  ;;
esac
host_memory_settle
# 2 GiB: past the few hundred MiB the host holds unreported after settling.
touch_mib=$(($(mem_available_kib) / 4096))
[ "$touch_mib" -gt 2048 ] && touch_mib=2048
touch_probe=$("$TOUCH" "$touch_mib")
touch_first=$(jget first_us_per_page "$touch_probe")
touch_second=$(jget second_us_per_page "$touch_probe")

echo "bootstorm: N=$N on $CORES cores; single guest first (the CPU-bound limit), $SINGLE_RUNS runs back to back, $SINGLE_RUNS on settled memory"
r=$(single_guest "$T/perf-single.csv")
read -r single_cpu0 single_wall <<<"$r"
r=$(single_guest "$T/perf-single-cold.csv" cold)
read -r cold_cpu0 _ <<<"$r"
pair_cpu0=$(core_pair)

# fleet_run LABEL [run options...]: one `nervesfleet run N` storm, its
# numbers kept under index $RUNS in the RUN_* arrays.
RUNS=0
IDLE_S=${IDLE_S:-5}
declare -a RUN_ANON RUN_PRICE RUN_BURST RUN_WAITPCT RUN_BOOT_FIRST RUN_BOOT_LAST RUN_HUNG RUN_IDLE RUN_RIDLE RUN_LABEL RUN_ALL RUN_READY RUN_BATCH RUN_FAILED RUN_BUSY RUN_FOREIGN RUN_LOAD RUN_PSI RUN_CPU RUN_STOP RUN_RC
fleet_run() {
  local label=$1 c0 c1 jiffies p
  shift
  echo "bootstorm: nervesfleet run $N ${batch_args[*]} $* ($label)"
  # On settled memory, as the cold lone guest: none of the fleet's guests
  # gets pages freed by the run before.
  host_memory_settle
  c0=$(cpu_snap)
  sup_start "$N" "${batch_args[@]}" "$@" --boot-timeout "$TIMEOUT"
  # Each guest's CPU when its ready line arrives: what it burns from then to
  # the last guest's ready is the idle cost of ready guests during the storm.
  local -A at_ready=() ready_us=()
  local -a boot_seq=()
  local j anon anon_sum=0
  local pid_re='[(]pid ([0-9]+)'
  while :; do
    if ! sup_wait "vm-[0-9]+ ready .*[(]pid [0-9]+|all $N guests ready" "$TIMEOUT"; then
      echo "bootstorm: the fleet did not become ready; its output:" >&2
      cat "$SUP_LOG" >&2
      exit 1
    fi
    [[ $SUP_LINE =~ $pid_re ]] || break
    # Its CPU and the anonymous memory it holds (KiB).
    read -r j anon < <(proc_jiffies_anon "${BASH_REMATCH[1]}")
    at_ready[${BASH_REMATCH[1]}]=${j:-0}
    anon_sum=$((anon_sum + ${anon:-0}))
    ready_us[${BASH_REMATCH[1]}]=$SUP_LINE_US
    boot_seq+=("${at_ready[${BASH_REMATCH[1]}]}")
  done
  # Boot CPU (its qemu's CPU at its ready line) of the first and the last
  # tenth of the guests to be ready: does a boot cost more as ready guests
  # pile up around it?
  local tenth=$(((${#boot_seq[@]} + 9) / 10)) hz
  hz=$(getconf CLK_TCK)
  RUN_BOOT_FIRST[$RUNS]=$(printf '%s\n' "${boot_seq[@]:0:$tenth}" | awk -v hz="$hz" '{s+=$1} END{printf "%.3f", NR?s/NR/hz:0}')
  RUN_BOOT_LAST[$RUNS]=$(printf '%s\n' "${boot_seq[@]: -$tenth}" | awk -v hz="$hz" '{s+=$1} END{printf "%.3f", NR?s/NR/hz:0}')
  c1=$(cpu_snap)
  jiffies=$(proc_jiffies "$SUP_PID")
  local ready_idle=0 pj fit=
  now_us
  for p in $(sup_children); do
    pj=$(proc_jiffies "$p" 2>/dev/null || echo 0)
    jiffies=$((jiffies + pj))
    if [ -n "${at_ready[$p]:-}" ]; then
      ready_idle=$((ready_idle + pj - at_ready[$p]))
      fit+="$(((NOW_US - ready_us[$p]) / 1000)) $((pj - at_ready[$p]))"$'\n'
    fi
  done
  RUN_RIDLE[$RUNS]=$(calc "100 * $ready_idle / ($jiffies > 0 ? $jiffies : 1)")
  # What a ready guest burns until the last is ready, fitted over the guests
  # as a + b x (how long it waited): a, what it spends once after its ready
  # line (ms); b, its rate while it waits (% of a core).
  read -r RUN_BURST[$RUNS] RUN_WAITPCT[$RUNS] < <(awk -v hz="$hz" '
    NF == 2 { x = $1 / 1000; y = $2 / hz; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
    END {
      d = n * sxx - sx * sx
      if (n < 3 || d == 0) { print "null null"; exit }
      b = (n * sxy - sx * sy) / d; a = (sy - b * sx) / n
      printf "%.1f %.3f\n", a * 1000, b * 100
    }' <<<"$fit")
  RUN_LABEL[$RUNS]=$label
  # Anonymous memory a guest holds at its ready line (MiB), and what faulting
  # it in costs at the price touch-memory measured (CPU-s a guest; the lone
  # guest back to back pays about the second price, a fleet's the first).
  local guests=$((${#boot_seq[@]} > 0 ? ${#boot_seq[@]} : 1))
  RUN_ANON[$RUNS]=$(calc "$anon_sum / 1024 / $guests")
  RUN_PRICE[$RUNS]=$(calc "$anon_sum / 4 / $guests * ($touch_first - $touch_second) / 1000000")
  RUN_LOAD[$RUNS]=$(loadavg1)
  RUN_PSI[$RUNS]=$(psi_cpu10)
  RUN_ALL[$RUNS]=$(sed -n "s/^\[ *\([0-9.]*\)s\] all $N guests ready.*/\1/p" "$SUP_LOG")
  RUN_READY[$RUNS]=$(sed -n 's/^\[ *\([0-9.]*\)s\] vm-[0-9]* ready .*/\1/p' "$SUP_LOG")
  RUN_BATCH[$RUNS]=$(sed -n 's/.*, \([0-9]*\) booting at once.*/\1/p' "$SUP_LOG" | head -1)
  RUN_FAILED[$RUNS]=$(grep -c ' failed' "$SUP_LOG" || true)
  # Guests the health checks gave up on during the storm (a starved guest
  # missing its heartbeat shows here).
  RUN_HUNG[$RUNS]=$(grep -c '^\[ *[0-9.]*s\] vm-[0-9]* unhealthy' "$SUP_LOG" || true)
  # CPU per guest, qemu and supervisor, from the storm's start to all ready.
  RUN_CPU[$RUNS]=$(calc "$jiffies / $(getconf CLK_TCK) / $N")
  # What a ready guest costs once the storm is over (% of a core).
  j0=$(sup_children | procs_jiffies)
  sleep "$IDLE_S"
  j1=$(sup_children | procs_jiffies)
  RUN_IDLE[$RUNS]=$(calc "100 * ($j1 - $j0) / $(getconf CLK_TCK) / $IDLE_S / $N")
  sup_stop
  RUN_STOP[$RUNS]=$SUP_STOP_S
  RUN_RC[$RUNS]=$SUP_RC
  RUN_BUSY[$RUNS]=$(cpu_busy_pct "$c0" "$c1")
  RUN_FOREIGN[$RUNS]=$(foreign_cores "$c0" "$c1" "$jiffies")
  RUNS=$((RUNS + 1))
}

# VARIANTS="label:run options;label:run options" (A/B levers), each run
# REPEAT times, alternating (A B A B), so that every variant sees the same
# mix of other people's load; the first variant is the main table's.
VARIANTS=${VARIANTS:-"default:"}
REPEAT=${REPEAT:-1}
IFS=';' read -r -a variant_list <<<"$VARIANTS"
for ((rep = 0; rep < REPEAT; rep++)); do
  for v in "${variant_list[@]}"; do
    read -r -a vargs <<<"${v#*:}"
    fleet_run "${v%%:*}" "${vargs[@]}"
  done
done
sup_all=${RUN_ALL[0]} sup_ready=${RUN_READY[0]} sup_batch=${RUN_BATCH[0]} sup_failed=${RUN_FAILED[0]}
sup_busy=${RUN_BUSY[0]} sup_foreign=${RUN_FOREIGN[0]} sup_load=${RUN_LOAD[0]} sup_psi=${RUN_PSI[0]}
SUP_STOP_S=${RUN_STOP[0]} SUP_RC=${RUN_RC[0]}

echo "bootstorm: single guest again"
r=$(single_guest "$T/perf-single-2.csv")
read -r single_cpu1 _ <<<"$r"
r=$(single_guest "$T/perf-single-cold-2.csv" cold)
read -r cold_cpu1 _ <<<"$r"
single_cpu=$(calc "($single_cpu0 + $single_cpu1) / 2")
cold_cpu=$(calc "($cold_cpu0 + $cold_cpu1) / 2")
limit=$(calc "$single_cpu * $N / $CORES")
pair_cpu=$(calc "($pair_cpu0 + $(core_pair)) / 2")

# The naive loop holds N booting qemu at once (~180 MiB each while they
# boot, no KSM): on a shared host, NAIVE_RUN=auto skips it when that would
# take more than half of MemAvailable, rather than push everyone into OOM.
NAIVE_RUN=${NAIVE_RUN:-auto}
if [ "$NAIVE_RUN" = auto ]; then
  NAIVE_RUN=$([ $((N * 180 * 1024)) -lt $(($(mem_available_kib) / 2)) ] && echo 1 || echo 0)
fi
naive_load=null naive_psi=null naive_busy=null naive_all=null naive_ready= naive_cpu_mean=null
naive_foreign=null
if [ "$NAIVE_RUN" = 1 ]; then
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
else
  echo "bootstorm: naive loop of $N not run (NAIVE_RUN=0, or $N x 180 MiB > half of MemAvailable)"
fi
# The limit with the cores other processes took during our storm removed.
limit_adj=$(calc "$single_cpu * $N / ($CORES - $sup_foreign > 0.1 ? $CORES - $sup_foreign : 0.1)")
limit_cold_adj=$(calc "$cold_cpu * $N / ($CORES - $sup_foreign > 0.1 ? $CORES - $sup_foreign : 0.1)")

s50=$(pctl 50 <<<"$sup_ready"); s90=$(pctl 90 <<<"$sup_ready"); smax=$(pctl 100 <<<"$sup_ready")
n50=$(pctl 50 <<<"$naive_ready"); n90=$(pctl 90 <<<"$naive_ready"); nmax=$(pctl 100 <<<"$naive_ready")

r=$(ratio "$sup_all" "$limit")
row "all ready vs CPU-bound limit" "$sup_all" "$limit" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" s
r=$(ratio "$sup_all" "$limit_adj")
row "all ready vs limit, contention-adjusted" "$sup_all" "$limit_adj" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" s
r=$(ratio "$sup_all" "$limit_cold_adj")
row "all ready vs cold-boot limit, adjusted" "$sup_all" "$limit_cold_adj" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" s
# The same limit from CORES guests booting at once (one a core): what this
# host's cores give together, the contention no launcher can avoid.
r=$(ratio "$sup_all" "$(calc "$pair_cpu * $N / ($CORES - $sup_foreign > 0.1 ? $CORES - $sup_foreign : 0.1)")")
row "all ready vs $CORES-at-once limit, adjusted" "$sup_all" "$(calc "$pair_cpu * $N / ($CORES - $sup_foreign > 0.1 ? $CORES - $sup_foreign : 0.1)")" "$r" "-" "-" s
r=$(ratio "$sup_all" "$naive_all")
row "all ready vs naive loop" "$sup_all" "$naive_all" "$r" "-" "-" s
r=$(ratio "$s50" "$n50")
row "p50 time-to-ready" "$s50" "$n50" "$r" "<= 0.5x naive" "$(met "$r" '<=' 0.5)" s
# A naive storm's guests progress together and finish near its end, which
# cannot come before the limit: p50 against the limit when naive was not run.
row "p50 time-to-ready vs adjusted limit" "$s50" "$limit_adj" "$(ratio "$s50" "$limit_adj")" "-" "-" s
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
print_table "N=$N, batch $sup_batch, $CORES cores; single guest: ${single_wall}s wall, ${single_cpu0} / ${single_cpu1} CPU s back to back, ${cold_cpu0} / ${cold_cpu1} on settled memory (before / after, medians of $SINGLE_RUNS); $CORES at once: ${pair_cpu} CPU s each; naive mean boot CPU ${naive_cpu_mean} s; memory $MEMORY, a page's first touch ${touch_first} us of CPU, second ${touch_second} us"

# mean X...: of the numeric ones ("null" when none).
mean() { awk 'BEGIN{for (i = 1; i < ARGC; i++) if (ARGV[i] ~ /^[0-9.]+$/) {s += ARGV[i]; n++}
  if (n) printf "%.2f", s / n; else printf "null"}' "$@"; }
# Every fleet run, then each variant's means. The ratio to the limit splits
# into CPU per guest (fleet / alone: what contention costs per boot) over
# the share of the cores left to us that the fleet kept busy.
if [ "$RUNS" -ge 1 ]; then
  declare -A V_RATIO V_COLD V_P50 V_P50L
  lines=$(printf 'run\tvariant\tall ready s\tlimit adj s\tratio\tcold ratio\tp50 s\tp50/naive\tCPU/guest s\tvs alone\tcores used\tforeign\tload1\tidle/guest pct\tready CPU pct\tp50/limit\tunhealthy\tboot CPU first/last tenth s\tready: once ms + waiting pct\tanon MiB at ready\tfirst-touch price s')
  for ((i = 0; i < RUNS; i++)); do
    la=$(calc "$single_cpu * $N / ($CORES - ${RUN_FOREIGN[$i]} > 0.1 ? $CORES - ${RUN_FOREIGN[$i]} : 0.1)")
    r=$(ratio "${RUN_ALL[$i]}" "$la")
    rc=$(ratio "${RUN_ALL[$i]}" "$(calc "$cold_cpu * $N / ($CORES - ${RUN_FOREIGN[$i]} > 0.1 ? $CORES - ${RUN_FOREIGN[$i]} : 0.1)")")
    V_COLD[${RUN_LABEL[$i]}]+="$rc "
    p=$(pctl 50 <<<"${RUN_READY[$i]}")
    pr=$(ratio "$p" "$n50")
    used=$(calc "${RUN_CPU[$i]} * $N / ${RUN_ALL[$i]}")
    V_RATIO[${RUN_LABEL[$i]}]+="$r "
    V_P50[${RUN_LABEL[$i]}]+="$pr "
    pl=$(ratio "$p" "$la")
    V_P50L[${RUN_LABEL[$i]}]+="$pl "
    lines+=$'\n'$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$((i + 1))" "${RUN_LABEL[$i]}" \
      "${RUN_ALL[$i]}" "$la" "$r" "$rc" "$p" "$pr" "${RUN_CPU[$i]}" "$(ratio "${RUN_CPU[$i]}" "$single_cpu")" \
      "$used" "${RUN_FOREIGN[$i]}" "${RUN_LOAD[$i]}" "${RUN_IDLE[$i]}" "${RUN_RIDLE[$i]}" "$pl" "${RUN_HUNG[$i]}" "${RUN_BOOT_FIRST[$i]} / ${RUN_BOOT_LAST[$i]}" \
      "${RUN_BURST[$i]} + ${RUN_WAITPCT[$i]}" "${RUN_ANON[$i]}" "${RUN_PRICE[$i]}")
  done
  column -t -s $'\t' <<<"$lines"
  printf '\n'
  {
    printf 'variant\truns\tmean ratio to adjusted limit\tmean ratio to cold-boot limit\tmean p50/naive\tmean p50/limit\n'
    for v in "${variant_list[@]}"; do
      l=${v%%:*}
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$(wc -w <<<"${V_RATIO[$l]}")" \
        "$(mean ${V_RATIO[$l]})" "$(mean ${V_COLD[$l]})" "$(mean ${V_P50[$l]})" "$(mean ${V_P50L[$l]})"
    done
  } | column -t -s $'\t'
fi

arr() { tr '\n' ' ' <<<"$1" | sed 's/ *$//; s/ /, /g'; }
jfield n "$N"
jfield memory "{\"mode\": $(jstr "$MEMORY"), \"touch\": $touch_probe}"
jfield batch "$(jnum "$sup_batch")"
jfield single_guest "{\"wall_s\": $single_wall, \"cpu_s\": $single_cpu, \"cpu_s_before\": $single_cpu0, \"cpu_s_after\": $single_cpu1, \"cold_cpu_s\": $cold_cpu, \"cold_cpu_s_before\": $cold_cpu0, \"cold_cpu_s_after\": $cold_cpu1, \"runs\": $SINGLE_RUNS, \"cores_at_once_cpu_s\": $pair_cpu}"
runs=
for ((i = 0; i < RUNS; i++)); do
  runs+="${runs:+, }{\"variant\": $(jstr "${RUN_LABEL[$i]}"), \"all_ready_s\": ${RUN_ALL[$i]}, \"ready_s\": [$(arr "${RUN_READY[$i]}")], \"cpu_per_guest_s\": ${RUN_CPU[$i]}, \"foreign_cores\": ${RUN_FOREIGN[$i]}, \"idle_pct_per_guest\": ${RUN_IDLE[$i]}, \"ready_cpu_pct\": ${RUN_RIDLE[$i]}, \"unhealthy\": ${RUN_HUNG[$i]}, \"boot_cpu_first_tenth_s\": ${RUN_BOOT_FIRST[$i]}, \"boot_cpu_last_tenth_s\": ${RUN_BOOT_LAST[$i]}, \"ready_once_ms\": ${RUN_BURST[$i]}, \"ready_waiting_pct\": ${RUN_WAITPCT[$i]}, \"anon_mib_at_ready\": ${RUN_ANON[$i]}, \"first_touch_price_s\": ${RUN_PRICE[$i]}, \"load1\": ${RUN_LOAD[$i]}, \"batch\": $(jnum "${RUN_BATCH[$i]}")}"
done
jfield runs "[$runs]"
jfield cpu_bound_limit_s "$limit"
jfield cpu_bound_limit_adjusted_s "$limit_adj"
jfield cold_boot_limit_adjusted_s "$limit_cold_adj"
jfield nervesfleet "{\"all_ready_s\": $sup_all, \"ready_s\": [$(arr "$sup_ready")], \"failed_lines\": $sup_failed, \"host_busy_pct\": $sup_busy, \"load1\": $sup_load, \"psi_cpu_avg10\": $sup_psi, \"foreign_cores\": $sup_foreign, \"stop_s\": $SUP_STOP_S, \"exit\": $SUP_RC}"
jfield naive "{\"all_ready_s\": $naive_all, \"ready_s\": [$(arr "$naive_ready")], \"mean_boot_cpu_s\": $naive_cpu_mean, \"host_busy_pct\": $naive_busy, \"load1\": $naive_load, \"psi_cpu_avg10\": $naive_psi, \"foreign_cores\": $naive_foreign}"
write_json
