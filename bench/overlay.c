/*
 * bench/overlay: how fast overlays are made, and how fast `ps` can read the
 * U-Boot env of every guest's overlay.
 *
 *   build/rel/bench/overlay [N_OVERLAYS=200] [N_ENV=1000] [DIR=$TMPDIR]
 *
 * Prints "name value unit" lines:
 * - create_serial_loop: one `qemu-img create` after another (the baseline);
 * - ensure_jK: nf_overlay_ensure_sync with max_parallel K (the first overlay
 *   by qemu-img, the others copied from it; temp + fsync + rename each);
 * - env_read_<path>: per-overlay latency of each env read path, and the total
 *   for N_ENV overlays (qemu paths are sampled on 50 and extrapolated), and
 *   through NfOverlayEnvCache (first pass: misses; second: hits).
 * Everything it creates is removed at the end.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>

#include "overlay/env.h"
#include "overlay/overlay.h"

static char **make_paths(const char *dir, const char *prefix, guint n);
static void run_or_die(const char *cmd);
static void bench_env(const NfOverlayBase *base, const char *dir, guint n_env);

static char **make_paths(const char *dir, const char *prefix, guint n)
{
  char **paths = g_new0(char *, n + 1);
  for (guint i = 0; i < n; i++) {
    g_autofree char *name = g_strdup_printf("%s%u", prefix, i);
    paths[i] = nf_overlay_path(dir, name);
  }
  return paths;
}

static void run_or_die(const char *cmd)
{
  if (system(cmd) != 0)
    g_error("failed: %s", cmd);
}

static void bench_env(const NfOverlayBase *base, const char *dir, guint n_env)
{
  g_autoptr(GError) error = NULL;
  gint64 t0;
  double dt;
  /* Env reads over n_env overlays; 1 in 10 has its own serial written. */
  g_auto(GStrv) envs = make_paths(dir, "e", n_env);
  g_assert_true(
      nf_overlay_ensure_sync(base, (const char *const *)envs, 0, 4, NULL, NULL, NULL, &error));
  guint written = 0;
  t0 = g_get_monotonic_time();
  for (guint i = 0; i < n_env; i += 10, written++) {
    g_autofree char *s = g_strdup_printf("NF-%06u", i);
    g_assert_true(nf_overlay_env_set_serial(envs[i], s, &error));
  }
  dt = (double)(g_get_monotonic_time() - t0) / 1e3;
  g_print("env_set_serial %.1f ms/overlay (read + qemu-io write)\n", dt / written);

  struct {
    NfOverlayEnvReader how;
    const char *name;
    guint sample;
  } paths[] = {{NF_OVERLAY_ENV_READ_NATIVE, "native", n_env},
               {NF_OVERLAY_ENV_READ_QEMU_IMG, "qemu_img_dd", MIN(50, n_env)},
               {NF_OVERLAY_ENV_READ_QEMU_IO, "qemu_io", MIN(50, n_env)}};
  for (guint p = 0; p < G_N_ELEMENTS(paths); p++) {
    t0 = g_get_monotonic_time();
    for (guint i = 0; i < paths[p].sample; i++) {
      g_autoptr(NfUbootEnv) env = NULL;
      g_assert_true(nf_overlay_env_read_with(paths[p].how, envs[i], 0x2000, 0x20000, &env, &error));
      const char *want = i % 10 == 0 ? NULL : "NF-000000";
      if (want)
        g_assert_cmpstr(nf_ubootenv_get(env, "nerves_serial_number"), ==, want);
    }
    double per_ms = (double)(g_get_monotonic_time() - t0) / 1e3 / paths[p].sample;
    g_print("env_read_%s %.3f ms/overlay, %.2f s for %u overlays%s\n", paths[p].name, per_ms,
            per_ms * n_env / 1e3, n_env, paths[p].sample < n_env ? " (extrapolated)" : "");
  }
  g_autoptr(NfOverlayEnvCache) cache = nf_overlay_env_cache_new(0x2000, 0x20000);
  for (guint pass = 0; pass < 2; pass++) {
    t0 = g_get_monotonic_time();
    for (guint i = 0; i < n_env; i++)
      g_assert_nonnull(nf_overlay_env_cache_get(cache, envs[i], NULL));
    dt = (double)(g_get_monotonic_time() - t0) / 1e3;
    g_print("env_cache_%s %.3f ms/overlay, %.1f ms for %u overlays\n", pass ? "hit" : "miss",
            dt / n_env, dt, n_env);
  }
  for (guint i = 0; i < n_env; i++)
    g_unlink(envs[i]);
}

int main(int argc, char **argv)
{
  guint n = argc > 1 ? (guint)atoi(argv[1]) : 200;
  guint n_env = argc > 2 ? (guint)atoi(argv[2]) : 1000;
  const char *parent = argc > 3 ? argv[3] : g_get_tmp_dir();
  g_autofree char *tmpl = g_build_filename(parent, "nf-bench-XXXXXX", NULL);
  g_autofree char *dir = g_mkdtemp(tmpl) ? g_strdup(tmpl) : NULL;
  g_assert_nonnull(dir);
  g_autoptr(GError) error = NULL;

  /* A 1 MiB "firmware" with an env block at 0x2000. */
  g_autofree char *fw = g_build_filename(dir, "firmware.img", NULL);
  g_autofree char *cmd = g_strdup_printf(
      "cd %s && truncate -s 64M firmware.img && printf 'nerves_fw_active=a\\n"
      "nerves_serial_number=NF-000000\\n' | mkenvimage -s 0x20000 -o env.bin - && "
      "dd if=env.bin of=firmware.img bs=512 seek=16 conv=notrunc 2>/dev/null && rm env.bin",
      dir);
  run_or_die(cmd);
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(fw, "raw", &error);
  g_assert_no_error(error);

  /* Baseline: a serial loop of qemu-img create. */
  g_auto(GStrv) serial = make_paths(dir, "s", n);
  gint64 t0 = g_get_monotonic_time();
  for (guint i = 0; i < n; i++) {
    const char *a[] = {"qemu-img", "create", "-q", "-f",      "qcow2", "-F",
                       "raw",      "-b",     fw,   serial[i], NULL};
    g_assert_true(nf_overlay_tool_run(a, NULL, NULL, NULL, NULL));
  }
  double dt = (double)(g_get_monotonic_time() - t0) / 1e6;
  g_print("create_serial_loop %.1f overlays/s (%u in %.2f s)\n", n / dt, n, dt);
  for (guint i = 0; i < n; i++)
    g_unlink(serial[i]);

  guint levels[] = {1, 2, 4, 8};
  for (guint l = 0; l < G_N_ELEMENTS(levels); l++) {
    g_autofree char *prefix = g_strdup_printf("p%u-", levels[l]);
    g_auto(GStrv) paths = make_paths(dir, prefix, n);
    guint created = 0;
    t0 = g_get_monotonic_time();
    g_assert_true(nf_overlay_ensure_sync(base, (const char *const *)paths, 0, levels[l], NULL, NULL,
                                         &created, &error));
    dt = (double)(g_get_monotonic_time() - t0) / 1e6;
    g_assert_cmpuint(created, ==, n);
    g_print("ensure_j%u %.1f overlays/s (%u in %.2f s)\n", levels[l], n / dt, n, dt);
    t0 = g_get_monotonic_time();
    g_assert_true(nf_overlay_ensure_sync(base, (const char *const *)paths, 0, levels[l], NULL, NULL,
                                         &created, &error));
    g_assert_cmpuint(created, ==, 0);
    if (l == 0)
      g_print("ensure_existing %.1f us/overlay\n", (double)(g_get_monotonic_time() - t0) / n);
    for (guint i = 0; i < n; i++)
      g_unlink(paths[i]);
  }

  if (n_env > 0)
    bench_env(base, dir, n_env);
  g_assert_true(nf_overlay_remove_all(dir, &error));
  g_unlink(fw);
  g_rmdir(dir);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  return 0;
}
