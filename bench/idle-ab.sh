#!/usr/bin/env bash
# bench/idle-ab.sh: the idle supervisor's CPU, two or more builds side by side.
# Each build runs its own fleet of N fake guests at the same time as the
# others, and every window measures all of them at once, so the host's drift
# (±10 % within minutes on this VM) weighs on every build alike. One build
# after another, that drift hid a 15 % change (bench/README.md, sixth pass).
#
#   BINS="old:/tmp/nervesfleet-old new:./nervesfleet" N=1000 bench/run.sh idle-ab
#
# BINS lists label:binary entries (default: this tree's binary twice, a check
# that the method sees no difference where there is none); the first is the
# baseline of the ratios. WINDOWS windows of WINDOW seconds each, after
# SETTLE seconds past all ready (the first probe round takes every guest's
# first samples: start-up work, not idle).
#
# GUESTS=real runs real guests (qemu and the default guest; N defaults to
# 4) instead of fakes, and also measures what the guests cost idle: each
# fleet's qemu processes' CPU, per guest, in the same windows.
source "$(dirname "$0")/lib.sh"
bench_init idle-ab

GUESTS=${GUESTS:-fake}
case $GUESTS in
fake) N=${N:-1000} qemu_args=(--qemu "$FAKE_QEMU") ;;
real) N=${N:-4} qemu_args=() ;;
*) echo "idle-ab: GUESTS is fake or real, not '$GUESTS'" >&2; exit 2 ;;
esac
WINDOW=${WINDOW:-60}
WINDOWS=${WINDOWS:-3}
BATCH=${BATCH:-1000}
SETTLE=${SETTLE:-$(calc "$(probe_round_s) + 10")}
BINS=${BINS:-"a:$NF_BIN b:$NF_BIN"}
export FAKE_QEMU_BOOT_MS=${FAKE_QEMU_BOOT_MS:-1000}
read -r -a entries <<<"$BINS"
[ ${#entries[@]} -ge 2 ] || { echo "idle-ab: BINS needs two label:binary entries or more" >&2; exit 2; }

labels=() bins=() pids=()
for e in "${entries[@]}"; do
  labels+=("${e%%:*}") bins+=("${e#*:}")
  [ -x "${e#*:}" ] || { echo "idle-ab: ${e#*:} is not an executable (BINS entry $e)" >&2; exit 2; }
done

# Detached fleets, each with its dirs under $T (the cleanup trap finds them).
for i in "${!labels[@]}"; do
  d=$T/${labels[$i]}
  mkdir -p "$d"
  "${bins[$i]}" run "$N" --name "nfb-idle-${labels[$i]}" "${qemu_args[@]}" --batch "$BATCH" \
    --boot-timeout 600 --stop-timeout 60 --state-dir "$d/state" --runtime-dir "$d/run" -d \
    >"$d/start.log" 2>&1 || { echo "idle-ab: ${labels[$i]} did not start:" >&2; cat "$d/start.log" >&2; exit 1; }
done
for i in "${!labels[@]}"; do
  d=$T/${labels[$i]}
  "${bins[$i]}" wait --name "nfb-idle-${labels[$i]}" --runtime-dir "$d/run" --timeout 600 >"$d/wait.log" 2>&1 || {
    echo "idle-ab: ${labels[$i]}'s fleet did not become ready:" >&2
    cat "$d/wait.log" >&2
    exit 1
  }
  pids+=("$(sed -n 's/.*(supervisor pid \([0-9]*\),.*/\1/p' "$d/start.log")")
  [ -n "${pids[$i]}" ] || { echo "idle-ab: no supervisor pid in ${labels[$i]}'s start output" >&2; exit 1; }
done
echo "idle-ab: ${#labels[@]} fleets of $N $GUESTS guests ready; settling $SETTLE s, then $WINDOWS windows of $WINDOW s"
sleep "$SETTLE"

# guests_cpu_ns I: CPU so far of fleet I's qemu processes (their pid files).
guests_cpu_ns() {
  local s=0 f
  for f in "$T/${labels[$1]}"/run/vm-*.pid; do
    [ -f "$f" ] && s=$((s + $(proc_cpu_ns "$(cat "$f")"))) || true
  done
  echo "$s"
}

declare -A sum gsum
lines=$(printf 'window'; printf '\t%s %%' "${labels[@]}")
[ "$GUESTS" = real ] && lines+=$(printf '\t%s guest us/s' "${labels[@]}")
for ((w = 1; w <= WINDOWS; w++)); do
  c0=() g0=() line=$w gline=
  for i in "${!labels[@]}"; do
    c0+=("$(proc_cpu_ns "${pids[$i]}")")
    [ "$GUESTS" = real ] && g0+=("$(guests_cpu_ns "$i")")
  done
  w0=$EPOCHREALTIME
  sleep "$WINDOW"
  secs=$(calc "$EPOCHREALTIME - $w0")
  for i in "${!labels[@]}"; do
    pct=$(calc "100 * ($(proc_cpu_ns "${pids[$i]}") - ${c0[$i]}) / 1000000000 / $secs")
    line+=$'\t'$pct
    sum[$i]=$(calc "${sum[$i]:-0} + $pct")
    if [ "$GUESTS" = real ]; then
      us=$(calc "($(guests_cpu_ns "$i") - ${g0[$i]}) / 1000 / $secs / $N")
      gline+=$'\t'$us
      gsum[$i]=$(calc "${gsum[$i]:-0} + $us")
    fi
  done
  lines+=$'\n'$line$gline
done
column -t -s $'\t' <<<"$lines"

for i in "${!labels[@]}"; do
  d=$T/${labels[$i]}
  "${bins[$i]}" down --name "nfb-idle-${labels[$i]}" --runtime-dir "$d/run" >/dev/null 2>&1 || true
done
base=$(calc "${sum[0]} / $WINDOWS")
runs=
for i in "${!labels[@]}"; do
  mean=$(calc "${sum[$i]} / $WINDOWS")
  row "idle supervisor CPU: ${labels[$i]}" "$mean" "$base" "$(ratio "$mean" "$base")" "-" "-" "% of a core (mean of $WINDOWS x ${WINDOW}s; baseline: ${labels[0]})"
  guest=null
  if [ "$GUESTS" = real ]; then
    guest=$(calc "${gsum[$i]} / $WINDOWS")
    gbase=$(calc "${gsum[0]} / $WINDOWS")
    row "idle guest CPU: ${labels[$i]}" "$guest" "$gbase" "$(ratio "$guest" "$gbase")" "-" "-" "us a second per guest (qemu, all threads)"
  fi
  runs+="${runs:+, }{\"label\": $(jstr "${labels[$i]}"), \"binary\": $(jstr "${bins[$i]}"), \"idle_pct_mean\": $mean, \"guest_us_per_s\": $guest}"
done
print_table "N=$N $GUESTS guests per fleet, ${#labels[@]} fleets side by side, $CORES cores"
jfield n "$N"
jfield guests "$(jstr "$GUESTS")"
jfield window_s "$WINDOW"
jfield windows "$WINDOWS"
jfield builds "[$runs]"
write_json
