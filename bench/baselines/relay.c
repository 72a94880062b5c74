/* The ceiling of bench/bench_relay.py: a plain C RTP relay doing what the engine's loop does minus the
 * RTP work: epoll (level-triggered) over every leg's socket, one recvmmsg of up to 64 datagrams per ready
 * socket, latch the sender's address, one sendmmsg of the batch from the partner socket to the partner's
 * peer. No header parsing, no statistics, no rewriting: what the kernel allows a relay to do.
 *
 * usage: relay HOST BASE_PORT RELAYS SINK_HOST SINK_PORT SINKS SECONDS
 *   relay i: leg a on BASE_PORT + 4i, leg b on BASE_PORT + 4i + 2; b's peer is SINK_PORT + (i % SINKS).
 *   Prints "ready", then after the first packet counts what it sends for SECONDS and prints
 *   {"packets": N, "seconds": S, "cpu_seconds": C} (C: this process's user + system time in the window). Gives up after 20 s without traffic. Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 2048
#define MAXEV 256

struct leg {
    int fd;
    int partner;
    int has_peer;
    struct sockaddr_in peer;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static int open_udp(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "relay: bind %s:%d: %s\n", host, port, strerror(errno));
        exit(2);
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: relay HOST BASE_PORT RELAYS SINK_HOST SINK_PORT SINKS SECONDS\n");
        return 2;
    }
    const char *host = argv[1], *sink_host = argv[4];
    int base = atoi(argv[2]), relays = atoi(argv[3]), sink_port = atoi(argv[5]), sinks = atoi(argv[6]);
    double seconds = atof(argv[7]);
    int nlegs = 2 * relays;
    struct leg *legs = calloc(nlegs, sizeof *legs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < relays; i++) {
        for (int w = 0; w < 2; w++) {
            struct leg *l = &legs[2 * i + w];
            l->fd = open_udp(host, base + 4 * i + 2 * w);
            l->partner = 2 * i + 1 - w;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(2 * i + w)};
            epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &ev);
        }
        struct leg *b = &legs[2 * i + 1];
        b->has_peer = 1;
        b->peer.sin_family = AF_INET;
        b->peer.sin_port = htons(sink_port + i % sinks);
        inet_pton(AF_INET, sink_host, &b->peer.sin_addr);
    }
    static unsigned char buf[BATCH][SLOT];
    static struct mmsghdr rm[BATCH], sm[BATCH];
    static struct iovec riov[BATCH], siov[BATCH];
    static struct sockaddr_in names[BATCH];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = buf[i];
        riov[i].iov_len = SLOT;
        rm[i].msg_hdr.msg_iov = &riov[i];
        rm[i].msg_hdr.msg_iovlen = 1;
        rm[i].msg_hdr.msg_name = &names[i];
        sm[i].msg_hdr.msg_iov = &siov[i];
        sm[i].msg_hdr.msg_iovlen = 1;
    }
    struct epoll_event evs[MAXEV];
    printf("ready\n");
    fflush(stdout);
    double start = 0, cpu_start = 0, idle_since = now();
    uint64_t counted = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, MAXEV, 100);
        double t = now();
        if (n <= 0) {
            if (start == 0 && t - idle_since > 20) {
                fprintf(stderr, "relay: no traffic\n");
                return 1;
            }
            if (start != 0 && t - start >= seconds) break;
            continue;
        }
        if (start != 0 && t - start >= seconds) break;
        for (int e = 0; e < n; e++) {
            struct leg *l = &legs[evs[e].data.u32];
            for (int i = 0; i < BATCH; i++) rm[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
            int got = recvmmsg(l->fd, rm, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;
            /* symmetric latching: the leg's peer is where its packets come from */
            l->peer = names[got - 1];
            l->has_peer = 1;
            struct leg *out = &legs[l->partner];
            if (!out->has_peer) continue;
            for (int i = 0; i < got; i++) {
                siov[i].iov_base = buf[i];
                siov[i].iov_len = rm[i].msg_len;
                sm[i].msg_hdr.msg_name = &out->peer;
                sm[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
            }
            int sent = 0;
            while (sent < got) {
                int s = sendmmsg(out->fd, sm + sent, got - sent, MSG_DONTWAIT);
                if (s <= 0) break;
                sent += s;
            }
            if (start == 0 && sent > 0) {
                start = t;
                cpu_start = cpu_seconds();
            }
            if (start != 0) counted += sent;
        }
    }
    printf("{\"packets\": %llu, \"seconds\": %.6f, \"cpu_seconds\": %.3f}\n", (unsigned long long)counted,
           now() - start, cpu_seconds() - cpu_start);
    return 0;
}
