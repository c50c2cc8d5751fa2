/*
 * tap.c: the fleet's bridge and its guests' taps (see tap.h for why taps
 * cannot leak). Everything is a plain ioctl on an AF_INET socket or on
 * /dev/net/tun, the interfaces iproute2 itself falls back to: no helper
 * process, no netlink library.
 */
#include "supervisor/tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "supervisor/fleet.h"

struct NfTap {
  char *bridge;
  guint b; /* the second byte of 10.B.0.0/16 */
  char *host_addr;
};

static int ctl_socket(GError **error);
static gboolean set_up(int s, const char *ifname, gboolean up, GError **error);
static gboolean bridge_addr(const char *name, guint *b);
static gboolean subnet_in_use(guint b);
static gboolean fail_errno(GError **error, int e, const char *what, const char *name);

static gboolean fail_errno(GError **error, int e, const char *what, const char *name)
{
  g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "--net tap: cannot %s %s: %s%s", what,
              name, g_strerror(e),
              e == EPERM || e == EACCES ? " (needs root or CAP_NET_ADMIN; or use --net user)" : "");
  return FALSE;
}

static int ctl_socket(GError **error)
{
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    fail_errno(error, errno, "open", "a control socket");
  return s;
}

static gboolean set_up(int s, const char *ifname, gboolean up, GError **error)
{
  struct ifreq ifr = {0};
  g_strlcpy(ifr.ifr_name, ifname, IFNAMSIZ);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
    return fail_errno(error, errno, "read the flags of", ifname);
  ifr.ifr_flags = (short)(up ? (ifr.ifr_flags | IFF_UP) : (ifr.ifr_flags & ~IFF_UP));
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
    return fail_errno(error, errno, up ? "bring up" : "bring down", ifname);
  return TRUE;
}

/* 40 bits of the runtime dir's SHA-256, as much as a 15-character
 * interface name holds: a 32-bit g_str_hash collided for fleets as near as
 * "ab" and "bA", and the second fleet then took the first one's bridge as
 * its own. */
char *nf_tap_bridge_name(const char *runtime_dir)
{
  g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, runtime_dir, -1);
  return g_strdup_printf("nfbr-%.10s", sum);
}

/* The name versions before the SHA-256 one gave the fleet's bridge. A
 * fleet left running by one of them (`down --leave-running`, to upgrade)
 * is on it: taken over and swept under that name, so adopted and new
 * guests share one segment and no bridge is left behind. */
static char *old_bridge_name(const char *runtime_dir)
{
  return g_strdup_printf("nfbr-%08x", g_str_hash(runtime_dir));
}

gboolean nf_tap_bridge_exists(const char *name)
{
  g_autofree char *path = g_strdup_printf("/sys/class/net/%s/bridge", name);
  return g_file_test(path, G_FILE_TEST_IS_DIR);
}

/* The B of an existing bridge's 10.B.0.1 address. */
static gboolean bridge_addr(const char *name, guint *b)
{
  struct ifaddrs *list = NULL, *i;
  gboolean found = FALSE;
  if (getifaddrs(&list) != 0)
    return FALSE;
  for (i = list; i && !found; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && g_str_equal(i->ifa_name, name)) {
      guint32 a = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr);
      if ((a >> 24) == 10 && (a & 0xffff) == 1) {
        *b = (a >> 16) & 0xff;
        found = TRUE;
      }
    }
  freeifaddrs(list);
  return found;
}

static gboolean subnet_in_use(guint b)
{
  struct ifaddrs *list = NULL, *i;
  gboolean used = FALSE;
  if (getifaddrs(&list) != 0)
    return TRUE;
  for (i = list; i && !used; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET) {
      guint32 a = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr);
      used = (a >> 24) == 10 && ((a >> 16) & 0xff) == b;
    }
  freeifaddrs(list);
  return used;
}

NfTap *nf_tap_new(const char *runtime_dir, GError **error)
{
  if (access("/dev/net/tun", R_OK | W_OK) != 0) {
    fail_errno(error, errno, "open", "/dev/net/tun");
    return NULL;
  }
  int s = ctl_socket(error);
  if (s < 0)
    return NULL;
  NfTap *tap = g_new0(NfTap, 1);
  tap->bridge = nf_tap_bridge_name(runtime_dir);
  g_autofree char *old = old_bridge_name(runtime_dir);
  if (!nf_tap_bridge_exists(tap->bridge) && nf_tap_bridge_exists(old) &&
      bridge_addr(old, &tap->b)) {
    g_free(tap->bridge);
    tap->bridge = g_steal_pointer(&old);
  } else if (nf_tap_bridge_exists(tap->bridge) && bridge_addr(tap->bridge, &tap->b)) {
    /* Left by a supervisor of this fleet (maybe with detached guests on it). */
  } else {
    guint start = 64 + g_str_hash(runtime_dir) % 128;
    for (guint i = 0; i < 128 && tap->b == 0; i++)
      if (!subnet_in_use(64 + (start - 64 + i) % 128))
        tap->b = 64 + (start - 64 + i) % 128;
    if (tap->b == 0) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "--net tap: every 10.64-191.0.0/16 subnet is in use on this host");
      goto fail;
    }
    if (!nf_tap_bridge_exists(tap->bridge) && ioctl(s, SIOCBRADDBR, tap->bridge) != 0) {
      fail_errno(error, errno, "create the bridge", tap->bridge);
      goto fail;
    }
    struct ifreq ifr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    g_strlcpy(ifr.ifr_name, tap->bridge, IFNAMSIZ);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl((10u << 24) | (tap->b << 16) | 1);
    if (ioctl(s, SIOCSIFADDR, &ifr) != 0) {
      fail_errno(error, errno, "set the address of", tap->bridge);
      goto fail_bridge;
    }
    sin->sin_addr.s_addr = htonl(0xffff0000u);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) {
      fail_errno(error, errno, "set the netmask of", tap->bridge);
      goto fail_bridge;
    }
  }
  if (!set_up(s, tap->bridge, TRUE, error))
    goto fail_bridge;
  tap->host_addr = g_strdup_printf("10.%u.0.1", tap->b);
  close(s);
  return tap;

fail_bridge:
  set_up(s, tap->bridge, FALSE, NULL);
  ioctl(s, SIOCBRDELBR, tap->bridge);
fail:
  close(s);
  g_free(tap->bridge);
  g_free(tap);
  return NULL;
}

int nf_tap_open(NfTap *tap, GError **error)
{
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    fail_errno(error, errno, "open", "/dev/net/tun");
    return -1;
  }
  struct ifreq ifr = {0};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  g_strlcpy(ifr.ifr_name, "nft%d", IFNAMSIZ); /* the kernel picks the number */
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    fail_errno(error, errno, "create", "a tap");
    close(fd);
    return -1;
  }
  int s = ctl_socket(error);
  if (s < 0) {
    close(fd);
    return -1;
  }
  struct ifreq br = {0};
  g_strlcpy(br.ifr_name, tap->bridge, IFNAMSIZ);
  br.ifr_ifindex = (int)if_nametoindex(ifr.ifr_name);
  gboolean ok = br.ifr_ifindex > 0 && set_up(s, ifr.ifr_name, TRUE, error);
  if (ok && ioctl(s, SIOCBRADDIF, &br) != 0)
    ok = fail_errno(error, errno, "attach a tap to", tap->bridge);
  else if (!ok && br.ifr_ifindex <= 0)
    fail_errno(error, errno, "find", ifr.ifr_name);
  close(s);
  if (!ok) {
    close(fd); /* the tap goes with it */
    return -1;
  }
  return fd;
}

char *nf_tap_guest_addr(const NfTap *tap, guint k)
{
  guint h = k + 1; /* .0.1 is the host */
  if (k == 0 || h > 0xfffe)
    return NULL;
  return g_strdup_printf("10.%u.%u.%u", tap->b, h >> 8, h & 0xff);
}

const char *nf_tap_host_addr(const NfTap *tap)
{
  return tap->host_addr;
}

void nf_tap_sweep(const char *runtime_dir)
{
  char *names[] = {nf_tap_bridge_name(runtime_dir), old_bridge_name(runtime_dir)};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    if (!nf_tap_bridge_exists(names[i])) {
      g_free(names[i]);
      continue;
    }
    NfTap *tap = g_new0(NfTap, 1);
    tap->bridge = names[i];
    nf_tap_free(tap, FALSE);
  }
}

void nf_tap_free(NfTap *tap, gboolean keep)
{
  if (tap == NULL)
    return;
  if (!keep) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
      set_up(s, tap->bridge, FALSE, NULL);
      if (ioctl(s, SIOCBRDELBR, tap->bridge) != 0 && errno != ENXIO)
        g_message("--net tap: cannot remove bridge %s: %s", tap->bridge, g_strerror(errno));
      close(s);
    }
  }
  g_free(tap->bridge);
  g_free(tap->host_addr);
  g_free(tap);
}
