#!/usr/bin/env bash
# bench/density.sh: host memory per idle guest, in one invocation, for
#   naive    the same qemu command N times at once (bench/storm), without our
#            levers: tb-size=32, no nokaslr, host THP as found, no KSM;
#   default  `nervesfleet run N` (as root with N >= 8 that includes KSM);
#   dense    `nervesfleet run N --dense`.
# Each side boots N guests, waits until all are ready (the boot-storm time),
# leaves them idle for SETTLE seconds, then sums the qemu processes' PSS
# (smaps_rollup: pages shared between guests, KSM-merged ones included, count
# once) and RSS, and notes the host's MemAvailable drop, KSM's saving (the
# change in pages_sharing + ksm_zero_pages) and guests lost (not ready, or
# restarted). Targets (issue 12): default <= 0.5x naive, dense <= 0.35x.
#
#   N=8 SETTLE=90 bench/run.sh density        (make bench BENCH=density N=8)
#   AUTO=1 adds a side: --dense --balloon-policy auto
#   FIND_MAX=1 [DENSE=1] [START=16 STEP=16 MAX_N=300] bench/run.sh density
#
# --find-max (or FIND_MAX=1): grows one fleet (`scale`) until a guest fails
# or is not ready, or host MemAvailable drops under 10 %, then stops it in
# order and prints the largest healthy N.
#
# PSS hardly moves with CPU load; boot-storm times do (the host is shared),
# so only their ratios within one invocation mean anything.
source "$(dirname "$0")/lib.sh"
bench_init density

N=${N:-8}
SETTLE=${SETTLE:-90}
TIMEOUT=${TIMEOUT:-900}
FIND_MAX=${FIND_MAX:-0}
[ "${1:-}" = "--find-max" ] && FIND_MAX=1
PAGE_KIB=$(($(getconf PAGESIZE) / 1024))

ksm_pages() { echo $(($(cat /sys/kernel/mm/ksm/pages_sharing 2>/dev/null || echo 0) + $(cat /sys/kernel/mm/ksm/ksm_zero_pages 2>/dev/null || echo 0))); }
ksm_scans() { cat /sys/kernel/mm/ksm/full_scans 2>/dev/null || echo 0; }
jget_ksm_fleet() { python3 -c 'import json,sys; print(1 if json.load(sys.stdin)["ksm"].get("fleet_uses") else 0)'; }
mem_total_kib() { awk '/^MemTotal:/{print $2}' /proc/meminfo; }
nf() { "$NF_BIN" "$@" --name "nfb-${BENCH_NAME}"; }

# The naive baseline: the supervisor's own qemu command (lib.sh naive_argv)
# with our levers taken back out (the guest's free page reporting back at the
# kernel's 2 MiB order; the environment qemu gets from us is never in it), and
# `-machine mem-merge=off`: it stands
# for a host whose KSM is off, as Debian ships it, even when someone else on
# this shared host has KSM running (qemu marks guest RAM mergeable).
naive_nolevers() {
  local w
  while IFS= read -r -d '' w; do
    case $w in
      tcg,tb-size=*) w=tcg,tb-size=32 ;;
      console=ttyAMA0*) w="${w/ nokaslr/} nf.report_order=9" ;;
    esac
    printf '%s\0' "$w"
  done < <(naive_argv)
  printf '%s\0' -machine mem-merge=off
}

# side_fleet LABEL [run options]: boots, settles, samples, stops; sets
# R_<LABEL>_{pss,rss,avail,ksm,boot,lost} (KiB, s, count).
side_fleet() {
  local label=$1 t0 mem0 ksm0 rss=0 pss=0 p lost
  shift
  echo "density: nervesfleet run $N $* ($label), then $SETTLE s idle"
  mem0=$(mem_available_kib)
  ksm0=$(ksm_pages)
  now_us
  t0=$NOW_US
  sup_start "$N" --boot-timeout "$TIMEOUT" "$@"
  if ! sup_wait "all $N guests ready" "$TIMEOUT"; then
    echo "density: the fleet ($label) did not become ready; its output:" >&2
    cat "$SUP_LOG" >&2
    exit 1
  fi
  local boot=$(us_to_s $((SUP_LINE_US - t0)))
  local scans0 waited=$SETTLE
  scans0=$(ksm_scans)
  sup_wait '^\0never' "$SETTLE" || true # the settle window (and keep reading its output)
  # KSM merges a page after seeing it unchanged over a few full scans; ksmd
  # runs at nice 5, so on a loaded host a scan takes minutes, not the ~10 s
  # it is sized for. Sample once it has done KSM_SCANS since all were ready
  # (up to SETTLE_MAX s), so the figure is the fleet's steady state.
  while [ "$(nf mem --json | jget_ksm_fleet)" = 1 ] && [ $(($(ksm_scans) - scans0)) -lt "${KSM_SCANS:-3}" ] &&
    [ "$waited" -lt "${SETTLE_MAX:-600}" ]; do
    sup_wait '^\0never' 10 || true
    waited=$((waited + 10))
  done
  echo "density: $label sampled $waited s after all ready ($(($(ksm_scans) - scans0)) KSM full scans)"
  kill -0 "$SUP_PID" || { echo "density: the supervisor died" >&2; cat "$SUP_LOG" >&2; exit 1; }
  for p in $(sup_children); do
    rss=$((rss + $(rss_kib "$p"))) pss=$((pss + $(pss_kib "$p")))
  done
  lost=$(nf ps --json | python3 -c 'import json,sys; d=json.load(sys.stdin)
print(sum(1 for g in d["guests"] if g["state"]!="ready") + sum(g["restarts"] for g in d["guests"]))')
  nf mem --json >"$RESULTS_DIR/density-$label-mem.json" || true
  eval "R_${label}_pss=$pss R_${label}_rss=$rss R_${label}_boot=$boot R_${label}_lost=$lost R_${label}_settle=$waited"
  eval "R_${label}_avail=$((mem0 - $(mem_available_kib)))"
  eval "R_${label}_ksm=$((($(ksm_pages) - ksm0) * PAGE_KIB))"
  sup_stop
}

side_naive() {
  local mem0 ksm0 res
  echo "density: naive loop, $N at once, then $SETTLE s idle"
  mapfile -d '' NAIVE < <(naive_nolevers)
  mem0=$(mem_available_kib)
  ksm0=$(ksm_pages)
  res=$("$STORM" -n "$N" -t "$TIMEOUT" -s "$SETTLE" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
    echo "density: the naive loop did not get every guest ready: $res" >&2
    exit 1
  }
  R_naive_pss=$(jget pss_kib "$res") R_naive_rss=$(jget rss_kib "$res")
  R_naive_boot=$(jget all_ready_s "$res") R_naive_lost=$((N - $(jget ready "$res")))
  R_naive_avail=$((mem0 - $(jget mem_available_kib "$res")))
  R_naive_ksm=$((($(ksm_pages) - ksm0) * PAGE_KIB))
  R_naive_settle=$SETTLE
}

find_max() {
  local start=${START:-16} step=${STEP:-16} max=${MAX_N:-300} n healthy=0 why="" dense=()
  [ "${DENSE:-0}" = 1 ] && dense=(--dense)
  local total avail
  total=$(mem_total_kib)
  echo "density --find-max: grow by $step from $start up to $MAX_N ${dense[*]}"
  n=$start
  sup_start "$n" --boot-timeout "$TIMEOUT" "${dense[@]}"
  if ! sup_wait "all $n guests ready" "$TIMEOUT"; then
    why="the first $n guests did not all become ready"
  fi
  while [ -z "$why" ]; do
    # One health-probe period and a bit, so a sick guest shows.
    sup_wait '^\0never' "${SETTLE_STEP:-25}" || true
    kill -0 "$SUP_PID" || { why="the supervisor died"; break; }
    local bad
    bad=$(nf ps --json | python3 -c 'import json,sys; d=json.load(sys.stdin)
print(sum(1 for g in d["guests"] if g["state"]!="ready") + sum(g["restarts"] for g in d["guests"]))')
    avail=$(mem_available_kib)
    echo "density --find-max: N=$n ready, not-ready/restarted $bad, MemAvailable $((avail / 1024)) MiB ($((100 * avail / total)) %)"
    if [ "$bad" != 0 ]; then why="$bad guest(s) not ready or restarted at N=$n"; break; fi
    if [ $((100 * avail / total)) -lt 10 ]; then why="MemAvailable under 10 % at N=$n"; break; fi
    healthy=$n
    [ "$n" -ge "$max" ] && { why="reached MAX_N=$max"; break; }
    n=$((n + step > max ? max : n + step))
    if ! nf scale "$n" --wait --timeout "$TIMEOUT" >/dev/null; then
      why="scale to $n did not get every guest ready"
    fi
  done
  sup_stop 300
  echo "density --find-max: largest healthy N = $healthy ($why); supervisor exit $SUP_RC"
  jfield find_max "{\"largest_healthy_n\": $healthy, \"stopped_because\": $(jstr "$why"), \"dense\": ${DENSE:-0}, \"step\": $step, \"exit\": $SUP_RC}"
  row "largest healthy N" "$healthy" "-" "-" ">= 300" "$(met "$healthy" '>=' 300)" guests
  print_table "find-max, 128M guests, $CORES cores"
  write_json
}

if [ "$FIND_MAX" = 1 ]; then
  find_max
  exit 0
fi

side_naive
side_fleet default
side_fleet dense --dense
SIDES="default dense"
# AUTO=1: also --dense with the balloon policy shrinking idle guests.
if [ "${AUTO:-0}" = 1 ]; then
  side_fleet dense_auto --dense --balloon-policy auto
  SIDES="$SIDES dense_auto"
fi

per() { calc "($1) / $N / 1024"; }
n_pss=$(per "$R_naive_pss")
for s in $SIDES; do
  eval "pss=\$R_${s}_pss rss=\$R_${s}_rss avail=\$R_${s}_avail ksm=\$R_${s}_ksm boot=\$R_${s}_boot lost=\$R_${s}_lost settle=\$R_${s}_settle"
  tgt=0.5
  [ "$s" != default ] && tgt=0.35
  r=$(ratio "$(per "$pss")" "$n_pss")
  row "$s: qemu PSS per guest" "$(per "$pss")" "$n_pss" "$r" "<= ${tgt}x" "$(met "$r" '<=' "$tgt")" MiB
  row "$s: host MemAvailable drop per guest" "$(per "$avail")" "$(per "$R_naive_avail")" \
    "$(ratio "$(per "$avail")" "$(per "$R_naive_avail")")" "-" "-" MiB
  row "$s: qemu RSS per guest" "$(per "$rss")" "$(per "$R_naive_rss")" \
    "$(ratio "$(per "$rss")" "$(per "$R_naive_rss")")" "-" "-" MiB
  row "$s: KSM saved per guest" "$(per "$ksm")" "$(per "$R_naive_ksm")" "-" "-" "-" MiB
  row "$s: boot storm (all ready)" "$boot" "$R_naive_boot" "$(ratio "$boot" "$R_naive_boot")" "-" "-" s
  row "$s: sampled after all ready" "$settle" "$R_naive_settle" "-" "-" "-" s
  row "$s: guests lost" "$lost" "$R_naive_lost" "-" "0" "$([ "$lost" = 0 ] && echo yes || echo NO)" guests
done
print_table "N=$N, 128M guests, ${SETTLE}s settle, $CORES cores"

for s in naive $SIDES; do
  eval "jfield $s \"{\\\"pss_kib\\\": \$R_${s}_pss, \\\"rss_kib\\\": \$R_${s}_rss, \\\"mem_available_drop_kib\\\": \$R_${s}_avail, \\\"ksm_saved_kib\\\": \$R_${s}_ksm, \\\"boot_storm_s\\\": \$R_${s}_boot, \\\"lost\\\": \$R_${s}_lost, \\\"settle_s\\\": \$R_${s}_settle}\""
done
jfield n "$N"
jfield settle_s "$SETTLE"
write_json
