/*
 * commands.c: typed wrappers for the QMP commands the supervisor uses.
 *
 * Each is a thin layer over nf_qmp_execute() that builds the arguments, so the
 * supervisor never spells command names or argument keys by hand and a typo
 * becomes a compile error instead of a GenericError at run time. Replies are
 * passed through untouched: the callers read the few members they need.
 */
#include "qmp/qmp.h"

/* Reply: {"status": "running"|"paused"|..., "running": bool, "singlestep": bool}. */
void nf_qmp_query_status(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "query-status", NULL, timeout_ms, cb, ud);
}

/* qemu replies {} and then exits (SHUTDOWN reason "host-qmp-quit", then EOF):
 * expect the connection to close right after the reply. */
void nf_qmp_quit(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "quit", NULL, timeout_ms, cb, ud);
}

void nf_qmp_system_reset(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "system_reset", NULL, timeout_ms, cb, ud);
}

/* Only a request: the guest must handle the power button for anything to happen. */
void nf_qmp_system_powerdown(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "system_powerdown", NULL, timeout_ms, cb, ud);
}

void nf_qmp_stop(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "stop", NULL, timeout_ms, cb, ud);
}

void nf_qmp_cont(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "cont", NULL, timeout_ms, cb, ud);
}

/* Asks for a new guest memory size in bytes. The reply only acknowledges the
 * request; the guest gets there later, reported by BALLOON_CHANGE events
 * ("actual") and query-balloon. */
void nf_qmp_balloon(NfQmp *qmp, guint64 bytes, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "balloon", json_pack("{s:I}", "value", (json_int_t)bytes), timeout_ms, cb,
                 ud);
}

/* Reply: {"actual": bytes}. */
void nf_qmp_query_balloon(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "query-balloon", NULL, timeout_ms, cb, ud);
}

/* Steals `value`. For the balloon: NF_QMP_BALLOON_PATH,
 * "guest-stats-polling-interval", json_integer(seconds). */
void nf_qmp_qom_set(NfQmp *qmp, const char *path, const char *property, json_t *value,
                    guint timeout_ms, NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "qom-set",
                 json_pack("{s:s, s:s, s:o}", "path", path, "property", property, "value", value),
                 timeout_ms, cb, ud);
}

/* For the balloon: NF_QMP_BALLOON_PATH, "guest-stats" replies
 * {"stats": {...}, "last-update": seconds}; last-update advances while the
 * guest kernel is alive and polling is on. */
void nf_qmp_qom_get(NfQmp *qmp, const char *path, const char *property, guint timeout_ms,
                    NfQmpReplyFunc cb, gpointer ud)
{
  nf_qmp_execute(qmp, "qom-get", json_pack("{s:s, s:s}", "path", path, "property", property),
                 timeout_ms, cb, ud);
}
