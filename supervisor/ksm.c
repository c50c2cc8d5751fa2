/*
 * ksm.c: KSM on for the fleets that use it, the host's settings restored by
 * the last one to leave, even after a crash (see ksm.h for the books kept).
 */
#include "supervisor/ksm.h"
#include "supervisor/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <glib/gstdio.h>

#define KSM_SLEEP_MS 20
#define KSM_MIN_PAGES 100
#define KSM_MAX_PAGES 20000
#define KSM_FULL_SCAN_S 10

struct NfKsm {
  char *owner_path;
  char *owner_key;
};

/* What we change, in the order restored (run last: ksmd restarts at the
 * restored pace, or stops). */
static const char *const knobs[] = {"pages_to_scan", "sleep_millisecs", "use_zero_pages", "run"};

static const char *sysfs_dir(void);
static const char *state_dir(void);
static char *knob_read(const char *name);
static gboolean knob_write(const char *name, const char *value, GError **error);
static guint64 knob_u64(const char *name);
static int lock_books(gboolean create, GError **error);
static void unlock_books(int fd);
static char *owner_path(const char *owner_key);
static guint prune_owners(const char *drop_path, guint *pages_sum);
static gboolean owner_alive(const char *entry, guint *pages);
static char *owner_entry(guint pages, const char *owner_key);
static void restore_saved(void);
static void apply(guint pages);

static const char *sysfs_dir(void)
{
  const char *d = g_getenv("NERVESFLEET_KSM_SYSFS");
  return d && *d ? d : NF_KSM_SYSFS_DIR;
}

static const char *state_dir(void)
{
  const char *d = g_getenv("NERVESFLEET_KSM_STATE");
  return d && *d ? d : NF_KSM_STATE_DIR;
}

static char *knob_read(const char *name)
{
  g_autofree char *path = g_build_filename(sysfs_dir(), name, NULL);
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  return g_strstrip(text);
}

static guint64 knob_u64(const char *name)
{
  g_autofree char *v = knob_read(name);
  return v ? g_ascii_strtoull(v, NULL, 10) : 0;
}

static gboolean knob_write(const char *name, const char *value, GError **error)
{
  g_autofree char *path = g_build_filename(sysfs_dir(), name, NULL);
  FILE *f = fopen(path, "we");
  int e = 0;
  if (f == NULL)
    e = errno;
  else if (fputs(value, f) < 0 || fflush(f) != 0)
    e = errno;
  if (f && fclose(f) != 0 && e == 0)
    e = errno;
  if (f == NULL || e) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "--ksm: cannot write %s: %s (KSM needs root and a kernel with CONFIG_KSM; "
                "--ksm off leaves it alone)",
                path, g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

gboolean nf_ksm_mode_parse(const char *text, NfKsmMode *mode, GError **error)
{
  if (g_strcmp0(text, "auto") == 0)
    *mode = NF_KSM_AUTO;
  else if (g_strcmp0(text, "on") == 0)
    *mode = NF_KSM_ON;
  else if (g_strcmp0(text, "off") == 0)
    *mode = NF_KSM_OFF;
  else {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--ksm '%s': use auto, on or off (e.g. `--ksm on`)", text);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_ksm_wanted(NfKsmMode mode, guint guests)
{
  if (mode == NF_KSM_ON)
    return TRUE;
  if (mode == NF_KSM_OFF || guests < NF_KSM_AUTO_MIN_GUESTS)
    return FALSE;
  g_autofree char *run = g_build_filename(sysfs_dir(), "run", NULL);
  return access(run, W_OK) == 0;
}

guint nf_ksm_scan_pages(guint guests, guint64 mib)
{
  guint64 pages = (guint64)guests * mib * 256; /* 4 KiB pages */
  guint64 wakeups = KSM_FULL_SCAN_S * 1000 / KSM_SLEEP_MS;
  return (guint)CLAMP(pages / wakeups, KSM_MIN_PAGES, KSM_MAX_PAGES);
}

/* The books' lock. `create`: make the dir (acquire); else a missing dir
 * means nobody ever used KSM here (-1, no error). */
static int lock_books(gboolean create, GError **error)
{
  if (create && g_mkdir_with_parents(state_dir(), 0700) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "--ksm: cannot create %s: %s",
                state_dir(), g_strerror(e));
    return -1;
  }
  g_autofree char *path = g_build_filename(state_dir(), "lock", NULL);
  int fd = open(path, (create ? O_CREAT : 0) | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    if (create)
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "--ksm: cannot open %s: %s",
                  path, g_strerror(e));
    return -1;
  }
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
    ;
  return fd;
}

static void unlock_books(int fd)
{
  if (fd >= 0)
    close(fd); /* drops the flock */
}

static char *owner_path(const char *owner_key)
{
  g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA1, owner_key, -1);
  sum[16] = '\0';
  g_autofree char *name = g_strconcat("owner-", sum, NULL);
  return g_build_filename(state_dir(), name, NULL);
}

/* An owner entry: our pid and its start time (a crashed supervisor's pid
 * may be another process's by the time someone prunes), our scan rate, and
 * the fleet for people reading the file. */
static char *owner_entry(guint pages, const char *owner_key)
{
  GPid self = getpid();
  return g_strdup_printf("pid=%d pages=%u start=%" G_GUINT64_FORMAT "\nfleet=%s\n", (int)self,
                         pages, nf_process_stat_field(self, 22), owner_key);
}

/* Whether an entry's supervisor still runs: its pid is there and, when the
 * entry has one (older ones do not), with the start time it wrote. */
static gboolean owner_alive(const char *entry, guint *pages)
{
  int pid = 0;
  guint64 start = 0;
  int n = sscanf(entry, "pid=%d pages=%u start=%" G_GUINT64_FORMAT, &pid, pages, &start);
  if (n < 2 || pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM))
    return FALSE;
  return n < 3 || start == nf_process_stat_field(pid, 22);
}

/* Removes `drop_path` (may be NULL) and the entries of dead supervisors;
 * returns how many live owners remain and the sum of their scan rates. */
static guint prune_owners(const char *drop_path, guint *pages_sum)
{
  guint live = 0;
  *pages_sum = 0;
  if (drop_path)
    g_unlink(drop_path);
  g_autoptr(GDir) dir = g_dir_open(state_dir(), 0, NULL);
  for (const char *n; dir && (n = g_dir_read_name(dir)) != NULL;) {
    if (!g_str_has_prefix(n, "owner-"))
      continue;
    g_autofree char *path = g_build_filename(state_dir(), n, NULL);
    g_autofree char *text = NULL;
    guint pages = 0;
    if (!g_file_get_contents(path, &text, NULL, NULL) || !owner_alive(text, &pages)) {
      g_unlink(path);
      continue;
    }
    live++;
    *pages_sum += pages;
  }
  return live;
}

/* Writes `saved` back to sysfs and removes it. Best effort: a knob that
 * cannot be written is left (nothing better to do from a stop path). */
static void restore_saved(void)
{
  g_autofree char *path = g_build_filename(state_dir(), "saved", NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (guint k = 0; k < G_N_ELEMENTS(knobs); k++)
    for (char **l = lines; *l; l++) {
      const char *eq = strchr(*l, '=');
      if (eq && (size_t)(eq - *l) == strlen(knobs[k]) && strncmp(*l, knobs[k], eq - *l) == 0)
        knob_write(knobs[k], eq + 1, NULL);
    }
  g_unlink(path);
}

static void apply(guint pages)
{
  g_autofree char *p = g_strdup_printf("%u", CLAMP(pages, KSM_MIN_PAGES, KSM_MAX_PAGES));
  g_autofree char *s = g_strdup_printf("%u", KSM_SLEEP_MS);
  knob_write("pages_to_scan", p, NULL);
  knob_write("sleep_millisecs", s, NULL);
}

NfKsm *nf_ksm_acquire(const char *owner_key, guint pages_to_scan, GError **error)
{
  g_autofree char *run = knob_read("run");
  if (run == NULL) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                "--ksm: %s/run is missing (KSM needs a kernel with CONFIG_KSM; --ksm off leaves "
                "it alone)",
                sysfs_dir());
    return NULL;
  }
  g_autofree char *run_path = g_build_filename(sysfs_dir(), "run", NULL);
  if (access(run_path, W_OK) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "--ksm on: cannot write %s: %s (KSM needs root; --ksm off leaves it alone)",
                run_path, g_strerror(e));
    return NULL;
  }
  int lock = lock_books(TRUE, error);
  if (lock < 0)
    return NULL;
  NfKsm *k = g_new0(NfKsm, 1);
  k->owner_path = owner_path(owner_key);
  k->owner_key = g_strdup(owner_key);
  guint pages = 0;
  g_autofree char *saved = g_build_filename(state_dir(), "saved", NULL);
  g_autofree char *entry = NULL;
  /* Only the first owner saves: later ones see settings a fleet changed. A
   * `saved` left by a crash with no live owner is still the host's own. */
  if (prune_owners(k->owner_path, &pages) == 0 && !g_file_test(saved, G_FILE_TEST_EXISTS)) {
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < G_N_ELEMENTS(knobs); i++) {
      g_autofree char *v = knob_read(knobs[i]);
      if (v)
        g_string_append_printf(s, "%s=%s\n", knobs[i], v);
    }
    gboolean ok = g_file_set_contents(saved, s->str, -1, error);
    g_string_free(s, TRUE);
    if (!ok) {
      g_prefix_error(error, "--ksm: ");
      goto fail;
    }
  }
  entry = owner_entry(pages_to_scan, owner_key);
  if (!g_file_set_contents(k->owner_path, entry, -1, error)) {
    g_prefix_error(error, "--ksm: ");
    goto fail;
  }
  apply(pages + pages_to_scan);
  /* Zero pages (guest RAM zeroed and not yet reused) merge into the
   * kernel's zero page without a stable-tree entry: cheaper for ksmd. */
  knob_write("use_zero_pages", "1", NULL);
  if (!knob_write("run", "1", error)) {
    unlock_books(lock);
    nf_ksm_release(k);
    return NULL;
  }
  unlock_books(lock);
  return k;

fail:
  if (prune_owners(NULL, &pages) == 0)
    restore_saved();
  unlock_books(lock);
  nf_ksm_forget(k);
  return NULL;
}

void nf_ksm_set_rate(NfKsm *k, guint pages_to_scan)
{
  int lock = lock_books(FALSE, NULL);
  g_autofree char *entry = owner_entry(pages_to_scan, k->owner_key);
  guint pages = 0;
  if (g_file_set_contents(k->owner_path, entry, -1, NULL) && prune_owners(NULL, &pages) > 0)
    apply(pages);
  unlock_books(lock);
}

void nf_ksm_release(NfKsm *k)
{
  if (k == NULL)
    return;
  int lock = lock_books(FALSE, NULL);
  guint pages = 0;
  if (prune_owners(k->owner_path, &pages) == 0)
    restore_saved();
  else
    apply(pages);
  unlock_books(lock);
  nf_ksm_forget(k);
}

void nf_ksm_forget(NfKsm *k)
{
  if (k == NULL)
    return;
  g_free(k->owner_path);
  g_free(k->owner_key);
  g_free(k);
}

gboolean nf_ksm_recover(const char *owner_key)
{
  int lock = lock_books(FALSE, NULL);
  if (lock < 0)
    return FALSE;
  g_autofree char *mine = owner_key ? owner_path(owner_key) : NULL;
  g_autofree char *saved = g_build_filename(state_dir(), "saved", NULL);
  guint pages = 0;
  gboolean restored = FALSE;
  if (prune_owners(mine, &pages) == 0) {
    restored = g_file_test(saved, G_FILE_TEST_EXISTS);
    restore_saved();
  } else {
    apply(pages);
  }
  unlock_books(lock);
  return restored;
}

void nf_ksm_read_state(NfKsmState *st)
{
  *st = (NfKsmState){0};
  g_autofree char *run = knob_read("run");
  if (run == NULL)
    return;
  g_autofree char *run_path = g_build_filename(sysfs_dir(), "run", NULL);
  st->present = TRUE;
  st->writable = access(run_path, W_OK) == 0;
  st->run = (guint)g_ascii_strtoull(run, NULL, 10);
  st->pages_to_scan = (guint)knob_u64("pages_to_scan");
  st->sleep_ms = (guint)knob_u64("sleep_millisecs");
  st->pages_shared = knob_u64("pages_shared");
  st->pages_sharing = knob_u64("pages_sharing");
  st->zero_pages = knob_u64("ksm_zero_pages");
  st->full_scans = knob_u64("full_scans");
}

guint64 nf_ksm_process_saved_bytes(GPid pid)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/ksm_stat", (int)pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  static const char *const keys[] = {"\nksm_merging_pages ", "\nksm_zero_pages "};
  g_autofree char *body = g_strconcat("\n", text, NULL);
  guint64 pages = 0;
  for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
    const char *p = strstr(body, keys[i]);
    if (p)
      pages += g_ascii_strtoull(p + strlen(keys[i]), NULL, 10);
  }
  return pages * (guint64)sysconf(_SC_PAGESIZE);
}

guint64 nf_ksm_saved_bytes(void)
{
  NfKsmState k;
  nf_ksm_read_state(&k);
  return (k.pages_sharing + k.zero_pages) * (guint64)sysconf(_SC_PAGESIZE);
}
