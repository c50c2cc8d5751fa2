#!/usr/bin/env bash
# bench/scale.sh: what the supervisor itself costs at 1,000 (default) or
# 10,000 guests. The guests are tests/helpers/fake-qemu (same argv and
# channels as qemu, speaks enough QMP, prints the ready line, costs ~nothing),
# so what is measured is nervesfleet: its RSS per guest, its CPU while the
# fleet idles (health probes included, at their defaults), `ps --json`
# latency, time to start all and to stop all, fds used.
#
#   N=1000 WINDOW=60 BATCH=1000 PERF=0 bench/run.sh scale
#   N=10000 bench/run.sh scale
#
# Baselines: a one-guest fleet (RSS and fds per extra guest are the
# difference), and `storm` spawning the same N fake guests naively (time to
# start all). PERF=1 records the supervisor with perf during the idle window.
# Targets (issue 17): <= 8 KiB RSS per guest, <= 0.2% of a core idle at
# 1,000, ps --json <= 10 ms at 1,000 and linear beyond. A ready guest holds
# 1 fd of the supervisor (its QMP socket; one more while booting), so 10,000
# guests fit under a 20,000-fd hard limit that cannot be raised here (no
# CAP_SYS_RESOURCE).
source "$(dirname "$0")/lib.sh"
bench_init scale

N=${N:-1000}
WINDOW=${WINDOW:-60}
BATCH=${BATCH:-1000}
PERF=${PERF:-0}
PERF_FREQ=${PERF_FREQ:-499}
TIMEOUT=${TIMEOUT:-900}
PS_RUNS=${PS_RUNS:-10}

# Raise the hard limit where we may (root with CAP_SYS_RESOURCE; the
# supervisor raises its soft limit to the hard one itself).
want=$((N * 8 + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || echo "scale: cannot raise the fd hard limit to $want (no CAP_SYS_RESOURCE?)" >&2
fi
ulimit -n "$(ulimit -Hn)"

# Each fake guest prints its ready line 1 s after it starts, so QMP is up
# first as with a real guest (the supervisor starts health probes on QMP up).
export FAKE_QEMU_BOOT_MS=${FAKE_QEMU_BOOT_MS:-1000}
run_args=(--qemu "$FAKE_QEMU" --batch "$BATCH" --boot-timeout 600 --stop-timeout 60)

# sup_sample: supervisor RSS (KiB) and fd count, into S_RSS / S_FDS.
sup_sample() {
  S_RSS=$(rss_kib "$SUP_PID")
  S_FDS=$(ls "/proc/$SUP_PID/fd" | wc -l)
}

load0=$(loadavg1) psi0=$(psi_cpu10)
echo "scale: baseline, a one-guest fleet"
sup_start 1 "${run_args[@]}"
sup_wait "all 1 guests ready" 60 || { cat "$SUP_LOG" >&2; exit 1; }
sup_sample
base_rss=$S_RSS base_fds=$S_FDS
sup_stop

echo "scale: nervesfleet run $N with fake guests (batch $BATCH, fd limit $(ulimit -n))"
sup_start "$N" "${run_args[@]}"
if ! sup_wait "all $N guests ready" "$TIMEOUT"; then
  echo "scale: the fleet did not become ready; the end of its output:" >&2
  tail -20 "$SUP_LOG" >&2
  exit 1
fi
start_all=$(sed -n "s/^\[ *\([0-9.]*\)s\] all $N guests ready.*/\1/p" "$SUP_LOG")
sup_sample
rss=$S_RSS fds=$S_FDS
start_cpu=$(calc "$(proc_jiffies "$SUP_PID") / $(getconf CLK_TCK)")
failed=$(grep -c ' failed' "$SUP_LOG" || true)

# The first probe round after all ready (every 30 s by default) takes each
# guest's first RSS and PSS samples: start-up work, measured apart; the idle
# window follows it.
SETTLE=${SETTLE:-$(probe_round_s)}
echo "scale: first probe round, $SETTLE s"
s0=$(proc_cpu_ns "$SUP_PID") w0=$EPOCHREALTIME
sup_wait '^\0never' "$SETTLE" || true
settle_pct=$(calc "100 * ($(proc_cpu_ns "$SUP_PID") - $s0) / 1000000000 / ($EPOCHREALTIME - $w0)")

echo "scale: idle window, $WINDOW s"
# The fakes' CPU is read around the supervisor's, which brackets the window
# alone (reading 10,000 fakes takes seconds).
f0=$(sup_children | procs_jiffies)
j0=$(proc_cpu_ns "$SUP_PID")
w0=$EPOCHREALTIME
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  perf record -q -F "$PERF_FREQ" -g -p "$SUP_PID" -o "$T/perf.data" -- sleep "$WINDOW" >/dev/null 2>&1 &
  perf_pid=$!
fi
sup_wait '^\0never' "$WINDOW" || true
[ -n "${perf_pid:-}" ] && wait "$perf_pid" || true
kill -0 "$SUP_PID" || { echo "scale: the supervisor died" >&2; tail "$SUP_LOG" >&2; exit 1; }
j1=$(proc_cpu_ns "$SUP_PID")
win=$(calc "$EPOCHREALTIME - $w0")
f1=$(sup_children | procs_jiffies)
hz=$(getconf CLK_TCK)
idle_pct=$(calc "100 * ($j1 - $j0) / 1000000000 / $win")
fake_pct=$(calc "100 * ($f1 - $f0) / $hz / $win")
rss_after=$(rss_kib "$SUP_PID")
idle_events=$(grep -c -v '^\[ *[0-9.]*s\] \(fleet\|logs\)' "$SUP_LOG" || true)

ps_p50=n/a ps_max=n/a ps_note="n/a (ps not available)"
if "$NF_BIN" ps --json --name "nfb-scale" >"$T/ps.json" 2>"$T/ps.err" &&
  head -c1 "$T/ps.json" | grep -q '[[{]'; then
  times=()
  # The supervisor's CPU for the calls, in ns (schedstat: jiffies are too
  # coarse for a few ms).
  read -r ps_ns0 _ <"/proc/$SUP_PID/schedstat"
  for _ in $(seq "$PS_RUNS"); do
    now_us
    t0=$NOW_US
    "$NF_BIN" ps --json --name "nfb-scale" >/dev/null
    now_us
    times+=("$(us_to_ms $((NOW_US - t0)))")
  done
  read -r ps_ns1 _ <"/proc/$SUP_PID/schedstat"
  ps_sup_ms=$(calc "($ps_ns1 - $ps_ns0) / 1000000 / $PS_RUNS")
  rss_ps=$(rss_kib "$SUP_PID")
  ps_p50=$(printf '%s\n' "${times[@]}" | pctl 50)
  ps_max=$(printf '%s\n' "${times[@]}" | pctl 100)
  ps_note=$ps_p50
  ps_bytes=$(wc -c <"$T/ps.json")
else
  echo "scale: ps --json not available: $(head -c 300 "$T/ps.err")" >&2
fi

echo "scale: stopping $N guests"
sup_stop 600
stopped=$(grep -c '\] vm-[0-9]* stopped' "$SUP_LOG" || true)
left=$(our_pids | wc -l)

echo "scale: naive baseline, storm spawning $N fake guests"
mkdir -p "$T/naive"
naive=$("$STORM" -n "$N" -t "$TIMEOUT" -- "$FAKE_QEMU" -name "guest=naive-@ID@" \
  -fw_cfg "name=opt/nervesfleet/serial,string=@SERIAL@" -serial stdio \
  -pidfile "$T/naive/@ID@.pid" 2>>"$T/storm.err") || true
naive_all=$(jget all_ready_s "$naive")

per_guest=$(calc "($rss - $base_rss) / ($N - 1)")
per_guest_all=$(calc "$rss / $N")
fds_per=$(calc "($fds - $base_fds) / ($N - 1)")

row "supervisor RSS per guest (marginal)" "$per_guest" "$per_guest_all" "-" "<= 8" "$(met "$per_guest" '<=' 8)" "KiB (baseline col: total/N)"
row "supervisor RSS total" "$(calc "$rss / 1024")" "$(calc "$base_rss / 1024")" "$(ratio "$rss" "$base_rss")" "-" "-" "MiB (baseline: 1 guest)"
row "CPU in the first probe round (${SETTLE}s)" "$settle_pct" "-" "-" "-" "-" "% of a core (first RSS/PSS samples)"
row "idle CPU over ${WINDOW}s" "$idle_pct" "-" "-" "<= 0.2" "$( [ "$N" -le 1000 ] && met "$idle_pct" '<=' 0.2 || echo "-")" "% of a core"
row "all fake guests' CPU, same window" "$fake_pct" "-" "-" "-" "-" "% of a core"
row "ps --json latency p50" "$ps_note" "-" "-" "$( [ "$N" -le 1000 ] && echo "<= 10" || echo "-")" "$( [ "$N" -le 1000 ] && met "$ps_p50" '<=' 10 || echo "-")" ms
row "ps --json latency max" "$ps_max" "-" "-" "-" "-" ms
row "ps --json supervisor CPU per call" "${ps_sup_ms:-n/a}" "-" "-" "-" "-" "ms (idle work in the same window included)"
row "supervisor RSS per guest after ps --json" "$(calc "(${rss_ps:-$rss} - $base_rss) / ($N - 1)")" "-" "-" "<= 8" "$(met "$(calc "(${rss_ps:-$rss} - $base_rss) / ($N - 1)")" '<=' 8)" "KiB (with each guest's encoded ps text kept)"
row "time to start all" "$start_all" "$naive_all" "$(ratio "$start_all" "$naive_all")" "-" "-" "s (baseline: storm)"
row "supervisor CPU until all ready" "$start_cpu" "$start_all" "$(ratio "$start_cpu" "$start_all")" "-" "-" "s (baseline: wall time)"
row "time to stop all" "$SUP_STOP_S" "-" "-" "-" "$( [ "$SUP_RC" = 0 ] && [ "$left" = 0 ] && echo ok || echo NO)" s
row "fds used" "$fds" "$base_fds" "-" "-" "-" "fds (baseline: 1 guest)"
row "fds per guest" "$fds_per" "-" "-" "-" "-" ""
print_table "N=$N fake guests, batch $BATCH, $CORES cores; $failed failed; exit $SUP_RC, $stopped stopped, $left processes left; host load at start $load0, CPU PSI avg10 $psi0 %"

if [ -f "$T/perf.data" ]; then
  echo
  echo "perf: supervisor, idle window (top symbols, self time)"
  perf report -i "$T/perf.data" --stdio --no-children --sort symbol 2>/dev/null |
    grep -v "^#" | grep "%" | head -40 || true
fi

jfield n "$N"
jfield batch "$BATCH"
jfield window_s "$win"
jfield supervisor "{\"rss_kib\": $rss, \"rss_after_window_kib\": $rss_after, \"rss_one_guest_kib\": $base_rss, \"rss_per_guest_kib\": $per_guest, \"fds\": $fds, \"fds_one_guest\": $base_fds, \"idle_cpu_pct\": $idle_pct, \"first_round_cpu_pct\": $settle_pct, \"first_round_s\": $SETTLE, \"start_all_s\": $start_all, \"start_cpu_s\": $start_cpu, \"stop_all_s\": $SUP_STOP_S, \"exit\": $SUP_RC, \"failed_lines\": $failed, \"stopped_lines\": $stopped, \"processes_left\": $left, \"lines_during_run\": $idle_events}"
jfield ps_json "{\"p50_ms\": $(jnum "$ps_p50"), \"max_ms\": $(jnum "$ps_max"), \"bytes\": $(jnum "${ps_bytes:-}"), \"supervisor_cpu_ms\": $(jnum "${ps_sup_ms:-}"), \"rss_after_kib\": $(jnum "${rss_ps:-}")}"
jfield fake_guests_cpu_pct "$fake_pct"
jfield host "{\"loadavg1\": $load0, \"psi_cpu_avg10\": $psi0}"
jfield naive_storm_all_ready_s "$(jnum "$naive_all")"
write_json
