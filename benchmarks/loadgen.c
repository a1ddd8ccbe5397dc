/* Closed-loop UDP echo load generator for benchmarks/echo.py.
 *
 * Keeps --window datagrams in flight to 127.0.0.1:--port; each carries its
 * sequence number and send time, and is padded to --size bytes. A reply
 * frees its slot and a new datagram takes it; a slot unanswered for
 * --timeout-ms counts as lost and is reused. Sends and receives in batches
 * with sendmmsg/recvmmsg, so one core drives several hundred thousand
 * datagrams a second. Prints one JSON line. Loopback only, by construction.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WINDOW 4096
#define BATCH 64
#define MAX_SIZE 65507

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

struct slot { uint64_t seq, sent_at; int busy; };

int main(int argc, char **argv) {
    int port = 0, window = 64, size = 64, timeout_ms = 200;
    double duration = 5.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--window")) window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout-ms")) timeout_ms = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (port <= 0 || port > 65535 || window < 1 || window > MAX_WINDOW || size < 16 || size > MAX_SIZE) {
        fprintf(stderr, "usage: loadgen --port P [--window 1..%d] [--size 16..%d] [--duration S] [--timeout-ms MS]\n",
                MAX_WINDOW, MAX_SIZE);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(port)};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof server) < 0) { perror("socket"); return 1; }
    int rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

    static struct slot slots[MAX_WINDOW];
    static unsigned char out[BATCH][MAX_SIZE], in[BATCH][MAX_SIZE];
    struct mmsghdr out_msgs[BATCH], in_msgs[BATCH];
    struct iovec out_iov[BATCH], in_iov[BATCH];
    memset(out_msgs, 0, sizeof out_msgs);
    memset(in_msgs, 0, sizeof in_msgs);
    for (int i = 0; i < BATCH; i++) {
        out_iov[i] = (struct iovec){out[i], (size_t)size};
        out_msgs[i].msg_hdr.msg_iov = &out_iov[i];
        out_msgs[i].msg_hdr.msg_iovlen = 1;
        in_iov[i] = (struct iovec){in[i], MAX_SIZE};
        in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
        in_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    size_t latency_cap = 50u * 1000 * 1000, latency_count = 0;
    uint32_t *latencies = malloc(latency_cap * sizeof *latencies);
    uint64_t next_seq = 0, sent = 0, received = 0, lost = 0, late = 0, bad = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(duration * 1e9);
    uint64_t timeout_ns = (uint64_t)timeout_ms * 1000000u;

    for (uint64_t now = start; now < end; now = now_ns()) {
        /* Fill free (or expired) slots. */
        int pending = 0, fill[BATCH];
        for (int s = 0; s < window && pending < BATCH; s++) {
            if (slots[s].busy && now - slots[s].sent_at > timeout_ns) { slots[s].busy = 0; lost++; }
            if (!slots[s].busy) fill[pending++] = s;
        }
        for (int i = 0; i < pending; i++) {
            struct slot *slot = &slots[fill[i]];
            slot->seq = next_seq++ * MAX_WINDOW + (uint64_t)fill[i];
            slot->sent_at = now;
            memcpy(out[i], &slot->seq, 8);
            memcpy(out[i] + 8, &slot->sent_at, 8);
        }
        int done = 0;
        while (done < pending) {
            int n = sendmmsg(fd, out_msgs + done, (unsigned)(pending - done), 0);
            if (n <= 0) break;
            done += n;
        }
        for (int i = 0; i < done; i++) slots[fill[i]].busy = 1;
        sent += (uint64_t)done;
        /* Take replies. */
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 1) <= 0) continue;
        int n = recvmmsg(fd, in_msgs, BATCH, MSG_DONTWAIT, NULL);
        uint64_t arrived = now_ns();
        for (int i = 0; i < n; i++) {
            uint64_t seq, sent_at;
            if (in_msgs[i].msg_len != (unsigned)size) { bad++; continue; }
            memcpy(&seq, in[i], 8);
            memcpy(&sent_at, in[i] + 8, 8);
            struct slot *slot = &slots[seq % MAX_WINDOW];
            if (seq % MAX_WINDOW >= (uint64_t)window || !slot->busy || slot->seq != seq) { late++; continue; }
            slot->busy = 0;
            received++;
            if (latency_count < latency_cap) latencies[latency_count++] = (uint32_t)((arrived - sent_at) / 1000);
        }
    }
    double elapsed = (now_ns() - start) / 1e9;
    qsort(latencies, latency_count, sizeof *latencies, compare_u32);
    uint32_t p50 = latency_count ? latencies[latency_count / 2] : 0;
    uint32_t p99 = latency_count ? latencies[(size_t)(latency_count * 0.99)] : 0;
    printf("{\"sent\":%llu,\"received\":%llu,\"lost\":%llu,\"late\":%llu,\"bad\":%llu,"
           "\"rate_pps\":%.1f,\"p50_us\":%u,\"p99_us\":%u,\"size\":%d,\"window\":%d}\n",
           (unsigned long long)sent, (unsigned long long)received, (unsigned long long)lost,
           (unsigned long long)late, (unsigned long long)bad, received / elapsed, p50, p99, size, window);
    return 0;
}
