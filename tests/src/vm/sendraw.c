/* sendraw IFNAME FILE...: sends each FILE, one whole Ethernet frame, out of IFNAME
 * through an AF_PACKET socket, in order; prints "sent FILE N" for each. Built static
 * into the microVM guest (busybox has no raw sender) so a test can send forged frames
 * from inside the guest: they leave through virtio-net and enter the host at its TAP.
 * Exit status 0 if every frame was sent whole. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sendraw IFNAME FILE...\n");
        return 2;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
        perror(argv[1]);
        return 1;
    }
    struct sockaddr_ll to;
    memset(&to, 0, sizeof to);
    to.sll_family = AF_PACKET;
    to.sll_ifindex = ifr.ifr_ifindex;
    to.sll_halen = ETH_ALEN;
    for (int i = 2; i < argc; i++) {
        unsigned char frame[2048];
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        size_t n = fread(frame, 1, sizeof frame, f);
        fclose(f);
        if (n < ETH_HLEN) {
            fprintf(stderr, "%s: %zu bytes is no Ethernet frame\n", argv[i], n);
            return 1;
        }
        memcpy(to.sll_addr, frame, ETH_ALEN);
        ssize_t sent = sendto(fd, frame, n, 0, (struct sockaddr *)&to, sizeof to);
        if (sent != (ssize_t)n) {
            perror("sendto");
            return 1;
        }
        printf("sent %s %zd\n", argv[i], sent);
    }
    return 0;
}
