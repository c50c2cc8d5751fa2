/*
 * qmp.h: an asynchronous, deadline-bound QMP client on a GLib main context.
 *
 * One NfQmp speaks to one qemu monitor over a stream socket. Everything is
 * event driven: reads and writes are GSources on the caller's GMainContext, and
 * every command carries a deadline so that one silent qemu can never stall a
 * fleet of thousands. The client knows nothing about fleets or guests.
 *
 * Life of a connection: greeting -> qmp_capabilities -> "ready" callback ->
 * commands (replies matched by id) and events interleaved -> closed callback
 * exactly once (EOF, reset, protocol error, or nf_qmp_close()).
 *
 * Ownership: NfQmp is refcounted. Callbacks may drop the last reference of
 * the caller's own; the client holds a temporary reference while it dispatches.
 * Dropping the last reference of a connection that is still open closes it
 * first, exactly as nf_qmp_close() would (pending callbacks fail, closed runs
 * with NULL), so every callback promise below holds even then; call
 * nf_qmp_close() before freeing whatever user_data the callbacks use.
 *
 * Cost: one GSource per connection (the socket watch, whose ready time is the
 * earliest command deadline), no thread, no timer per command, and no read
 * buffer while no partial line is pending.
 *
 * Integers: qemu prints uint64 values, jansson holds int64. Values above
 * INT64_MAX arrive wrapped to int64 (cast json_integer_value() to guint64);
 * notably balloon guest-stats report a stat the guest never filled in as
 * uint64 -1, which reads as -1.
 */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

#define NF_QMP_ERROR (nf_qmp_error_quark())
GQuark nf_qmp_error_quark(void);

typedef enum {
  NF_QMP_ERROR_COMMAND,      /* qemu answered {"error": {...}}; see NfQmpReply */
  NF_QMP_ERROR_TIMEOUT,      /* the command's deadline passed */
  NF_QMP_ERROR_DISCONNECTED, /* EOF, reset, or the connection was closed */
  NF_QMP_ERROR_PROTOCOL,     /* the peer broke the protocol (garbage, oversize line, ...) */
  NF_QMP_ERROR_CONNECT,      /* could not connect to the socket */
} NfQmpError;

/* Longest line accepted from qemu; longer is a protocol error. */
#define NF_QMP_MAX_LINE (1024 * 1024)

typedef struct NfQmp NfQmp;

/* What a command produced. On success `ret` is the "return" member (borrowed:
 * valid during the callback; json_incref() to keep it) and `error` is NULL.
 * On failure `ret` is NULL and `error` is set; for NF_QMP_ERROR_COMMAND the
 * structured qemu error is in `err_class` ("GenericError", ...) and the
 * GError message holds its "desc". */
typedef struct {
  json_t *ret;
  const GError *error;
  const char *err_class;
} NfQmpReply;

typedef void (*NfQmpReplyFunc)(NfQmp *qmp, const NfQmpReply *reply, gpointer user_data);

typedef struct {
  /* Negotiation finished; commands may be sent (they may also be queued before). */
  void (*ready)(NfQmp *qmp, gpointer user_data);
  /* An event. `data` is borrowed (may be NULL when the event has none);
   * `timestamp_us` is qemu's timestamp (seconds*1e6 + microseconds). */
  void (*event)(NfQmp *qmp, const char *name, json_t *data, gint64 timestamp_us,
                gpointer user_data);
  /* The connection ended. Called exactly once, after every pending command's
   * callback has run with an error. `error` says why (NULL after nf_qmp_close()):
   * NF_QMP_ERROR_DISCONNECTED (EOF, reset), NF_QMP_ERROR_PROTOCOL (broken
   * peer, or qmp_capabilities refused), NF_QMP_ERROR_TIMEOUT (qemu did not
   * answer qmp_capabilities within the default timeout). No deadline applies
   * to the greeting itself: commands queued meanwhile time out on their own. */
  void (*closed)(NfQmp *qmp, const GError *error, gpointer user_data);
} NfQmpCallbacks;

/* Takes ownership of `fd`, an already-connected stream socket (for example one
 * end of a socketpair handed to qemu). Never fails; problems arrive through
 * callbacks.closed. `context` may be NULL for the thread-default context.
 * `callbacks` is copied. */
NfQmp *nf_qmp_new_from_fd(int fd, GMainContext *context, const NfQmpCallbacks *callbacks,
                          gpointer user_data);

/* Connects (non-blocking) to a unix socket at `path`. Returns NULL and sets
 * `error` (NF_QMP_ERROR_CONNECT) when the socket cannot be created or the
 * path is too long for sun_path; a refused connection also fails here. */
NfQmp *nf_qmp_connect_unix(const char *path, GMainContext *context, const NfQmpCallbacks *callbacks,
                           gpointer user_data, GError **error);

NfQmp *nf_qmp_ref(NfQmp *qmp);
void nf_qmp_unref(NfQmp *qmp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfQmp, nf_qmp_unref)

/* Closes the connection: pending commands fail with NF_QMP_ERROR_DISCONNECTED,
 * then callbacks.closed runs with error NULL. Idempotent. Does not drop a
 * reference. */
void nf_qmp_close(NfQmp *qmp);

/* Sends `command` with `args` (stolen; may be NULL) as {"execute", "arguments",
 * "id"} with a per-connection integer id. `timeout_ms` == 0 means
 * the client's default (nf_qmp_set_default_timeout, 5000 ms initially).
 * `callback` (may be NULL) runs exactly once. On a closed connection the
 * callback runs from an idle source with NF_QMP_ERROR_DISCONNECTED. Commands
 * issued before negotiation finished are queued and sent after it. A timed-out
 * command marks the connection unresponsive until a later reply arrives (a
 * late reply to the timed-out command itself counts, and is otherwise
 * dropped). The callback never runs inside this call. A command that cannot
 * be encoded (invalid UTF-8) fails with NF_QMP_ERROR_COMMAND. */
void nf_qmp_execute(NfQmp *qmp, const char *command, json_t *args, guint timeout_ms,
                    NfQmpReplyFunc callback, gpointer user_data);

/* Reads and handles at once what the peer has already sent (replies, events;
 * callbacks run inside), without waiting for more. For the moment its
 * process is known to have exited: the last events it wrote (SHUTDOWN and its
 * reason) are in the socket, and the exit must not be judged without them.
 * A no-op on NULL, a closed connection, or from inside this client's own
 * callbacks while it parses. */
void nf_qmp_drain(NfQmp *qmp);

void nf_qmp_set_default_timeout(NfQmp *qmp, guint timeout_ms);
gboolean nf_qmp_is_ready(NfQmp *qmp);
gboolean nf_qmp_is_closed(NfQmp *qmp);
/* FALSE after a deadline expired, until qemu replies to something again. */
gboolean nf_qmp_is_responsive(NfQmp *qmp);
/* From the greeting, once received; NULL before. Borrowed. */
json_t *nf_qmp_greeting(NfQmp *qmp);
/* "7.2.22"-style version from the greeting, or NULL. Borrowed. */
const char *nf_qmp_version_string(NfQmp *qmp);
/* Commands issued whose callback has not run yet (sent or held back until
 * negotiation finishes). For health views and tests. */
guint nf_qmp_pending_count(NfQmp *qmp);

/* Typed helpers: thin wrappers over nf_qmp_execute. */
void nf_qmp_query_status(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_quit(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_system_reset(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_system_powerdown(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_stop(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_cont(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_balloon(NfQmp *qmp, guint64 bytes, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_query_balloon(NfQmp *qmp, guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_qom_set(NfQmp *qmp, const char *path, const char *property, json_t *value,
                    guint timeout_ms, NfQmpReplyFunc cb, gpointer ud);
void nf_qmp_qom_get(NfQmp *qmp, const char *path, const char *property, guint timeout_ms,
                    NfQmpReplyFunc cb, gpointer ud);

/* QOM path of the balloon device as the supervisor adds it (id=balloon0). */
#define NF_QMP_BALLOON_PATH "/machine/peripheral/balloon0"

/* The framing/parsing core, exposed for tests, the fuzzer and the benchmark.
 * Feeds bytes; calls `on_message` for every complete line that parses as a
 * JSON object (borrowed). Returns FALSE and sets `error` (NF_QMP_ERROR_PROTOCOL)
 * on an oversize line, invalid JSON or a non-object; the parser is then
 * unusable. */
typedef struct NfQmpParser NfQmpParser;
typedef void (*NfQmpMessageFunc)(json_t *message, gpointer user_data);
NfQmpParser *nf_qmp_parser_new(NfQmpMessageFunc on_message, gpointer user_data);
gboolean nf_qmp_parser_feed(NfQmpParser *parser, const char *data, gsize len, GError **error);
void nf_qmp_parser_free(NfQmpParser *parser);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfQmpParser, nf_qmp_parser_free)

G_END_DECLS
