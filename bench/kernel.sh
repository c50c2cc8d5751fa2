#!/usr/bin/env bash
# bench/kernel.sh: the small guest kernel (guest/build-kernel.sh, `make guest
# GUEST_KERNEL=small`) against Debian's generic arm64 kernel, in one invocation:
#   - boot CPU of one guest alone, to its ready line: qemu's user+sys seconds
#     (bench/storm -n 1 with the supervisor's own qemu command for that guest
#     dir), REPS runs per kernel, interleaved, median (and wall time to ready);
#   - qemu PSS and RSS of that lone guest after SETTLE s idle, and its idle CPU;
#   - kernel and initrd sizes (initrd also unpacked);
#   - the small kernel's build time (wall and CPU seconds), from its stamp.
# Memory per guest in a fleet (N=8, KSM, --dense) is density.sh's job: run it
# once per guest dir (NF_GUEST_DIR=...) for that table.
#
#   REPS=3 SETTLE=20 bench/run.sh kernel
#   (make bench BENCH=kernel; SMALL_GUEST_DIR defaults to the cache's guest-small)
source "$(dirname "$0")/lib.sh"
bench_init kernel

REPS=${REPS:-3}
SETTLE=${SETTLE:-20}
TIMEOUT=${TIMEOUT:-300}
SMALL_GUEST_DIR=${SMALL_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nervesfleet/guest-small}
DEBIAN_GUEST_DIR=$NF_GUEST_DIR
for d in "$DEBIAN_GUEST_DIR" "$SMALL_GUEST_DIR"; do
  [ -s "$d/vmlinuz" ] && [ -s "$d/initrd.gz" ] ||
    { echo "kernel: no guest in $d (make guest; make guest GUEST_KERNEL=small)" >&2; exit 1; }
done
[ "$(realpath "$DEBIAN_GUEST_DIR")" != "$(realpath "$SMALL_GUEST_DIR")" ] ||
  { echo "kernel: NF_GUEST_DIR is the small guest; point it at the Debian one" >&2; exit 1; }

# One guest alone, REPS times per kernel, kernels interleaved so a change in the
# host's load hits both alike. Results per kernel: cpu/ready lists, pss/rss/idle.
# The supervisor's qemu command for each (probe_qemu_argv reads the first start in its
# dir's qemu.log, so each probe gets a fresh dir).
mapfile -d '' ARGV_debian < <(naive_argv --kernel "$DEBIAN_GUEST_DIR/vmlinuz" \
  --initrd "$DEBIAN_GUEST_DIR/initrd.gz")
rm -rf "$T/probe"
mapfile -d '' ARGV_small < <(naive_argv --kernel "$SMALL_GUEST_DIR/vmlinuz" \
  --initrd "$SMALL_GUEST_DIR/initrd.gz")
declare -A CPU READY PSS RSS IDLE
for k in debian small; do CPU[$k]= READY[$k]= PSS[$k]= RSS[$k]= IDLE[$k]=; done
for ((r = 1; r <= REPS; r++)); do
  for k in debian small; do
    declare -n ARGV=ARGV_$k
    res=$("$STORM" -n 1 -t "$TIMEOUT" -s "$SETTLE" -- "${ARGV[@]}" 2>>"$T/storm.err") || {
      echo "kernel: the $k guest did not become ready: $res" >&2
      cat "$T/storm.err" >&2
      exit 1
    }
    CPU[$k]+="$(jget cpu_s "$res") " READY[$k]+="$(jget all_ready_s "$res") "
    PSS[$k]+="$(jget pss_kib "$res") " RSS[$k]+="$(jget rss_kib "$res") "
    IDLE[$k]+="$(jget idle_cpu_pct "$res") "
    echo "kernel: run $r $k: boot CPU $(jget cpu_s "$res") s, ready $(jget all_ready_s "$res") s," \
      "PSS $(($(jget pss_kib "$res") / 1024)) MiB, load $(loadavg1)"
  done
done
med() { printf '%s\n' $1 | pctl 50; }

mib() { calc "$1 / 1048576"; }
size() { stat -c %s "$1"; }
unpacked() { gzip -dc "$1" | wc -c; }
for k in debian small; do
  d=$DEBIAN_GUEST_DIR
  [ $k = small ] && d=$SMALL_GUEST_DIR
  eval "K_$k=$(size "$d/vmlinuz") I_$k=$(size "$d/initrd.gz") U_$k=$(unpacked "$d/initrd.gz")"
done

cmp_row() { # NAME SMALL DEBIAN UNIT
  row "$1" "$2" "$3" "$(ratio "$2" "$3")" "-" "-" "$4"
}
cmp_row "boot CPU to ready, one guest (median of $REPS)" "$(med "${CPU[small]}")" "$(med "${CPU[debian]}")" s
cmp_row "wall to ready, one guest (median)" "$(med "${READY[small]}")" "$(med "${READY[debian]}")" s
cmp_row "qemu PSS, one guest, ${SETTLE}s idle (median)" "$(calc "$(med "${PSS[small]}") / 1024")" \
  "$(calc "$(med "${PSS[debian]}") / 1024")" MiB
cmp_row "qemu RSS, one guest (median)" "$(calc "$(med "${RSS[small]}") / 1024")" \
  "$(calc "$(med "${RSS[debian]}") / 1024")" MiB
cmp_row "idle CPU, one guest (median)" "$(med "${IDLE[small]}")" "$(med "${IDLE[debian]}")" "% core"
cmp_row "kernel image (vmlinuz)" "$(mib "$K_small")" "$(mib "$K_debian")" MiB
cmp_row "initrd.gz" "$(mib "$I_small")" "$(mib "$I_debian")" MiB
cmp_row "initrd unpacked" "$(mib "$U_small")" "$(mib "$U_debian")" MiB
read -r _ _ _ _ build_s build_cpu _ <"$SMALL_GUEST_DIR/kernel/kernel.stamp" || true
row "small kernel build, wall (unpack + config + make)" "${build_s:-n/a}" "-" "-" "-" "-" s
row "small kernel build, CPU (user+sys)" "${build_cpu:-n/a}" "-" "-" "-" "-" s
print_table "small kernel (measured) vs Debian's (baseline), $CORES cores, load $(loadavg1)"

for k in debian small; do
  jfield "$k" "{\"boot_cpu_s\": [$(echo ${CPU[$k]} | tr ' ' ',')], \"ready_s\": [$(echo ${READY[$k]} | tr ' ' ',')], \"pss_kib\": [$(echo ${PSS[$k]} | tr ' ' ',')]}"
done
jfield reps "$REPS"
jfield settle_s "$SETTLE"
write_json
