/*
 * qemu-argv.c: one guest's qemu command line (see qemu-argv.h).
 *
 * Why these devices: virtio-balloon (id=balloon0, so QMP can reach its
 * guest-stats at a fixed QOM path) with free page reporting lets the host take
 * memory back, and deflate-on-oom lets a guest whose balloon was shrunk take
 * pages back itself when it is about to OOM, faster than any policy tick (a
 * guest at 80 MiB of 128 survives a one-shot 60 MiB allocation only so); i6300esb gives the guest a
 * watchdog whose expiry qemu reports as a QMP WATCHDOG event; fw_cfg carries the identity without a
 * disk. The channels arrive as inherited, already listening sockets (server=on, wait=off): there is
 * no socket file to wait for, and a later supervisor can connect to the same sockets again to adopt
 * a running guest.
 * `-no-reboot` plus `panic=-1` turns a guest kernel panic into a qemu exit the
 * supervisor can see and classify.
 */
#include "supervisor/qemu-argv.h"

#include <string.h>

static void add(GPtrArray *a, const char *s);
static void drop_first_pair(GPtrArray *a, const char *option);
static void drop_first_pair(GPtrArray *a, const char *option)
{
  for (guint i = 0; i + 1 < a->len; i++)
    if (g_str_equal(g_ptr_array_index(a, i), option)) {
      g_free(g_ptr_array_index(a, i));
      g_free(g_ptr_array_index(a, i + 1));
      g_ptr_array_remove_range(a, i, 2);
      return;
    }
}

static void addf(GPtrArray *a, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void add_net(GPtrArray *a, const NfQemuSpec *spec);
static char *option_value(const char *text);

/* `text` as a value inside a qemu option string ("a=1,file=TEXT"): qemu
 * reads ",," as one literal comma, and a single one as the next key. */
static char *option_value(const char *text)
{
  g_auto(GStrv) parts = g_strsplit(text, ",", -1);
  return g_strjoinv(",,", parts);
}

static void add(GPtrArray *a, const char *s)
{
  g_ptr_array_add(a, g_strdup(s));
}

static void addf(GPtrArray *a, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_ptr_array_add(a, g_strdup_vprintf(fmt, ap));
  va_end(ap);
}

char **nf_qemu_argv_build(const NfQemuSpec *spec)
{
  GPtrArray *a = g_ptr_array_new();

  add(a, spec->qemu);
  add(a, "-name");
  addf(a, "guest=%s", spec->guest_name);
  add(a, "-M");
  add(a, "virt");
  switch (spec->accel) {
  case NF_ACCEL_KVM:
    add(a, "-accel");
    add(a, "kvm");
    add(a, "-cpu");
    add(a, "host");
    break;
  case NF_ACCEL_HVF:
    add(a, "-accel");
    add(a, "hvf");
    add(a, "-cpu");
    add(a, "host");
    break;
  case NF_ACCEL_TCG:
  case NF_ACCEL_AUTO:
  default:
    /* The translation cache defaults to 1 GiB of virtual space and fills
     * during boot; a small one keeps each guest's RSS down at some boot cost
     * (see NF_QEMU_TB_MIB). */
    add(a, "-accel");
    addf(a, "tcg,tb-size=%u", nf_qemu_tb_mib(spec->tb_mib, spec->dense));
    add(a, "-cpu");
    add(a, "cortex-a53");
    break;
  }
  add(a, "-smp");
  add(a, "1");
  add(a, "-m");
  addf(a, "%" G_GUINT64_FORMAT "M", spec->memory_mib);
  add(a, "-nodefaults");
  add(a, "-display");
  add(a, "none");
  add(a, "-no-user-config");
  gboolean nerves = spec->profile == NF_PROFILE_NERVES;
  /* A Nerves device reboots into the slot little_loader picks: qemu must
   * reset in place. The sim guest's reboot is an exit the supervisor sees. */
  if (!nerves)
    add(a, "-no-reboot");
  add(a, "-kernel");
  add(a, spec->kernel);
  if (spec->initrd) {
    add(a, "-initrd");
    add(a, spec->initrd);
  }
  if (!nerves) {
    GString *cmdline = g_string_new("console=ttyAMA0 quiet panic=-1 cma=0 " NF_QEMU_GUEST_ARGS);
    if (spec->boot_arg)
      g_string_append_printf(cmdline, " %s", spec->boot_arg);
    /* The user's last: the kernel takes the last of a repeated parameter. */
    if (spec->append && *spec->append)
      g_string_append_printf(cmdline, " %s", spec->append);
    add(a, "-append");
    g_ptr_array_add(a, g_string_free(cmdline, FALSE));
  } else if (spec->append && *spec->append) {
    add(a, "-append");
    add(a, spec->append);
  }
  if (nerves) {
    /* little_loader hard-codes the first virtio-mmio slot, modern mode. */
    add(a, "-global");
    add(a, "virtio-mmio.force-legacy=false");
    if (spec->disk) {
      g_autofree char *disk = option_value(spec->disk);
      add(a, "-drive");
      addf(a, "if=none,file=%s,format=qcow2,id=vdisk", disk);
      add(a, "-device");
      add(a, "virtio-blk-device,drive=vdisk,bus=virtio-mmio-bus.0");
    }
  } else if (spec->disk) {
    g_autofree char *disk = option_value(spec->disk);
    add(a, "-drive");
    addf(a, "if=none,file=%s,format=qcow2,id=vdisk", disk);
    add(a, "-device");
    add(a, "virtio-blk-pci,drive=vdisk");
  }
  add_net(a, spec);
  add(a, "-device");
  add(a, "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on");
  add(a, "-device");
  add(a, "i6300esb");
  add(a, "-watchdog-action");
  add(a, "poweroff");
  add(a, "-fw_cfg");
  addf(a, "name=opt/nervesfleet/serial,string=%-*s", (int)spec->serial_pad, spec->serial);
  add(a, "-chardev");
  addf(a, "socket,id=qmp0,fd=%d,server=on,wait=off", NF_QEMU_FD_QMP);
  add(a, "-mon");
  add(a, "chardev=qmp0,mode=control");
  if (spec->public_qmp) {
    add(a, "-chardev");
    addf(a, "socket,id=qmp1,fd=%d,server=on,wait=off", NF_QEMU_FD_QMP_PUBLIC);
    add(a, "-mon");
    add(a, "chardev=qmp1,mode=control");
  }
  add(a, "-chardev");
  if (spec->console_log) {
    g_autofree char *escaped = option_value(spec->console_log);
    /* wait=on: qemu accepts our connection (made right after the spawn)
     * before the guest runs. With wait=off the accept could come after the
     * guest's first output, which then went to the log only: a quiet guest
     * (the small kernel) printed its ready line before that, the supervisor
     * saw only its tail and the guest stayed `booting` (1 of 250 seen). */
    addf(a, "socket,id=ser0,fd=%d,server=on,wait=on,logfile=%s,logappend=on", NF_QEMU_FD_SERIAL,
         escaped);
  } else {
    addf(a, "socket,id=ser0,fd=%d,server=on,wait=off", NF_QEMU_FD_SERIAL);
  }
  add(a, "-serial");
  add(a, "chardev:ser0");
  if (spec->pidfile) {
    add(a, "-pidfile");
    add(a, spec->pidfile);
  }
  if (spec->incoming) {
    add(a, "-incoming");
    add(a, spec->incoming);
  }
  for (char *const *e = spec->extra; e && *e; e++)
    add(a, *e);
  if (spec->no_boot_files) {
    /* Ours come before the user's extras, so the first of each is ours. */
    drop_first_pair(a, "-kernel");
    drop_first_pair(a, "-initrd");
    drop_first_pair(a, "-append");
  }

  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}

/* Networking, one section so the other levers of the argv stay apart. The
 * netdev keeps the id "eth0" the Nerves profile always had. What the guest
 * needs to know (the server, the ready URL) goes through fw_cfg, which both
 * profiles' guests can read without a kernel command line of ours. */
static void add_net(GPtrArray *a, const NfQemuSpec *spec)
{
  if (spec->net == NF_NET_USER || spec->net == NF_NET_TAP) {
    GString *nd = g_string_new(NULL);
    if (spec->net == NF_NET_TAP)
      g_string_printf(nd, "tap,id=eth0,fd=%d", NF_QEMU_FD_TAP);
    else
      g_string_assign(nd, "user,id=eth0");
    for (guint i = 0; spec->net == NF_NET_USER && i < spec->n_forwards; i++)
      g_string_append_printf(nd, ",hostfwd=tcp:127.0.0.1:%u-:%u", spec->forwards[i].host,
                             spec->forwards[i].guest);
    add(a, "-netdev");
    g_ptr_array_add(a, g_string_free(nd, FALSE));
    add(a, "-device");
    /* A PCI NIC would load a boot ROM (efi-virtio.rom, often not installed
     * and never used by a -kernel boot): romfile= leaves it out. */
    if (spec->profile == NF_PROFILE_NERVES)
      addf(a, "virtio-net-device,netdev=eth0,mac=%s", spec->mac ? spec->mac : "52:54:00:12:34:56");
    else
      addf(a, "virtio-net-pci,netdev=eth0,mac=%s,romfile=",
           spec->mac ? spec->mac : "52:54:00:12:34:56");
  }
  if (spec->server) {
    add(a, "-fw_cfg");
    addf(a, "name=opt/nervesfleet/server,string=%s", spec->server);
  }
  if (spec->net == NF_NET_TAP && spec->ip) {
    g_autofree char *escaped = option_value(spec->ip);
    add(a, "-fw_cfg");
    addf(a, "name=opt/nervesfleet/ip,string=%s", escaped);
  }
  if (spec->ready_url) {
    add(a, "-fw_cfg");
    addf(a, "name=opt/nervesfleet/ready_url,string=%s", spec->ready_url);
  }
}

void nf_qemu_process_setup(const NfQemuSpec *spec, NfQemuProcessSetup *setup)
{
  *setup = (NfQemuProcessSetup){0};
  setup->merge_any = spec->ksm;
  setup->no_thp = spec->dense || spec->accel == NF_ACCEL_TCG || spec->accel == NF_ACCEL_AUTO;
  setup->fixed_mmap = spec->ksm;
  setup->no_aslr = spec->ksm && spec->dense;
}

char **nf_qemu_process_env(const NfQemuProcessSetup *setup, char **env)
{
  if (setup->fixed_mmap)
    env = g_environ_setenv(env, NF_QEMU_ENV_MALLOC, NF_QEMU_ENV_MALLOC_VALUE, FALSE);
  return env;
}

char *nf_qemu_argv_to_string(char *const *argv)
{
  GString *s = g_string_new(NULL);
  for (char *const *p = argv; *p; p++) {
    g_autofree char *q = g_shell_quote(*p);
    if (s->len)
      g_string_append_c(s, ' ');
    /* Keep plain words plain so the logged line stays readable. */
    if (strpbrk(*p, " \t\n'\"\\$`*?;&|<>()[]{}!#~") == NULL && **p)
      g_string_append(s, *p);
    else
      g_string_append(s, q);
  }
  return g_string_free(s, FALSE);
}

guint nf_qemu_tb_mib(guint tb_mib, gboolean dense)
{
  return tb_mib ? tb_mib : dense ? NF_QEMU_TB_MIB_DENSE : NF_QEMU_TB_MIB;
}
