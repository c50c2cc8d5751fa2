/*
 * shard.c: shard id ranges and the one-host overlap check (see shard.h).
 * The check reads other fleets' runtime dirs rather than asking their
 * control sockets: it works the same for a supervisor that is busy, and a
 * crashed one's leftover file is recognised by its free fleet.lock.
 */
#include "supervisor/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <glib/gstdio.h>

#define IDS_FILE "ids"
#define IDS_GROUP "ids"
#define MAX_ID 10000000u

GQuark nf_shard_error_quark(void)
{
  return g_quark_from_static_string("nf-shard-error-quark");
}

struct NfShardClaim {
  char *path;
};

static gboolean fleet_alive(const char *dir);
static gboolean check_other(const NfFleetConfig *cfg, const char *dir, const char *name,
                            GError **error);

gboolean nf_shard_parse(const char *text, guint *index, guint *count, GError **error)
{
  guint64 i = 0, n = 0;
  char *end = NULL;
  const char *slash = strchr(text, '/');
  gboolean ok = slash && slash != text && g_ascii_isdigit(text[0]) && g_ascii_isdigit(slash[1]);
  if (ok) {
    i = g_ascii_strtoull(text, &end, 10);
    ok = end == slash;
  }
  if (ok) {
    n = g_ascii_strtoull(slash + 1, &end, 10);
    ok = *end == '\0' && n >= 1 && n <= 100000 && i < n;
  }
  if (!ok) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--shard '%s': use I/N with 0 <= I < N, I counted from 0 (e.g. --shard 2/8)", text);
    return FALSE;
  }
  *index = (guint)i;
  *count = (guint)n;
  return TRUE;
}

gboolean nf_shard_apply(NfFleetConfig *cfg, gboolean name_given, GError **error)
{
  if (cfg->shard_count == 0) {
    if (cfg->shard_size) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--shard-size without --shard: it sizes each shard (e.g. --shard 0/4 "
                  "--shard-size 1000)");
      return FALSE;
    }
    return TRUE;
  }
  guint size = cfg->shard_size ? cfg->shard_size : cfg->count;
  if (cfg->count > size) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%u guests do not fit --shard-size %u: the shard would use the next shard's "
                "ids; raise --shard-size or run fewer guests",
                cfg->count, size);
    return FALSE;
  }
  guint64 last = (guint64)cfg->id_offset + (guint64)cfg->shard_count * size;
  if (last > MAX_ID) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--shard %u/%u with %u ids each ends at id %" G_GUINT64_FORMAT
                ", past %u; use a smaller --shard-size",
                cfg->shard_index, cfg->shard_count, size, last, MAX_ID);
    return FALSE;
  }
  cfg->shard_size = size;
  cfg->id_offset += cfg->shard_index * size;
  if (!name_given) {
    g_free(cfg->name);
    cfg->name = g_strdup_printf("shard-%u", cfg->shard_index);
  }
  return TRUE;
}

guint nf_shard_last_id(const NfFleetConfig *cfg)
{
  return cfg->id_offset + (cfg->shard_count ? MAX(cfg->shard_size, cfg->count) : cfg->count);
}

/* A supervisor holds <dir>/fleet.lock while it runs: if we can take it
 * shared, nobody does and the ids file there is a leftover. */
static gboolean fleet_alive(const char *dir)
{
  g_autofree char *lock = g_build_filename(dir, "fleet.lock", NULL);
  int fd = open(lock, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return FALSE;
  gboolean alive = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd); /* also drops the shared lock if we got it */
  return alive;
}

static gboolean check_other(const NfFleetConfig *cfg, const char *dir, const char *name,
                            GError **error)
{
  g_autofree char *path = g_build_filename(dir, IDS_FILE, NULL);
  g_autoptr(GKeyFile) kf = g_key_file_new();
  if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, NULL) || !fleet_alive(dir))
    return TRUE;
  guint first = (guint)g_key_file_get_uint64(kf, IDS_GROUP, "first", NULL);
  guint last = (guint)g_key_file_get_uint64(kf, IDS_GROUP, "last", NULL);
  gboolean sharded = g_key_file_get_boolean(kf, IDS_GROUP, "sharded", NULL);
  g_autofree char *format = g_key_file_get_string(kf, IDS_GROUP, "serial-format", NULL);
  guint my_first = cfg->id_offset + 1, my_last = nf_shard_last_id(cfg);
  if (!(sharded || cfg->shard_count) || g_strcmp0(format, cfg->serial_format) != 0 || first == 0 ||
      my_last < first || last < my_first)
    return TRUE;
  g_set_error(error, NF_SHARD_ERROR, NF_SHARD_ERROR_OVERLAP,
              "fleet '%s' would use ids %u-%u, but fleet '%s' on this host already has ids "
              "%u-%u (same serial format %s); give each shard its own --shard I/N of the same N "
              "and --shard-size, or another --id-offset",
              cfg->name, my_first, my_last, name, first, last, cfg->serial_format);
  return FALSE;
}

NfShardClaim *nf_shard_claim(const NfFleetConfig *cfg, const char *runtime_dir, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_key_file_set_uint64(kf, IDS_GROUP, "first", cfg->id_offset + 1);
  g_key_file_set_uint64(kf, IDS_GROUP, "last", nf_shard_last_id(cfg));
  g_key_file_set_boolean(kf, IDS_GROUP, "sharded", cfg->shard_count > 0);
  g_key_file_set_string(kf, IDS_GROUP, "serial-format", cfg->serial_format);
  NfShardClaim *claim = g_new0(NfShardClaim, 1);
  claim->path = g_build_filename(runtime_dir, IDS_FILE, NULL);
  g_autoptr(GError) local = NULL;
  /* Ours first, then theirs: two fleets starting at once both see each
   * other and both refuse, rather than both missing each other. */
  if (!g_key_file_save_to_file(kf, claim->path, &local)) {
    g_set_error(error, NF_SHARD_ERROR, NF_SHARD_ERROR_IO, "cannot record the fleet's ids: %s",
                local->message);
    g_free(claim->path);
    g_free(claim);
    return NULL;
  }
  g_autofree char *root = g_path_get_dirname(runtime_dir);
  g_autofree char *self = g_path_get_basename(runtime_dir);
  g_autoptr(GDir) d = g_dir_open(root, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    if (g_str_equal(name, self))
      continue;
    g_autofree char *dir = g_build_filename(root, name, NULL);
    if (!check_other(cfg, dir, name, error)) {
      nf_shard_claim_release(claim);
      return NULL;
    }
  }
  return claim;
}

void nf_shard_claim_release(NfShardClaim *claim)
{
  if (claim == NULL)
    return;
  g_unlink(claim->path);
  g_free(claim->path);
  g_free(claim);
}
