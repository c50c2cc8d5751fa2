/*
 * tool.c: synchronous runs of QEMU's disk tools (see tool.h). GSubprocess
 * closes every inherited descriptor in the child, which matters in a
 * supervisor that holds thousands of guest sockets.
 */
#include "overlay/tool.h"

#include <gio/gio.h>
#include <string.h>

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

gboolean nf_overlay_tool_run(const char *const *argv, char **out, char **err, int *exit_status,
                             GError **error)
{
  g_autoptr(GError) local = NULL;
  if (exit_status)
    *exit_status = -1;
  g_autoptr(GSubprocess) proc = g_subprocess_newv(
      argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &local);
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
  gboolean exited = g_subprocess_get_if_exited(proc);
  int status = exited ? g_subprocess_get_exit_status(proc) : -1;
  if (exit_status)
    *exit_status = status;
  if (out)
    *out = g_steal_pointer(&o);
  if (status != 0) {
    g_autofree char *line = nf_overlay_tool_first_line(e);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "%s",
                *line ? line : (exited ? "failed without a message" : "killed by a signal"));
  }
  if (err)
    *err = g_steal_pointer(&e);
  return status == 0;
}
