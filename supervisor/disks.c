/*
 * disks.c: per-guest overlays for a fleet (see disks.h), on top of the
 * overlay/ library, which knows nothing of fleets or guests.
 */
#include "supervisor/disks.h"

#include "overlay/overlay.h"
#include "supervisor/identity.h"

struct NfDisks {
  const NfFleetConfig *cfg;
  NfOverlayBase *base;
  char *dir;
  NfOverlayEnvCache *env_cache;
};

typedef struct {
  NfDisks *disks;
  guint first_id;
  GError *error;
} Prepare;

static gboolean inject_serial(NfDisks *disks, guint id, const char *path, GError **error);
static void prepared_cb(guint index, const char *path, gboolean created, const GError *error,
                        gpointer data);

NfDisks *nf_disks_new(const NfFleetConfig *cfg, const NfFleetPaths *paths, GError **error)
{
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(cfg->disk, cfg->disk_format, error);
  if (base == NULL) {
    g_prefix_error(error, cfg->profile == NF_PROFILE_NERVES ? "--firmware: " : "--disk: ");
    return NULL;
  }
  g_autofree char *dir = g_build_filename(paths->state_dir, "disks", NULL);
  nf_overlay_clean_temps(dir);
  if (cfg->reflash_all ? !nf_overlay_record_base(dir, base, error)
                       : !nf_overlay_check_base(dir, base, error)) {
    if (!cfg->reflash_all)
      g_prefix_error(error, "the fleet's disks cannot be used (start with --reflash-all to "
                            "recreate every guest's disk from the new base): ");
    return NULL;
  }
  NfDisks *d = g_new0(NfDisks, 1);
  d->cfg = cfg;
  d->base = g_steal_pointer(&base);
  d->dir = g_steal_pointer(&dir);
  d->env_cache = nf_overlay_env_cache_new(0x2000, 0x20000);
  return d;
}

void nf_disks_free(NfDisks *d)
{
  if (d == NULL)
    return;
  nf_overlay_base_free(d->base);
  nf_overlay_env_cache_free(d->env_cache);
  g_free(d->dir);
  g_free(d);
}

char *nf_disks_overlay_path(NfDisks *d, guint id)
{
  g_autofree char *name = nf_identity_name(d->cfg->name, id);
  return nf_overlay_path(d->dir, name);
}

static gboolean inject_serial(NfDisks *d, guint id, const char *path, GError **error)
{
  if (d->cfg->profile != NF_PROFILE_NERVES)
    return TRUE;
  g_autofree char *serial = nf_identity_serial(d->cfg->serial_format, id, error);
  if (serial == NULL || !nf_overlay_env_set_serial(path, serial, error)) {
    g_prefix_error(error, "writing the serial into %s: ", path);
    return FALSE;
  }
  nf_overlay_env_cache_forget(d->env_cache, path);
  return TRUE;
}

static void prepared_cb(guint index, const char *path, gboolean created, const GError *error,
                        gpointer data)
{
  Prepare *p = data;
  if (p->error)
    return;
  if (error)
    p->error = g_error_copy(error);
  else if (created)
    inject_serial(p->disks, p->first_id + index, path, &p->error);
}

gboolean nf_disks_prepare(NfDisks *d, guint first_id, guint count, GError **error)
{
  g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < count; i++)
    g_ptr_array_add(paths, nf_disks_overlay_path(d, first_id + i));
  g_ptr_array_add(paths, NULL);
  Prepare p = {.disks = d, .first_id = first_id};
  NfOverlayEnsureFlags flags =
      d->cfg->reflash_all ? NF_OVERLAY_ENSURE_REPLACE : NF_OVERLAY_ENSURE_DEFAULT;
  g_autoptr(GError) local = NULL;
  gboolean ok = nf_overlay_ensure_sync(d->base, (const char *const *)paths->pdata, flags, 0,
                                       prepared_cb, &p, NULL, &local);
  if (p.error) {
    g_propagate_error(error, p.error);
    return FALSE;
  }
  if (!ok) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  return TRUE;
}

gboolean nf_disks_ensure_one(NfDisks *d, guint id, gboolean reflash, GError **error)
{
  g_autofree char *path = nf_disks_overlay_path(d, id);
  if (reflash) {
    if (!nf_overlay_reflash(d->base, path, error))
      return FALSE;
    nf_overlay_env_cache_forget(d->env_cache, path);
    return inject_serial(d, id, path, error);
  }
  if (g_file_test(path, G_FILE_TEST_EXISTS))
    return TRUE;
  return nf_disks_prepare(d, id, 1, error);
}

const NfUbootEnv *nf_disks_env(NfDisks *d, guint id)
{
  g_autofree char *path = nf_disks_overlay_path(d, id);
  return nf_overlay_env_cache_get(d->env_cache, path, NULL);
}

void nf_disks_remove_all(NfDisks *d)
{
  nf_overlay_remove_all(d->dir, NULL);
}
