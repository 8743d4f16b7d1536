/*
 * Self-test for scripts/linux-vm: runs as /bin/test-binary inside the Linux VM and proves
 * that what vhost-kernel tests need is there: /dev/vhost-net answers VHOST_GET_FEATURES and
 * VHOST_SET_OWNER, and /dev/net/tun makes a TAP with a virtio-net header (the way a
 * vhost-net backend uses one). It also checks the plumbing of `linux-vm run`: its arguments
 * are printed one per line, and `--expect-file NAME` checks that NAME was copied into the
 * working directory (/files).
 *
 * Built by `scripts/linux-vm selftest` with `gcc -static -O2`; prints "selftest: ok" and
 * exits 0 on success, prints the failing step and exits 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/vhost.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what)
{
    printf("selftest: FAILED: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    char cwd[256];

    for (int i = 1; i < argc; i++)
        printf("selftest: arg %d: [%s]\n", i, argv[i]);
    if (!getcwd(cwd, sizeof(cwd)))
        return fail("getcwd");
    printf("selftest: cwd %s\n", cwd);
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--expect-file") == 0) {
            if (access(argv[i + 1], R_OK) != 0)
                return fail(argv[i + 1]);
            printf("selftest: found %s\n", argv[i + 1]);
        }
    }

    int vhost = open("/dev/vhost-net", O_RDWR);
    if (vhost < 0)
        return fail("open /dev/vhost-net");
    uint64_t features = 0;
    if (ioctl(vhost, VHOST_GET_FEATURES, &features) < 0)
        return fail("VHOST_GET_FEATURES");
    if (ioctl(vhost, VHOST_SET_OWNER) < 0)
        return fail("VHOST_SET_OWNER");
    printf("selftest: vhost-net features 0x%016llx\n", (unsigned long long)features);

    int tun = open("/dev/net/tun", O_RDWR);
    if (tun < 0)
        return fail("open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, "vlab%d", IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0)
        return fail("TUNSETIFF");
    printf("selftest: tap %s\n", ifr.ifr_name);

    printf("selftest: ok\n");
    return 0;
}
