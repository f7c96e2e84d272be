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
    standin_t s;
    ck_assert_int_eq(standin_start(&s, standin_exe, NULL), 0);
    char url[512], err[512] = "";
    standin_url(&s, url, sizeof url, extra);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    calls = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", handler, NULL));
    pthread_t th;
    pthread_create(&th, NULL, run_bus, bus);
    const char *tok[] = {"dapr-api-token: tok", NULL};
    for (int i = 0; i < 500 && http_call(s.app_port, "/healthz", NULL, tok,
                                         NULL) != 200;
         i++)
        usleep(10 * 1000);

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
    evbus_stop(bus);
    pthread_join(th, NULL);
    evbus_close(bus);
    standin_stop(&s);
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

/* A request body that arrives slowly holds its bytes in the server until
 * the request ends. app_max_buffered_mb bounds them over all connections:
 * with one upload holding ~1 MB of a 1 MiB budget, a complete 100 kB
 * delivery is answered 503 (Dapr retries), and served once the slow one
 * is gone. Verdicts are answers; the tries only wait for the server to
 * have read what the slow client sent. */
START_TEST(buffered_bodies_are_bounded)
{
    standin_t s;
    ck_assert_int_eq(standin_start(&s, standin_exe, NULL), 0);
    char url[512], err[512] = "";
    standin_url(&s, url, sizeof url,
                "&app_api_token=tok&app_max_buffered_mb=1");
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    calls = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", handler, NULL));
    pthread_t th;
    pthread_create(&th, NULL, run_bus, bus);
    const char *tok[] = {"dapr-api-token: tok", NULL};
    for (int i = 0; i < 500 && http_call(s.app_port, "/healthz", NULL, tok,
                                         NULL) != 200;
         i++)
        usleep(10 * 1000);

    /* the slow upload: 1,000,000 of its 1,500,000 bytes, then nothing */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s.app_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    static const char head[] =
        "POST /evbus/pubsub/t HTTP/1.1\r\nHost: x\r\n"
        "dapr-api-token: tok\r\n"
        "Content-Type: application/cloudevents+json\r\n"
        "Content-Length: 1500000\r\n\r\n";
    ck_assert_int_eq(send(fd, head, sizeof head - 1, MSG_NOSIGNAL),
                     (ssize_t)(sizeof head - 1));
    char *slow = malloc(1000000);
    memset(slow, ' ', 1000000);
    for (size_t off = 0; off < 1000000;) {
        ssize_t n = send(fd, slow + off, 1000000 - off, MSG_NOSIGNAL);
        ck_assert_int_gt(n, 0);
        off += (size_t)n;
    }
    free(slow);

    /* a complete delivery of 100 kB */
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
    long st = 0;
    for (int i = 0; i < 500 && st != 503; i++) {
        char *answer = NULL;
        st = http_call(s.app_port, "/evbus/pubsub/t", body, hdrs, &answer);
        free(answer);
        if (st != 503)
            usleep(10 * 1000);
    }
    ck_assert_msg(st == 503, "with ~1 MB held of a 1 MiB budget, a 100 kB "
                             "delivery was answered %ld, not 503", st);

    close(fd); /* the slow upload ends: its bytes are let go */
    st = 0;
    for (int i = 0; i < 500 && st != 200; i++) {
        char *answer = NULL;
        st = http_call(s.app_port, "/evbus/pubsub/t", body, hdrs, &answer);
        free(answer);
        if (st != 200)
            usleep(10 * 1000);
    }
    ck_assert_msg(st == 200, "after the slow upload ended: %ld", st);
    pthread_mutex_lock(&calls_mu);
    ck_assert_int_ge(calls, 1);
    pthread_mutex_unlock(&calls_mu);
    free(body);
    evbus_event_free(ev);
    evbus_stop(bus);
    pthread_join(th, NULL);
    evbus_close(bus);
    standin_stop(&s);
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
