/*
 * paths.h: where a fleet keeps its files.
 *   runtime dir (sockets, pid files, the fleet lock; short path, 0700):
 *     --runtime-dir, else $XDG_RUNTIME_DIR/nervesfleet/<fleet>, else
 *     /run/nervesfleet/<fleet> as root, else /tmp/nervesfleet-<uid>/<fleet>
 *   state dir (logs, later overlays and status files): --state-dir, else
 *     $XDG_STATE_HOME/nervesfleet/<fleet>, else ~/.local/state/nervesfleet/<fleet>
 * Every path that will become a unix socket is checked against sun_path here,
 * before anything starts: a too-long path is an error, never a truncation.
 */
#pragma once
#include <glib.h>

#define NF_PATHS_ERROR (nf_paths_error_quark())
GQuark nf_paths_error_quark(void);
typedef enum {
  NF_PATHS_ERROR_NAME,     /* fleet name not usable in a path */
  NF_PATHS_ERROR_TOO_LONG, /* a socket path would not fit sun_path */
  NF_PATHS_ERROR_CREATE,   /* a directory could not be made or written */
} NfPathsError;

typedef struct {
  char *runtime_dir;
  char *state_dir;
} NfFleetPaths;

/* Resolves the two dirs for fleet `name` (overrides may be NULL). Checks the
 * name (letters, digits, '-', '_', '.'; 1-64 chars; not "." or ".."). Creates
 * nothing. */
gboolean nf_paths_resolve(NfFleetPaths *paths, const char *name, const char *runtime_override,
                          const char *state_override, GError **error);
void nf_paths_clear(NfFleetPaths *paths);

/* mkdir -p with `mode` for the last component, then proves it is writable.
 * The error names the directory and the flag that moves it. */
gboolean nf_paths_ensure_dir(const char *dir, int mode, const char *flag, GError **error);

/* The top-most missing component of `dir` (what mkdir -p would create
 * first), or NULL when `dir` exists. */
char *nf_paths_first_missing(const char *dir);
/* Removes `dir` and its parents up to and including `top` while they are
 * empty (undoes a mkdir -p that `top` came from; NULL: does nothing). */
void nf_paths_remove_empty_dirs(const char *dir, const char *top);
/* Writes (and fsyncs) a block to a temp file in `dir` and removes it: FALSE
 * with an error naming the dir, the cause (a full filesystem, read-only,
 * permissions) and `flag` when nothing can be written there. */
gboolean nf_paths_probe_write(const char *dir, const char *flag, GError **error);

/* Fails with NF_PATHS_ERROR_TOO_LONG when `path` cannot be a unix socket
 * address, naming the path, its length and the limit, and the fix. */
gboolean nf_paths_check_socket(const char *path, GError **error);

/* Guest file names inside the dirs. All return newly allocated strings. */
char *nf_paths_guest_name(guint id);                             /* "vm-0003" */
char *nf_paths_guest_state_dir(const NfFleetPaths *p, guint id); /* <state>/vm-0003 */
char *nf_paths_guest_runtime(const NfFleetPaths *p, guint id, const char *suffix);

/* A guest's files, in one allocation: `block` (g_free it) holds them all and
 * the others point into it. They live as long as the guest, and as eight
 * strings sized by g_build_filename (128 bytes each for a typical path)
 * they were ~1 KiB of the ~5 KiB a guest costs the supervisor (issue 17). */
typedef struct {
  char *block;
  const char *state_dir;   /* <state>/vm-0003 */
  const char *qemu_log;    /* .../qemu.log */
  const char *console_log; /* .../console.log */
  const char *status_path; /* .../status.json */
  const char *pidfile;     /* <runtime>/vm-0003.pid */
  const char *ctl_path;    /* ... .ctl */
  const char *qmp_path;    /* ... .qmp */
  const char *serial_path; /* ... .serial */
} NfGuestFiles;
void nf_paths_guest_files(const NfFleetPaths *p, guint id, NfGuestFiles *files);

/* Where `make guest` puts the default guest: $NERVESFLEET_GUEST_DIR, else
 * $XDG_CACHE_HOME/nervesfleet/guest, else ~/.cache/nervesfleet/guest. */
char *nf_paths_default_guest_dir(void);

/* The name of the fleet's memory cgroup dir: "<fleet>-<hash of the runtime
 * dir>", so two fleets of the same name in different runtime dirs (another
 * user, a test) never share guest cgroups. */
char *nf_paths_cgroup_name(const NfFleetPaths *p, const char *fleet);
