#!/usr/bin/env bash
# bench/snapshot.sh: a fleet started from a snapshot (`run --snapshot`) against
# the same fleet booted, in one invocation on the same host, N guests each:
#   - boot:          `run N --ksm off` (every guest boots its kernel);
#   - restore:       `run N --snapshot --ksm off` (each guest restores one
#                    template's state file; the template is built beforehand,
#                    by a one-guest run, and its build time reported apart);
#   - restore + KSM: `run N --snapshot` (KSM on, as by default).
# For each: seconds from supervisor start to "all N guests ready" (includes
# checking the cached state file's hash), then after SETTLE idle seconds the
# qemu PSS per guest (the guests' own share of host memory).
#
#   N=20 SETTLE=20 bench/run.sh snapshot
#
# Targets (issue 18): all ready <= 0.2x the boot's time; PSS per guest with
# merging <= 0.35x the boot's. KSM is host-wide: the table says whether it
# was already running (another fleet on this host) during the boot side.
source "$(dirname "$0")/lib.sh"
bench_init snapshot

N=${N:-8}
SETTLE=${SETTLE:-20}
TIMEOUT=${TIMEOUT:-900}
export XDG_CACHE_HOME=$T/cache

# side NAME N SETTLE_S ARGS...: run the fleet, wait for all ready, settle,
# sample. Sets ALL_S (the supervisor's own "all ready" time) and PSS_MIB.
side() {
  local name=$1 n=$2 settle=$3 pss=0 p
  shift 3
  echo "snapshot: $name: nervesfleet run $n $*"
  sup_start "$n" --boot-timeout "$TIMEOUT" "$@"
  if ! sup_wait "all $n guests ready" "$TIMEOUT"; then
    echo "snapshot: $name: the fleet did not become ready; its output:" >&2
    cat "$SUP_LOG" >&2
    exit 1
  fi
  ALL_S=$(sed -n "s/^\[ *\([0-9.]*\)s\] all $n guests ready.*/\1/p" "$SUP_LOG")
  sup_wait '^\0never' "$settle" || true # idle, still reading its output
  for p in $(sup_children); do pss=$((pss + $(pss_kib "$p" 2>/dev/null || echo 0))); done
  PSS_MIB=$(calc "$pss / $n / 1024")
  sup_stop
  [ "$SUP_RC" = 0 ] || { echo "snapshot: $name: exit $SUP_RC" >&2; cat "$SUP_LOG" >&2; exit 1; }
}

ksm_run() { cat /sys/kernel/mm/ksm/run 2>/dev/null || echo n/a; }

ksm_at_boot=$(ksm_run)
side boot "$N" "$SETTLE" --ksm off
boot_all=$ALL_S boot_pss=$PSS_MIB

side template 1 0 --snapshot --ksm off
build_s=$(sed -n 's/.*snapshot: template saved in \([0-9.]*\) s.*/\1/p' "$SUP_LOG")
state=$(sed -n 's/.*snapshot: template saved in .*: \(.*\)$/\1/p' "$SUP_LOG")
state_mib=$(calc "$(stat -c %s "$state") / 1048576")

side restore "$N" "$SETTLE" --snapshot --ksm off
rest_all=$ALL_S rest_pss=$PSS_MIB
grep -q "restoring every guest from" "$SUP_LOG" || { echo "snapshot: restore did not reuse the snapshot" >&2; exit 1; }

side restore+ksm "$N" "$SETTLE" --snapshot
ksm_all=$ALL_S ksm_pss=$PSS_MIB

r=$(ratio "$rest_all" "$boot_all")
row "all ready: restore vs boot" "$rest_all" "$boot_all" "$r" "<= 0.2x" "$(met "$r" '<=' 0.2)" s
r=$(ratio "$ksm_all" "$boot_all")
row "all ready: restore+KSM vs boot" "$ksm_all" "$boot_all" "$r" "-" "-" s
r=$(ratio "$rest_pss" "$boot_pss")
row "PSS per guest: restore vs boot" "$rest_pss" "$boot_pss" "$r" "-" "-" MiB
r=$(ratio "$ksm_pss" "$boot_pss")
row "PSS per guest: restore+KSM vs boot" "$ksm_pss" "$boot_pss" "$r" "<= 0.35x" "$(met "$r" '<=' 0.35)" MiB
row "template build (boot + save)" "$build_s" "-" "-" "-" "-" s
row "state file" "$state_mib" "-" "-" "-" "-" MiB
print_table "N=$N, 128M guests, ${SETTLE}s settle, $CORES cores; host KSM run=$ksm_at_boot during the boot side"

jfield n "$N"
jfield settle_s "$SETTLE"
jfield ksm_run_during_boot "$(jstr "$ksm_at_boot")"
jfield template "{\"build_s\": $(jnum "$build_s"), \"state_mib\": $(jnum "$state_mib")}"
jfield boot "{\"all_ready_s\": $(jnum "$boot_all"), \"pss_mib_per_guest\": $(jnum "$boot_pss")}"
jfield restore "{\"all_ready_s\": $(jnum "$rest_all"), \"pss_mib_per_guest\": $(jnum "$rest_pss")}"
jfield restore_ksm "{\"all_ready_s\": $(jnum "$ksm_all"), \"pss_mib_per_guest\": $(jnum "$ksm_pss")}"
write_json
