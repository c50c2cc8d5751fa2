#!/usr/bin/env bash
# Builds the small sim-guest kernel: OUTDIR/Image, an arm64 kernel with everything the
# guest uses built in (guest/kernel.config on top of tinyconfig), from Debian's
# linux-source tarball with Debian's aarch64 cross compiler. build-guest.sh --kernel small
# calls it; it can also run alone.
#
# Usage: guest/build-kernel.sh OUTDIR
#
# Rebuilds only when an input changed: this script, the config fragment, the linux-source
# package version or the cross compiler's version. The source is unpacked into a scratch
# directory under OUTDIR that is removed on every exit path (~1.5 GB while it lasts), so
# the cache keeps only the Image and its config. Env: NF_KERNEL_JOBS (make -j, default:
# the number of cores), NF_KERNEL_NICE (default 19: a long build should not slow a
# running fleet), NF_KERNEL_CONFIG (another fragment).
set -euo pipefail

die() { echo "kernel: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: build-kernel.sh OUTDIR"
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
FRAG=${NF_KERNEL_CONFIG:-$HERE/kernel.config}
[ -r "$FRAG" ] || die "config fragment not found at $FRAG (set NF_KERNEL_CONFIG)"
JOBS=${NF_KERNEL_JOBS:-$(nproc 2>/dev/null || echo 2)}
NICE=${NF_KERNEL_NICE:-19}
CROSS=aarch64-linux-gnu-
FIX="scripts/install-deps.sh --small-kernel"

# --- inputs --------------------------------------------------------------------------------
# The installed linux-source-X.Y package (the linux-source meta package depends on the
# current one); its version keys the cache, its tarball is the source.
read -r SRCPKG SRCVER < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' \
  'linux-source-[0-9]*' 2>/dev/null | awk '$1 == "ii" { print $2, $3 }' | sort -V | tail -n1) ||
  true
[ -n "${SRCPKG:-}" ] || die "no linux-source package installed; run $FIX"
TARBALL=/usr/src/$SRCPKG.tar.xz
[ -r "$TARBALL" ] || die "$SRCPKG is installed but $TARBALL is missing; reinstall it ($FIX)"
command -v "${CROSS}gcc" >/dev/null || die "no ${CROSS}gcc; run $FIX"
for t in make flex bison bc; do
  command -v "$t" >/dev/null || die "no $t; run $FIX"
done
GCCVER=$("${CROSS}gcc" -dumpfullversion)

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
STAMP="$OUT/kernel.stamp"
HASH=$({ cat "$SELF" "$FRAG"; echo "$SRCPKG=$SRCVER gcc=$GCCVER"; } | sha256sum | cut -d' ' -f1)

if [ -s "$OUT/Image" ] && [ -f "$STAMP" ] && [ "$(cut -d' ' -f1 "$STAMP")" = "$HASH" ]; then
  echo "kernel: up to date ($OUT)"
  exit 0
fi

echo "kernel: building from $SRCPKG $SRCVER with ${CROSS}gcc $GCCVER, make -j$JOBS at nice $NICE" \
  "(~6 CPU-minutes: ~4 min on 2 idle cores) into $OUT"
START=$(date +%s)
WORK=$(mktemp -d "$OUT/.build.XXXXXX") || die "cannot create a scratch directory in $OUT"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM HUP

# --- unpack and configure ----------------------------------------------------------------------
tar -xf "$TARBALL" -C "$WORK" ||
  die "cannot unpack $TARBALL (disk full?)"
set -- "$WORK"/*/Makefile
[ $# -eq 1 ] && [ -f "$1" ] || die "expected one source tree in $TARBALL"
SRC=$(dirname "$1")
B="$WORK/build"
mkdir -p "$B"
LOG="$OUT/build.log"
# Fixed build identity, so the same inputs give the same Image (and the stamp can say so).
export ARCH=arm64 CROSS_COMPILE=$CROSS KBUILD_BUILD_USER=nervesfleet \
  KBUILD_BUILD_HOST=nervesfleet KBUILD_BUILD_TIMESTAMP="$SRCPKG $SRCVER"
kmake() { nice -n "$NICE" make -C "$SRC" O="$B" "$@" >>"$LOG" 2>&1; }
: >"$LOG"
kmake tinyconfig || die "make tinyconfig failed (see $LOG)"
"$SRC/scripts/kconfig/merge_config.sh" -m -O "$B" "$B/.config" "$FRAG" >>"$LOG" 2>&1 ||
  die "merging $FRAG failed (see $LOG)"
kmake olddefconfig || die "make olddefconfig failed (see $LOG)"
# A symbol the fragment sets but olddefconfig dropped (renamed, or a dependency unmet)
# would be a feature silently missing from every guest: fail and name it.
# (`if`, not `&&`/`||`: a loop whose last test fails would end the script under set -e.)
missing=$(grep -E '^CONFIG_[A-Za-z0-9_]+=' "$FRAG" | while IFS= read -r l; do
  if ! grep -qxF "$l" "$B/.config"; then echo "${l%%=*}"; fi
done)
[ -z "$missing" ] || die "$FRAG: not set after olddefconfig: $(echo $missing)"
missing=$(sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' "$FRAG" | while IFS= read -r s; do
  if grep -q "^$s=" "$B/.config"; then echo "$s"; fi
done)
[ -z "$missing" ] || die "$FRAG: set although the fragment unsets it: $(echo $missing)"

# --- build and publish ---------------------------------------------------------------------------
kmake -j"$JOBS" Image || die "kernel build failed (see $LOG)"
cp "$B/arch/arm64/boot/Image" "$WORK/Image"
cp "$B/.config" "$WORK/config"
mv -f "$WORK/config" "$OUT/config"
mv -f "$WORK/Image" "$OUT/Image"
# The build's wall and CPU seconds (children's user+sys, from the shell's `times`) ride
# along for bench/kernel.sh; only the hash is compared. On a shared or loaded host the
# CPU seconds are the number that carries over: wall ~ CPU / free cores.
SECS=$(($(date +%s) - START))
times >"$WORK/times" # in this shell: `times` in a pipe or $(...) would time the subshell
CPUS=$(tail -n1 "$WORK/times" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
  printf "%d", t }')
echo "$HASH $SRCPKG $SRCVER $GCCVER $SECS $CPUS" >"$WORK/stamp" && mv -f "$WORK/stamp" "$STAMP"
echo "kernel: built $SRCPKG $SRCVER, Image $(stat -c %s "$OUT/Image") bytes in $SECS s" \
  "($CPUS CPU-s) ($OUT)"
