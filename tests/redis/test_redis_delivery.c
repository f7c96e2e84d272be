/*
 * redis:// delivery bookkeeping against a real redis-server: attempts are
 * handler calls (hand-outs that never reached a handler are not charged),
 * a clean close hands back what it fetched, and closed members leave the
 * group.
 */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* What a handler sees of its own attempt record in Redis. */
typedef struct {
    redisContext *raw;
    char key[256];
    volatile int calls;
    long long fields_seen;
} peek_t;

static evbus_result_t peek_record(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    peek_t *p = opaque;
    p->fields_seen = tu_int(p->raw, "HLEN %s", p->key);
    p->calls++;
    return EVBUS_ACK;
}

static long long record_fields_during_handler(const char *suffix)
{
    char topic[128];
    tu_topic(topic, sizeof topic, "attopt");
    evbus_t *bus = open_ok(suffix);
    publish_n(bus, topic, 1);
    peek_t p = {0};
    p.raw = tu_raw(&srv, NULL);
    snprintf(p.key, sizeof p.key, "evbus:attempts:{%s}:g", topic);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", peek_record, &p));
    ck_assert_int_eq(tu_poll_until(bus, &p.calls, 1, 10000), 1);
    evbus_close(bus);
    redisFree(p.raw);
    return p.fields_seen;
}

/* attempts=durable (the default) has the record in Redis while the handler
 * runs; attempts=memory writes none (the core counts); anything else is
 * refused at open. */
START_TEST(attempts_option_durable_or_memory)
{
    start_plain();
    ck_assert_int_eq(record_fields_during_handler(NULL), 1);
    ck_assert_int_eq(record_fields_during_handler("?attempts=memory"), 0);
    char url[256], err[512] = "";
    ck_assert_ptr_null(evbus_open(
        tu_url(url, sizeof url, &srv, "?attempts=sometimes"), err, sizeof err));
    ck_assert_msg(strstr(err, "attempts=sometimes") != NULL, "%s", err);
    test_redis_stop(&srv);
}
END_TEST

static long long pending_of(redisContext *c, const char *topic,
                            const char *consumer)
{
    redisReply *r =
        redisCommand(c, "XPENDING %s g - + 1000 %s", topic, consumer);
    long long n =
        r && r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
    freeReplyObject(r);
    return n;
}

static bool has_consumer(redisContext *c, const char *topic, const char *name)
{
    redisReply *r = redisCommand(c, "XINFO CONSUMERS %s g", topic);
    bool found = false;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++)
        if (r->element[i]->elements >= 2 &&
            strcmp(r->element[i]->element[1]->str, name) == 0)
            found = true;
    freeReplyObject(r);
    return found;
}

/* Opens member-a (batch 5) on topic and, never polling it, waits until its
 * fetcher has filled its buffer: 2 x batch = 10 entries pending for it. */
static evbus_t *open_filled_member_a(redisContext *c, const char *topic,
                                     counter_t *none)
{
    evbus_t *a = open_ok("?consumer=member-a&batch=5");
    ck_assert_ptr_nonnull(subscribe_max3(a, topic, none));
    long long end = tu_now_ms() + 10000; /* hang guard */
    while (pending_of(c, topic, "member-a") < 10 && tu_now_ms() < end)
        usleep(10000);
    ck_assert_int_eq(pending_of(c, topic, "member-a"), 10);
    return a;
}

/* A member closes while entries are buffered and never handed out, and
 * while entries were read for it that its fetcher never took in (a reply
 * in flight when the connection was shut; simulated by reading as that
 * consumer from outside). All of them go back at once: the next member
 * (default claim timeout, 30 s) gets them first, oldest first, long before
 * the claim timeout, and the closed member leaves the group. */
START_TEST(clean_close_hands_back_everything_fetched)
{
    enum { EVENTS = 30 };
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "handback");
    evbus_t *pub = open_ok(NULL);
    publish_n(pub, topic, EVENTS);
    evbus_close(pub);

    redisContext *c = tu_raw(&srv, NULL);
    counter_t none = {0};
    evbus_t *a = open_filled_member_a(c, topic, &none);
    /* The reply that never arrived. */
    freeReplyObject(redisCommand(
        c, "XREADGROUP GROUP g member-a COUNT 5 STREAMS %s >", topic));
    ck_assert_int_eq(pending_of(c, topic, "member-a"), 15);
    evbus_close(a);
    ck_assert_int_eq(none.calls, 0);
    ck_assert_int_eq(pending_of(c, topic, "member-a"), 0);
    ck_assert(!has_consumer(c, topic, "member-a"));

    evbus_t *b = open_ok(NULL);
    counter_t seen = {0};
    ck_assert_ptr_nonnull(subscribe_max3(b, topic, &seen));
    ck_assert_int_eq(tu_poll_until(b, &seen.calls, EVENTS, 10000), EVENTS);
    ck_assert_int_eq(seen.first_seq, 0);
    ck_assert_int_eq(seen.max_attempt, 1);
    evbus_close(b);
    redisFree(c);
    test_redis_stop(&srv);
}
END_TEST

/* Restarts do not pile up consumers: a closed member leaves the group, and
 * a subscribing member removes long-idle members that hold nothing. */
START_TEST(closed_and_dead_members_leave_the_group)
{
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "members");
    redisContext *c = tu_raw(&srv, NULL);
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0 MKSTREAM", topic));
    /* A member that died long ago holding nothing. */
    freeReplyObject(
        redisCommand(c, "XGROUP CREATECONSUMER %s g long-dead", topic));
    for (int run = 0; run < 3; run++) {
        evbus_t *bus = open_ok("?claim_timeout_ms=100");
        counter_t none = {0};
        ck_assert_ptr_nonnull(subscribe_max3(bus, topic, &none));
        evbus_poll(bus, 10);
        evbus_close(bus);
        redisReply *r = redisCommand(c, "XINFO CONSUMERS %s g", topic);
        ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
        /* Only long-dead, which is not idle for long enough yet. */
        ck_assert_int_eq(r->elements, 1);
        freeReplyObject(r);
    }
    ck_assert(has_consumer(c, topic, "long-dead"));
    usleep(10500 * 1000); /* the least idle time the sweep waits for */
    evbus_t *bus = open_ok("?claim_timeout_ms=100");
    counter_t none = {0};
    ck_assert_ptr_nonnull(subscribe_max3(bus, topic, &none));
    ck_assert(!has_consumer(c, topic, "long-dead"));
    evbus_close(bus);
    redisFree(c);
    test_redis_stop(&srv);
}
END_TEST

typedef struct {
    volatile int calls;
    char reason[256];
    size_t data_len;
    long long truncated; /* dlqtruncated: the bytes the core was given */
} dead_t;

static evbus_result_t on_dead(const evbus_event_t *ev, void *opaque)
{
    dead_t *d = opaque;
    const char *why = evbus_event_ext(ev, "dlqreason");
    snprintf(d->reason, sizeof d->reason, "%s", why ? why : "");
    d->data_len = evbus_event_data_len(ev);
    const char *cut = evbus_event_ext(ev, "dlqtruncated");
    d->truncated = cut ? atoll(cut) : -1;
    d->calls++;
    return EVBUS_ACK;
}

/* An entry larger than max_event_bytes is reported as such (not as "not a
 * CloudEvent") and dead-lettered cut to fit, with its original size in
 * dlqtruncated; the events around it are delivered. */
START_TEST(oversized_entries_are_dead_lettered_truncated)
{
    enum { BIG = 200000, MAX = 8192 };
    start_plain();
    char topic[128], dlq[160];
    tu_topic(topic, sizeof topic, "big");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    redisContext *c = tu_raw(&srv, NULL);
    char *big = malloc(BIG + 200);
    ck_assert_ptr_nonnull(big);
    int n = snprintf(big, 200,
                     "{\"specversion\":\"1.0\",\"id\":\"big\","
                     "\"source\":\"/t\",\"type\":\"t\",\"data\":\"");
    memset(big + n, 'x', BIG);
    strcpy(big + n + BIG, "\"}");
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0 MKSTREAM", topic));
    freeReplyObject(
        redisCommand(c, "XADD %s * data %s metadata {}", topic, big));
    free(big);
    char suffix[64];
    snprintf(suffix, sizeof suffix, "?max_event_bytes=%d", MAX);
    evbus_t *bus = open_ok(suffix);
    publish_n(bus, topic, 3);
    counter_t seen = {0};
    dead_t d = {0};
    ck_assert_ptr_nonnull(subscribe_max3(bus, topic, &seen));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "ops", on_dead, &d));
    long long end = tu_now_ms() + 10000;
    while ((seen.calls < 3 || d.calls < 1) && tu_now_ms() < end)
        evbus_poll(bus, 50);
    ck_assert_int_eq(seen.calls, 3);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_msg(strstr(d.reason, "over max_event_bytes"), "reason: %s",
                  d.reason);
    ck_assert_msg(strstr(d.reason, "200"), "reason: %s", d.reason);
    ck_assert_int_le(d.data_len, MAX);
    ck_assert_int_gt(d.truncated, 200000);
    evbus_close(bus);
    redisFree(c);
    test_redis_stop(&srv);
}
END_TEST

typedef struct {
    evbus_t *bus;
    volatile int calls;
    int order[64];
} order_t;

static evbus_result_t note_order(const evbus_event_t *ev, void *opaque)
{
    order_t *o = opaque;
    if (o->calls < 64)
        o->order[o->calls] = atoi(evbus_event_id(ev) + 3);
    o->calls++;
    return EVBUS_ACK;
}

/* A member that keeps running (caught up, waiting for new entries) gets
 * the entries another member handed back on close before the entries
 * published after that close, not one claim interval later behind them. */
START_TEST(handed_back_entries_come_before_newer_ones)
{
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "order");
    evbus_t *pub = open_ok(NULL);
    publish_n(pub, topic, 30); /* ev-0 .. ev-29 */
    redisContext *c = tu_raw(&srv, NULL);
    counter_t none = {0};
    evbus_t *a = open_filled_member_a(c, topic, &none); /* ev-0..9 */

    evbus_t *b = open_ok(NULL); /* claim timeout 30 s: scans every 2 s */
    order_t seen = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(b, topic, "g", note_order, &seen));
    ck_assert_int_eq(tu_poll_until(b, &seen.calls, 20, 10000), 20);
    evbus_close(a); /* hands back ev-0..9 */
    ck_assert_int_eq(none.calls, 0);
    for (int i = 30; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "ev-%d", i);
        evbus_event_t *ev = evbus_event_new("test.redis.delivery", "/tests");
        ck_assert_int_eq(evbus_event_set_id(ev, id), EVBUS_OK);
        ck_assert_int_eq(evbus_publish(pub, topic, ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(tu_poll_until(b, &seen.calls, 40, 10000), 40);
    for (int i = 20; i < 30; i++)
        ck_assert_msg(seen.order[i] < 10,
                      "call %d got ev-%d before the "
                      "handed-back ones",
                      i, seen.order[i]);
    evbus_close(b);
    evbus_close(pub);
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
    tcase_add_test(tc, clean_close_hands_back_everything_fetched);
    tcase_add_test(tc, closed_and_dead_members_leave_the_group);
    tcase_add_test(tc, oversized_entries_are_dead_lettered_truncated);
    tcase_add_test(tc, handed_back_entries_come_before_newer_ones);
    tcase_add_test(tc, attempts_option_durable_or_memory);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
