/*
 * snapshot-private.h: the insides of a snapshot (snapshot.h), shared by
 * snapshot.c (key, cache, restores) and snapshot-build.c (the template
 * build). Nothing else includes this.
 */
#pragma once
#include "supervisor/process.h"
#include "supervisor/serial.h"
#include "supervisor/snapshot.h"

#define NF_SNAPSHOT_BUILD_TIMEOUT_MS (180 * 1000) /* without --boot-timeout */

typedef enum {
  NF_SNAPSHOT_IDLE,     /* no build running */
  NF_SNAPSHOT_BOOTING,  /* template spawned, waiting for the snapshot point */
  NF_SNAPSHOT_SAVING,   /* stopped, migrating to the temporary file */
  NF_SNAPSHOT_QUITTING, /* saved; waiting for the template qemu to be gone */
} NfSnapshotPhase;

struct NfSnapshot {
  const NfVmEnv *env;
  NfSnapshotNoticeFunc notice;
  NfSnapshotDoneFunc done;
  gpointer user_data;
  char *key;
  char *dir;        /* <cache>/nervesfleet/snapshots/<key> */
  char *state_path; /* dir/state */
  char *meta_path;  /* dir/meta.json */
  char *usable;     /* == state_path once it may be restored from, else NULL */
  char *qemu_version;
  guint done_idle;

  /* a build in progress (snapshot-build.c) */
  NfSnapshotPhase phase;
  NfProcess *proc;
  NfQmp *qmp;
  NfSerial *console;
  char *tmp_path; /* state.tmp-<pid>, renamed to state when whole */
  char *ok_path;  /* tmp_path.ok: the writer finished */
  char *pidfile;  /* <runtime>/template.pid */
  char *log_dir;  /* <state>/template */
  guint timer;
  guint build_timeout_ms;
  gint64 build_started;
};

/* snapshot.c */
void nf_snapshot_notice(NfSnapshot *snap, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Schedules the done callback (from an idle, never re-entrantly). */
void nf_snapshot_finish(NfSnapshot *snap);
/* Hex SHA-256 of a file's contents, or NULL with an error naming it. */
char *nf_snapshot_sha256_file(const char *path, GError **error);
/* The fleet's qemu command line with the placeholder identity: the template's,
 * and (without a pid file) the "argv minus per-guest parts" the key hashes. */
char **nf_snapshot_template_argv(const NfVmEnv *env, const char *pidfile);

/* snapshot-build.c */
/* Spawns the template; the rest happens on the main loop and ends in
 * nf_snapshot_finish (usable set, or a notice and not). */
gboolean nf_snapshot_build_start(NfSnapshot *snap, GError **error);
/* Ends the template if it runs, drops its channels and pid file. */
void nf_snapshot_build_stop(NfSnapshot *snap);
/* Stops the build, removes temporaries, says why, finishes unusable. */
void nf_snapshot_build_fail(NfSnapshot *snap, const char *why);
