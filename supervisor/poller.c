/*
 * poller.c: an epoll set behind one GLib fd source (see poller.h).
 *
 * Entries are keyed by id, not by pointer, in the epoll data: an event that
 * was already collected for an entry removed earlier in the same dispatch
 * finds no entry and is dropped, never a freed pointer.
 */
#include "supervisor/poller.h"

#include <errno.h>
#include <unistd.h>
#include <glib-unix.h>

typedef struct {
  int fd;
  NfPollerFunc func;
  gpointer user_data;
} Entry;

typedef struct {
  int epfd;
  guint source_id;
  guint next_id;
  GHashTable *entries; /* id -> Entry* */
} Poller;

static Poller *poller;

static gboolean dispatch_cb(int fd, GIOCondition cond, gpointer data);
static Poller *get_poller(void);

static Poller *get_poller(void)
{
  if (poller)
    return poller;
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0)
    return NULL;
  poller = g_new0(Poller, 1);
  poller->epfd = epfd;
  poller->entries = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  poller->source_id = g_unix_fd_add(epfd, G_IO_IN, dispatch_cb, poller);
  return poller;
}

guint nf_poller_add(int fd, guint32 events, NfPollerFunc func, gpointer user_data)
{
  Poller *p = get_poller();
  if (p == NULL)
    return 0;
  guint id = ++p->next_id;
  if (id == 0)
    id = ++p->next_id;
  struct epoll_event ev = {.events = events, .data.u64 = id};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
    return 0;
  Entry *e = g_new0(Entry, 1);
  e->fd = fd;
  e->func = func;
  e->user_data = user_data;
  g_hash_table_insert(p->entries, GUINT_TO_POINTER(id), e);
  return id;
}

void nf_poller_modify(guint id, guint32 events)
{
  Poller *p = poller;
  if (p == NULL || id == 0)
    return;
  Entry *e = g_hash_table_lookup(p->entries, GUINT_TO_POINTER(id));
  if (e == NULL)
    return;
  struct epoll_event ev = {.events = events, .data.u64 = id};
  epoll_ctl(p->epfd, EPOLL_CTL_MOD, e->fd, &ev);
}

void nf_poller_remove(guint id)
{
  Poller *p = poller;
  if (p == NULL || id == 0)
    return;
  Entry *e = g_hash_table_lookup(p->entries, GUINT_TO_POINTER(id));
  if (e == NULL)
    return;
  epoll_ctl(p->epfd, EPOLL_CTL_DEL, e->fd, NULL);
  g_hash_table_remove(p->entries, GUINT_TO_POINTER(id));
}

static gboolean dispatch_cb(int fd, GIOCondition cond, gpointer data)
{
  Poller *p = data;
  struct epoll_event events[128];
  int n;
  do
    n = epoll_wait(p->epfd, events, G_N_ELEMENTS(events), 0);
  while (n < 0 && errno == EINTR);
  for (int i = 0; i < n; i++) {
    guint id = (guint)events[i].data.u64;
    Entry *e = g_hash_table_lookup(p->entries, GUINT_TO_POINTER(id));
    if (e == NULL)
      continue; /* removed by an earlier callback of this round */
    if (!e->func(e->fd, events[i].events, e->user_data))
      nf_poller_remove(id);
  }
  return G_SOURCE_CONTINUE;
}
