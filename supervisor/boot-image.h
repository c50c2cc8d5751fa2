/*
 * boot-image.h: the default guest's one-file boot image, boot.elf.
 *
 * Why: qemu reads a `-kernel` Image and an `-initrd` onto its heap and keeps
 * both there for the guest's whole life (to reload them at a reset): 33 MiB
 * of anonymous memory per Debian-kernel guest that every boot must touch. An
 * ELF kernel it maps from the file instead, so those pages are the file's
 * page cache, one copy for all guests: an idle guest's anonymous memory went
 * 140 -> 106 MiB (bench/README, issue 17).
 *
 * Contract (written by guest/build-guest.sh, next to vmlinuz and initrd.gz):
 * an ELF64 little-endian aarch64 executable with exactly three PT_LOAD
 * segments, in this order, physical address = virtual address:
 *   1. a stub at NF_BOOT_IMAGE_STUB (the entry): x0 = the device tree qemu
 *      puts at the base of RAM (0x40000000), x1-x3 = 0, then a jump to 2,
 *      as arm64's boot protocol asks;
 *   2. vmlinuz's bytes at NF_BOOT_IMAGE_KERNEL (2 MiB aligned, as an arm64
 *      Image may be placed), the same size as vmlinuz;
 *   3. initrd.gz's bytes right after the kernel's image_size, 2 MiB aligned,
 *      the same size as initrd.gz.
 * qemu starts an ELF as a bare-metal program and does not tell the kernel
 * about an initrd, so the kernel command line does: initrd=ADDR,SIZE.
 */
#pragma once
#include <glib.h>

#define NF_BOOT_IMAGE_NAME "boot.elf"
#define NF_BOOT_IMAGE_STUB 0x401ff000ULL
#define NF_BOOT_IMAGE_KERNEL 0x40200000ULL

/* When `kernel` and `initrd` are a built guest's vmlinuz and initrd.gz and
 * the boot.elf beside them carries those same files (sizes match, written
 * after them) and fits in `memory_mib` of RAM: TRUE, with the ELF's path
 * and the initrd=... kernel argument (new strings). FALSE otherwise (any
 * other kernel, an old guest dir, a stale or foreign file): boot from the
 * kernel and initrd as given. Three stats and 232 bytes read. */
gboolean nf_boot_image_find(const char *kernel, const char *initrd, guint64 memory_mib,
                            char **elf_path, char **kernel_arg);
