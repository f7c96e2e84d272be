/*
 * redis:// delivery bookkeeping against a real redis-server: attempts are
 * handler calls (hand-outs that never reached a handler are not charged),
 * a clean close hands back what it fetched, and closed members leave the
 * group.
 */
#include <check.h>
#include <stdbool.h>

#include "test_util.h"

static test_redis_t srv;

static void start_plain(void)
{
    ck_assert_msg(test_redis_start(&srv, NULL) == 0, "redis-server start");
}

static evbus_t *open_ok(const char *suffix)
{
    char url[256], err[512] = "";
    evbus_t *bus =
        evbus_open(tu_url(url, sizeof url, &srv, suffix), err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", url, err);
    return bus;
}

static void publish_n(evbus_t *bus, const char *topic, int n)
{
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "ev-%d", i);
        evbus_event_t *ev = evbus_event_new("test.redis.delivery", "/tests");
        ck_assert_ptr_nonnull(ev);
        ck_assert_int_eq(evbus_event_set_id(ev, id), EVBUS_OK);
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, 30000), EVBUS_OK);
}

typedef struct {
    evbus_t *bus;
    volatile int calls;
    int max_attempt;
    int first_seq; /* the number in the id of the first event seen, or -1 */
    bool stop_after_one;
} counter_t;

static evbus_result_t count_and_ack(const evbus_event_t *ev, void *opaque)
{
    counter_t *c = opaque;
    if (c->calls == 0)
        c->first_seq = atoi(evbus_event_id(ev) + 3);
    c->calls++;
    if (evbus_delivery_attempt() > c->max_attempt)
        c->max_attempt = evbus_delivery_attempt();
    if (c->stop_after_one)
        evbus_stop(c->bus);
    return EVBUS_ACK;
}

static evbus_sub_t *subscribe_max3(evbus_t *bus, const char *topic,
                                   counter_t *c)
{
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 3;
    o.retry = &retry;
    c->bus = bus;
    c->first_seq = -1;
    return evbus_subscribe_opts(bus, topic, "g", &o, count_and_ack, c, NULL, 0);
}

/* An entry the broker handed out 7 times (RETRYCOUNT) but no handler ever
 * saw (no attempt record) is attempt 1, not a poison to dead-letter. */
START_TEST(hand_outs_without_a_handler_are_not_charged)
{
    start_plain();
    char topic[128], dlq[160];
    tu_topic(topic, sizeof topic, "unseen");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    redisContext *c = tu_raw(&srv, NULL);
    redisReply *r = redisCommand(c, "XADD %s * data %s metadata {}", topic,
                                 "{\"specversion\":\"1.0\",\"id\":\"ev-0\","
                                 "\"source\":\"/t\",\"type\":\"t\"}");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char id[64];
    snprintf(id, sizeof id, "%s", r->str);
    freeReplyObject(r);
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0", topic));
    freeReplyObject(
        redisCommand(c, "XREADGROUP GROUP g gone STREAMS %s >", topic));
    freeReplyObject(
        redisCommand(c, "XCLAIM %s g gone 0 %s RETRYCOUNT 7", topic, id));

    evbus_t *bus = open_ok("?claim_timeout_ms=100");
    counter_t seen = {0};
    ck_assert_ptr_nonnull(subscribe_max3(bus, topic, &seen));
    ck_assert_int_eq(tu_poll_until(bus, &seen.calls, 1, 10000), 1);
    ck_assert_int_eq(seen.max_attempt, 1);
    evbus_close(bus);
    ck_assert_int_eq(tu_int(c, "XLEN %s", dlq), 0);
    ck_assert_int_eq(tu_int(c, "EXISTS evbus:attempts:{%s}:g", topic), 0);
    redisFree(c);
    test_redis_stop(&srv);
}
END_TEST

/* `evbus tail --group G --count 1` run again and again: each run fetches a
 * batch, handles one event and closes. The events it fetched and did not
 * handle go back uncharged, so none is ever dead-lettered and each run
 * goes on with the oldest event not yet handled. */
START_TEST(repeated_short_reads_dead_letter_nothing)
{
    enum { EVENTS = 50, RUNS = 8 };
    start_plain();
    char topic[128], dlq[160];
    tu_topic(topic, sizeof topic, "tail");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    evbus_t *pub = open_ok(NULL);
    publish_n(pub, topic, EVENTS);
    evbus_close(pub);
    for (int run = 0; run < RUNS; run++) {
        evbus_t *bus = open_ok("?batch=20");
        counter_t seen = {0};
        seen.stop_after_one = true;
        ck_assert_ptr_nonnull(subscribe_max3(bus, topic, &seen));
        ck_assert_int_eq(tu_poll_until(bus, &seen.calls, 1, 10000), 1);
        ck_assert_int_eq(seen.max_attempt, 1);
        ck_assert_int_eq(seen.first_seq, run); /* handed back in order */
        evbus_close(bus);
    }
    redisContext *c = tu_raw(&srv, NULL);
    ck_assert_int_eq(tu_int(c, "XLEN %s", dlq), 0);
    redisFree(c);
    test_redis_stop(&srv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis-delivery");
    TCase *tc = tcase_create("delivery");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hand_outs_without_a_handler_are_not_charged);
    tcase_add_test(tc, repeated_short_reads_dead_letter_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
