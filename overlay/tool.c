/*
 * tool.c: runs of QEMU's disk tools, blocking or not (see tool.h).
 * GSubprocess closes every inherited descriptor in the child, which matters
 * in a supervisor that holds thousands of guest sockets.
 */
#include "overlay/tool.h"

#include <string.h>
#include <unistd.h>

/* Children started here and perhaps still running (pruned as they go). */
static GPtrArray *live_children;

static gboolean conclude(GSubprocess *proc, const char *e, int *exit_status, GError **error);
static void run_async_free(gpointer data);
static void run_done_cb(GObject *source, GAsyncResult *res, gpointer data);

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_overlay_error_quark(void)
{
  return g_quark_from_static_string("nf-overlay-error-quark");
}

char *nf_overlay_tool_first_line(const char *text)
{
  if (!text)
    return g_strdup("");
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    g_strstrip(*l);
    if (**l)
      return g_strdup(*l);
  }
  return g_strdup("");
}

/* A process group of its own, as a guest's qemu has: a Ctrl-C at the
 * terminal goes to the foreground group, and must reach the supervisor
 * alone (which stops the fleet in order), not kill the qemu-img or qemu-io
 * making a disk, which failed the start. */
static void own_group(gpointer data)
{
  setpgid(0, 0);
}

GSubprocess *nf_overlay_tool_spawn(const char *const *argv, GSubprocessFlags flags, int fd3,
                                   GError **error)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(flags);
  g_subprocess_launcher_set_child_setup(launcher, own_group, NULL, NULL);
  if (fd3 >= 0)
    g_subprocess_launcher_take_fd(launcher, fd3, 3);
  GSubprocess *proc = g_subprocess_launcher_spawnv(launcher, argv, error);
  if (!proc)
    return NULL;
  if (!live_children)
    live_children = g_ptr_array_new_with_free_func(g_object_unref);
  /* A reaped child has no identifier any more: forget those. */
  for (guint i = live_children->len; i-- > 0;)
    if (!g_subprocess_get_identifier(g_ptr_array_index(live_children, i)))
      g_ptr_array_remove_index_fast(live_children, i);
  g_ptr_array_add(live_children, g_object_ref(proc));
  return proc;
}

guint nf_overlay_tool_wait_all(void)
{
  if (!live_children)
    return 0;
  g_autoptr(GPtrArray) children = g_steal_pointer(&live_children);
  guint waited = 0;
  for (guint i = 0; i < children->len; i++) {
    GSubprocess *proc = g_ptr_array_index(children, i);
    if (g_subprocess_get_identifier(proc)) {
      waited++;
      g_subprocess_wait(proc, NULL, NULL);
    }
  }
  return waited;
}

/* The verdict on an exited tool; `e` is its stderr. */
static gboolean conclude(GSubprocess *proc, const char *e, int *exit_status, GError **error)
{
  gboolean exited = g_subprocess_get_if_exited(proc);
  int status = exited ? g_subprocess_get_exit_status(proc) : -1;
  if (exit_status)
    *exit_status = status;
  if (status != 0) {
    g_autofree char *line = nf_overlay_tool_first_line(e);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "%s",
                *line ? line : (exited ? "failed without a message" : "killed by a signal"));
    return FALSE;
  }
  return TRUE;
}

gboolean nf_overlay_tool_run(const char *const *argv, char **out, char **err, int *exit_status,
                             GError **error)
{
  g_autoptr(GError) local = NULL;
  if (exit_status)
    *exit_status = -1;
  g_autoptr(GSubprocess) proc = nf_overlay_tool_spawn(
      argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, -1, &local);
  if (!proc) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                "cannot run %s: %s (install qemu-utils)", argv[0], local->message);
    return FALSE;
  }
  g_autofree char *o = NULL, *e = NULL;
  if (!g_subprocess_communicate_utf8(proc, NULL, NULL, &o, &e, &local)) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "%s: %s", argv[0], local->message);
    return FALSE;
  }
  gboolean ok = conclude(proc, e, exit_status, error);
  if (out)
    *out = g_steal_pointer(&o);
  if (err)
    *err = g_steal_pointer(&e);
  return ok;
}

typedef struct {
  char *argv0;
  char *out, *err;
  int status;
} RunAsync;

static void run_async_free(gpointer data)
{
  RunAsync *r = data;
  g_free(r->argv0);
  g_free(r->out);
  g_free(r->err);
  g_free(r);
}

void nf_overlay_tool_run_async(const char *const *argv, int fd3, GAsyncReadyCallback done,
                               gpointer user_data)
{
  g_autoptr(GTask) task = g_task_new(NULL, NULL, done, user_data);
  g_task_set_source_tag(task, nf_overlay_tool_run_async);
  RunAsync *r = g_new0(RunAsync, 1);
  r->argv0 = g_strdup(argv[0]);
  r->status = -1;
  g_task_set_task_data(task, r, run_async_free);
  GError *error = NULL;
  g_autoptr(GSubprocess) proc = nf_overlay_tool_spawn(
      argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, fd3, &error);
  if (!proc) {
    g_task_return_new_error(task, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                            "cannot run %s: %s (install qemu-utils)", argv[0], error->message);
    g_error_free(error);
    return;
  }
  g_subprocess_communicate_utf8_async(proc, NULL, NULL, run_done_cb, g_steal_pointer(&task));
}

static void run_done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr(GTask) task = data;
  RunAsync *r = g_task_get_task_data(task);
  GSubprocess *proc = G_SUBPROCESS(source);
  GError *error = NULL;
  if (!g_subprocess_communicate_utf8_finish(proc, res, &r->out, &r->err, &error)) {
    g_prefix_error(&error, "%s: ", r->argv0);
    g_task_return_error(task, error);
    return;
  }
  if (!conclude(proc, r->err, &r->status, &error)) {
    g_task_return_error(task, error);
    return;
  }
  g_task_return_boolean(task, TRUE);
}

gboolean nf_overlay_tool_run_finish(GAsyncResult *result, char **out, char **err, int *exit_status,
                                    GError **error)
{
  g_return_val_if_fail(g_task_is_valid(result, NULL), FALSE);
  RunAsync *r = g_task_get_task_data(G_TASK(result));
  if (out)
    *out = g_steal_pointer(&r->out);
  if (err)
    *err = g_steal_pointer(&r->err);
  if (exit_status)
    *exit_status = r->status;
  return g_task_propagate_boolean(G_TASK(result), error);
}
