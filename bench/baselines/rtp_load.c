/* rtp_load: the RTP generator and sink of bench/concurrent_media.py.
 *
 * Plays both ends of many G.711 calls at once: for every leg it binds the port that leg's SDP
 * advertised, connects it to the relay port the node put in its own SDP for that leg, sends one
 * 20 ms PCMU packet (RFC 3551 §4.5.14: 160 bytes) every 20 ms, and counts what the relay sends back
 * on the same socket (symmetric RTP, RFC 4961, so the relay latches on the SDP's address at once),
 * and how long each packet took (the send time rides in the payload, which the relay leaves alone).
 * One thread, one epoll set; the legs' sending times are spread over the 20 ms so that the load is
 * even (1 ms slots, bucket = leg % 20).
 *
 *   rtp_load SECONDS LEGS_FILE       each line: "<side> <local ip> <local port> <relay ip> <relay port>"
 *
 * After SECONDS of sending, and draining until 2 s pass with nothing (at most 15 s), it prints one
 * JSON line: totals per side (sent, send errors by kind, received, legs that received nothing), the
 * delay histogram, the packets received after its last send, its CPU seconds; then it waits for
 * standard input to close, so that its sockets stay open while the caller reads their kernel drop
 * counters from /proc/net/udp.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

#define MAX_LEGS 20000
#define SLOTS 20          /* 1 ms slots in one 20 ms packet interval */
#define PAYLOAD 160
#define SIDES 2

struct leg {
    int fd, side;
    uint16_t seq;
    uint32_t ts, ssrc;
    uint64_t sent, received, eagain, errors;
};

static struct leg legs[MAX_LEGS];
static int nlegs;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void send_one(struct leg *l) {
    uint8_t pkt[12 + PAYLOAD];
    pkt[0] = 0x80;
    pkt[1] = 0; /* PCMU */
    pkt[2] = l->seq >> 8; pkt[3] = l->seq & 0xff;
    pkt[4] = l->ts >> 24; pkt[5] = l->ts >> 16; pkt[6] = l->ts >> 8; pkt[7] = l->ts;
    pkt[8] = l->ssrc >> 24; pkt[9] = l->ssrc >> 16; pkt[10] = l->ssrc >> 8; pkt[11] = l->ssrc;
    memset(pkt + 12, 0xff, PAYLOAD);
    int64_t t = now_ns(); /* the relay does not touch the payload: the sink reads the delay from it */
    memcpy(pkt + 12, &t, sizeof t);
    if (send(l->fd, pkt, sizeof pkt, MSG_DONTWAIT) == (ssize_t)sizeof pkt) {
        l->sent++;
        l->seq++;
        l->ts += PAYLOAD;
    } else if (errno == EAGAIN || errno == ENOBUFS) {
        l->eagain++;
    } else {
        l->errors++; /* ECONNREFUSED: the relay port was closed (an ICMP came back) */
    }
}

/* Delay from send to receive (relay + both kernels' queues), by bucket: <1, <5, <20, <100, <500 ms, more. */
static const int64_t DELAY_EDGES_MS[] = {1, 5, 20, 100, 500};
#define DELAY_BUCKETS 6
static uint64_t delays[DELAY_BUCKETS];
static int64_t max_delay_ns;

static void drain(int epfd, int timeout_ms) {
    struct epoll_event ev[512];
    uint8_t buf[2048];
    int n = epoll_wait(epfd, ev, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct leg *l = &legs[ev[i].data.u32];
        for (int k = 0; k < 64; k++) { /* bounded: level-triggered epoll reports the rest again */
            ssize_t r = recv(l->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r < 0)
                break;
            l->received++;
            if (r >= 12 + (ssize_t)sizeof(int64_t)) {
                int64_t sent_at, d;
                memcpy(&sent_at, buf + 12, sizeof sent_at);
                d = now_ns() - sent_at;
                int b = 0;
                while (b < DELAY_BUCKETS - 1 && d >= DELAY_EDGES_MS[b] * 1000000LL)
                    b++;
                delays[b]++;
                if (d > max_delay_ns)
                    max_delay_ns = d;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: rtp_load SECONDS LEGS_FILE\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    if (seconds <= 0 || seconds > 3600) {
        fprintf(stderr, "SECONDS out of range\n");
        return 2;
    }
    FILE *in = fopen(argv[2], "r");
    if (in == NULL) {
        perror(argv[2]);
        return 2;
    }
    int epfd = epoll_create1(0);
    char side[16], lip[64], rip[64];
    int lport, rport;
    while (nlegs < MAX_LEGS && fscanf(in, "%15s %63s %d %63s %d", side, lip, &lport, rip, &rport) == 5) {
        struct leg *l = &legs[nlegs];
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lport)};
        struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons(rport)};
        inet_pton(AF_INET, lip, &a.sin_addr);
        inet_pton(AF_INET, rip, &b.sin_addr);
        l->side = strcmp(side, "uac") == 0 ? 0 : 1;
        l->ssrc = 0x10000000u + nlegs;
        l->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 256 * 1024, one = 1; /* as the relay's own sockets */
        setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&a, sizeof a) < 0 ||
            connect(l->fd, (struct sockaddr *)&b, sizeof b) < 0) {
            fprintf(stderr, "leg %d (%s:%d -> %s:%d): %s\n", nlegs, lip, lport, rip, rport, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)nlegs};
        epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &ev);
        nlegs++;
    }
    fprintf(stderr, "rtp_load: %d legs, %.1f s\n", nlegs, seconds);

    /* Send: slot s (1 ms) sends for the legs with index % SLOTS == s; late slots are caught up. */
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9);
    int64_t slot = 0, late_slots = 0;
    while (1) {
        int64_t t = now_ns();
        if (t >= end)
            break;
        int64_t due = (t - start) / 1000000; /* the slot whose time has come */
        if (due - slot > 1)
            late_slots += due - slot - 1;
        for (; slot <= due; slot++)
            for (int i = (int)(slot % SLOTS); i < nlegs; i += SLOTS)
                send_one(&legs[i]);
        int64_t next = start + slot * 1000000;
        int wait_ms = (int)((next - now_ns() + 999999) / 1000000); /* never 0 while time is left: no spin */
        drain(epfd, wait_ms > 0 ? wait_ms : 0);
    }
    /* The last packets come back: drain until 2 s pass with nothing, at most 15 s. */
    uint64_t at_end = 0, total_rx = 0;
    for (int i = 0; i < nlegs; i++)
        at_end += legs[i].received;
    int64_t stop = now_ns() + 15000000000LL, quiet_since = now_ns();
    total_rx = at_end;
    while (now_ns() < stop && now_ns() - quiet_since < 2000000000LL) {
        drain(epfd, 50);
        uint64_t rx = 0;
        for (int i = 0; i < nlegs; i++)
            rx += legs[i].received;
        if (rx != total_rx) {
            total_rx = rx;
            quiet_since = now_ns();
        }
    }

    uint64_t sent[SIDES] = {0}, recvd[SIDES] = {0}, eagain[SIDES] = {0}, errs[SIDES] = {0}, silent[SIDES] = {0};
    uint64_t minrx[SIDES] = {UINT64_MAX, UINT64_MAX}, maxrx[SIDES] = {0};
    int count[SIDES] = {0};
    for (int i = 0; i < nlegs; i++) {
        struct leg *l = &legs[i];
        sent[l->side] += l->sent;
        recvd[l->side] += l->received;
        eagain[l->side] += l->eagain;
        errs[l->side] += l->errors;
        silent[l->side] += l->received == 0;
        if (l->received < minrx[l->side]) minrx[l->side] = l->received;
        if (l->received > maxrx[l->side]) maxrx[l->side] = l->received;
        count[l->side]++;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"legs\": %d, \"seconds\": %.3f, \"late_slots\": %lld, \"cpu\": %.3f, \"received_after_end\": %llu", nlegs,
           (double)(end - start) / 1e9, (long long)late_slots, cpu, (unsigned long long)(total_rx - at_end));
    const char *names[SIDES] = {"uac", "uas"};
    for (int s = 0; s < SIDES; s++)
        printf(", \"%s\": {\"legs\": %d, \"sent\": %llu, \"send_eagain\": %llu, \"send_errors\": %llu, "
               "\"received\": %llu, \"silent_legs\": %llu, \"min_rx\": %llu, \"max_rx\": %llu}",
               names[s], count[s], (unsigned long long)sent[s], (unsigned long long)eagain[s],
               (unsigned long long)errs[s], (unsigned long long)recvd[s], (unsigned long long)silent[s],
               (unsigned long long)(count[s] ? minrx[s] : 0), (unsigned long long)maxrx[s]);
    printf(", \"delay_ms_buckets\": {\"<1\": %llu, \"<5\": %llu, \"<20\": %llu, \"<100\": %llu, \"<500\": %llu, "
           "\">=500\": %llu}, \"max_delay_ms\": %.1f}\n", (unsigned long long)delays[0], (unsigned long long)delays[1],
           (unsigned long long)delays[2], (unsigned long long)delays[3], (unsigned long long)delays[4],
           (unsigned long long)delays[5], max_delay_ns / 1e6);
    fflush(stdout);
    /* Keep the sockets open until the caller has read /proc/net/udp. */
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
