/*
 * snapshot.h: fleets started from one snapshot instead of N boots
 * (`run --snapshot`).
 *
 * Build: ONE template guest is booted with the fleet's own qemu command line,
 * its identity replaced by a placeholder serial; when its init reaches the
 * snapshot point (it prints NF_SNAPSHOT_POINT), it is stopped and migrated to
 * a state file (QMP stop + migrate "exec:cat > FILE"), and quit.
 *
 * Restore: each guest starts as the same command line plus `-incoming defer`,
 * less -kernel, -initrd and -append (its RAM comes from the snapshot; qemu
 * would otherwise keep a ~33 MB copy of the kernel in every guest);
 * once its QMP is up the supervisor asks for migrate-incoming of the file and,
 * when qemu reports the migration completed, `cont`. The sim guest's init
 * waits at the snapshot point until its fw_cfg serial is no longer the
 * placeholder (qemu rebuilds fw_cfg from the restored guest's own command
 * line), then prints its ready line with its own serial. The guest then goes
 * through the usual lifecycle; restarts restore again.
 *
 * Cache: $XDG_CACHE_HOME/nervesfleet/snapshots/<key>/state, <key> a hash of
 * everything that shapes the state: qemu's version and binary, the kernel and
 * initramfs (size, mtime, content hash), the command line minus per-guest
 * parts (which holds memory, accelerator, devices, kernel arguments). Any
 * change gives another key, so a stale snapshot is never used. The file is
 * written under a temporary name and renamed; its size and SHA-256 are kept
 * in meta.json beside it and checked before every fleet uses it: a truncated
 * or corrupt file is rebuilt. If a restore still fails (qemu rejects the
 * stream), the snapshot is dropped and later starts boot normally.
 *
 * Nothing here fails a fleet: when the template cannot be built, a notice
 * says why and the guests boot the usual way.
 */
#pragma once
#include <glib.h>
#include <jansson.h>
#include "qmp/qmp.h"
#include "supervisor/vm.h"

/* The template's serial, and the line its init prints at the snapshot point
 * (both known to guest/init). */
#define NF_SNAPSHOT_PLACEHOLDER "nervesfleet-template"
#define NF_SNAPSHOT_POINT "nervesfleet-snapshot-point"
/* Restores cost a fraction of a boot: the default boot window is this much
 * wider for snapshot fleets. */
#define NF_SNAPSHOT_BATCH_FACTOR 4

typedef struct NfSnapshot NfSnapshot;

/* A sentence for people ("snapshot: reusing ...", "... booting instead"). */
typedef void (*NfSnapshotNoticeFunc)(const char *message, gpointer user_data);
/* nf_snapshot_prepare() is over; nf_snapshot_file() says whether guests restore. */
typedef void (*NfSnapshotDoneFunc)(NfSnapshot *snap, gpointer user_data);

/* FALSE, with an error naming the flag and the way out, for fleets a snapshot
 * cannot serve: the Nerves profile (its firmware cannot take a new identity
 * after a restore) and --disk (restored guests would share the template's
 * view of one disk). */
gboolean nf_snapshot_check_config(const NfFleetConfig *config, GError **error);

/* Computes the cache key of the fleet described by `env` (borrowed, must
 * outlive the snapshot; its qemu_path, accel, config and paths set). Reads
 * qemu's version and hashes the guest files; creates nothing. NULL with an
 * error when an input cannot be read. */
NfSnapshot *nf_snapshot_new(const NfVmEnv *env, NfSnapshotNoticeFunc notice,
                            NfSnapshotDoneFunc done, gpointer user_data, GError **error);

/* Uses the cached state file if it is intact, else builds it with a template
 * guest (asynchronously, on the main loop). `done` runs once, never inside
 * this call. */
void nf_snapshot_prepare(NfSnapshot *snap);

/* The state file guests restore from, or NULL (not ready, or unusable: boot). */
const char *nf_snapshot_file(const NfSnapshot *snap);

/* A guest's restore failed (qemu rejected the stream): the file is removed
 * and later starts boot normally. `why` names the guest and qemu's words. */
void nf_snapshot_restore_failed(NfSnapshot *snap, const char *why);

/* Whether a restoring qemu's last stderr lines say it rejected the stream.
 * Only that drops the snapshot: a qemu that exits for another reason while
 * restoring (no RAM for it, a bad --qemu-arg) says nothing about the file,
 * and its restart restores again. */
gboolean nf_snapshot_restore_rejected(const char *qemu_stderr);

/* Cancels a build in progress: the template is killed, temporary files are
 * removed, `done` does not run. NULL or no build: nothing. */
void nf_snapshot_cancel(NfSnapshot *snap);

/* Cancels, and frees. The cached file stays. */
void nf_snapshot_free(NfSnapshot *snap);

/* Restoring one guest started with `-incoming defer`: call once its QMP is
 * up; asks for MIGRATION events and the incoming migration from `file`. */
void nf_snapshot_restore_begin(NfQmp *qmp, const char *file);
/* Feed the guest's MIGRATION events. Returns TRUE once the restore
 * completed (the guest is then resumed with `cont`). A failed restore makes
 * qemu exit with a non-zero status by itself. */
gboolean nf_snapshot_restore_event(NfQmp *qmp, json_t *data);
