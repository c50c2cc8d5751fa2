#!/usr/bin/env bash
# Builds the default nervesfleet guest: OUTDIR/vmlinuz and OUTDIR/initrd.gz (and both in
# one OUTDIR/boot.elf, see supervisor/boot-image.h), from Debian's
# arm64 kernel and busybox-static packages. Nothing is installed on the host: the .debs are
# only downloaded (cached in OUTDIR/debs) and unpacked into a scratch directory.
# With --kernel small the kernel is instead the small one build-kernel.sh compiles from
# Debian's linux-source (cached in OUTDIR/kernel), with every driver built in: the
# initramfs then carries no modules.
#
# Usage: guest/build-guest.sh [--kernel debian|small] OUTDIR
#
# Rebuilds only when an input changed (this script, guest/init, the package versions
# apt-cache resolves, the small kernel's stamp); the check is local, so an up-to-date
# guest needs no network.
set -euo pipefail

die() { echo "guest: $*" >&2; exit 1; }

KERNEL=debian
if [ "${1:-}" = --kernel ]; then
  [ $# -ge 2 ] || die "usage: build-guest.sh [--kernel debian|small] OUTDIR"
  KERNEL=$2
  shift 2
fi
case $KERNEL in
  debian | small) ;;
  *) die "unknown kernel '$KERNEL': use --kernel debian (Debian's package) or --kernel small" ;;
esac
[ $# -eq 1 ] && [ -n "$1" ] || die "usage: build-guest.sh [--kernel debian|small] OUTDIR"
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
# An installed copy of this script sits next to its init rather than in guest/.
INIT=${NF_GUEST_INIT:-$HERE/init}
[ -r "$INIT" ] || die "guest init not found at $INIT (set NF_GUEST_INIT)"

ARCH=arm64
KMETA=linux-image-arm64
BBPKG=busybox-static

# Module groups, each loaded by /init only when it is useful (see guest/init): the
# initramfs ships the named modules plus everything they depend on, and each group's
# list is written in load order. A module already loaded by an earlier group is skipped
# by /init, so overlapping closures are fine.
declare -A GROUPS_WANT=(
  [core]="virtio_pci virtio_mmio virtio_balloon virtio_blk i6300esb qemu_fw_cfg"
  [net]="virtio_net"
  [console]="virtio_console"
  [ext4]="ext4"
  [zram]="zram"
)
GROUP_ORDER="core net console ext4 zram"

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
DEBS="$OUT/debs"
STAMP="$OUT/guest.stamp"

# The small kernel has its own cache and up-to-date check; its stamp (hash of its inputs)
# is one of this guest's inputs. It stands in for the kernel package in the guest stamp.
KSTAMP=
if [ "$KERNEL" = small ]; then
  KDIR="$OUT/kernel"
  "$HERE/build-kernel.sh" "$KDIR" || die "the small kernel did not build"
  KSTAMP=$(cat "$KDIR/kernel.stamp")
  KMETA=  # no kernel package to resolve
fi

outputs_exist() { [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.gz" ] && [ -s "$OUT/boot.elf" ]; }

# --- resolve versions (apt-cache reads the local index only) -------------------------
# One apt-cache call: without a pkgcache.bin (as in many containers) each call re-parses
# every package list, ~1.5 s here. The meta package's Depends names the versioned kernel
# package with an exact (= version), the same answer `apt-cache depends` gives.
resolve() {
  local info
  if [ "$KERNEL" = small ]; then
    KPKG=small-kernel
    KVER=$(cut -d' ' -f3 <<<"$KSTAMP")
    BBVER=$(apt-cache show --no-all-versions "$BBPKG:$ARCH" 2>/dev/null |
      sed -n 's/^Version: //p' | head -n1)
    [ -n "$BBVER" ]
    return
  fi
  info=$(apt-cache show --no-all-versions "$KMETA:$ARCH" "$BBPKG:$ARCH" 2>/dev/null) || return 1
  read -r KPKG KVER BBVER < <(awk -v meta="$KMETA" -v bb="$BBPKG" '
    /^Package:/ { p = $2 }
    /^Version:/ && p == bb { bbver = $2 }
    /^Depends:/ && p == meta {
      n = split(substr($0, 10), a, ",")
      for (i = 1; i <= n; i++)
        if (match(a[i], /linux-image-[0-9][^ ]* \(= [^)]+\)/)) {
          s = substr(a[i], RSTART, RLENGTH); gsub(/[()=]/, "", s); split(s, b, " ")
          kpkg = b[1]; sub(/:.*/, "", kpkg); kver = b[2]; break
        }
    }
    END { if (kpkg != "" && bbver != "") print kpkg, kver, bbver }' <<<"$info")
  [ -n "${KPKG:-}" ] && [ -n "${KVER:-}" ] && [ -n "${BBVER:-}" ]
}

inputs_hash() {
  { cat "$SELF" "$INIT"; echo "$KPKG=$KVER $BBPKG=$BBVER $KERNEL $KSTAMP"; } | sha256sum | cut -d' ' -f1
}

# The stamp holds the hash and the versions it was built from. While no package index or
# apt setting changed since, those versions are still what apt-cache would say, so an
# up-to-date check costs no apt-cache run at all.
if outputs_exist && [ -f "$STAMP" ] && [ -d /var/lib/apt/lists ] &&
   [ -z "$(find /var/lib/apt/lists /etc/apt /var/lib/dpkg/arch -newer "$STAMP" -print -quit 2>/dev/null)" ] &&
   read -r _ KPKG KVER BBVER <"$STAMP" && [ -n "${BBVER:-}" ] &&
   [ "$(inputs_hash)" = "$(cut -d' ' -f1 "$STAMP")" ]; then
  echo "guest: up to date ($OUT)"
  exit 0
fi

if ! resolve; then
  if outputs_exist; then
    echo "guest: cannot resolve $KMETA:$ARCH with apt-cache; keeping existing guest ($OUT)"
    exit 0
  fi
  die "cannot resolve ${KMETA:+$KMETA:$ARCH / }$BBPKG:$ARCH with apt-cache; run scripts/install-deps.sh"
fi

HASH=$(inputs_hash)
if outputs_exist && [ -f "$STAMP" ] && [ "$(cut -d' ' -f1 "$STAMP")" = "$HASH" ]; then
  touch "$STAMP"  # re-validated against the newer index: skip apt-cache next time
  echo "guest: up to date ($OUT)"
  exit 0
fi

echo "guest: building $KPKG $KVER + $BBPKG $BBVER into $OUT"

WORK=$(mktemp -d "$OUT/.build.XXXXXX") || die "cannot create a scratch directory in $OUT"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM HUP

# --- download (cached) -----------------------------------------------------------------
mkdir -p "$DEBS"
# apt-get names files pkg_version_arch.deb with the epoch colon escaped.
deb_path() { echo "$DEBS/${1}_${2//:/%3a}_${ARCH}.deb"; }

fetch_deb() {
  local pkg=$1 ver=$2 dst
  dst=$(deb_path "$pkg" "$ver")
  [ -s "$dst" ] && return 0
  mkdir -p "$WORK/dl"
  # Downloading into the scratch dir and renaming keeps a half-fetched .deb out of the
  # cache. Sandbox::User=root avoids apt's "_apt cannot access" warning as root.
  if ! (cd "$WORK/dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg:$ARCH=$ver") \
       >"$WORK/apt.log" 2>&1; then
    die "apt-get download failed for $pkg:$ARCH=$ver; run scripts/install-deps.sh (see: apt-get download $pkg:$ARCH)"
  fi
  mv "$WORK/dl/$(basename "$dst")" "$dst" 2>/dev/null ||
    die "apt-get download of $pkg gave no $(basename "$dst")"
}
KDEB=
[ "$KERNEL" = debian ] && fetch_deb "$KPKG" "$KVER" && KDEB=$(deb_path "$KPKG" "$KVER")
fetch_deb "$BBPKG" "$BBVER"
BBDEB=$(deb_path "$BBPKG" "$BBVER")

# --- unpack ------------------------------------------------------------------------------
X="$WORK/x"
mkdir -p "$X"
dpkg-deb -x "$BBDEB" "$X" || die "cannot unpack $BBDEB (delete it and retry)"
[ -x "$X/bin/busybox" ] || die "no bin/busybox in $BBPKG"
if [ "$KERNEL" = debian ]; then
  dpkg-deb -x "$KDEB" "$X" || die "cannot unpack $KDEB (delete it and retry)"
  set -- "$X"/lib/modules/*/
  [ $# -eq 1 ] && [ -d "$1" ] || die "expected one module tree in $KPKG"
  MODDIR=${1%/}
  UNAME=$(basename "$MODDIR")
  KIMAGE="$X/boot/vmlinuz-$UNAME"
else
  UNAME="small $KVER"
  KIMAGE="$KDIR/Image"
fi
[ -f "$KIMAGE" ] || die "no kernel image at $KIMAGE"

# --- module closure ------------------------------------------------------------------------
# There is no modules.dep in the package (depmod runs at install time) and no need for
# host kmod: a .ko's .modinfo section is a run of NUL-terminated key=value strings.
declare -A KO=()
while IFS= read -r f; do
  n=${f##*/}; n=${n%.ko}; KO[${n//-/_}]=$f
done < <([ "$KERNEL" = debian ] && cd "$MODDIR" && find kernel -name '*.ko')

modinfo_field() { # FIELD KO_PATH -> values, one per line
  { grep -az "^$1=" "$MODDIR/$2" || true; } | tr '\0' '\n' | sed -n "s/^$1=//p"
}

builtin_mod() { grep -q "/${1}\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; }

# Softdeps name aliases (ext4 wants "crypto-crc32c"); there is no modprobe in the guest
# to resolve them when the kernel asks, so they are resolved here and loaded up front.
alias_to_mod() {
  local f
  f=$(cd "$MODDIR" && grep -rlzx --include='*.ko' "alias=$1" kernel | sort | head -n1)
  [ -n "$f" ] && { f=$(basename "$f" .ko); echo "${f//-/_}"; }
}

declare -A STATE=()  # name -> visiting|done
ORDER=()
visit() {
  local m=${1//-/_} d deps soft
  case ${STATE[$m]:-} in "done") return 0 ;; visiting) die "module dependency cycle at $m" ;; esac
  if [ -z "${KO[$m]:-}" ]; then
    local a
    a=$(alias_to_mod "$1" || true)
    if [ -n "$a" ]; then visit "$a"; return 0; fi
    builtin_mod "$m" && return 0
    die "module $1 not found in $KPKG"
  fi
  STATE[$m]=visiting
  deps=$(modinfo_field depends "${KO[$m]}" | tr ',' ' ')
  soft=$(modinfo_field softdep "${KO[$m]}" | sed -n 's/.*pre:\(.*\)/\1/p' | sed 's/post:.*//')
  for d in $soft $deps; do visit "$d"; done
  STATE[$m]="done"
  ORDER+=("$m")
}

R="$WORK/root"
mkdir -p "$R"/{bin,dev,proc,sys,data,tmp,etc,lib/modules}
chmod 1777 "$R/tmp"
# The small kernel has everything built in: no module lists, and /init loads nothing.
[ "$KERNEL" = small ] && GROUP_ORDER=
for g in $GROUP_ORDER; do
  ORDER=()
  for m in ${GROUPS_WANT[$g]}; do visit "$m"; done
  # A module may land in an earlier group's closure; its name is listed again so each
  # group is self-contained, and /init skips what /sys/module shows as loaded.
  : >"$R/lib/modules/$g.list"
  for m in "${ORDER[@]}"; do echo "$m" >>"$R/lib/modules/$g.list"; done
  STATE=()
  for m in $(cat "$R/lib/modules/$g.list"); do
    cp "$MODDIR/${KO[$m]}" "$R/lib/modules/$m.ko"
  done
done
echo "$UNAME" >"$R/lib/modules/uname"

# --- initramfs -----------------------------------------------------------------------------
cp "$X/bin/busybox" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
install -m 0755 "$INIT" "$R/init"
# The kernel's built-in initramfs already provides /dev/console; the node is added when
# the builder may create it so the guest does not depend on that.
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
find "$R" -exec touch -h -d @0 {} + 2>/dev/null || true

(cd "$R" && find . -mindepth 1 | LC_ALL=C sort |
   cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$WORK/initrd.gz" ||
  die "cpio/gzip failed while packing the initramfs"

# --- boot.elf --------------------------------------------------------------------------------
# The kernel and initramfs in one ELF file, which qemu maps instead of copying onto its heap
# (33 MiB per guest). Layout and why: supervisor/boot-image.h, which checks it at run time.
le() { # VALUE BYTES: VALUE as BYTES little-endian bytes
  local i
  for ((i = 0; i < $2; i++)); do printf "\\$(printf %03o $((($1 >> (8 * i)) & 255)))"; done
}
write_boot_elf() { # IMAGE INITRD OUT
  local stub=$((0x401ff000)) kaddr=$((0x40200000)) ksz rsz isz raddr koff=$((0x10000)) roff
  [ "$(od -An -c -j 56 -N 4 "$1" | tr -d ' ')" = ARMd ] || die "$1 is not an arm64 Image"
  ksz=$(stat -c %s "$1")
  rsz=$(stat -c %s "$2")
  isz=$(od -An -t u8 -j 16 -N 8 "$1" | tr -d ' ') # image_size: text to end of BSS
  [ "$isz" -ge "$ksz" ] || die "$1: image_size $isz is smaller than the file"
  raddr=$(((kaddr + isz + 0x1fffff) & ~0x1fffff))
  roff=$(((koff + ksz + 0xfff) & ~0xfff))
  {
    printf '\177ELF\002\001\001'; le 0 9            # 64-bit, little-endian, SysV
    le 2 2; le 183 2; le 1 4; le $stub 8; le 64 8; le 0 8 # EXEC, aarch64, entry, phoff
    le 0 4; le 64 2; le 56 2; le 3 2; le 64 2; le 0 2; le 0 2
    ph() { le 1 4; le "$1" 4; le "$2" 8; le "$3" 8; le "$3" 8; le "$4" 8; le "$4" 8; le 4096 8; }
    ph 5 4096 $stub 24 # PT_LOAD R+X at file offset 4096: the stub
    ph 7 $koff $kaddr "$ksz"
    ph 4 $roff $raddr "$rsz"
  } >"$3"
  # movz x0, #0x4000, lsl #16 (the device tree); mov x1/x2/x3, xzr;
  # movz x4, #0x4020, lsl #16; br x4
  { le $((0xd2a80000)) 4; le $((0xaa1f03e1)) 4; le $((0xaa1f03e2)) 4; le $((0xaa1f03e3)) 4
    le $((0xd2a80404)) 4; le $((0xd61f0080)) 4; } |
    dd of="$3" bs=4096 seek=1 conv=notrunc status=none
  dd if="$1" of="$3" bs=4096 seek=$((koff / 4096)) conv=notrunc status=none
  dd if="$2" of="$3" bs=4096 seek=$((roff / 4096)) conv=notrunc status=none
}

# --- publish atomically ---------------------------------------------------------------------
cp "$KIMAGE" "$WORK/vmlinuz"
write_boot_elf "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/boot.elf"
mv -f "$WORK/vmlinuz" "$OUT/vmlinuz"
mv -f "$WORK/initrd.gz" "$OUT/initrd.gz"
# Last, so it is never older than the two it carries (boot-image.c checks).
touch "$WORK/boot.elf"
mv -f "$WORK/boot.elf" "$OUT/boot.elf"
echo "$HASH $KPKG $KVER $BBVER" >"$WORK/stamp" && mv -f "$WORK/stamp" "$STAMP"
# Old versions' .debs are dead weight once the new guest is published.
for f in "$DEBS"/*.deb; do
  [ -e "$f" ] || continue
  [ "$f" = "$KDEB" ] || [ "$f" = "$BBDEB" ] || rm -f "$f"
done
echo "guest: built $UNAME, initrd $(stat -c %s "$OUT/initrd.gz") bytes ($OUT)"
