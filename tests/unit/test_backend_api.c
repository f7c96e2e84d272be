/*
 * The backend table as a user backend sees it: the feature word a wrapper
 * reports through features_of is the one the core acts on, a version 1
 * table keeps working (its smaller messages, its delivery_count), and two
 * registrations of one scheme cannot both succeed.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/backend.h>
#include <evbus/evbus.h>

/* Waits are bounded by wall time, generously: a hang guard, never a
 * verdict (a count of polls is no bound: a poll may return at once). */
#define HANG_MS 60000
static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------ a wrapper over memory */

/* featwrap://NAME wraps memory://NAME, declares no features in its table
 * and reports DELAYED_RETRY | NO_RAW through features_of. It implements a
 * RETRY settle by giving the message back at once (counted). */
typedef struct {
    void *inner;
} fw_t;

static atomic_int fw_retry_settles, fw_raw_publishes;

static const evbus_backend_t *mem(void) { return evbus_backend_find("memory"); }

static int fw_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                   char *errstr, size_t n)
{
    fw_t *f = priv;
    char inner[256];
    snprintf(inner, sizeof inner, "memory://%s", evbus_url_rest(url));
    evbus_url_t *u = evbus_url_new(inner, errstr, n);
    if (!u)
        return EVBUS_EURL;
    f->inner = calloc(1, mem()->priv_size);
    int rc = mem()->open(f->inner, host, u, errstr, n);
    evbus_url_free(u);
    if (rc != EVBUS_OK)
        free(f->inner);
    return rc;
}

static void fw_close(void *priv)
{
    fw_t *f = priv;
    mem()->close(f->inner);
    free(f->inner);
}

static int fw_publish(void *priv, const char *t, const evbus_event_t *ev,
                      const void *p, size_t n)
{
    fw_t *f = priv;
    if (!ev)
        atomic_fetch_add(&fw_raw_publishes, 1);
    return mem()->publish(f->inner, t, ev, p, n);
}

static int fw_subscribe(void *priv, const char *t, const char *g, void **s,
                        char *e, size_t n)
{
    return mem()->subscribe(((fw_t *)priv)->inner, t, g, s, e, n);
}

static void fw_unsubscribe(void *priv, void *s)
{
    mem()->unsubscribe(((fw_t *)priv)->inner, s);
}

static int fw_fetch(void *priv, void *s, evbus_msg_t *m, int max)
{
    return mem()->fetch(((fw_t *)priv)->inner, s, m, max);
}

static int fw_settle(void *priv, void *s, evbus_msg_t *m, evbus_settle_t how,
                     int delay_ms)
{
    (void)delay_ms;
    if (how == EVBUS_SETTLE_RETRY) {
        atomic_fetch_add(&fw_retry_settles, 1);
        how = EVBUS_SETTLE_RELEASE;
    }
    return mem()->settle(((fw_t *)priv)->inner, s, m, how, 0);
}

static unsigned fw_features(void *priv)
{
    (void)priv;
    return EVBUS_FEAT_DELAYED_RETRY | EVBUS_FEAT_NO_RAW;
}

static evbus_backend_t featwrap; /* filled in at start: needs priv_size */

typedef struct {
    int calls;
    int attempts[8];
} seen_t;

static evbus_result_t retry_once(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    seen_t *s = opaque;
    if (s->calls < 8)
        s->attempts[s->calls] = evbus_delivery_attempt();
    return s->calls++ == 0 ? EVBUS_RETRY : EVBUS_ACK;
}

START_TEST(features_of_is_the_feature_word)
{
    featwrap = (evbus_backend_t){
        .version = EVBUS_BACKEND_VERSION, .scheme = "featwrap",
        .priv_size = sizeof(fw_t), .features = 0, .open = fw_open,
        .close = fw_close, .publish = fw_publish, .subscribe = fw_subscribe,
        .unsubscribe = fw_unsubscribe, .fetch = fw_fetch, .settle = fw_settle,
        .features_of = fw_features};
    ck_assert_int_eq(evbus_backend_register(&featwrap), EVBUS_OK);
    char err[256];
    evbus_t *bus = evbus_open("featwrap://fw", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_uint_eq(evbus_features(bus),
                      EVBUS_FEAT_DELAYED_RETRY | EVBUS_FEAT_NO_RAW);
    /* NO_RAW: refused before the backend sees it */
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "x", 1), EVBUS_ENOTSUP);
    ck_assert_int_eq(atomic_load(&fw_raw_publishes), 0);
    /* DELAYED_RETRY: the RETRY goes to the backend, and the attempt count
     * survives the round trip */
    seen_t s = {0, {0}};
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "t", "g", &o, retry_once, &s, err, sizeof err));
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    for (uint64_t guard = now_ms() + HANG_MS; s.calls < 2 && now_ms() < guard;)
        evbus_poll(bus, 50);
    ck_assert_int_eq(s.calls, 2);
    ck_assert_int_eq(atomic_load(&fw_retry_settles), 1);
    ck_assert_int_eq(s.attempts[0], 1);
    ck_assert_int_eq(s.attempts[1], 2);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------ a version 1 table */

/* Hands out one stored payload per fetch, laying messages out at the
 * version 1 element size and counting deliveries the version 1 way. */
typedef struct {
    int delivered;
    int acked;
} v1_t;

static const char v1_payload[] =
    "{\"specversion\":\"1.0\",\"id\":\"v1-1\",\"source\":\"/v1\","
    "\"type\":\"v1.event\"}";
static atomic_int v1_records;

static int v1_open(void *priv, evbus_host_t *h, const evbus_url_t *u, char *e,
                   size_t n)
{
    (void)priv, (void)h, (void)u, (void)e, (void)n;
    return EVBUS_OK;
}
static void v1_close(void *priv) { (void)priv; }
static int v1_publish(void *p, const char *t, const evbus_event_t *ev,
                      const void *b, size_t n)
{
    (void)p, (void)t, (void)ev, (void)b, (void)n;
    return EVBUS_OK;
}
static int v1_subscribe(void *p, const char *t, const char *g, void **s,
                        char *e, size_t n)
{
    (void)t, (void)g, (void)e, (void)n;
    *s = p;
    return EVBUS_OK;
}
static void v1_unsubscribe(void *p, void *s) { (void)p, (void)s; }
static int v1_fetch(void *priv, void *s, evbus_msg_t *out, int max)
{
    (void)s;
    v1_t *v = priv;
    if (v->acked || max < 2)
        return 0;
    /* two copies at the version 1 stride: the second must not be read
     * from the wrong offset */
    size_t stride = offsetof(evbus_msg_t, attempts);
    for (int i = 0; i < 2; i++) {
        evbus_msg_t *m = (evbus_msg_t *)((char *)out + (size_t)i * stride);
        memset(m, 0, stride);
        m->topic = "t";
        m->payload = v1_payload;
        m->len = sizeof v1_payload - 1;
        m->delivery_count = 4; /* the 4th time: 3 attempts used */
        m->cookie_u64 = (uint64_t)i;
    }
    v->delivered += 2;
    return 2;
}
static int v1_settle(void *priv, void *s, evbus_msg_t *m, evbus_settle_t how,
                     int d)
{
    (void)s, (void)m, (void)d;
    if (how == EVBUS_SETTLE_ACK)
        ((v1_t *)priv)->acked++;
    return EVBUS_OK;
}
static int v1_record(void *p, void *s, evbus_msg_t *const *m, int n)
{
    (void)p, (void)s, (void)m, (void)n;
    atomic_fetch_add(&v1_records, 1); /* a v1 table has no such member */
    return EVBUS_OK;
}

static int last_attempt;
static evbus_result_t note_attempt(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(int *)opaque)++;
    last_attempt = evbus_delivery_attempt();
    return EVBUS_ACK;
}

START_TEST(version_1_tables_keep_working)
{
    static evbus_backend_t v1;
    v1 = (evbus_backend_t){
        .version = 1, .scheme = "vone", .priv_size = sizeof(v1_t),
        .open = v1_open, .close = v1_close, .publish = v1_publish,
        .subscribe = v1_subscribe, .unsubscribe = v1_unsubscribe,
        .fetch = v1_fetch, .settle = v1_settle,
        .record_attempts = v1_record};
    ck_assert_int_eq(evbus_backend_register(&v1), EVBUS_OK);
    ck_assert_uint_eq(evbus_backend_msg_size(&v1),
                      offsetof(evbus_msg_t, attempts));
    char err[256];
    evbus_t *bus = evbus_open("vone://x", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    int calls = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", note_attempt,
                                          &calls));
    for (uint64_t guard = now_ms() + HANG_MS; calls < 2 && now_ms() < guard;)
        evbus_poll(bus, 10);
    ck_assert_int_eq(calls, 2);
    ck_assert_int_eq(last_attempt, 4); /* delivery_count 4 = attempt 4 */
    ck_assert_int_eq(atomic_load(&v1_records), 0);
    evbus_close(bus);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backend-api");
    TCase *tc = tcase_create("backend-api");
    tcase_set_timeout(tc, 120); /* a hang guard */
    tcase_add_test(tc, features_of_is_the_feature_word);
    tcase_add_test(tc, version_1_tables_keep_working);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* one registry for all cases */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
