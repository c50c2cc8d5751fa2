/*
 * vm-status.c: what a guest leaves on disk about itself: status.json
 * (written atomically at each transition, coalesced for passing states),
 * events.log (one line per transition), and the failures of those writes
 * and of its logs (a full or read-only state dir), remembered for `ps` and
 * told once through NfVmCallbacks.notice. A write that fails never stops
 * or slows the guest.
 */
#include "supervisor/vm-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <jansson.h>

static gboolean ensure_state_dir(NfVm *vm);
static gboolean status_flush_cb(gpointer data);
static void write_status_now(NfVm *vm);

static gboolean ensure_state_dir(NfVm *vm)
{
  if (!vm->state_dir_made && g_mkdir_with_parents(vm->files.state_dir, 0755) == 0)
    vm->state_dir_made = TRUE;
  return vm->state_dir_made;
}

void nf_vm_log_transition(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason)
{
  /* Opened per line: transitions are rare after boot, and a held fd per
   * guest would count against the open-file limit at thousands of guests. */
  if (!ensure_state_dir(vm))
    return;
  g_autofree char *path = g_build_filename(vm->files.state_dir, "events.log", NULL);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    nf_vm_note_write(vm, path, errno);
    return;
  }
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *stamp = g_date_time_format(now, "%FT%T.%fZ");
  g_autofree char *line = g_strdup_printf("%s %s -> %s: %s\n", stamp, nf_vm_state_name(old_state),
                                          nf_vm_state_name(new_state), reason ? reason : "");
  ssize_t n = write(fd, line, strlen(line));
  if (n != (ssize_t)strlen(line))
    nf_vm_note_write(vm, path, n < 0 ? errno : ENOSPC);
  close(fd);
}

static gboolean status_flush_cb(gpointer data)
{
  NfVm *vm = data;
  vm->status_timer = 0;
  write_status_now(vm);
  return G_SOURCE_REMOVE;
}

void nf_vm_write_status(NfVm *vm)
{
  /* A guest passes several states within a second of a boot; writing each
   * costs a new inode. Passing states are coalesced (the file lags by at
   * most the delay); the ones a later supervisor relies on, such as READY
   * for adoption, are written at once. */
  NfVmState s = vm->state;
  if (s != NF_VM_QUEUED && s != NF_VM_STARTING && s != NF_VM_BOOTING) {
    nf_vm_clear_timer(&vm->status_timer);
    write_status_now(vm);
    return;
  }
  if (vm->status_timer == 0)
    vm->status_timer = nf_deadline_add(NF_VM_STATUS_DELAY_MS, status_flush_cb, vm);
}

static void write_status_now(NfVm *vm)
{
  json_auto_t *o = json_pack(
      "{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:s, s:s?, s:I, s:b, s:I, s:I}", "id", (int)vm->id,
      "name", vm->name, "serial", vm->serial, "mac", vm->mac, "state", nf_vm_state_name(vm->state),
      "pid", (json_int_t)nf_vm_pid(vm), "started_at_us", (json_int_t)vm->started_wall, "restarts",
      (int)vm->restarts, "last_exit", nf_exit_kind_name(vm->exit_kind), "last_exit_reason",
      vm->exit_reason, "last_exit_at_us", (json_int_t)vm->exit_time, "dies_with_supervisor",
      vm->proc && vm->dies_with_supervisor, "balloon_target_bytes", (json_int_t)vm->balloon_target,
      "console_at", (json_int_t)vm->console_log_start);
  if (o == NULL || !ensure_state_dir(vm))
    return;
  g_autofree char *text = json_dumps(o, JSON_COMPACT);
  /* The new text goes into status.json.prev, which then trades places with
   * status.json (RENAME_EXCHANGE): readers never see half a file, and after
   * the first two writes no inode is created or freed. A temp file + rename
   * per write did both, and ext4 scans its recently deleted inodes at each
   * allocation: 40 % of the supervisor's CPU while stopping 2,000 guests,
   * growing with the fleet. No fsync: this runs at every transition of
   * thousands of guests, and after a host crash the guests are gone anyway. */
  g_autofree char *spare = g_strconcat(vm->files.status_path, ".prev", NULL);
  int fd = open(spare, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    nf_vm_note_write(vm, vm->files.status_path, errno);
    return;
  }
  ssize_t n = write(fd, text, strlen(text));
  int err = n == (ssize_t)strlen(text) ? 0 : n < 0 ? errno : ENOSPC;
  close(fd);
  if (err == 0 &&
      renameat2(AT_FDCWD, spare, AT_FDCWD, vm->files.status_path, RENAME_EXCHANGE) != 0) {
    /* The first write (no status.json yet), or a filesystem that cannot
     * exchange: a plain rename. */
    err = errno == ENOENT || errno == EINVAL || errno == ENOSYS ? 0 : errno;
    if (err == 0 && rename(spare, vm->files.status_path) != 0)
      err = errno;
  }
  if (err) {
    g_unlink(spare);
    nf_vm_note_write(vm, vm->files.status_path, err);
  } else {
    g_clear_pointer(&vm->write_error, g_free); /* the disk has room again */
  }
}

/* A file of ours could not be written: remembered for `ps`, told once
 * (until a status write succeeds again); never fatal to the guest. */
void nf_vm_note_write(NfVm *vm, const char *path, int err)
{
  if (vm->write_error)
    return;
  g_autofree char *msg = g_strdup_printf("cannot write %s: %s", path, g_strerror(err));
  nf_vm_note_write_message(vm, msg);
}

void nf_vm_note_write_message(NfVm *vm, const char *message)
{
  if (vm->write_error)
    return;
  vm->write_error = g_strdup(message);
  if (vm->cb.notice)
    vm->cb.notice(vm, vm->write_error, vm->user_data);
}

const char *nf_vm_write_error(const NfVm *vm)
{
  return vm->write_error;
}

void nf_vm_flush_status(NfVm *vm)
{
  if (vm->status_timer) {
    nf_vm_clear_timer(&vm->status_timer);
    write_status_now(vm);
  }
}
