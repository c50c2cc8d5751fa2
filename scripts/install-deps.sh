#!/usr/bin/env bash
# Installs everything nervesfleet needs on Debian 12: the build toolchain and libraries,
# QEMU for aarch64 guests, the tools the guest builder and the tests use, and the arm64
# package index (only used to *download* guest packages; nothing arm64 is installed).
# `--web` also installs what `make check-web` needs: Chromium and its WebDriver
# (the dashboard test drives the browser over WebDriver from python3).
# `--small-kernel` also installs what guest/build-kernel.sh needs to compile the small
# guest kernel (`make guest GUEST_KERNEL=small`): Debian's linux-source, the aarch64 cross
# compiler and the kernel build tools (~300 MB; only on that path).
# Safe to run twice: apt-get skips what is present, and the arm64 architecture is added
# only when missing.
set -euo pipefail

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

PKGS=(
  build-essential pkg-config
  libglib2.0-dev libjansson-dev libsoup-3.0-dev libsystemd-dev
  qemu-system-arm qemu-utils
  cpio gzip
  clang libclang-rt-14-dev
  u-boot-tools libubootenv-tool e2fsprogs
  tmux util-linux procps
  prometheus locales
)
# prometheus: its promtool checks the /metrics exposition in tests/test-http.
# locales: the de_DE source tests/test-http compiles (localedef, into its tmp dir) to run a
# supervisor in a comma-decimal locale.
for arg in "$@"; do
  case $arg in
    --web) PKGS+=(chromium chromium-driver python3) ;;
    --small-kernel) PKGS+=(linux-source gcc-aarch64-linux-gnu make flex bison bc libc6-dev xz-utils) ;;
    *) echo "install-deps: unknown option $arg (use --web or --small-kernel)" >&2; exit 2 ;;
  esac
done

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the index when it is missing the arm64 lists or any package we need.
need_update=0
if ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then need_update=1; fi
for p in "${PKGS[@]}"; do
  if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; break; fi
done
if [ "$need_update" = 1 ]; then
  $SUDO apt-get update -q
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps: all dependencies present"
