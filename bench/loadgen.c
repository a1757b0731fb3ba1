/* The benchmarks' load generator: POST /alert for devices first..first+alerts-1 from `clients`
 * threads, a new TCP connection per alert, the next one only after the previous reply, as
 * LibreNMS's alert runner sends. Compiled at run time by bench/loadgen.py (cc -O2 -pthread);
 * bench/loadgen.py is the same client in Python where no compiler exists.
 *
 * usage: loadgen HOST PORT FIRST ALERTS CLIENTS TOKEN
 * output: one line per alert "<device> <status> <microseconds>" (status 0: connection failed),
 *         then "elapsed <seconds>".
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static long first, alerts;
static const char *token;
static long next_index;
static long *statuses;
static long *micros;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one_alert(long device) {
    char body[256], request[1024], reply[4096];
    int blen = snprintf(body, sizeof body,
                        "{\"device_id\": %ld, \"host\": \"cpe-%05ld.example.net\", "
                        "\"ip\": \"192.0.2.1\", \"state\": 1, \"rule\": \"Port2 down\", "
                        "\"uid\": %ld}",
                        device, device, device);
    int rlen = snprintf(request, sizeof request,
                        "POST /alert HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: GuzzleHttp/7\r\n"
                        "Content-Type: text/plain\r\nContent-Length: %d\r\n"
                        "Authorization: Bearer %s\r\n\r\n%s",
                        ntohs(addr.sin_port), blen, token, body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { close(fd); return 0; }
    for (int sent = 0; sent < rlen;) {
        ssize_t n = send(fd, request + sent, rlen - sent, MSG_NOSIGNAL);
        if (n <= 0) { close(fd); return 0; }
        sent += n;
    }
    /* Read until the headers and Content-Length bytes of body are in, or EOF. */
    int got = 0, status = 0;
    long want = -1;
    for (;;) {
        ssize_t n = recv(fd, reply + got, sizeof reply - 1 - got, 0);
        if (n <= 0) break;
        got += n;
        reply[got] = 0;
        char *end = strstr(reply, "\r\n\r\n");
        if (end && want < 0) {
            char *cl = strcasestr(reply, "\r\nContent-Length:");
            want = (end - reply) + 4 + (cl && cl < end ? atol(cl + 17) : 0);
        }
        if (want >= 0 && got >= want) break;
        if (got >= (int)sizeof reply - 1) break;
    }
    close(fd);
    if (got > 12 && strncmp(reply, "HTTP/1.", 7) == 0) status = atoi(reply + 9);
    return status;
}

static void *client(void *unused) {
    (void)unused;
    for (;;) {
        long i = __sync_fetch_and_add(&next_index, 1);
        if (i >= alerts) return NULL;
        double began = now();
        statuses[i] = one_alert(first + i);
        micros[i] = (long)((now() - began) * 1e6);
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadgen HOST PORT FIRST ALERTS CLIENTS TOKEN\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    first = atol(argv[3]);
    alerts = atol(argv[4]);
    int clients = atoi(argv[5]);
    token = argv[6];
    statuses = calloc(alerts, sizeof *statuses);
    micros = calloc(alerts, sizeof *micros);
    pthread_t *threads = calloc(clients, sizeof *threads);
    double began = now();
    for (int c = 0; c < clients; c++) pthread_create(&threads[c], NULL, client, NULL);
    for (int c = 0; c < clients; c++) pthread_join(threads[c], NULL);
    double elapsed = now() - began;
    for (long i = 0; i < alerts; i++) printf("%ld %ld %ld\n", first + i, statuses[i], micros[i]);
    printf("elapsed %.6f\n", elapsed);
    return 0;
}
