/* The kernel floor for `msdbench bench`: a TCP echo in C, both ends.
 *
 *   tcp_echo server [HOPS]     listen on 127.0.0.1, print the port, echo every connection;
 *                              with HOPS > 1 a message travels a chain of HOPS threads of one
 *                              process over loopback TCP (each forwards it to the next and
 *                              passes the answer back; the last echoes): BEPS create_user's
 *                              route (load balancer -> worker -> user DB: HOPS 3) in C, the
 *                              floor for any implementation of that route
 *   tcp_echo client PORT       read "SIZE COUNT" lines on stdin; for each, make COUNT round
 *                              trips of a SIZE-byte payload and write COUNT int64 round-trip
 *                              times (ns, native order) to stdout
 *
 * A message is a 4-byte big-endian length, then the payload; the whole message comes back.
 * One send and (usually) one recv per message on each side, as the Thrift paths do.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MSG (4 << 20)

static int recv_message(int fd, unsigned char *buf) {
    size_t got = 0, need = 4;
    while (got < need) {
        ssize_t r = recv(fd, buf + got, MAX_MSG - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
        if (got >= 4) {
            uint32_t n;
            memcpy(&n, buf, 4);
            need = 4 + ntohl(n);
            if (need > MAX_MSG) return -1;
        }
    }
    return (int)need;
}

static int send_all(int fd, const unsigned char *buf, size_t n) {
    while (n) {
        ssize_t w = send(fd, buf, n, 0);
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int listen_any(int *port) {
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof a) || listen(lst, 16) ||
        getsockname(lst, (struct sockaddr *)&a, &len))
        return -1;
    *port = ntohs(a.sin_port);
    return lst;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) return -1;
    nodelay(fd);
    return fd;
}

/* One hop: answer every message from `up`, by echoing it or by asking `down` (the next hop). */
static void hop(int up, int down) {
    unsigned char *buf = malloc(MAX_MSG);
    int n;
    nodelay(up);
    while ((n = recv_message(up, buf)) > 0) {
        if (down >= 0 && (send_all(down, buf, (size_t)n) || (n = recv_message(down, buf)) < 0))
            break;
        if (send_all(up, buf, (size_t)n)) break;
    }
    free(buf);
}

struct hop_arg { int lst, next_port; };

static void *hop_thread(void *p) {
    struct hop_arg *h = p;
    int up = accept(h->lst, NULL, NULL);
    int down = h->next_port ? connect_to(h->next_port) : -1;
    if (up >= 0 && (down >= 0 || !h->next_port)) hop(up, down);
    _exit(0);  /* a broken chain ends the connection's process */
}

/* The connection's process: this thread is hop 0, hops 1..n-1 are threads behind it. */
static void serve_chain(int c, int hops) {
    int next_port = 0;
    for (int i = hops - 1; i >= 1; i--) {  /* from the last hop back, each knows the next */
        struct hop_arg *h = malloc(sizeof *h);
        pthread_t t;
        int port;
        h->lst = listen_any(&port);
        h->next_port = next_port;
        if (h->lst < 0 || pthread_create(&t, NULL, hop_thread, h)) _exit(1);
        next_port = port;
    }
    hop(c, next_port ? connect_to(next_port) : -1);
}

static int serve(int hops) {
    int port, lst = listen_any(&port);
    if (lst < 0) return perror("tcp_echo server"), 1;
    printf("%d\n", port);
    fflush(stdout);
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(lst, NULL, NULL);
        if (c < 0) return 0;
        if (fork() == 0) {
            serve_chain(c, hops);
            _exit(0);
        }
        close(c);
    }
}

static int client(int port) {
    int fd = connect_to(port);
    if (fd < 0) return perror("tcp_echo client"), 1;
    unsigned char *out = calloc(1, MAX_MSG), *in = malloc(MAX_MSG);
    long size, count;
    while (scanf("%ld %ld", &size, &count) == 2) {
        if (size < 0 || size + 4 > MAX_MSG || count <= 0) return 2;
        int64_t *t = malloc(sizeof(int64_t) * (size_t)count);
        uint32_t n = htonl((uint32_t)size);
        memcpy(out, &n, 4);
        for (long i = 0; i < count; i++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (send_all(fd, out, (size_t)size + 4) || recv_message(fd, in) < 0) return 3;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            t[i] = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
        }
        fwrite(t, sizeof(int64_t), (size_t)count, stdout);
        fflush(stdout);
        free(t);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "server")) return serve(1);
    if (argc == 3 && !strcmp(argv[1], "server") && atoi(argv[2]) >= 1 && atoi(argv[2]) <= 16)
        return serve(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "client")) return client(atoi(argv[2]));
    fprintf(stderr, "usage: tcp_echo server [HOPS 1..16] | tcp_echo client PORT\n");
    return 2;
}
