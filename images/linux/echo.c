/*
 * Frame echo for the Linux guest of the vhost-user test (vmm/tests/qemu_linux_vhost_user.rs):
 * runs as /bin/test-binary inside the Linux VM of scripts/linux-vm and sends every frame
 * received on an interface back out of it unchanged, until it has echoed the end marker
 * (ethertype 0x88b5, see device-model/src/endpoint/marker.rs).
 *
 *   echo IFNAME [IDLE_SECS]
 *
 * Frames must leave byte for byte as they came, in order, and nothing else may leave:
 * - The socket exists, promiscuous, before this program brings the interface up, so no
 *   frame arrives before it can be read. It is not bound to the interface: a socket bound
 *   while the interface is down is hooked in only by the NETDEV_UP notifier, after
 *   virtio_net's open has already run NAPI, which may pass the first frames (or all of
 *   them) up the stack before the hook is there. An unbound ETH_P_ALL socket is hooked
 *   from its creation on; frames from other interfaces are skipped by their ifindex.
 * - GRO is turned off: it holds TCP segments back to the end of the NAPI poll (other
 *   frames overtake them) and merges consecutive ones into one bigger frame.
 * - net.core.gro_normal_batch=1: NAPI otherwise passes received frames up in batches
 *   (8), and in a batch a frame that only this socket takes (IPv6 here, or an unknown
 *   ethertype) is handed to it when the batch's sublist is dispatched, while a later frame
 *   that the stack also takes or that carries a VLAN tag is handed over at once: it
 *   overtakes (seen: an IPv6 frame behind the tagged one after it).
 * - The kernel moves a VLAN tag out of the frame into metadata on receive (skb_vlan_untag,
 *   before any packet socket sees the frame); PACKET_AUXDATA gives it back and it is put
 *   back in, as libpcap does.
 * - PACKET_QDISC_BYPASS: Debian's default qdisc is fq_codel, which may reorder frames of
 *   different flows when they queue; bypassing it hands each frame straight to the driver.
 *   When the driver's ring is full the send fails with ENOBUFS and is retried.
 * - PACKET_IGNORE_OUTGOING: our own transmissions are not read back.
 * - After the marker, it waits until the driver has freed every frame it sent (SIOCOUTQ
 *   reaches 0: the device has taken them all) before exiting, so the VM does not power off
 *   with frames still in the ring.
 *
 * Built by `scripts/linux-vm echo-test` with `gcc -static -O2`. Prints one line per
 * step and a summary; exits 0 after echoing the marker, 1 on any failure, including no
 * frame for IDLE_SECS seconds (default 20).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define END_ETHERTYPE 0x88b5
#define VLAN_HLEN 4
/* Bigger than any frame the device carries (jumbo frames included). */
#define FRAME_MAX 65536

static int fail(const char *what)
{
    printf("echo: FAILED: %s: %s\n", what, strerror(errno));
    return 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int is_end(const uint8_t *frame, size_t len)
{
    uint16_t ty = htons(END_ETHERTYPE);
    return (len >= 14 && memcmp(frame + 12, &ty, 2) == 0) ||
           (len >= 18 && memcmp(frame + 16, &ty, 2) == 0);
}

int main(int argc, char **argv)
{
    static uint8_t buf[FRAME_MAX + VLAN_HLEN];
    if (argc < 2 || argc > 3) {
        printf("usage: echo IFNAME [IDLE_SECS]\n");
        return 2;
    }
    const char *ifname = argv[1];
    int idle_ms = (argc == 3 ? atoi(argv[2]) : 20) * 1000;

    if (write_file("/proc/sys/net/core/gro_normal_batch", "1\n") < 0)
        return fail("/proc/sys/net/core/gro_normal_batch");
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0)
        return fail("socket(AF_PACKET)");
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0)
        return fail(ifname);
    struct packet_mreq mr = { .mr_ifindex = (int)ifindex, .mr_type = PACKET_MR_PROMISC };
    if (setsockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
        return fail("PACKET_ADD_MEMBERSHIP promiscuous");
    int one = 1;
    if (setsockopt(s, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0)
        return fail("PACKET_AUXDATA");
    if (setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0)
        return fail("PACKET_QDISC_BYPASS");
    if (setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0)
        return fail("PACKET_IGNORE_OUTGOING");

    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    struct ethtool_value gro = { .cmd = ETHTOOL_SGRO, .data = 0 };
    ifr.ifr_data = (char *)&gro;
    if (ioctl(s, SIOCETHTOOL, &ifr) < 0)
        return fail("ETHTOOL_SGRO off");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return fail("SIOCGIFFLAGS");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return fail("SIOCSIFFLAGS up");
    printf("echo: %s (ifindex %u) up, promiscuous, no GRO; echoing until ethertype %04x\n", ifname,
           ifindex, END_ETHERTYPE);
    fflush(stdout);

    unsigned long frames = 0, tagged = 0, retries = 0;
    for (;;) {
        struct pollfd p = { .fd = s, .events = POLLIN };
        int n = poll(&p, 1, idle_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail("poll");
        if (n == 0) {
            printf("echo: FAILED: no frame for %d s (%lu echoed, no end marker)\n",
                   idle_ms / 1000, frames);
            return 1;
        }

        /* Received at buf + VLAN_HLEN, so that a tag can be put back in front. */
        uint8_t *frame = buf + VLAN_HLEN;
        union {
            struct cmsghdr align;
            char bytes[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
        } control;
        struct sockaddr_ll from;
        struct iovec iov = { .iov_base = frame, .iov_len = FRAME_MAX };
        struct msghdr msg = {
            .msg_name = &from,
            .msg_namelen = sizeof(from),
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = &control,
            .msg_controllen = sizeof(control),
        };
        ssize_t len = recvmsg(s, &msg, MSG_TRUNC);
        if (len < 0 && errno == EINTR)
            continue;
        if (len < 0)
            return fail("recvmsg");
        if (len > FRAME_MAX) {
            printf("echo: FAILED: a %zd-byte frame does not fit the buffer\n", len);
            return 1;
        }
        if (from.sll_ifindex != (int)ifindex || from.sll_pkttype == PACKET_OUTGOING)
            continue;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA)
                continue;
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof(aux));
            /* The test libpcap makes: a TCI of 0 is a tag only with the VALID bit. */
            if (!(aux.tp_vlan_tci != 0 || (aux.tp_status & TP_STATUS_VLAN_VALID)))
                continue;
            if (len < 12) {
                printf("echo: FAILED: a tagged %zd-byte frame\n", len);
                return 1;
            }
            uint16_t tpid = (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid
                                                                        : ETH_P_8021Q;
            uint16_t tag[2] = { htons(tpid), htons(aux.tp_vlan_tci) };
            memmove(buf, frame, 12);
            frame = buf;
            memcpy(frame + 12, tag, VLAN_HLEN);
            len += VLAN_HLEN;
            tagged++;
        }

        /* Unbound: the interface is named per frame. SOCK_RAW sends the frame as it is;
         * the protocol is the frame's own ethertype (the tag's, when tagged). */
        struct sockaddr_ll to = {
            .sll_family = AF_PACKET,
            .sll_ifindex = (int)ifindex,
        };
        if (len >= 14)
            memcpy(&to.sll_protocol, frame + 12, 2); /* both in network order */
        for (;;) {
            if (sendto(s, frame, (size_t)len, 0, (struct sockaddr *)&to, sizeof(to)) == len)
                break;
            /* The driver's ring is full (qdisc bypass drops instead of queueing): wait
             * for the device to take some frames. */
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
                if (++retries > 10000)
                    return fail("send: the device takes no frames");
                sleep_ms(1);
                continue;
            }
            return fail("send");
        }
        frames++;
        if (is_end(frame, (size_t)len))
            break;
    }

    /* Wait (up to 5 s) until every sent frame has been taken by the device and freed. */
    int queued = -1;
    for (int i = 0; i < 5000; i++) {
        if (ioctl(s, SIOCOUTQ, &queued) < 0)
            return fail("SIOCOUTQ");
        if (queued == 0)
            break;
        sleep_ms(1);
    }
    printf("echo: done: %lu frames echoed (%lu with a VLAN tag restored, %lu send retries)"
           "%s\n",
           frames, tagged, retries,
           queued == 0 ? "" : "; WARNING: some still queued in the driver after 5 s");
    return 0;
}
