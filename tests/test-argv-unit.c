/*
 * test-argv-unit.c: the qemu command line and accelerator choice, for every
 * host kind, without starting anything. Guards the KVM path that this x86
 * machine cannot run: detection, argv, and the errors for impossible asks.
 */
#include <string.h>

#include "cli/parse.h"
#include "supervisor/accel.h"
#include "supervisor/paths.h"
#include "supervisor/qemu-argv.h"

static NfHostInfo host(const char *os, const char *machine, gboolean kvm, guint cores)
{
  NfHostInfo h = {.kvm_usable = kvm, .cores = cores};
  g_strlcpy(h.os, os, sizeof(h.os));
  g_strlcpy(h.machine, machine, sizeof(h.machine));
  if (!kvm)
    g_strlcpy(h.kvm_problem, "/dev/kvm: No such file or directory", sizeof(h.kvm_problem));
  return h;
}

/* Index of `a` followed by `b` in argv, or -1. */
static int find_pair(char **argv, const char *a, const char *b)
{
  for (int i = 0; argv[i] && argv[i + 1]; i++)
    if (strcmp(argv[i], a) == 0 && (b == NULL || strcmp(argv[i + 1], b) == 0))
      return i;
  return -1;
}

static char **build(NfAccel accel)
{
  char *extra[] = {"-netdev", "user,id=n0", NULL};
  NfQemuSpec spec = {.qemu = "/usr/bin/qemu-system-aarch64",
                     .accel = accel,
                     .memory_mib = 96,
                     .kernel = "/g/vmlinuz",
                     .initrd = "/g/initrd.gz",
                     .append = "nf.fault=panic",
                     .guest_name = "vm-0007",
                     .serial = "NF-000007",
                     .pidfile = "/run/x/vm-0007.pid",
                     .public_qmp = TRUE,
                     .extra = extra};
  return nf_qemu_argv_build(&spec);
}

/* qemu writes the console log: it must not run the guest before our console
 * connection is accepted, or output before the accept (a quiet guest's
 * ready line) reaches the log but not the supervisor. */
static void test_argv_console_log(void)
{
  NfQemuSpec spec = {.qemu = "/usr/bin/qemu-system-aarch64",
                     .accel = NF_ACCEL_TCG,
                     .memory_mib = 96,
                     .kernel = "/g/vmlinuz",
                     .guest_name = "vm-0007",
                     .serial = "NF-000007",
                     .pidfile = "/run/x/vm-0007.pid",
                     .console_log = "/s/a,b/console.log"};
  g_auto(GStrv) argv = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(argv, "-chardev",
                            "socket,id=ser0,fd=5,server=on,wait=on,"
                            "logfile=/s/a,,b/console.log,logappend=on"),
                  >, 0);
}

static void test_argv_tcg(void)
{
  g_auto(GStrv) argv = build(NF_ACCEL_TCG);
  g_assert_cmpstr(argv[0], ==, "/usr/bin/qemu-system-aarch64");
  g_autofree char *tb = g_strdup_printf("tcg,tb-size=%d", NF_QEMU_TB_MIB);
  g_assert_cmpint(find_pair(argv, "-accel", tb), >, 0);
  g_assert_cmpint(find_pair(argv, "-cpu", "cortex-a53"), >, 0);
  g_assert_cmpint(find_pair(argv, "-cpu", "host"), ==, -1);
  g_assert_cmpint(find_pair(argv, "-m", "96M"), >, 0);
  g_assert_cmpint(find_pair(argv, "-kernel", "/g/vmlinuz"), >, 0);
  g_assert_cmpint(find_pair(argv, "-initrd", "/g/initrd.gz"), >, 0);
  g_assert_cmpint(find_pair(argv, "-append",
                            "console=ttyAMA0 quiet panic=-1 cma=0 " NF_QEMU_GUEST_ARGS
                            " nf.fault=panic"),
                  >, 0);
  g_assert_cmpint(
      find_pair(argv, "-device",
                "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on"),
      >, 0);
  g_assert_cmpint(find_pair(argv, "-device", "i6300esb"), >, 0);
  g_assert_cmpint(find_pair(argv, "-fw_cfg", "name=opt/nervesfleet/serial,string=NF-000007"), >, 0);
  g_assert_cmpint(find_pair(argv, "-chardev", "socket,id=qmp0,fd=3,server=on,wait=off"), >, 0);
  g_assert_cmpint(find_pair(argv, "-chardev", "socket,id=qmp1,fd=4,server=on,wait=off"), >, 0);
  g_assert_cmpint(find_pair(argv, "-chardev", "socket,id=ser0,fd=5,server=on,wait=off"), >, 0);
  g_assert_cmpint(find_pair(argv, "-serial", "chardev:ser0"), >, 0);
  g_assert_cmpint(find_pair(argv, "-pidfile", "/run/x/vm-0007.pid"), >, 0);
  g_assert_cmpint(find_pair(argv, "-no-reboot", NULL), >, 0);
  /* User extras come last, so they can add to what we set. */
  guint n = g_strv_length(argv);
  g_assert_cmpstr(argv[n - 2], ==, "-netdev");
  g_assert_cmpstr(argv[n - 1], ==, "user,id=n0");
}

/* A boot image (boot-image.h): no -initrd, and the argument it needs comes
 * before the user's, so a user's own initrd= still wins (the kernel takes
 * the last). */
static void test_argv_boot_image(void)
{
  NfQemuSpec spec = {.qemu = "/usr/bin/qemu-system-aarch64",
                     .accel = NF_ACCEL_TCG,
                     .memory_mib = 128,
                     .kernel = "/g/boot.elf",
                     .boot_arg = "initrd=0x42400000,1690205",
                     .append = "nf.fault=panic",
                     .guest_name = "vm-0007",
                     .serial = "NF-000007",
                     .pidfile = "/run/x/vm-0007.pid"};
  g_auto(GStrv) argv = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(argv, "-kernel", "/g/boot.elf"), >, 0);
  g_assert_cmpint(find_pair(argv, "-initrd", NULL), ==, -1);
  g_assert_cmpint(find_pair(argv, "-append",
                            "console=ttyAMA0 quiet panic=-1 cma=0 " NF_QEMU_GUEST_ARGS
                            " initrd=0x42400000,1690205 nf.fault=panic"),
                  >, 0);
}

static void test_argv_kvm_and_hvf(void)
{
  g_auto(GStrv) kvm = build(NF_ACCEL_KVM);
  g_assert_cmpint(find_pair(kvm, "-accel", "kvm"), >, 0);
  g_assert_cmpint(find_pair(kvm, "-cpu", "host"), >, 0);
  g_assert_cmpint(find_pair(kvm, "-cpu", "cortex-a53"), ==, -1);
  g_auto(GStrv) hvf = build(NF_ACCEL_HVF);
  g_assert_cmpint(find_pair(hvf, "-accel", "hvf"), >, 0);
  g_assert_cmpint(find_pair(hvf, "-cpu", "host"), >, 0);
}

static void test_argv_disks_and_nerves(void)
{
  NfQemuSpec sim = {.qemu = "q",
                    .accel = NF_ACCEL_TCG,
                    .memory_mib = 128,
                    .kernel = "k",
                    .initrd = "i",
                    .guest_name = "vm-0001",
                    .serial = "S",
                    .disk = "/d/o.qcow2"};
  g_auto(GStrv) a = nf_qemu_argv_build(&sim);
  g_assert_cmpint(find_pair(a, "-drive", "if=none,file=/d/o.qcow2,format=qcow2,id=vdisk"), >, 0);
  g_assert_cmpint(find_pair(a, "-device", "virtio-blk-pci,drive=vdisk"), >, 0);
  g_assert_cmpint(find_pair(a, "-no-reboot", NULL), >, 0);

  NfQemuSpec nerves = {.qemu = "q",
                       .accel = NF_ACCEL_KVM,
                       .memory_mib = 256,
                       .kernel = "/fw/little_loader.elf",
                       .guest_name = "vm-0002",
                       .serial = "S",
                       .disk = "/d,x/o2.qcow2", /* a comma in --state-dir */
                       .profile = NF_PROFILE_NERVES,
                       .net = NF_NET_USER,
                       .mac = "5e:00:00:00:00:02"};
  g_auto(GStrv) n = nf_qemu_argv_build(&nerves);
  g_assert_cmpint(find_pair(n, "-kernel", "/fw/little_loader.elf"), >, 0);
  /* Written twice, or qemu read "x/o2.qcow2" as the next key. */
  g_assert_cmpint(find_pair(n, "-drive", "if=none,file=/d,,x/o2.qcow2,format=qcow2,id=vdisk"), >,
                  0);
  g_assert_cmpint(find_pair(n, "-global", "virtio-mmio.force-legacy=false"), >, 0);
  g_assert_cmpint(find_pair(n, "-device", "virtio-blk-device,drive=vdisk,bus=virtio-mmio-bus.0"), >,
                  0);
  g_assert_cmpint(find_pair(n, "-netdev", "user,id=eth0"), >, 0);
  g_assert_cmpint(find_pair(n, "-device", "virtio-net-device,netdev=eth0,mac=5e:00:00:00:00:02"), >,
                  0);
  g_assert_cmpint(find_pair(n, "-m", "256M"), >, 0);
  /* little_loader picks the slot at reset: qemu must reboot in place. */
  g_assert_cmpint(find_pair(n, "-no-reboot", NULL), ==, -1);
  g_assert_cmpint(find_pair(n, "-append", NULL), ==, -1);
  g_assert_cmpint(find_pair(n, "-accel", "kvm"), >, 0);
}

/* --net user: one slirp NIC with the identity's MAC (PCI for the sim
 * guest), one hostfwd per forward on loopback, the server and ready URL
 * through fw_cfg; --net none: none of it. */
static void test_argv_net(void)
{
  NfNetForward fw[] = {{.host = 20001, .guest = 22}, {.host = 20002, .guest = 8080}};
  NfQemuSpec spec = {.qemu = "q",
                     .accel = NF_ACCEL_TCG,
                     .memory_mib = 128,
                     .kernel = "k",
                     .guest_name = "vm-0001",
                     .serial = "S",
                     .net = NF_NET_USER,
                     .mac = "5e:00:00:00:00:01",
                     .forwards = fw,
                     .n_forwards = 2,
                     .server = "10.0.2.2:4000",
                     .ready_url = "http://10.0.2.2:3999/ready"};
  g_auto(GStrv) a = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(a, "-netdev",
                            "user,id=eth0,hostfwd=tcp:127.0.0.1:20001-:22,"
                            "hostfwd=tcp:127.0.0.1:20002-:8080"),
                  >, 0);
  g_assert_cmpint(
      find_pair(a, "-device", "virtio-net-pci,netdev=eth0,mac=5e:00:00:00:00:01,romfile="), >, 0);
  g_assert_cmpint(find_pair(a, "-fw_cfg", "name=opt/nervesfleet/server,string=10.0.2.2:4000"), >,
                  0);
  g_assert_cmpint(
      find_pair(a, "-fw_cfg", "name=opt/nervesfleet/ready_url,string=http://10.0.2.2:3999/ready"),
      >, 0);

  spec.net = NF_NET_TAP;
  spec.ip = "10.77.0.2,10.77.0.1";
  g_auto(GStrv) tap = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(tap, "-netdev", "tap,id=eth0,fd=6"), >, 0);
  g_assert_cmpint(find_pair(tap, "-fw_cfg", "name=opt/nervesfleet/ip,string=10.77.0.2,,10.77.0.1"),
                  >, 0);

  spec.net = NF_NET_NONE;
  spec.n_forwards = 0;
  spec.server = spec.ready_url = NULL;
  g_auto(GStrv) none = nf_qemu_argv_build(&spec);
  g_autofree char *line = nf_qemu_argv_to_string(none);
  g_assert_null(strstr(line, "-netdev"));
  g_assert_null(strstr(line, "virtio-net"));
  g_assert_null(strstr(line, "opt/nervesfleet/server"));
}

/* The memory levers: the guest kernel's arguments (the user's --append
 * still last, so it wins), --dense a smaller TCG buffer, KSM all of qemu
 * mergeable, THP off under TCG; none touches the Nerves guest's command
 * line. */
static void test_argv_levers(void)
{
  NfQemuSpec spec = {.qemu = "q",
                     .accel = NF_ACCEL_TCG,
                     .memory_mib = 128,
                     .kernel = "k",
                     .guest_name = "vm-0001",
                     .serial = "S",
                     .append = "nokaslr=off"};
  g_auto(GStrv) plain = nf_qemu_argv_build(&spec);
  NfQemuProcessSetup ps;
  nf_qemu_process_setup(&spec, &ps);
  g_assert_false(ps.merge_any);
  g_assert_true(ps.no_thp); /* TCG */
  g_assert_false(ps.fixed_mmap);
  g_assert_false(ps.no_aslr);

  spec.dense = TRUE;
  spec.ksm = TRUE;
  g_auto(GStrv) dense = nf_qemu_argv_build(&spec);
  g_autofree char *tb = g_strdup_printf("tcg,tb-size=%d", NF_QEMU_TB_MIB_DENSE);
  g_assert_cmpint(find_pair(dense, "-accel", tb), >, 0);
  int d = find_pair(dense, "-append", NULL);
  g_assert_cmpint(d, >, 0);
  g_assert_nonnull(strstr(dense[d + 1], NF_QEMU_GUEST_ARGS " nokaslr=off"));
  /* init_on_free cost boot CPU for no saving (qemu-argv.h). */
  g_assert_null(strstr(dense[d + 1], "init_on_free"));
  /* --tb-size wins over --dense's. */
  spec.tb_mib = 48;
  g_auto(GStrv) big_tb = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(big_tb, "-accel", "tcg,tb-size=48"), >, 0);
  spec.tb_mib = 0;
  int i = find_pair(plain, "-append", NULL);
  g_assert_cmpint(i, >, 0);
  /* The levers, then the user's own, which win (the kernel takes the last). */
  g_assert_nonnull(strstr(plain[i + 1], NF_QEMU_GUEST_ARGS " nokaslr=off"));
  g_assert_true(g_str_has_suffix(plain[i + 1], "nokaslr=off"));
  g_autofree char *tb32 = g_strdup_printf("tcg,tb-size=%d", NF_QEMU_TB_MIB);
  g_assert_cmpint(find_pair(plain, "-accel", tb32), >, 0);
  nf_qemu_process_setup(&spec, &ps);
  g_assert_true(ps.merge_any);
  g_assert_true(ps.no_thp);
  g_assert_true(ps.fixed_mmap);
  g_assert_true(ps.no_aslr); /* --dense with KSM */

  spec.accel = NF_ACCEL_KVM;
  spec.dense = FALSE;
  nf_qemu_process_setup(&spec, &ps);
  g_assert_false(ps.no_thp); /* huge pages help a KVM guest */
  g_assert_true(ps.fixed_mmap);
  g_assert_false(ps.no_aslr); /* KSM without --dense keeps ASLR */

  spec.profile = NF_PROFILE_NERVES;
  spec.append = NULL;
  g_auto(GStrv) nerves = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(nerves, "-append", NULL), ==, -1);
}

/* With KSM, qemu's environment fixes glibc's mmap threshold (so its heap
 * copy of the kernel sits at the same page offset in every guest and
 * merges); without, the environment is passed through untouched; a value
 * the user set wins. */
static void test_process_env(void)
{
  NfQemuProcessSetup ps = {.fixed_mmap = TRUE};
  char *base[] = {"PATH=/bin", "HOME=/root", NULL};
  g_auto(GStrv) env = nf_qemu_process_env(&ps, g_strdupv(base));
  g_assert_cmpstr(g_environ_getenv(env, NF_QEMU_ENV_MALLOC), ==, NF_QEMU_ENV_MALLOC_VALUE);
  g_assert_cmpstr(g_environ_getenv(env, "PATH"), ==, "/bin");
  g_assert_cmpstr(g_environ_getenv(env, "HOME"), ==, "/root");

  char *mine[] = {"PATH=/bin", NF_QEMU_ENV_MALLOC "=65536", NULL};
  g_auto(GStrv) kept = nf_qemu_process_env(&ps, g_strdupv(mine));
  g_assert_cmpstr(g_environ_getenv(kept, NF_QEMU_ENV_MALLOC), ==, "65536");

  ps.fixed_mmap = FALSE;
  g_auto(GStrv) plain = nf_qemu_process_env(&ps, g_strdupv(base));
  g_assert_cmpuint(g_strv_length(plain), ==, 2);
  g_assert_null(g_environ_getenv(plain, NF_QEMU_ENV_MALLOC));
}

/* Snapshot fleets: -incoming before the user's extras, and a fixed-size
 * fw_cfg serial (the template and every restored guest must agree on it). */
static void test_argv_snapshot(void)
{
  NfQemuSpec spec = {.qemu = "q",
                     .accel = NF_ACCEL_TCG,
                     .memory_mib = 64,
                     .kernel = "k",
                     .guest_name = "vm-0001",
                     .serial = "NF-000001",
                     .incoming = "defer",
                     .serial_pad = 16};
  g_auto(GStrv) argv = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(argv, "-incoming", "defer"), >, 0);
  g_assert_cmpint(find_pair(argv, "-kernel", "k"), >, 0);
  spec.no_boot_files = TRUE; /* a restore: no kernel, initramfs or command line */
  g_auto(GStrv) restored = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(restored, "-kernel", NULL), ==, -1);
  g_assert_cmpint(find_pair(restored, "-append", NULL), ==, -1);
  g_assert_cmpint(find_pair(restored, "-incoming", "defer"), >, 0);
  spec.no_boot_files = FALSE;
  g_assert_cmpint(find_pair(argv, "-fw_cfg", "name=opt/nervesfleet/serial,string=NF-000001       "),
                  >, 0);
  spec.incoming = NULL;
  spec.serial_pad = 0;
  g_auto(GStrv) plain = nf_qemu_argv_build(&spec);
  g_assert_cmpint(find_pair(plain, "-incoming", NULL), ==, -1);
  g_assert_cmpint(find_pair(plain, "-fw_cfg", "name=opt/nervesfleet/serial,string=NF-000001"), >,
                  0);
}

static void test_argv_to_string_quotes(void)
{
  char *argv[] = {"qemu", "-append", "console=ttyAMA0 quiet", "-name", "guest=vm-1", NULL};
  g_autofree char *s = nf_qemu_argv_to_string(argv);
  g_assert_cmpstr(s, ==, "qemu -append 'console=ttyAMA0 quiet' -name guest=vm-1");
}

static void test_accel_resolve(void)
{
  NfAccel r;
  g_autoptr(GError) error = NULL;
  NfHostInfo arm_kvm = host("Linux", "aarch64", TRUE, 8);
  NfHostInfo arm_nokvm = host("Linux", "aarch64", FALSE, 8);
  NfHostInfo x86 = host("Linux", "x86_64", TRUE, 2);
  NfHostInfo mac = host("Darwin", "aarch64", FALSE, 8);

  g_assert_true(nf_accel_resolve(NF_ACCEL_AUTO, &arm_kvm, &r, &error));
  g_assert_cmpint(r, ==, NF_ACCEL_KVM);
  g_assert_true(nf_accel_resolve(NF_ACCEL_AUTO, &arm_nokvm, &r, &error));
  g_assert_cmpint(r, ==, NF_ACCEL_TCG);
  /* /dev/kvm on x86 runs x86 guests only. */
  g_assert_true(nf_accel_resolve(NF_ACCEL_AUTO, &x86, &r, &error));
  g_assert_cmpint(r, ==, NF_ACCEL_TCG);
  g_assert_true(nf_accel_resolve(NF_ACCEL_TCG, &arm_kvm, &r, &error));
  g_assert_cmpint(r, ==, NF_ACCEL_TCG);
  g_assert_true(nf_accel_resolve(NF_ACCEL_HVF, &mac, &r, &error));
  g_assert_cmpint(r, ==, NF_ACCEL_HVF);
  g_assert_no_error(error);

  g_assert_false(nf_accel_resolve(NF_ACCEL_KVM, &x86, &r, &error));
  g_assert_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_UNAVAILABLE);
  g_assert_nonnull(strstr(error->message, "x86_64"));
  g_assert_nonnull(strstr(error->message, "--accel tcg"));
  g_clear_error(&error);
  g_assert_false(nf_accel_resolve(NF_ACCEL_KVM, &arm_nokvm, &r, &error));
  g_assert_nonnull(strstr(error->message, "/dev/kvm: No such file"));
  g_clear_error(&error);
  g_assert_false(nf_accel_resolve(NF_ACCEL_HVF, &arm_kvm, &r, &error));
  g_assert_nonnull(strstr(error->message, "macOS"));
  g_clear_error(&error);

  g_assert_cmpuint(nf_accel_default_batch(NF_ACCEL_TCG, &x86), ==, 2);
  g_assert_cmpuint(nf_accel_default_batch(NF_ACCEL_KVM, &arm_kvm), ==, 32);
  g_assert_true(nf_accel_parse("kvm", &r, NULL));
  g_assert_cmpint(r, ==, NF_ACCEL_KVM);
  g_assert_false(nf_accel_parse("KVM!", &r, &error));
  g_assert_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_INVALID);
}

static void test_socket_path_limit(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *ok = g_strnfill(107, 'a');
  g_autofree char *bad = g_strnfill(108, 'a');
  g_assert_true(nf_paths_check_socket(ok, &error));
  g_assert_false(nf_paths_check_socket(bad, &error));
  g_assert_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_TOO_LONG);
}

static void test_parse_values(void)
{
  guint64 mib;
  guint n, ms;
  g_assert_true(nf_parse_size_mib("--memory", "128M", &mib, NULL));
  g_assert_cmpuint(mib, ==, 128);
  g_assert_true(nf_parse_size_mib("--memory", "1G", &mib, NULL));
  g_assert_cmpuint(mib, ==, 1024);
  g_assert_true(nf_parse_size_mib("--memory", "256", &mib, NULL));
  g_assert_cmpuint(mib, ==, 256);
  g_assert_true(nf_parse_size_mib("--memory", "131072KiB", &mib, NULL));
  g_assert_cmpuint(mib, ==, 128);
  g_assert_false(nf_parse_size_mib("--memory", "12Q", &mib, NULL));
  g_assert_false(nf_parse_size_mib("--memory", "", &mib, NULL));
  g_assert_false(nf_parse_size_mib("--memory", "-5M", &mib, NULL));
  g_assert_false(nf_parse_size_mib("--memory", "99999999999999999999G", &mib, NULL));
  g_assert_false(nf_parse_size_mib("--memory", "512K", &mib, NULL)); /* under 1M */
  guint64 kib;
  g_assert_true(nf_parse_size_kib("--log-max", "64K", &kib, NULL));
  g_assert_cmpuint(kib, ==, 64);
  g_assert_true(nf_parse_size_kib("--log-max", "4", &kib, NULL));
  g_assert_cmpuint(kib, ==, 4096);
  g_assert_false(nf_parse_size_kib("--log-max", "4X", &kib, NULL));
  g_assert_true(nf_parse_count("N", "12", 100, &n, NULL));
  g_assert_cmpuint(n, ==, 12);
  g_assert_false(nf_parse_count("N", "101", 100, &n, NULL));
  g_assert_false(nf_parse_count("N", "+3", 100, &n, NULL));
  g_assert_false(nf_parse_count("N", "3x", 100, &n, NULL));
  g_assert_true(nf_parse_seconds_ms("--stop-timeout", "2.5", &ms, NULL));
  g_assert_cmpuint(ms, ==, 2500);
  g_assert_false(nf_parse_seconds_ms("--stop-timeout", "-1", &ms, NULL));
  g_assert_false(nf_parse_seconds_ms("--stop-timeout", "nan", &ms, NULL));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/argv/tcg", test_argv_tcg);
  g_test_add_func("/argv/boot-image", test_argv_boot_image);
  g_test_add_func("/argv/console-log-waits", test_argv_console_log);
  g_test_add_func("/argv/levers", test_argv_levers);
  g_test_add_func("/argv/process-env", test_process_env);
  g_test_add_func("/argv/kvm-and-hvf", test_argv_kvm_and_hvf);
  g_test_add_func("/argv/to-string-quotes", test_argv_to_string_quotes);
  g_test_add_func("/argv/snapshot", test_argv_snapshot);
  g_test_add_func("/argv/disks-and-nerves", test_argv_disks_and_nerves);
  g_test_add_func("/argv/net", test_argv_net);
  g_test_add_func("/accel/resolve", test_accel_resolve);
  g_test_add_func("/paths/socket-limit", test_socket_path_limit);
  g_test_add_func("/parse/values", test_parse_values);
  return g_test_run();
}
