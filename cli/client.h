/*
 * client.h: the CLI's side of the control socket (see
 * supervisor/control-protocol.md). Verbs other than `run` are short-lived
 * clients: connect to the fleet named by --name/--runtime-dir (resolved
 * exactly as the supervisor resolves it), send one request, read one reply,
 * and for streams (`events`, `logs -f`, `console`) keep reading. Blocking
 * I/O with deadlines is fine here: a client owns no one else's loop.
 */
#pragma once
#include <stdio.h>
#include <glib.h>
#include <jansson.h>

#define NF_CLIENT_ERROR (nf_client_error_quark())
GQuark nf_client_error_quark(void);
typedef enum {
  NF_CLIENT_ERROR_NO_FLEET, /* no socket, or nothing listening on it */
  NF_CLIENT_ERROR_IO,       /* the connection broke or timed out */
  NF_CLIENT_ERROR_PROTOCOL, /* the reply was not what the protocol says */
  NF_CLIENT_ERROR_REMOTE,   /* the supervisor answered ok:false */
  NF_CLIENT_ERROR_USAGE,    /* bad fleet name or runtime dir */
  NF_CLIENT_ERROR_TIMEOUT,  /* the supervisor did not answer within the deadline */
} NfClientError;

/* Default deadline of a request that does not wait for guests. */
#define NF_CLIENT_TIMEOUT_MS 30000
/* Deadline of the connection's first exchange (`hello`), which every verb
 * makes, even those that then wait without one (`wait`, `console`...). */
#define NF_CLIENT_HANDSHAKE_MS 10000

/* The options every fleet verb takes; fill with NF_CLIENT_OPTION_ENTRIES. */
typedef struct {
  char *name;
  char *runtime_dir;
} NfClientOptions;

#define NF_CLIENT_OPTION_ENTRIES(o)                                                                \
  {"name", 'n', 0, G_OPTION_ARG_STRING, &(o)->name, "Fleet name (default: default)", "NAME"},      \
  {                                                                                                \
    "runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &(o)->runtime_dir,                                 \
        "The fleet's runtime dir, if `run` was given one", "DIR"                                   \
  }

void nf_client_options_clear(NfClientOptions *o);

typedef struct NfClient NfClient;

/* Connects to the fleet's control socket: --name/--runtime-dir, else
 * $NERVESFLEET_NAME/$NERVESFLEET_RUNTIME_DIR (set for `run --exec` CMDs),
 * else the fleet 'default', and makes the `hello` handshake. Errors:
 * NF_CLIENT_ERROR_NO_FLEET with "no fleet 'x' running; start one with
 * `nervesfleet run N --name x`" when there is no socket or nobody listens
 * (a stale one); NF_CLIENT_ERROR_TIMEOUT with "fleet 'x': supervisor pid N
 * not answering within S s" when the handshake takes longer than
 * NF_CLIENT_HANDSHAKE_MS; NF_CLIENT_ERROR_USAGE for a bad name or dir. */
NfClient *nf_client_connect(const NfClientOptions *o, GError **error);
/* FALSE with NF_CLIENT_ERROR_TIMEOUT when fleet `name` (runtime dir
 * `runtime_dir`, NULL: the default) has a supervisor that does not answer
 * the handshake in time (stopped, wedged); TRUE otherwise, including when
 * there is no control socket to ask. For `down`, before it signals. */
gboolean nf_client_check_answering(const char *name, const char *runtime_dir, GError **error);
/* The supervisor's answer to the handshake (borrowed): `pid`, `count`...
 * as for the `hello` command. */
json_t *nf_client_hello(NfClient *c);
void nf_client_free(NfClient *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfClient, nf_client_free)

/* Sends {"v":1,"id":N,"cmd":cmd,"args":args} (`args` stolen; NULL = {}) and
 * reads the reply within `timeout_ms` (0: no deadline; past it,
 * NF_CLIENT_ERROR_TIMEOUT "... not answering within S s"). Returns the
 * "result" (new reference) or NULL with an error; for ok:false the error is
 * NF_CLIENT_ERROR_REMOTE with the supervisor's message, and the whole error
 * object stays available from nf_client_last_error(). */
json_t *nf_client_call(NfClient *c, const char *cmd, json_t *args, guint timeout_ms,
                       GError **error);
/* nf_client_call, printing the result as compact JSON and a newline to
 * `out`: the supervisor's own bytes, written from the receive buffer, when
 * the reply's envelope reads as expected (reply-scan.h), so a large result
 * is neither parsed, encoded nor copied again. FALSE with an error as
 * nf_client_call, and nothing printed. */
gboolean nf_client_call_print(NfClient *c, const char *cmd, json_t *args, guint timeout_ms,
                              FILE *out, GError **error);
/* The "error" object of the last ok:false reply (borrowed), or NULL. */
json_t *nf_client_last_error(NfClient *c);
/* Its "code" ("timeout", "no_such_guest", ...) or "". */
const char *nf_client_last_code(NfClient *c);

/* Streams. The socket fd (for poll), and reading what follows a reply:
 * bytes already received are returned first. read_raw returns the byte
 * count, 0 at EOF, -1 with an error. read_line returns one line without its
 * newline, NULL at EOF (no error) or on failure (error set). */
int nf_client_fd(NfClient *c);
gssize nf_client_read_raw(NfClient *c, char *buf, gsize size, GError **error);
char *nf_client_read_line(NfClient *c, GError **error);
/* Whether read_raw has buffered bytes to return without touching the socket. */
gboolean nf_client_has_buffered(NfClient *c);
gboolean nf_client_write_all(NfClient *c, const char *buf, gsize len, GError **error);
/* Why a stream of guest `id` (0: of the fleet, as `events`) ended (its
 * connection closed), asked on a new connection: the fleet is gone (no
 * socket, or nothing listening), the guest left it (scaled away), or the
 * supervisor ended the stream while both run (it drops a reader that falls
 * too far behind; also when it answers but not as asked: busy, or too
 * slow). */
typedef enum { NF_STREAM_FLEET_GONE, NF_STREAM_GUEST_GONE, NF_STREAM_DROPPED } NfStreamEnd;
NfStreamEnd nf_client_stream_end(const NfClientOptions *o, guint id);

/* Verb plumbing shared by cmd-*.c: parses `argv` with `entries` (which end
 * with NF_CLIENT_OPTION_ENTRIES and {NULL}); `params` names the positional
 * arguments ("TARGET"), `summary` describes the verb for --help. FALSE after
 * printing a usage error (exit NF_EXIT_USAGE); --help prints and exits 0. */
gboolean nf_client_parse_args(const char *verb, const char *params, const char *summary,
                              GOptionEntry *entries, int *argc, char ***argv);
/* Prints "nervesfleet: VERB: message" and returns the exit code for it
 * (usage errors 2, everything else 1). */
int nf_client_fail(const char *verb, const GError *error, NfClient *c);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(NfClientOptions, nf_client_options_clear)

/* Prints a verb's result document: as one line of compact JSON when `json`
 * (the stable `--json` output), else through `table`. */
void nf_client_print_result(json_t *result, gboolean json, void (*table)(json_t *result));

/* After an ok:false "failed"/"timeout" reply: prints each guest named in the
 * error's "guests" (state, exit reason, the last `tail_lines` console lines)
 * to stderr. */
void nf_client_print_problems(NfClient *c, guint tail_lines);
