/*
 * kafka:// - one consumer per (bus, group), on an in-process librdkafka mock
 * cluster: several subscriptions of a bus in one group share a member, so
 * closing the bus commits everything and leaves the group once (no
 * duplicates for the next run), unsubscribing one of them leaves the others
 * undisturbed and hands its unacknowledged events on, and a second
 * subscription to the same topic and group on one bus is refused.
 */
#include <check.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_test_util.h"

/* Polls buses until every collector acked its want or ms pass. */
static void poll_all(evbus_t **buses, kt_collector_t **cs, const int *want,
                     int ms)
{
    long long end = kt_now_ms() + ms;
    for (;;) {
        bool done = true;
        for (int i = 0; cs[i]; i++)
            done &= kt_acked(cs[i]) >= want[i];
        if (done || kt_now_ms() >= end)
            return;
        for (evbus_t **b = buses; *b; b++)
            evbus_poll(*b, 20);
    }
}

static void poll_for(evbus_t **buses, int ms)
{
    long long end = kt_now_ms() + ms;
    while (kt_now_ms() < end)
        for (evbus_t **b = buses; *b; b++)
            evbus_poll(*b, 20);
}

/* ------------------------------------------------------------ log capture */

static atomic_int commit_warnings;
static atomic_int pause_logs; /* "pausing fetch" lines */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_warning[512];

static bool contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

static void capture_log(int level, const char *component, const char *msg,
                        void *opaque)
{
    (void)opaque;
    if (getenv("KT_VERBOSE"))
        evbus_log_stderr(level, component, msg, NULL);
    if (strstr(msg, "pausing fetch"))
        atomic_fetch_add(&pause_logs, 1);
    if (level > EVBUS_LOG_WARN)
        return;
    if ((contains_ci(msg, "commit") && contains_ci(msg, "fail")) ||
        contains_ci(msg, "rebalance in progress") ||
        contains_ci(msg, "REBALANCE_IN_PROGRESS"))
        atomic_fetch_add(&commit_warnings, 1);
    pthread_mutex_lock(&log_mu);
    snprintf(last_warning, sizeof last_warning, "%s: %s", component, msg);
    pthread_mutex_unlock(&log_mu);
}

static void capture_start(void)
{
    atomic_store(&commit_warnings, 0);
    atomic_store(&pause_logs, 0);
    last_warning[0] = 0;
    evbus_set_log(capture_log, EVBUS_LOG_DEBUG, NULL);
}

static void capture_stop(void)
{
    if (getenv("KT_VERBOSE"))
        evbus_set_log(evbus_log_stderr, EVBUS_LOG_INFO, NULL);
    else
        evbus_set_log(NULL, 0, NULL);
}

/* ------------------------------------------------------------ tests */

/* One bus, two topics in one group. After evbus_close the next bus of the
 * group gets nothing that was acked (the close committed it, without a
 * rebalance getting in the way) and exactly what was published since. */
START_TEST(two_topics_one_group_close_commits_everything)
{
    enum { N = 300 };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char ta[128], tb[128];
    kt_topic(ta, sizeof ta, "grp-a");
    kt_topic(tb, sizeof tb, "grp-b");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, ta, 3, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, tb, 3, 1), 0);
    evbus_t *pub = kt_open(m.url);

    evbus_t *bus = kt_open(m.url);
    kt_collector_t ca, cb;
    kt_collector_init(&ca, KT_ACK);
    kt_collector_init(&cb, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, ta, "pair", kt_handler, &ca));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, tb, "pair", kt_handler, &cb));
    kt_publish_range(pub, ta, 0, N, 60000);
    kt_publish_range(pub, tb, 0, N, 60000);
    evbus_t *buses[] = {bus, NULL};
    kt_collector_t *cs[] = {&ca, &cb, NULL};
    int want[] = {N, N};
    poll_all(buses, cs, want, 60000);
    ck_assert_int_eq(kt_distinct(&ca, N), N);
    ck_assert_int_eq(kt_distinct(&cb, N), N);

    capture_start();
    evbus_close(bus);
    capture_stop();
    ck_assert_msg(atomic_load(&commit_warnings) == 0,
                  "%d commit warnings during close, last: %s",
                  atomic_load(&commit_warnings), last_warning);

    kt_publish_range(pub, ta, N, 2 * N, 60000);
    kt_publish_range(pub, tb, N, 2 * N, 60000);
    bus = kt_open(m.url);
    kt_collector_t na, nb;
    kt_collector_init(&na, KT_ACK);
    kt_collector_init(&nb, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, ta, "pair", kt_handler, &na));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, tb, "pair", kt_handler, &nb));
    buses[0] = bus;
    cs[0] = &na;
    cs[1] = &nb;
    poll_all(buses, cs, want, 60000);
    poll_for(buses, 1000); /* nothing more may come */
    ck_assert_int_eq(kt_distinct(&na, N), 0); /* acked before: not again */
    ck_assert_int_eq(kt_distinct(&nb, N), 0);
    ck_assert_int_eq(kt_distinct(&na, 2 * N), N);
    ck_assert_int_eq(kt_distinct(&nb, 2 * N), N);
    ck_assert_int_eq(kt_acked(&na), N);
    ck_assert_int_eq(kt_acked(&nb), N);
    evbus_close(bus);
    evbus_close(pub);
    kt_collector_free(&ca);
    kt_collector_free(&cb);
    kt_collector_free(&na);
    kt_collector_free(&nb);
    kt_mock_stop(&m);
}
END_TEST

/* Two subscriptions in one group; one acks FIRST events of its topic, then
 * answers RETRY and is unsubscribed. The other keeps receiving every event
 * of its topic; a later member of the group gets exactly the events of the
 * first topic that were not acked. */
START_TEST(unsubscribe_one_of_two_mid_stream)
{
    enum { N = 400, FIRST = 100 };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char ta[128], tb[128];
    kt_topic(ta, sizeof ta, "keep");
    kt_topic(tb, sizeof tb, "drop");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, ta, 3, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, tb, 3, 1), 0);
    evbus_t *pub = kt_open(m.url);
    evbus_t *bus = kt_open(m.url);
    kt_collector_t ca, cb;
    kt_collector_init(&ca, KT_ACK);
    kt_collector_init(&cb, KT_STOP_AFTER);
    cb.stop_after = FIRST;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 500;
    retry.max_attempts = 1000;
    o.retry = &retry;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, ta, "mixed", kt_handler, &ca));
    evbus_sub_t *sb =
        evbus_subscribe_opts(bus, tb, "mixed", &o, kt_handler, &cb, NULL, 0);
    ck_assert_ptr_nonnull(sb);
    kt_publish_range(pub, ta, 0, N / 2, 60000);
    kt_publish_range(pub, tb, 0, N, 60000);
    evbus_t *buses[] = {bus, NULL, NULL};
    kt_collector_t *cs[] = {&ca, &cb, NULL};
    int want[] = {N / 2, FIRST};
    poll_all(buses, cs, want, 60000);
    ck_assert_int_eq(kt_acked(&cb), FIRST);
    poll_for(buses, 300); /* some RETRYs */
    ck_assert_int_eq(kt_acked(&cb), FIRST);

    ck_assert_int_eq(evbus_unsubscribe(sb), EVBUS_OK);
    /* the other subscription goes on through the topic-set change */
    kt_publish_range(pub, ta, N / 2, N, 60000);
    want[0] = N;
    cs[1] = NULL;
    poll_all(buses, cs, want, 60000);
    ck_assert_int_eq(kt_distinct(&ca, N), N);
    printf("unsubscribe_one_of_two_mid_stream: %d duplicates on the kept "
           "topic\n",
           ca.dups);

    /* a later member of the group takes the unacked rest of tb */
    evbus_t *later = kt_open(m.url);
    kt_collector_t cc;
    kt_collector_init(&cc, KT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(later, tb, "mixed", kt_handler, &cc));
    buses[1] = later;
    cs[0] = &cc;
    want[0] = N - FIRST;
    poll_all(buses, cs, want, 60000);
    poll_for(buses, 500);
    int both = 0, either = 0;
    for (int i = 0; i < N; i++) {
        both += cb.seen[i] && cc.seen[i];
        either += cb.seen[i] || cc.seen[i];
    }
    ck_assert_int_eq(either, N);
    ck_assert_msg(both == 0, "%d acked events came again", both);
    ck_assert_int_eq(kt_acked(&cc), N - FIRST);
    evbus_close(later);
    evbus_close(bus);
    evbus_close(pub);
    kt_collector_free(&ca);
    kt_collector_free(&cb);
    kt_collector_free(&cc);
    kt_mock_stop(&m);
}
END_TEST

/* Unsubscribing and subscribing again to the same topic on the same bus,
 * within the grace in which the consumer still reads (and drops) the
 * topic: the new subscription starts from the commit, so every unacked
 * event comes to it. */
START_TEST(resubscribe_within_grace_gets_the_rest)
{
    enum { N = 300, FIRST = 60 };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char ta[128], tb[128];
    kt_topic(ta, sizeof ta, "stay");
    kt_topic(tb, sizeof tb, "again");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, ta, 2, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, tb, 2, 1), 0);
    evbus_t *pub = kt_open(m.url);
    evbus_t *bus = kt_open(m.url);
    kt_collector_t ca, cb, cb2;
    kt_collector_init(&ca, KT_ACK);
    kt_collector_init(&cb, KT_STOP_AFTER);
    kt_collector_init(&cb2, KT_ACK);
    cb.stop_after = FIRST;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 500;
    retry.max_attempts = 1000;
    o.retry = &retry;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, ta, "again", kt_handler, &ca));
    evbus_sub_t *sb =
        evbus_subscribe_opts(bus, tb, "again", &o, kt_handler, &cb, NULL, 0);
    ck_assert_ptr_nonnull(sb);
    kt_publish_range(pub, tb, 0, N, 60000);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(kt_poll_until(buses, &cb, kt_acked, FIRST, 60000),
                     FIRST);
    poll_for(buses, 300);
    ck_assert_int_eq(evbus_unsubscribe(sb), EVBUS_OK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, tb, "again", kt_handler, &cb2));
    kt_poll_until(buses, &cb2, kt_acked, N - FIRST, 60000);
    poll_for(buses, 500);
    int both = 0, either = 0;
    for (int i = 0; i < N; i++) {
        both += cb.seen[i] && cb2.seen[i];
        either += cb.seen[i] || cb2.seen[i];
    }
    ck_assert_int_eq(either, N);
    ck_assert_msg(both == 0, "%d acked events came again", both);
    evbus_close(bus);
    evbus_close(pub);
    kt_collector_free(&ca);
    kt_collector_free(&cb);
    kt_collector_free(&cb2);
    kt_mock_stop(&m);
}
END_TEST

/* One bus cannot be two members of a group: a second subscription to the
 * same topic and group is refused with EVBUS_EBUSY and a reason; other
 * groups and topics are fine, and the first subscription is undisturbed. */
/* A member joining while another consumes: during the rebalance every
 * attempt commit fails ("rebalance in progress") and its event is tried
 * again, thousands of times a second. The warnings are rate-limited per
 * group: a handful, not one per failed commit (4,600 per run of the
 * conformance case before). Counts only; the clock bounds the wait. */
enum { FLOOD_N = 4000 };
static int flood_distinct(kt_collector_t *c) { return kt_distinct(c, FLOOD_N); }

START_TEST(rebalance_commit_failures_do_not_flood_the_log)
{
    enum { N = FLOOD_N };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char t[128];
    kt_topic(t, sizeof t, "flood");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, t, 4, 1), 0);
    evbus_t *pub = kt_open(m.url);
    kt_publish_range(pub, t, 0, N, 60000);
    evbus_t *a = kt_open(m.url), *b = kt_open(m.url);
    kt_collector_t c;
    kt_collector_init(&c, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(a, t, "flood", kt_handler, &c));
    evbus_t *only_a[] = {a, NULL};
    ck_assert_int_ge(kt_poll_until(only_a, &c, kt_acked, 100, 60000), 100);
    capture_start();
    ck_assert_ptr_nonnull(evbus_subscribe(b, t, "flood", kt_handler, &c));
    evbus_t *both[] = {a, b, NULL};
    /* (duplicates are allowed: what A handled after its last successful
     * commit comes again to B) */
    kt_poll_until(both, &c, flood_distinct, N, 120000);
    capture_stop();
    ck_assert_int_eq(kt_distinct(&c, N), N);
    ck_assert_msg(atomic_load(&commit_warnings) <= 20,
                  "%d commit warnings during one rebalance, last: %s",
                  atomic_load(&commit_warnings), last_warning);
    evbus_close(a);
    evbus_close(b);
    evbus_close(pub);
    kt_collector_free(&c);
    kt_mock_stop(&m);
}
END_TEST

START_TEST(same_topic_same_group_twice_is_refused)
{
    enum { N = 50 };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char t[128], t2[128];
    kt_topic(t, sizeof t, "twice");
    kt_topic(t2, sizeof t2, "other");
    evbus_t *bus = kt_open(m.url);
    kt_collector_t c1, c2, c3;
    kt_collector_init(&c1, KT_ACK);
    kt_collector_init(&c2, KT_ACK);
    kt_collector_init(&c3, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, t, "g", kt_handler, &c1));
    capture_start();
    char why[512];
    ck_assert_ptr_null(evbus_subscribe_opts(bus, t, "g", NULL, kt_handler,
                                            &c2, why, sizeof why));
    capture_stop();
    ck_assert_msg(strncmp(why, "EVBUS_EBUSY:", 12) == 0, "%s", why);
    pthread_mutex_lock(&log_mu);
    ck_assert_msg(strstr(last_warning, "already has a subscription") != NULL,
                  "reason not logged: '%s'", last_warning);
    pthread_mutex_unlock(&log_mu);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, t, "g2", kt_handler, &c2));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, t2, "g", kt_handler, &c3));
    kt_publish_range(bus, t, 0, N, 60000);
    evbus_t *buses[] = {bus, NULL};
    kt_collector_t *cs[] = {&c1, &c2, NULL};
    int want[] = {N, N};
    poll_all(buses, cs, want, 60000);
    ck_assert_int_eq(kt_distinct(&c1, N), N);
    ck_assert_int_eq(kt_distinct(&c2, N), N);
    ck_assert_int_eq(kt_acked(&c3), 0);
    evbus_close(bus);
    kt_collector_free(&c1);
    kt_collector_free(&c2);
    kt_collector_free(&c3);
    kt_mock_stop(&m);
}
END_TEST

/* Two subscriptions in one group; the application stops taking one's
 * events (its handler answers RETRY, few in flight) while its topic has a
 * large backlog. Its buffer fills and its partitions are paused, and the
 * other topic's events keep coming; once it acks again it gets everything. */
START_TEST(full_subscription_does_not_stall_the_other)
{
    enum { NA = 21500, NB = 200 };
    kt_mock_t m;
    kt_mock_start(&m, 1, "");
    char ta[128], tb[128];
    kt_topic(ta, sizeof ta, "backlog");
    kt_topic(tb, sizeof tb, "lively");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, ta, 8, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, tb, 2, 1), 0);
    evbus_t *pub = kt_open(m.url);
    kt_publish_range(pub, ta, 0, NA, 60000);
    evbus_t *bus = kt_open(m.url);
    kt_collector_t ca, cb;
    kt_collector_init(&ca, KT_STOP_AFTER); /* stop_after 0: RETRY all */
    kt_collector_init(&cb, KT_ACK);
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 1000;
    retry.max_ms = 1000;
    retry.max_attempts = 1000;
    o.retry = &retry;
    o.max_inflight = 10;
    capture_start();
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, ta, "slow", &o, kt_handler, &ca, NULL, 0));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, tb, "slow", kt_handler, &cb));
    evbus_t *buses[] = {bus, NULL};
    long long end = kt_now_ms() + 60000;
    while (atomic_load(&pause_logs) == 0 && kt_now_ms() < end)
        evbus_poll(bus, 20);
    ck_assert_msg(atomic_load(&pause_logs) > 0,
                  "the full subscription was never paused");
    ck_assert_int_eq(kt_acked(&ca), 0);
    kt_publish_range(pub, tb, 0, NB, 60000);
    ck_assert_int_eq(kt_poll_until(buses, &cb, kt_acked, NB, 20000), NB);
    pthread_mutex_lock(&ca.mu);
    ca.mode = KT_ACK;
    pthread_mutex_unlock(&ca.mu);
    kt_poll_until(buses, &ca, kt_acked, NA, 120000);
    capture_stop();
    ck_assert_int_eq(kt_distinct(&ca, NA), NA);
    ck_assert_int_eq(kt_distinct(&cb, NB), NB);
    evbus_close(bus);
    evbus_close(pub);
    kt_collector_free(&ca);
    kt_collector_free(&cb);
    kt_mock_stop(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka-group");
    TCase *tc = tcase_create("group");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, two_topics_one_group_close_commits_everything);
    tcase_add_test(tc, unsubscribe_one_of_two_mid_stream);
    tcase_add_test(tc, resubscribe_within_grace_gets_the_rest);
    tcase_add_test(tc, same_topic_same_group_twice_is_refused);
    tcase_add_test(tc, full_subscription_does_not_stall_the_other);
    tcase_add_test(tc, rebalance_commit_failures_do_not_flood_the_log);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
