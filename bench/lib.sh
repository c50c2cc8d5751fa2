# bench/lib.sh: what every bench/*.sh shares (sourced, not run).
#
# - a private temp dir per benchmark ($T) and a cleanup trap that ends every
#   process whose command line mentions $T (by pid: other people's qemu on
#   this host are never touched) and removes the dir;
# - the supervisor driver: sup_start / sup_wait / sup_stop run `$NF_BIN run`
#   with its output on a pipe that we read line by line with a deadline, so
#   we wait on events (its own output lines), never on sleeps;
# - small numeric helpers (percentiles, ratios), the result table and the
#   JSON file in bench/results/.
#
# Environment: NF_BIN (the release nervesfleet), NF_GUEST_DIR, BENCH_BIN_DIR
# (build/rel/bench), FAKE_QEMU (build/rel/tests/helpers/fake-qemu), all set
# by `make bench`.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${NF_BIN:=$BENCH_DIR/../nervesfleet}"
: "${BENCH_BIN_DIR:=$BENCH_DIR/../build/rel/bench}"
: "${NF_GUEST_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/nervesfleet/guest}"
export NERVESFLEET_GUEST_DIR=$NF_GUEST_DIR
RESULTS_DIR=$BENCH_DIR/results
CORES=$(nproc)
QEMU_REAL=$(command -v qemu-system-aarch64 || true)
: "${FAKE_QEMU:=$BENCH_DIR/../build/rel/tests/helpers/fake-qemu}"
STORM=$BENCH_BIN_DIR/storm

# --- temp dir and cleanup -----------------------------------------------------
# bench_init NAME: $T, $BENCH_NAME, the trap. Every process we start carries
# $T in its command line (state/runtime dirs, pid files).
bench_init() {
  BENCH_NAME=$1
  T=$(mktemp -d "/tmp/nfbench-$BENCH_NAME.XXXXXX")
  export XDG_RUNTIME_DIR=$T/xdg-run XDG_STATE_HOME=$T/xdg-state
  mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
  mkdir -p "$XDG_STATE_HOME" "$RESULTS_DIR"
  ROWS=()
  JSON_FIELDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# The pids of every process whose argv mentions $T (ours, by construction).
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$T"; then
      echo "${p#/proc/}"
    fi
  done
}

bench_cleanup() {
  local rc=$? pids
  [ -n "${T:-}" ] || return $rc
  pids=$(our_pids || true)
  if [ -n "$pids" ]; then
    echo "bench: cleaning up leftover processes: $(echo $pids)" >&2
    kill -KILL $pids 2>/dev/null || true
  fi
  [ -n "${SUP_PID:-}" ] && kill -KILL "$SUP_PID" 2>/dev/null || true
  # A host setting a benchmark changed for its run (bootstorm's MEMORY=warm),
  # put back however the benchmark ends.
  [ -n "${BENCH_RESTORE:-}" ] && eval "$BENCH_RESTORE"
  # The supervisor's last output, for a look after the fact.
  [ -n "${SUP_LOG:-}" ] && [ -f "$SUP_LOG" ] && cp "$SUP_LOG" "$RESULTS_DIR/$BENCH_NAME-supervisor.log"
  rm -rf "$T"
  return $rc
}

# --- the supervisor -------------------------------------------------------------
# sup_start N [run options...]: `$NF_BIN run N` on a pipe (fd $SUP_FD), its
# output also kept in $SUP_LOG. Sets SUP_PID.
sup_start() {
  local n=$1
  shift
  SUP_LOG=$T/sup-$RANDOM.log
  : >"$SUP_LOG"
  exec {SUP_FD}< <(exec "$NF_BIN" run "$n" --name "nfb-${BENCH_NAME}" \
    --state-dir "$T/state" "$@" 2>&1)
  SUP_PID=$!
}

# now_us: microseconds since the epoch, without a fork (latencies of a few
# ms are measured with it). us_to_s / us_to_ms format a difference.
now_us() { NOW_US=${EPOCHREALTIME/./}; }
us_to_s() { printf '%d.%03d' $(($1 / 1000000)) $((($1 % 1000000) / 1000)); }
us_to_ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# sup_wait REGEX TIMEOUT_S: read supervisor lines until one matches (returns
# 0, the line in SUP_LINE and when it arrived in SUP_LINE_US, epoch us) or
# the deadline passes / output ends (returns 1). Bash builtins only: no fork
# between a line's arrival and its timestamp.
sup_wait() {
  local re=$1 line left deadline timeout_us
  local whole=${2%%.*} frac=
  [[ $2 == *.* ]] && frac=${2#*.}
  frac=${frac}000000
  timeout_us=$((10#${whole:-0} * 1000000 + 10#${frac:0:6}))
  now_us
  deadline=$((NOW_US + timeout_us))
  while :; do
    now_us
    left=$((deadline - NOW_US))
    [ "$left" -le 0 ] && return 1
    printf -v left '%d.%06d' $((left / 1000000)) $((left % 1000000))
    if ! IFS= read -r -t "$left" -u "$SUP_FD" line; then
      return 1
    fi
    now_us
    printf '%s\n' "$line" >>"$SUP_LOG"
    if [[ $line =~ $re ]]; then
      SUP_LINE=$line
      SUP_LINE_US=$NOW_US
      return 0
    fi
  done
}

# sup_stop [TIMEOUT_S]: SIGINT (an orderly stop), read to EOF, reap. Sets
# SUP_STOP_S (SIGINT to exit) and SUP_RC.
sup_stop() {
  local t0
  now_us
  t0=$NOW_US
  kill -INT "$SUP_PID" 2>/dev/null || true
  sup_wait '^\0never' "${1:-120}" || true
  SUP_RC=0
  wait "$SUP_PID" || SUP_RC=$?
  now_us
  SUP_STOP_S=$(us_to_s $((NOW_US - t0)))
  exec {SUP_FD}<&-
  SUP_PID=
}

# The qemu processes the supervisor started (its direct children).
sup_children() {
  ps -o pid= --ppid "$SUP_PID" 2>/dev/null | tr -d ' ' || true
}

# The supervisor's qemu command for guest 1, captured without booting anything:
# a one-guest fleet on fake-qemu, its argv read back from qemu.log, then
# the real qemu path put first. Prints the words NUL-separated.
probe_qemu_argv() {
  local dir=$T/probe line
  XDG_RUNTIME_DIR=$dir/run "$NF_BIN" run 1 --name probe --state-dir "$dir/state" \
    --qemu "$FAKE_QEMU" "$@" --exec true >/dev/null 2>&1
  line=$(grep -m1 '^=== .* starting vm-0001: ' "$dir/state/vm-0001/qemu.log")
  line=${line#*starting vm-0001: }
  local -a words
  eval "words=($line)"
  # Environment the supervisor gives qemu (NAME=VALUE first) is a lever: not naive.
  while [[ ${words[0]} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do words=("${words[@]:1}"); done
  words[0]=$QEMU_REAL
  printf '%s\0' "${words[@]}"
}

# naive_argv: probe_qemu_argv turned into the naive baseline's template for
# storm: the supervisor's channels (-chardev/-mon/-serial/-pidfile) replaced by
# `-serial stdio` and a pid file in $T, the identity by storm's @SERIAL@.
naive_argv() {
  local -a in out=()
  mapfile -d '' in < <(probe_qemu_argv "$@")
  local i=0
  while [ $i -lt ${#in[@]} ]; do
    case ${in[$i]} in
      -chardev | -mon | -serial | -pidfile) i=$((i + 2)); continue ;;
      -name) out+=(-name "guest=naive-@ID@"); i=$((i + 2)); continue ;;
      -fw_cfg) out+=(-fw_cfg "name=opt/nervesfleet/serial,string=@SERIAL@"); i=$((i + 2)); continue ;;
    esac
    out+=("${in[$i]}")
    i=$((i + 1))
  done
  mkdir -p "$T/naive"
  out+=(-serial stdio -pidfile "$T/naive/@ID@.pid")
  printf '%s\0' "${out[@]}"
}

# --- host sampling --------------------------------------------------------------
# cpu_snap: "busy total" jiffies of the whole host.
cpu_snap() {
  awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6; exit}' /proc/stat
}
# cpu_busy_pct "SNAP_BEFORE" "SNAP_AFTER": host CPU busy % in between.
cpu_busy_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN{split(a,x," "); split(b,y," "); d=y[2]-x[2];
    printf "%.1f", (d>0 ? 100*(y[1]-x[1])/d : 0)}'
}
# foreign_cores "SNAP_BEFORE" "SNAP_AFTER" OUR_JIFFIES: how many cores, on
# average, processes other than ours kept busy in between (this host is
# shared: other people's tests run here too).
foreign_cores() {
  awk -v a="$1" -v b="$2" -v o="$3" -v c="$CORES" 'BEGIN{split(a,x," "); split(b,y," ");
    d=y[2]-x[2]; f=d>0 ? (y[1]-x[1]-o)/d : 0; if (f<0) f=0; printf "%.2f", f*c}'
}
loadavg1() { cut -d' ' -f1 /proc/loadavg; }
psi_cpu10() { awk '/^some/{sub("avg10=","",$2); print $2}' /proc/pressure/cpu 2>/dev/null || echo 0; }
mem_available_kib() { awk '/^MemAvailable:/{print $2}' /proc/meminfo; }
# probe_round_s: the seconds between two health probes of a guest at the
# default interval (supervisor/config.h; it stretched with the fleet's size
# before it was 30 s): the first round after all ready takes every guest's
# first samples, start-up work that an idle window must not include.
probe_round_s() { echo 30; }
# host_memory_settle: wait until this host has handed the memory freed by our
# last qemu back to its own hypervisor, so the next boot faults in fresh
# pages as most of a fleet's guests must (bench/README.md, "storms, sixth
# pass"). A kernel running as a VM with a free-page-reporting balloon reports
# free 2 MiB blocks in rounds 2 s apart (this VM: at most ~1 GiB a round, so
# the 10-17 GiB a stopped fleet frees take a minute or more). Until then the
# allocator hands out the unreported pages first (they head the free lists).
# Where the module counts what it reported (this VM's page_reporting has
# `reported_kib`), wait until that has not moved for 5 s (two rounds), at
# most 180 s; where it does not (mainline's), SETTLE_COLD seconds (5); where
# the kernel has no page_reporting at all, nothing.
host_memory_settle() {
  local f=/sys/module/page_reporting/parameters/reported_kib prev cur same=0 i
  [ -d /sys/module/page_reporting ] || return 0
  if [ ! -r "$f" ]; then
    sleep "${SETTLE_COLD:-5}"
    return 0
  fi
  prev=$(cat "$f")
  for ((i = 0; i < 360; i++)); do
    sleep 0.5
    cur=$(cat "$f")
    if [ "$cur" = "$prev" ]; then same=$((same + 1)); else same=0; fi
    prev=$cur
    [ $same -ge 10 ] && return 0
  done
  echo "bench: free page reporting still busy after 180 s; going on" >&2
}
# proc_jiffies PID: utime+stime of one process.
proc_jiffies() { awk '{sub(/.*\) /,""); print $12+$13}' "/proc/$1/stat"; }
# proc_jiffies_anon PID: its CPU (jiffies) and its anonymous memory (KiB,
# RssAnon), one awk for both; nothing once it is gone.
proc_jiffies_anon() {
  awk 'NR == 1 {sub(/.*\) /, ""); j = $12 + $13} /^RssAnon:/ {a = $2} END {print j + 0, a + 0}' \
    "/proc/$1/stat" "/proc/$1/status" 2>/dev/null
}
# procs_jiffies < PIDS: the sum over many processes (one pid a line), one
# awk for all (one per process took minutes at 10,000 on a VM where a fork
# costs ~20 ms); one that is gone counts 0.
procs_jiffies() {
  # cat, not awk, reads the files: it goes on past one that is gone.
  sed 's|.*|/proc/&/stat|' | xargs -r cat 2>/dev/null |
    awk '{sub(/.*\) /,""); s+=$12+$13} END{print s+0}'
}
# proc_cpu_ns PID: CPU time of all its threads so far, in ns (schedstat: exact,
# where utime+stime come in 10 ms steps, too coarse for an idle process).
proc_cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.0f", s}'; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup"; }

# --- numbers --------------------------------------------------------------------
# pctl P: nearest-rank percentile of the numbers on stdin.
pctl() { sort -g | awk -v p="$1" '{v[NR]=$1} END{if(!NR){print "null"; exit}
  i=int((p/100)*NR+0.999999); if(i<1)i=1; if(i>NR)i=NR; print v[i]}'; }
# calc EXPR: awk arithmetic, 3 decimals.
calc() { awk "BEGIN{printf \"%.3f\", ($1)}"; }
# ratio A B: A/B, or null when B is missing or zero.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{n="^-?[0-9]+([.][0-9]+)?$";
  if (a !~ n || b !~ n || b+0 == 0) print "null"; else printf "%.2f", a/b}'; }
# met VALUE OP TARGET: yes/no/n/a
met() { awk -v v="$1" -v o="$2" -v t="$3" 'BEGIN{ if (v !~ /^-?[0-9]+([.][0-9]+)?$/) {print "n/a"; exit}
  r = (o=="<=") ? v+0<=t+0 : (o==">=") ? v+0>=t+0 : 0; print r ? "yes" : "NO"}'; }

# jget KEY JSON: a number, or an array's items one per line, from storm's
# one-line JSON (flat, so no JSON parser is needed).
jget() {
  local v
  v=$(printf '%s' "$2" | grep -o "\"$1\": \(\[[^]]*\]\|[-0-9.]*\)" | head -1 | sed 's/^[^:]*: //')
  case $v in
    \[*) v=${v#[}; v=${v%]}; printf '%s\n' "$v" | tr ',' '\n' | tr -d ' ' | sed '/^$/d' ;;
    *) printf '%s\n' "${v:-null}" ;;
  esac
}

# --- output ---------------------------------------------------------------------
# row NAME MEASURED BASELINE RATIO TARGET MET [UNIT]
row() { ROWS+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}")"); }

print_table() {
  printf '\n== %s (%s)\n' "$BENCH_NAME" "$*"
  {
    printf 'metric\tmeasured\tbaseline\tratio\ttarget\tmet?\tunit\n'
    printf '%s\n' "${ROWS[@]}"
  } | column -t -s $'\t'
}

# jfield KEY RAWJSON: one top-level field of the results file.
jfield() { JSON_FIELDS+=("$(printf '"%s": %s' "$1" "$2")"); }
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
jnum() { if [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then echo "$1"; else echo null; fi; }

write_json() {
  local f=$RESULTS_DIR/$BENCH_NAME.json r name meas base rat tgt ok unit first=1
  {
    printf '{\n  "bench": "%s",\n  "date": "%s",\n' "$BENCH_NAME" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "host": {"cores": %s, "mem_total_kib": %s, "cpu": %s, "kernel": %s, "qemu": %s},\n' \
      "$CORES" "$(awk '/^MemTotal:/{print $2}' /proc/meminfo)" \
      "$(jstr "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)")" \
      "$(jstr "$(uname -r)")" "$(jstr "$($QEMU_REAL --version 2>/dev/null | head -1)")"
    printf '  "git": %s,\n' "$(jstr "$(git -C "$BENCH_DIR" describe --always --dirty 2>/dev/null || echo unknown)")"
    for r in "${JSON_FIELDS[@]}"; do printf '  %s,\n' "$r"; done
    printf '  "rows": ['
    for r in "${ROWS[@]}"; do
      IFS=$'\t' read -r name meas base rat tgt ok unit <<<"$r"
      [ $first = 1 ] || printf ','
      first=0
      printf '\n    {"metric": %s, "measured": %s, "baseline": %s, "ratio": %s, "target": %s, "met": %s, "unit": %s}' \
        "$(jstr "$name")" "$(jnum "$meas")" "$(jnum "$base")" "$(jnum "$rat")" "$(jstr "$tgt")" \
        "$(jstr "$ok")" "$(jstr "$unit")"
    done
    printf '\n  ]\n}\n'
  } >"$f"
  echo "results: $f"
}
