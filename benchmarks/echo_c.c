/* The ceiling for benchmarks/echo.py: a C echo server with recvmmsg/sendmmsg.
 * If the load generator drives this much faster than any Python server, it is
 * not what limits the Python servers' numbers. Binds 127.0.0.1:--port. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define MAX_SIZE 65536

int main(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[1], "--port")) { fprintf(stderr, "usage: echo_c --port P\n"); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) < 0) { perror("bind"); return 1; }
    static unsigned char buffers[BATCH][MAX_SIZE];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in peers[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){buffers[i], MAX_SIZE};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i], .msg_namelen = sizeof peers[i],
                                              .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
        sendmmsg(fd, msgs, (unsigned)n, 0);
    }
}
