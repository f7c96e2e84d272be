/*
 * The dapr:// app server under half-open connections: clients that send
 * "POST ... HTTP/1.1\r\nHost: x\r\n" and nothing more, far more of them
 * than the server holds, and no token. An authenticated delivery must
 * still be served while they are held, and the server must not hold more
 * connections than its limit. Verdicts are counts (handler calls, answers,
 * connections the server closed); timeouts only catch hangs.
 *
 *   test-dapr-abuse PATH/TO/dapr-standin
 * Exits 77 (skip) when the process cannot open enough descriptors.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>

#include "standin_proc.h"

#define HALF_OPEN 1100 /* above libmicrohttpd's default limit (1020) */

static const char *standin_exe;

static int calls;
static pthread_mutex_t calls_mu = PTHREAD_MUTEX_INITIALIZER;

static evbus_result_t handler(const evbus_event_t *ev, void *opaque)
{
    pthread_mutex_lock(&calls_mu);
    calls++;
    pthread_mutex_unlock(&calls_mu);
    return EVBUS_ACK;
}

static void *run_bus(void *arg)
{
    evbus_run(arg);
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A stand-in sidecar and a bus whose app server (URL options extra)
 * runs on its own thread, answering /healthz with the token "tok". */
typedef struct {
    standin_t s;
    evbus_t *bus;
    pthread_t th;
} server_t;

static void server_start(server_t *v, const char *extra)
{
    ck_assert_int_eq(standin_start(&v->s, standin_exe, NULL), 0);
    char url[512], err[512] = "";
    standin_url(&v->s, url, sizeof url, extra);
    v->bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(v->bus != NULL, "%s", err);
    calls = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(v->bus, "t", "g", handler, NULL));
    pthread_create(&v->th, NULL, run_bus, v->bus);
    const char *tok[] = {"dapr-api-token: tok", NULL};
    for (int i = 0; i < 500 && http_call(v->s.app_port, "/healthz", NULL, tok,
                                         NULL) != 200;
         i++)
        usleep(10 * 1000);
}

static void server_stop(server_t *v)
{
    evbus_stop(v->bus);
    pthread_join(v->th, NULL);
    evbus_close(v->bus);
    standin_stop(&v->s);
}

/* A connection that starts a request and never finishes it. */
static int half_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    static const char part[] = "POST /evbus/pubsub/t HTTP/1.1\r\nHost: x\r\n";
    if (send(fd, part, sizeof part - 1, MSG_NOSIGNAL) < 0) {
        /* the server may already have evicted it: still one of ours */
    }
    return fd;
}

/* How many of fds the server has closed (end of file or reset). */
static int closed_by_server(const int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 1) {
            char b[64];
            ssize_t r = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
                closed++;
        }
    }
    return closed;
}

static void abuse_then_deliver(const char *extra, int max_conns)
{
    server_t v;
    server_start(&v, extra);
    const standin_t s = v.s; /* its ports */

    int *fds = malloc(HALF_OPEN * sizeof *fds);
    int opened = 0;
    for (int i = 0; i < HALF_OPEN; i++) {
        int fd = half_open(s.app_port);
        if (fd >= 0)
            fds[opened++] = fd;
    }
    ck_assert_int_ge(opened, HALF_OPEN * 9 / 10);

    /* a legitimate delivery, while every half-open client still waits */
    evbus_event_t *ev = evbus_event_new("test.abuse.ok", "/tests/abuse");
    char *body = evbus_event_to_json(ev, NULL);
    const char *hdrs[] = {"Content-Type: application/cloudevents+json",
                          "dapr-api-token: tok", NULL};
    char *answer = NULL;
    long st = http_call(s.app_port, "/evbus/pubsub/t", body, hdrs, &answer);
    ck_assert_msg(st == 200 && strstr(answer, "SUCCESS"),
                  "delivery answered %ld '%s' with %d half-open connections",
                  st, answer ? answer : "", opened);
    pthread_mutex_lock(&calls_mu);
    ck_assert_int_eq(calls, 1);
    pthread_mutex_unlock(&calls_mu);
    free(answer);

    /* the server holds at most max_conns of them: it closed the rest
     * (counted once the closes have arrived; the wait only catches hangs) */
    int want = opened - max_conns, closed = 0;
    uint64_t end = now_ms() + 60000;
    while ((closed = closed_by_server(fds, opened)) < want && now_ms() < end)
        usleep(50 * 1000);
    ck_assert_msg(closed >= want, "server closed %d of %d half-open "
                                  "connections, holds more than %d",
                  closed, opened, max_conns);

    /* a second delivery on a fresh connection is served as well */
    st = http_call(s.app_port, "/evbus/pubsub/t", body, hdrs, &answer);
    ck_assert_msg(st == 200 && strstr(answer, "SUCCESS"), "%ld %s", st,
                  answer);
    free(answer);
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    free(body);
    evbus_event_free(ev);
    server_stop(&v);
}

START_TEST(half_open_connections_do_not_starve_deliveries)
{
    abuse_then_deliver("&app_api_token=tok", 256); /* the defaults */
}
END_TEST

START_TEST(limits_are_url_options)
{
    abuse_then_deliver("&app_api_token=tok&app_max_conns=32"
                       "&app_conn_timeout_s=600&app_max_conns_per_ip=0",
                       32);
}
END_TEST

/* An upload of len bytes to the delivery route, of which `sent` go now. */
static int upload_start(int port, size_t len, size_t sent)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 30}; /* a hang guard only */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /evbus/pubsub/t HTTP/1.1\r\nHost: x\r\n"
                     "dapr-api-token: tok\r\nConnection: close\r\n"
                     "Content-Type: application/cloudevents+json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     len);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        send(fd, head, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    static char pad[65536];
    memset(pad, ' ', sizeof pad);
    while (sent > 0) {
        ssize_t k = send(fd, pad, sent < sizeof pad ? sent : sizeof pad,
                         MSG_NOSIGNAL);
        if (k <= 0)
            break;
        sent -= (size_t)k;
    }
    return fd;
}

/* Sends the last `rest` bytes and returns the answer's status (0: none). */
static int upload_finish(int fd, size_t rest)
{
    static const char pad[1024] = {' '};
    while (rest > 0) {
        ssize_t k = send(fd, pad, rest < sizeof pad ? rest : sizeof pad,
                         MSG_NOSIGNAL);
        if (k <= 0)
            break;
        rest -= (size_t)k;
    }
    char line[64] = "";
    ssize_t k = recv(fd, line, sizeof line - 1, 0);
    int status = 0;
    if (k > 0)
        sscanf(line, "HTTP/1.%*d %d", &status);
    close(fd);
    return status;
}

/* Request bodies are held whole until their request ends;
 * app_max_buffered_mb bounds them over all connections. Two uploads of
 * 600,000 bytes each (1.2 MB, over a 1 MiB budget; each alone fits) that
 * both have all but their last byte in flight before either ends: one of
 * them (or both, when each ran into the budget) is answered 503. A round can miss only when the server ended one
 * before reading the other's bytes, so rounds repeat until one shows it
 * (a count decides, never a clock). Then a delivery is served again. */
START_TEST(buffered_bodies_are_bounded)
{
    server_t v;
    server_start(&v, "&app_api_token=tok&app_max_buffered_mb=1");
    const standin_t s = v.s; /* its ports */

    const size_t len = 600000;
    int refused = 0, rounds = 0;
    for (; rounds < 20 && !refused; rounds++) {
        int a = upload_start(s.app_port, len, len - 1);
        int b = upload_start(s.app_port, len, len - 1);
        ck_assert_int_ge(a, 0);
        ck_assert_int_ge(b, 0);
        int sa = upload_finish(a, 1), sb = upload_finish(b, 1);
        ck_assert_msg(sa != 0 && sb != 0, "no answer (%d, %d)", sa, sb);
        refused = (sa == 503) + (sb == 503);
    }
    ck_assert_msg(refused >= 1, "1.2 MB of bodies at once under a 1 MiB "
                                "budget: %d of 2 answered 503 in %d rounds",
                  refused, rounds);

    /* nothing held any more: a delivery of 100 kB is served */
    evbus_event_t *ev = evbus_event_new("test.abuse.big", "/tests/abuse");
    char *json = malloc(100002);
    json[0] = '"';
    memset(json + 1, 'x', 99999);
    json[100000] = '"';
    json[100001] = '\0';
    ck_assert_int_eq(evbus_event_set_data_json(ev, json), EVBUS_OK);
    free(json);
    char *body = evbus_event_to_json(ev, NULL);
    const char *hdrs[] = {"Content-Type: application/cloudevents+json",
                          "dapr-api-token: tok", NULL};
    char *answer = NULL;
    long st = http_call(s.app_port, "/evbus/pubsub/t", body, hdrs, &answer);
    ck_assert_msg(st == 200 && answer && strstr(answer, "SUCCESS"),
                  "after the uploads ended: %ld %s", st, answer);
    free(answer);
    pthread_mutex_lock(&calls_mu);
    ck_assert_int_eq(calls, 1);
    pthread_mutex_unlock(&calls_mu);
    free(body);
    evbus_event_free(ev);
    server_stop(&v);
}
END_TEST

START_TEST(bad_limit_options_are_refused)
{
    static const char *const bad[] = {
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_max_conns=0",
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_max_conns=many",
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_conn_timeout_s=0",
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_idle_timeout_s=-1",
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_max_conns_per_ip=-2",
        "dapr://127.0.0.1:1?sidecar_wait_ms=0&app_max_buffered_mb=0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        evbus_t *bus = evbus_open(bad[i], err, sizeof err);
        ck_assert_msg(bus == NULL && strstr(err, "app_"), "%s: %s", bad[i],
                      err);
    }
}
END_TEST

int main(int argc, char **argv)
{
    standin_exe = argc > 1 ? argv[1] : getenv("DAPR_STANDIN");
    if (!standin_exe) {
        fprintf(stderr, "usage: %s PATH/TO/dapr-standin\n", argv[0]);
        return 2;
    }
    /* the clients and the server's side of each connection share this
     * process: room for both, and some */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = 2 * HALF_OPEN + 256;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) {
        printf("SKIP: needs %lu open files, the hard limit is %lu\n",
               (unsigned long)need, (unsigned long)rl.rlim_max);
        return 77;
    }
    Suite *s = suite_create("dapr-abuse");
    TCase *tc = tcase_create("abuse");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, half_open_connections_do_not_starve_deliveries);
    tcase_add_test(tc, limits_are_url_options);
    tcase_add_test(tc, buffered_bodies_are_bounded);
    tcase_add_test(tc, bad_limit_options_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
