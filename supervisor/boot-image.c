/*
 * boot-image.c: finds and checks a built guest's boot.elf (contract in
 * boot-image.h). Anything unexpected means "not usable", never an error:
 * the kernel and initrd themselves still boot the guest.
 */
#include "supervisor/boot-image.h"

#include <elf.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RAM_BASE 0x40000000ULL /* qemu's arm virt board */

/* Whether `path` is `dir`/`name`. */
static gboolean is_in(const char *path, const char *dir, const char *name)
{
  g_autofree char *want = g_build_filename(dir, name, NULL);
  return g_strcmp0(path, want) == 0;
}

static gboolean read_headers(const char *path, Elf64_Ehdr *eh, Elf64_Phdr ph[3])
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return FALSE;
  gboolean ok = pread(fd, eh, sizeof *eh, 0) == (ssize_t)sizeof *eh &&
                memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
                eh->e_ident[EI_DATA] == ELFDATA2LSB && eh->e_machine == EM_AARCH64 &&
                eh->e_type == ET_EXEC && eh->e_phnum == 3 &&
                eh->e_phentsize == sizeof(Elf64_Phdr) &&
                pread(fd, ph, 3 * sizeof *ph, (off_t)eh->e_phoff) == (ssize_t)(3 * sizeof *ph);
  close(fd);
  return ok;
}

gboolean nf_boot_image_find(const char *kernel, const char *initrd, guint64 memory_mib,
                            char **elf_path, char **kernel_arg)
{
  if (kernel == NULL || initrd == NULL)
    return FALSE;
  g_autofree char *dir = g_path_get_dirname(kernel);
  if (!is_in(kernel, dir, "vmlinuz") || !is_in(initrd, dir, "initrd.gz"))
    return FALSE;
  g_autofree char *elf = g_build_filename(dir, NF_BOOT_IMAGE_NAME, NULL);
  struct stat ks, is, es;
  if (stat(kernel, &ks) != 0 || stat(initrd, &is) != 0 || stat(elf, &es) != 0)
    return FALSE;
  /* Written after the two it carries: a vmlinuz or initrd.gz put there
   * since (by hand, or by an older builder) makes it stale. */
  if (es.st_mtime < ks.st_mtime || es.st_mtime < is.st_mtime)
    return FALSE;
  Elf64_Ehdr eh;
  Elf64_Phdr ph[3];
  if (!read_headers(elf, &eh, ph))
    return FALSE;
  for (int i = 0; i < 3; i++)
    if (ph[i].p_type != PT_LOAD || ph[i].p_paddr != ph[i].p_vaddr ||
        ph[i].p_filesz != ph[i].p_memsz ||
        (guint64)ph[i].p_offset + ph[i].p_filesz > (guint64)es.st_size)
      return FALSE;
  const Elf64_Phdr *k = &ph[1], *rd = &ph[2];
  if (eh.e_entry != NF_BOOT_IMAGE_STUB || ph[0].p_paddr != NF_BOOT_IMAGE_STUB ||
      k->p_paddr != NF_BOOT_IMAGE_KERNEL || k->p_filesz != (guint64)ks.st_size ||
      rd->p_filesz != (guint64)is.st_size || rd->p_paddr < k->p_paddr + k->p_filesz)
    return FALSE;
  /* The initrd must lie in RAM (the kernel needs more besides, which a
   * too-small --memory fails on either way). */
  if (rd->p_paddr + rd->p_filesz > RAM_BASE + memory_mib * 1024 * 1024)
    return FALSE;
  *elf_path = g_steal_pointer(&elf);
  *kernel_arg = g_strdup_printf("initrd=0x%" PRIx64 ",%" PRIu64, (uint64_t)rd->p_paddr,
                                (uint64_t)rd->p_filesz);
  return TRUE;
}
