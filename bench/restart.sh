#!/usr/bin/env bash
# bench/restart.sh: failure handling latency.
#   - kill -9 of a guest's qemu -> the supervisor notices and schedules the
#     restart (its "backoff ... restarting in" line), and -> the guest is
#     ready again; EVENTS kills, one guest at a time, each guest killed once
#     (so every restart uses the first backoff step, BACKOFF s);
#   - a hung qemu (SIGSTOP: QMP stops answering) -> the supervisor calls it
#     hung, against the configured deadline (health interval + timeout).
# The guests are fake-qemu (QEMU=real for the real one, fewer events advised):
# what is measured is the supervisor's reaction, not qemu's boot.
#
#   EVENTS=50 BACKOFF=0.1 HUNG_EVENTS=5 HEALTH_INTERVAL=1 HEALTH_TIMEOUT=2 bench/run.sh restart
#
# Targets: none set in issue 8 beyond reporting; we check detect p99 <= 100 ms
# and hung detection <= the deadline + 1 s.
source "$(dirname "$0")/lib.sh"
bench_init restart

EVENTS=${EVENTS:-50}
BACKOFF=${BACKOFF:-0.1}
HUNG_EVENTS=${HUNG_EVENTS:-5}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-1}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-2}
qemu=$FAKE_QEMU
# The ready line comes after QMP is up, as with a real guest (the supervisor
# starts its health probes on QMP up; see bench/README.md).
export FAKE_QEMU_BOOT_MS=${FAKE_QEMU_BOOT_MS:-200}
[ "${QEMU:-fake}" = real ] && qemu=$QEMU_REAL
# Spare guests: deliberate kills must stay under the fleet-wide failure
# storm threshold (half the fleet within --restart-window pauses restarts).
M=$((2 * EVENTS + HUNG_EVENTS))
# Deliberate kills must not look like a fleet-wide failure storm (which
# pauses restarts): a short restart window keeps them apart.
WINDOW=${WINDOW:-2}
deadline=$(calc "$HEALTH_INTERVAL + $HEALTH_TIMEOUT")

# vm_pid NAME: the pid of NAME's latest ready line in the supervisor's output.
vm_pid() { sed -n "s/.*\] $1 ready .*(pid \([0-9]*\),.*/\1/p" "$SUP_LOG" | tail -1; }
ms_since() { us_to_ms $((SUP_LINE_US - $1)); }

echo "restart: a fleet of $M ($(basename "$qemu")), backoff $BACKOFF s, health $HEALTH_INTERVAL+$HEALTH_TIMEOUT s"
sup_start "$M" --qemu "$qemu" --batch "$M" --backoff "$BACKOFF" --max-restarts 1000 \
  --restart-window "$WINDOW" \
  --health-interval "$HEALTH_INTERVAL" --health-timeout "$HEALTH_TIMEOUT" --stop-timeout 5
if ! sup_wait "all $M guests ready" 600; then
  echo "restart: the fleet did not become ready" >&2
  cat "$SUP_LOG" >&2
  exit 1
fi

detect=() back=() available=1
for i in $(seq "$EVENTS"); do
  vm=$(printf 'vm-%04d' "$i")
  pid=$(vm_pid "$vm")
  now_us
  t0=$NOW_US
  kill -KILL "$pid"
  if ! sup_wait "\] $vm [a-z]+: .*(restarting|failed)" 10; then
    echo "restart: no reaction to kill -9 of $vm within 10 s" >&2
    available=0
    break
  fi
  if [[ ! $SUP_LINE =~ restarting ]]; then
    echo "restart: the supervisor does not restart (\"$SUP_LINE\")" >&2
    available=0
    break
  fi
  detect+=("$(ms_since "$t0")")
  if ! sup_wait "\] $vm ready " 60; then
    echo "restart: $vm did not come back within 60 s; the supervisor said:" >&2
    grep -F "$vm" "$SUP_LOG" | tail -5 >&2
    available=0
    break
  fi
  back+=("$(ms_since "$t0")")
done

hung=() hung_missed=0
if [ "$available" = 1 ]; then
  for i in $(seq "$HUNG_EVENTS"); do
    vm=$(printf 'vm-%04d' "$((EVENTS + i))")
    pid=$(vm_pid "$vm")
    now_us
    t0=$NOW_US
    kill -STOP "$pid"
    if sup_wait "\] $vm [a-z]+: " "$(calc "$deadline * 3 + 5")"; then
      hung+=("$(ms_since "$t0")")
    else
      hung_missed=$((hung_missed + 1))
    fi
    kill -CONT "$pid" 2>/dev/null || true
  done
fi
sup_stop 60

if [ "$available" = 1 ]; then
  d50=$(printf '%s\n' "${detect[@]}" | pctl 50) d99=$(printf '%s\n' "${detect[@]}" | pctl 99)
  b50=$(printf '%s\n' "${back[@]}" | pctl 50) b99=$(printf '%s\n' "${back[@]}" | pctl 99)
  backoff_ms=$(calc "$BACKOFF * 1000 + $FAKE_QEMU_BOOT_MS")
  row "kill -9 -> restart scheduled p50" "$d50" "-" "-" "-" "-" ms
  row "kill -9 -> restart scheduled p99" "$d99" "-" "-" "<= 100" "$(met "$d99" '<=' 100)" ms
  row "kill -9 -> ready again p50" "$b50" "$backoff_ms" "$(ratio "$b50" "$backoff_ms")" "-" "-" "ms (baseline: backoff+boot)"
  row "kill -9 -> ready again p99" "$b99" "$backoff_ms" "$(ratio "$b99" "$backoff_ms")" "-" "-" "ms (baseline: backoff+boot)"
  if [ ${#hung[@]} -gt 0 ]; then
    h50=$(printf '%s\n' "${hung[@]}" | pctl 50) hmax=$(printf '%s\n' "${hung[@]}" | pctl 100)
  else
    h50="not detected" hmax="not detected"
  fi
  dl_ms=$(calc "$deadline * 1000")
  row "hung (SIGSTOP) -> detected p50" "$h50" "$dl_ms" "$(ratio "$h50" "$dl_ms")" "<= deadline+1s" "$(met "$h50" '<=' "$(calc "$dl_ms + 1000")")" "ms (baseline: interval+timeout)"
  row "hung (SIGSTOP) -> detected max" "$hmax" "$dl_ms" "$(ratio "$hmax" "$dl_ms")" "-" "-" ms
  row "hung events not detected" "$hung_missed" "-" "-" "0" "$(met "$hung_missed" '<=' 0)" "of $HUNG_EVENTS"
else
  row "kill -9 -> restart" "n/a" "-" "-" "-" "n/a" "(no restart lines from run)"
fi
print_table "$EVENTS kills, $HUNG_EVENTS hangs, fleet of $M $(basename "$qemu"), backoff $BACKOFF s, exit $SUP_RC"

arr() { printf '%s\n' "$@" | sed '/^$/d' | tr '\n' ' ' | sed 's/ *$//; s/ /, /g'; }
jfield events "$EVENTS"
jfield backoff_s "$BACKOFF"
jfield health "{\"interval_s\": $HEALTH_INTERVAL, \"timeout_s\": $HEALTH_TIMEOUT}"
jfield restart_available "$([ "$available" = 1 ] && echo true || echo false)"
jfield detect_ms "[$(arr "${detect[@]}")]"
jfield ready_again_ms "[$(arr "${back[@]}")]"
jfield hung_detect_ms "[$(arr "${hung[@]}")]"
jfield hung_missed "$hung_missed"
write_json
