#!/usr/bin/env bash
# bench/density.sh: host memory per idle guest, nervesfleet against the naive
# loop of the identical qemu command, in one invocation. Each side boots N
# guests, waits until all are ready, leaves them idle for SETTLE seconds, then
# samples the host's MemAvailable (the drop since just before that side
# started, what the host really lost) and the guests' RSS and PSS sums.
#
#   N=8 SETTLE=30 bench/run.sh density
#
# No hard target yet: today's defaults are the baseline, and the memory levers
# (balloon, KSM, smaller TB cache...) must show up here as a lower ratio. The
# check is that supervising costs nothing per guest: ratio <= 1.05.
# MemAvailable is host-wide: other work on the host moves it, RSS/PSS do not.
source "$(dirname "$0")/lib.sh"
bench_init density

N=${N:-8}
SETTLE=${SETTLE:-30}
TIMEOUT=${TIMEOUT:-900}
mapfile -d '' NAIVE < <(naive_argv)

echo "density: nervesfleet run $N, then $SETTLE s idle"
sup_mem0=$(mem_available_kib)
sup_start "$N" --boot-timeout "$TIMEOUT"
if ! sup_wait "all $N guests ready" "$TIMEOUT"; then
  echo "density: the fleet did not become ready; its output:" >&2
  cat "$SUP_LOG" >&2
  exit 1
fi
sup_wait '^\0never' "$SETTLE" || true # the settle window (and keep reading its output)
kill -0 "$SUP_PID" || { echo "density: the supervisor died" >&2; cat "$SUP_LOG" >&2; exit 1; }
sup_mem1=$(mem_available_kib)
sup_rss=0 sup_pss=0
for p in $(sup_children); do
  sup_rss=$((sup_rss + $(rss_kib "$p"))) sup_pss=$((sup_pss + $(pss_kib "$p")))
done
sup_self_rss=$(rss_kib "$SUP_PID")
sup_stop

echo "density: naive loop, $N at once, then $SETTLE s idle"
naive_mem0=$(mem_available_kib)
naive=$("$STORM" -n "$N" -t "$TIMEOUT" -s "$SETTLE" -- "${NAIVE[@]}" 2>>"$T/storm.err") || {
  echo "density: the naive loop did not get every guest ready: $naive" >&2
  exit 1
}
naive_mem1=$(jget mem_available_kib "$naive")
naive_rss=$(jget rss_kib "$naive")
naive_pss=$(jget pss_kib "$naive")

per() { calc "($1) / $N / 1024"; }
s_avail=$(per "$sup_mem0 - $sup_mem1") n_avail=$(per "$naive_mem0 - $naive_mem1")
s_pss=$(per "$sup_pss") n_pss=$(per "$naive_pss")
s_rss=$(per "$sup_rss") n_rss=$(per "$naive_rss")
s_tot=$(calc "($sup_pss + $sup_self_rss) / $N / 1024")

r=$(ratio "$s_avail" "$n_avail")
row "host MiB per guest (MemAvailable drop)" "$s_avail" "$n_avail" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" MiB
r=$(ratio "$s_pss" "$n_pss")
row "qemu PSS per guest" "$s_pss" "$n_pss" "$r" "<= 1.05x" "$(met "$r" '<=' 1.05)" MiB
row "qemu RSS per guest" "$s_rss" "$n_rss" "$(ratio "$s_rss" "$n_rss")" "-" "-" MiB
row "PSS + supervisor RSS, per guest" "$s_tot" "$n_pss" "$(ratio "$s_tot" "$n_pss")" "-" "-" MiB
print_table "N=$N, 128M guests, ${SETTLE}s settle, $CORES cores"

jfield n "$N"
jfield settle_s "$SETTLE"
jfield nervesfleet "{\"mem_available_drop_kib\": $((sup_mem0 - sup_mem1)), \"rss_kib\": $sup_rss, \"pss_kib\": $sup_pss, \"supervisor_rss_kib\": $sup_self_rss, \"stop_s\": $SUP_STOP_S, \"exit\": $SUP_RC}"
jfield naive "{\"mem_available_drop_kib\": $((naive_mem0 - naive_mem1)), \"rss_kib\": $naive_rss, \"pss_kib\": $naive_pss, \"idle_cpu_pct\": $(jget idle_cpu_pct "$naive")}"
write_json
