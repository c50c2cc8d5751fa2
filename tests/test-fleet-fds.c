/*
 * test-fleet-fds.c: how many open files a fleet costs the supervisor, on the
 * fake qemu. A ready guest holds one (its QMP socket): qemu writes the
 * console log itself and the console socket is let go once the guest is
 * ready (vm-console.c); the pidfd is opened only when QMP ends (vm.c)
 * (issue 17). 2,000 guests run under an open-file limit of 3,000, which
 * three fds per guest (6,256 with the spare) could not fit, and the fleet
 * refused; so 10,000 fit under 20,000.
 */
#include <sys/resource.h>

#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 300000
#define GUESTS 2000
#define LIMIT 3000

static void test_2000_under_3000_fds(void)
{
  /* Hard limit too, so the fleet cannot raise the soft one past it. */
  struct rlimit rl = {.rlim_cur = LIMIT, .rlim_max = LIMIT};
  g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
  guint before = nf_test_count_open_fds();

  NfFakeFleet *f = nf_fake_fleet_new(GUESTS, 500);
  f->config.health_interval_ms = NF_DEFAULT_HEALTH_INTERVAL_MS; /* probes on, as by default */
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  guint open_fds = nf_test_count_open_fds();
  g_test_message("%u fds open with %u guests ready (%u before)", open_fds, GUESTS, before);
  g_assert_cmpuint(open_fds, <=, before + GUESTS + 64);
  g_assert_cmpuint(nf_fleet_health_interval(f->fleet), ==, NF_DEFAULT_HEALTH_INTERVAL_MS);
  nf_fake_fleet_finish(f, FALSE);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fleet-fds/2000-under-3000-fds", test_2000_under_3000_fds);
  return g_test_run();
}
