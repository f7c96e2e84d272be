/*
 * redis:// leaving a group while a release is still in flight.
 *
 * A handler answers RETRY and stops the bus; the writer thread takes the
 * release (XCLAIM to itself, long idle) and - held back by the test hook -
 * has not sent it when the subscription closes. Closing must wait for that
 * release: if the handback and XGROUP DELCONSUMER ran first, the late
 * XCLAIM would put the entry back on the consumer just deleted (or, one
 * round trip earlier, lose it with the consumer's pending list). Built on
 * the internal library for the hook.
 */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* The hook's declaration, as in src/backends/redis/redis_internal.h. */
extern void (*evbus__redis_hook_releasing)(const char *topic,
                                           const char *group,
                                           const char *consumer);

static test_redis_t srv;

/* Whether consumer is a member of topic/group; -1 when the reply is odd. */
static int is_member(redisContext *c, const char *topic, const char *group,
                     const char *consumer)
{
    redisReply *r = redisCommand(c, "XINFO CONSUMERS %s %s", topic, group);
    int found = r && r->type == REDIS_REPLY_ARRAY ? 0 : -1;
    for (size_t i = 0; found == 0 && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        for (size_t k = 0; k + 1 < e->elements; k += 2)
            if (strcmp(e->element[k]->str, "name") == 0 &&
                strcmp(e->element[k + 1]->str, consumer) == 0)
                found = 1;
    }
    freeReplyObject(r);
    return found;
}

/* Holds the release back until the consumer has left the group - which
 * only a close that does not wait for it lets happen - or 1 s passed. */
static void hold_release(const char *topic, const char *group,
                         const char *consumer)
{
    redisContext *c = tu_raw(&srv, NULL);
    for (int i = 0; c && i < 50 && is_member(c, topic, group, consumer) == 1;
         i++)
        usleep(20000);
    redisFree(c);
}

static evbus_result_t retry_and_stop(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    evbus_stop(opaque);
    return EVBUS_RETRY;
}

static evbus_result_t count_ack(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(int *)opaque)++;
    return EVBUS_ACK;
}

START_TEST(close_waits_for_a_release_in_flight)
{
    ck_assert_msg(test_redis_start(&srv, NULL) == 0, "redis-server start");
    char url[256], topic[64], err[512] = "";
    tu_topic(topic, sizeof topic, "leave");
    tu_url(url, sizeof url, &srv, "?command_timeout_ms=20000");
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open: %s", err);
    for (int i = 0; i < 3; i++) {
        evbus_event_t *ev = evbus_event_new("test.redis.leave", "/tests");
        ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    evbus_sub_t *sub =
        evbus_subscribe_opts(bus, topic, "g", NULL, retry_and_stop, bus, err,
                             sizeof err);
    ck_assert_msg(sub != NULL, "subscribe: %s", err);
    evbus__redis_hook_releasing = hold_release;
    ck_assert_int_ge(evbus_run(bus), 0);
    evbus_close(bus);
    evbus__redis_hook_releasing = NULL;

    /* Every entry is pending with the group's handback consumer, and no
     * member is left behind holding any. */
    redisContext *c = tu_raw(&srv, NULL);
    ck_assert_ptr_nonnull(c);
    redisReply *r = redisCommand(c, "XPENDING %s g - + 10", topic);
    ck_assert_msg(r && r->type == REDIS_REPLY_ARRAY, "XPENDING failed");
    ck_assert_int_eq((int)r->elements, 3);
    for (size_t i = 0; i < r->elements; i++)
        ck_assert_msg(strcmp(r->element[i]->element[1]->str,
                             "evbus-handback") == 0,
                      "entry %s left with consumer %s",
                      r->element[i]->element[0]->str,
                      r->element[i]->element[1]->str);
    freeReplyObject(r);
    redisFree(c);

    /* And the next member gets all three. */
    bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open: %s", err);
    int got = 0;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, topic, "g", NULL, count_ack, &got, err,
                             sizeof err));
    while (got < 3)
        ck_assert_int_ge(evbus_poll(bus, 200), 0);
    evbus_close(bus);
    test_redis_stop(&srv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis-leave");
    TCase *tc = tcase_create("leave");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, close_waits_for_a_release_in_flight);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
