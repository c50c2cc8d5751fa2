/*
 * test-deadlines-unit.c: supervisor/deadlines.c, the one source behind
 * every per-guest timer: deadlines fire once, in due order (equal due
 * times in the order added), a removed one never fires, a callback may
 * add and remove deadlines, and 10,000 of them all fire, in order.
 */
#include "supervisor/deadlines.h"
#include "tests/lib/nf-test.h"

typedef struct {
  GArray *fired; /* tags, in firing order */
  guint remove_id;
  guint added_id;
} Log;

static Log log_;

static gboolean fire_cb(gpointer data)
{
  guint tag = GPOINTER_TO_UINT(data);
  g_array_append_val(log_.fired, tag);
  if (tag == 1) {
    /* From a callback: cancel a pending one and add a new one. */
    nf_deadline_remove(log_.remove_id);
    log_.added_id = nf_deadline_add(0, fire_cb, GUINT_TO_POINTER(9));
  }
  return G_SOURCE_CONTINUE; /* ignored: deadlines are one-shot */
}

static gboolean fired_n(gpointer data)
{
  return log_.fired->len >= GPOINTER_TO_UINT(data);
}

static void test_order_and_removal(void)
{
  log_.fired = g_array_new(FALSE, FALSE, sizeof(guint));
  nf_deadline_add(30, fire_cb, GUINT_TO_POINTER(3));
  nf_deadline_add(10, fire_cb, GUINT_TO_POINTER(1));
  log_.remove_id = nf_deadline_add(60, fire_cb, GUINT_TO_POINTER(6));
  guint gone = nf_deadline_add(20, fire_cb, GUINT_TO_POINTER(2));
  nf_deadline_remove(gone);
  nf_deadline_remove(gone); /* twice: ignored */
  nf_deadline_remove(0);
  g_assert_true(nf_test_wait_for(fired_n, GUINT_TO_POINTER(3), 5000));
  /* 1, then what 1 added (due at once), then 3; 2 and 6 were removed. */
  g_assert_cmpuint(log_.fired->len, ==, 3);
  g_assert_cmpuint(g_array_index(log_.fired, guint, 0), ==, 1);
  g_assert_cmpuint(g_array_index(log_.fired, guint, 1), ==, 9);
  g_assert_cmpuint(g_array_index(log_.fired, guint, 2), ==, 3);
  nf_deadline_remove(log_.added_id); /* fired already: ignored */
  g_array_unref(log_.fired);
}

static void test_ten_thousand(void)
{
  log_.fired = g_array_new(FALSE, FALSE, sizeof(guint));
  for (guint i = 0; i < 10000; i++)
    nf_deadline_add(5, fire_cb, GUINT_TO_POINTER(100 + i));
  g_assert_true(nf_test_wait_for(fired_n, GUINT_TO_POINTER(10000), 30000));
  /* Due in the order added (equal times break ties by that order too). */
  for (guint i = 0; i < 10000; i++)
    g_assert_cmpuint(g_array_index(log_.fired, guint, i), ==, 100 + i);
  g_array_unref(log_.fired);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/deadlines/order-and-removal", test_order_and_removal);
  g_test_add_func("/deadlines/ten-thousand", test_ten_thousand);
  return g_test_run();
}
