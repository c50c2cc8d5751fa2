#!/usr/bin/env bash
# bench/net.sh: what a NIC costs per guest, --net user (and, as root,
# --net tap) against --net none, in one invocation. Each side boots N guests (same batch), notes
# each guest's "ready ... (X.Xs after start)", waits until all are ready,
# leaves them idle for SETTLE seconds, then samples the qemu processes' PSS
# and RSS and, through guest 1's console, the guest's own used memory
# (busybox `free`). The user side also runs DHCP before its ready line, so
# its boot time includes getting an address; tap guests get a fixed one.
# TAP=1 adds the tap side (root only). Its guests get private-range addresses
# on a host bridge: run it inside a network namespace of its own
# (`unshare -n`, then `ip link set lo up`), as tests/test-net.c does.
#
#   N=4 SETTLE=20 bench/run.sh net
#
# Target: the NIC is cheap. PSS per guest within 1.10x of --net none.
source "$(dirname "$0")/lib.sh"
bench_init net

N=${N:-4}
SETTLE=${SETTLE:-20}
TIMEOUT=${TIMEOUT:-600}
BATCH=${BATCH:-$CORES}

# side MODE: boots, samples, stops. Sets BOOT_P50, BOOT_MAX, PSS, RSS (KiB
# sums), GUEST_USED (KiB, guest 1).
side() {
  local mode=$1 boots=() p line
  echo "net: nervesfleet run $N --net $mode, then $SETTLE s idle"
  sup_start "$N" --net "$mode" --batch "$BATCH" --boot-timeout "$TIMEOUT"
  while sup_wait ' ready NF-| all [0-9]+ guests ready' "$TIMEOUT"; do
    if [[ $SUP_LINE =~ ,\ ([0-9.]+)s\ after\ start ]]; then
      boots+=("${BASH_REMATCH[1]}")
    fi
    [[ $SUP_LINE =~ all\ [0-9]+\ guests\ ready ]] && break
  done
  if [ ${#boots[@]} -ne "$N" ]; then
    echo "net: --net $mode: the fleet did not become ready; its output:" >&2
    cat "$SUP_LOG" >&2
    exit 1
  fi
  BOOT_P50=$(printf '%s\n' "${boots[@]}" | pctl 50)
  BOOT_MAX=$(printf '%s\n' "${boots[@]}" | pctl 100)
  sup_wait '^\0never' "$SETTLE" || true # the settle window
  PSS=0 RSS=0
  for p in $(sup_children); do
    PSS=$((PSS + $(pss_kib "$p"))) RSS=$((RSS + $(rss_kib "$p")))
  done
  # The guest's own view: `free` typed on its console, read back from its log.
  local log=$T/state/vm-0001/console.log
  # (typed a moment after attaching: the shell's line editor may still be
  # waiting for the answer to its cursor query and would swallow it)
  { sleep 1; printf 'free\n'; sleep 2; } |
    "$NF_BIN" console 1 --name "nfb-${BENCH_NAME}" >/dev/null 2>&1 || true
  GUEST_USED=null
  for _ in $(seq 50); do
    line=$(grep -a '^Mem:' "$log" | tail -1 || true)
    [ -n "$line" ] && { GUEST_USED=$(awk '{print $3}' <<<"$line"); break; }
    sleep 0.2
  done
  sup_stop
  rm -rf "$T/state"
}

side none
n_p50=$BOOT_P50 n_max=$BOOT_MAX n_pss=$PSS n_rss=$RSS n_used=$GUEST_USED
side user
u_p50=$BOOT_P50 u_max=$BOOT_MAX u_pss=$PSS u_rss=$RSS u_used=$GUEST_USED
TAP=${TAP:-0}
[ "$(id -u)" = 0 ] && [ -w /dev/net/tun ] || TAP=0
if [ "$TAP" = 1 ]; then
  side tap
  t_p50=$BOOT_P50 t_pss=$PSS
fi

per() { calc "($1) / $N / 1024"; }
r=$(ratio "$(per "$u_pss")" "$(per "$n_pss")")
row "qemu PSS per guest" "$(per "$u_pss")" "$(per "$n_pss")" "$r" "<= 1.10x" "$(met "$r" '<=' 1.10)" MiB
row "qemu RSS per guest" "$(per "$u_rss")" "$(per "$n_rss")" "$(ratio "$(per "$u_rss")" "$(per "$n_rss")")" "-" "-" MiB
guest_mib() { [ "$1" = null ] && echo null || calc "$1 / 1024"; }
row "guest used memory (free)" "$(guest_mib "$u_used")" "$(guest_mib "$n_used")" \
  "$(ratio "$(guest_mib "$u_used")" "$(guest_mib "$n_used")")" "-" "-" MiB
row "boot to ready p50" "$u_p50" "$n_p50" "$(ratio "$u_p50" "$n_p50")" "-" "-" s
row "boot to ready max" "$u_max" "$n_max" "$(ratio "$u_max" "$n_max")" "-" "-" s
if [ "$TAP" = 1 ]; then
  r=$(ratio "$(per "$t_pss")" "$(per "$n_pss")")
  row "qemu PSS per guest, --net tap" "$(per "$t_pss")" "$(per "$n_pss")" "$r" "<= 1.10x" \
    "$(met "$r" '<=' 1.10)" MiB
  row "boot to ready p50, --net tap" "$t_p50" "$n_p50" "$(ratio "$t_p50" "$n_p50")" "-" "-" s
fi
jfield n "$N"
jfield settle_s "$SETTLE"
jfield batch "$BATCH"
jfield initrd_bytes "$(stat -c %s "$NF_GUEST_DIR/initrd.gz")"
print_table "N=$N, SETTLE=${SETTLE}s, measured: --net user, baseline: --net none"
write_json
