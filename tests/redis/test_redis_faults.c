/*
 * Fault tests of the redis:// backend with a real redis-server:
 *   (a) the server is SIGKILLed and restarted (appendonly yes) at 1/3 and
 *       1/2 of a 10,000-event run while publishers keep publishing and
 *       retrying: every event whose publish returned success is delivered;
 *   (b) a consumer process is SIGKILLed in the middle of a batch: another
 *       member takes over its pending entries and handles them, none lost.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>

#include "test_util.h"

/* ------------------------------------------------------------ (a) */

enum { N_EVENTS = 10000, N_SYNC = N_EVENTS / 2 };

static test_redis_t srv;
static atomic_int published_ok;     /* publishes that returned success */
static atomic_char status[N_EVENTS]; /* 0 pending, 1 ok, 2 failed (async) */
static unsigned char delivered[N_EVENTS];
static int delivered_distinct;
static atomic_int publish_failures;

static evbus_event_t *numbered_event(int i)
{
    char id[32];
    snprintf(id, sizeof id, "fault-%d", i);
    evbus_event_t *ev = evbus_event_new("test.redis.fault", "/tests/redis");
    evbus_event_set_id(ev, id);
    evbus_event_set_data_json(ev, "{\"payload\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}");
    return ev;
}

static evbus_result_t count_delivery(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    int i = atoi(evbus_event_id(ev) + 6);
    if (i >= 0 && i < N_EVENTS && !delivered[i]) {
        delivered[i] = 1;
        delivered_distinct++;
    }
    return EVBUS_ACK;
}

typedef struct {
    evbus_t *bus;
    const char *topic;
} pub_ctx_t;

/* Synchronous publisher: events [0, N_SYNC), each retried until a publish
 * returns success. */
static void *sync_publisher(void *arg)
{
    pub_ctx_t *p = arg;
    for (int i = 0; i < N_SYNC; i++) {
        evbus_event_t *ev = numbered_event(i);
        int rc;
        while ((rc = evbus_publish(p->bus, p->topic, ev)) != EVBUS_OK) {
            ck_assert_msg(evbus_err_retriable(rc), "publish: %s",
                          evbus_err_name(rc));
            atomic_fetch_add(&publish_failures, 1);
            usleep(20000);
        }
        atomic_store(&status[i], 1);
        atomic_fetch_add(&published_ok, 1);
        evbus_event_free(ev);
    }
    return NULL;
}

static void on_async_outcome(const evbus_event_t *ev, int err, void *opaque)
{
    (void)opaque;
    int i = atoi(evbus_event_id(ev) + 6);
    if (err == EVBUS_OK) {
        atomic_store(&status[i], 1);
        atomic_fetch_add(&published_ok, 1);
    } else {
        atomic_store(&status[i], 2);
        atomic_fetch_add(&publish_failures, 1);
    }
}

/* Asynchronous publisher: events [N_SYNC, N_EVENTS), failures republished
 * until every one was accepted. */
static void *async_publisher(void *arg)
{
    pub_ctx_t *p = arg;
    for (int round = 0; round < 100; round++) {
        int sent = 0;
        for (int i = N_SYNC; i < N_EVENTS; i++) {
            if (atomic_load(&status[i]) == 1 || (round > 0 && status[i] == 0))
                continue;
            atomic_store(&status[i], 0);
            evbus_event_t *ev = numbered_event(i);
            int rc;
            while ((rc = evbus_publish_async(p->bus, p->topic, ev,
                                             on_async_outcome, NULL)) ==
                   EVBUS_EAGAIN)
                evbus_flush(p->bus, 10);
            ck_assert_int_eq(rc, EVBUS_OK);
            evbus_event_free(ev);
            if (++sent % 50 == 0) {
                evbus_flush(p->bus, 0); /* runs the callbacks so far */
                usleep(2000);           /* keep publishing through faults */
            }
        }
        evbus_flush(p->bus, -1);
        int missing = 0;
        for (int i = N_SYNC; i < N_EVENTS; i++)
            missing += atomic_load(&status[i]) != 1;
        if (!missing)
            break;
        usleep(100000);
    }
    return NULL;
}

static void *killer(void *arg)
{
    (void)arg;
    const int at[2] = {N_EVENTS / 3, N_EVENTS / 2};
    for (int k = 0; k < 2; k++) {
        while (atomic_load(&published_ok) < at[k])
            usleep(1000);
        test_redis_kill(&srv);
        usleep(300000); /* down for a while: publishers fail and retry */
        ck_assert_int_eq(test_redis_restart(&srv), 0);
    }
    return NULL;
}

/* Which of the events are still in the stream (to tell a loss in Redis
 * from one in the backend). */
static void mark_in_stream(const char *topic, unsigned char *in_stream)
{
    redisContext *c = tu_raw(&srv, NULL);
    if (!c)
        return;
    char start[64] = "-";
    for (;;) {
        redisReply *r = redisCommand(c, "XRANGE %s %s + COUNT 1000", topic,
                                     start);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i], *f = e->element[1];
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                const char *id = strstr(f->element[j + 1]->str,
                                        "\"id\":\"fault-");
                if (strcmp(f->element[j]->str, "data") == 0 && id) {
                    int k = atoi(id + 12);
                    if (k >= 0 && k < N_EVENTS)
                        in_stream[k] = 1;
                }
            }
        }
        snprintf(start, sizeof start, "(%s",
                 r->element[r->elements - 1]->element[0]->str);
        freeReplyObject(r);
    }
    redisFree(c);
}

START_TEST(server_killed_and_restarted_twice)
{
    /* appendfsync always: Redis writes the AOF before it replies. With
     * everysec it may postpone that write for up to 2 s while a background
     * fsync runs and still reply, so a SIGKILL can lose acknowledged
     * entries - a property of that Redis setting, not of the backend. */
    const char *fsync_policy = getenv("FAULT_APPENDFSYNC"); /* to compare */
    const char *extra[] = {"--appendfsync",
                           fsync_policy ? fsync_policy : "always", NULL};
    ck_assert_int_eq(test_redis_start(&srv, extra), 0);
    char url[256], err[512];
    snprintf(url, sizeof url,
             "%s?command_timeout_ms=1000&reconnect_max_ms=200&block_ms=200",
             srv.url);
    evbus_t *pub = evbus_open(url, err, sizeof err);
    evbus_t *con = evbus_open(url, err, sizeof err);
    ck_assert_msg(pub && con, "%s", err);
    const char *topic = "fault.restart";
    ck_assert_ptr_nonnull(
        evbus_subscribe(con, topic, "g", count_delivery, NULL));

    pub_ctx_t ctx = {pub, topic};
    pthread_t ts, ta, tk;
    pthread_create(&tk, NULL, killer, NULL);
    pthread_create(&ts, NULL, sync_publisher, &ctx);
    pthread_create(&ta, NULL, async_publisher, &ctx);
    /* Consume while all that happens. */
    long long end = tu_now_ms() + 240000;
    while (atomic_load(&published_ok) < N_EVENTS && tu_now_ms() < end)
        evbus_poll(con, 20);
    pthread_join(ts, NULL);
    pthread_join(ta, NULL);
    pthread_join(tk, NULL);
    ck_assert_int_eq(atomic_load(&published_ok), N_EVENTS);
    end = tu_now_ms() + 60000;
    while (delivered_distinct < N_EVENTS && tu_now_ms() < end)
        evbus_poll(con, 50);
    int lost = 0, first_lost = -1;
    for (int i = 0; i < N_EVENTS; i++)
        if (atomic_load(&status[i]) == 1 && !delivered[i]) {
            if (first_lost < 0)
                first_lost = i;
            lost++;
        }
    fprintf(stderr,
            "restart test: %d published, %d distinct delivered, %d failed "
            "publish attempts retried, %d lost\n",
            atomic_load(&published_ok), delivered_distinct,
            atomic_load(&publish_failures), lost);
    if (lost) {
        static unsigned char in_stream[N_EVENTS];
        mark_in_stream(topic, in_stream);
        int missing = 0;
        for (int i = 0; i < N_EVENTS; i++)
            missing += atomic_load(&status[i]) == 1 && !delivered[i] &&
                       !in_stream[i];
        fprintf(stderr,
                "restart test: of the %d lost, %d are not in the stream "
                "(Redis did not keep them), %d are but were not delivered\n",
                lost, missing, lost - missing);
    }
    ck_assert_msg(lost == 0, "%d published events lost (first fault-%d)", lost,
                  first_lost);
    ck_assert_int_gt(atomic_load(&publish_failures), 0); /* faults happened */
    evbus_close(pub);
    evbus_close(con);
    test_redis_stop(&srv);
}
END_TEST

/* ------------------------------------------------------------ (b) */

enum { N_B = 2000, CHILD_ACKS = 50 };
static int child_fd = -1;
static int child_calls;

static evbus_result_t child_handler(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    if (++child_calls > CHILD_ACKS) {
        /* Stuck in the middle of its batch until it is killed. */
        if (write(child_fd, "STUCK\n", 6) < 0)
            _exit(3);
        for (;;)
            pause();
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", evbus_event_id(ev));
    if (write(child_fd, line, (size_t)n) != n)
        _exit(3);
    return EVBUS_ACK;
}

static void run_child(const char *url, const char *topic)
{
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus || !evbus_subscribe(bus, topic, "g", child_handler, NULL))
        _exit(2);
    for (;;)
        evbus_poll(bus, 100);
}

static unsigned char handled_b[N_B];
static int handled_b_distinct, parent_max_attempt;

static void mark_b(const char *id)
{
    int i = atoi(id + 6);
    if (i >= 0 && i < N_B && !handled_b[i]) {
        handled_b[i] = 1;
        handled_b_distinct++;
    }
}

static evbus_result_t parent_handler(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    if (evbus_delivery_attempt() > parent_max_attempt)
        parent_max_attempt = evbus_delivery_attempt();
    mark_b(evbus_event_id(ev));
    return EVBUS_ACK;
}

START_TEST(consumer_killed_mid_batch)
{
    ck_assert_int_eq(test_redis_start(&srv, NULL), 0);
    char url[256];
    snprintf(url, sizeof url, "%s?claim_timeout_ms=500&batch=100", srv.url);
    const char *topic = "fault.consumer";
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(fds[0]);
        child_fd = fds[1];
        run_child(url, topic);
    }
    close(fds[1]);

    /* Publish after the fork (the parent has no threads before it). */
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    for (int i = 0; i < N_B; i++) {
        char id[32];
        snprintf(id, sizeof id, "fault-%d", i);
        evbus_event_t *ev = evbus_event_new("test.redis.fault", "/tests");
        evbus_event_set_id(ev, id);
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, 10000), EVBUS_OK);

    /* Read what the child acked until it reports being stuck. */
    FILE *in = fdopen(fds[0], "r");
    char line[64];
    bool stuck = false;
    int child_acked = 0;
    while (!stuck && fgets(line, sizeof line, in)) {
        if (strncmp(line, "STUCK", 5) == 0) {
            stuck = true;
        } else {
            mark_b(line);
            child_acked++;
        }
    }
    ck_assert_msg(stuck, "child did not get stuck");
    ck_assert_int_eq(child_acked, CHILD_ACKS);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    fclose(in);

    redisContext *c = tu_raw(&srv, NULL);
    redisReply *r = redisCommand(c, "XPENDING %s g", topic);
    long long pending_at_kill = r->element[0]->integer;
    freeReplyObject(r);
    ck_assert_int_gt(pending_at_kill, 0); /* it died holding entries */

    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", parent_handler, NULL));
    long long end = tu_now_ms() + 30000;
    while (handled_b_distinct < N_B && tu_now_ms() < end)
        evbus_poll(bus, 50);
    ck_assert_int_eq(handled_b_distinct, N_B);
    ck_assert_int_ge(parent_max_attempt, 2); /* claimed from the dead one */
    evbus_poll(bus, 300);
    r = redisCommand(c, "XPENDING %s g", topic);
    ck_assert_int_eq(r->element[0]->integer, 0);
    freeReplyObject(r);
    fprintf(stderr,
            "consumer kill test: child acked %d, died holding %lld pending, "
            "all %d handled\n",
            child_acked, pending_at_kill, N_B);
    redisFree(c);
    evbus_close(bus);
    test_redis_stop(&srv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis-faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, server_killed_and_restarted_twice);
    tcase_add_test(tc, consumer_killed_mid_batch);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
