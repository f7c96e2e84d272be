/*
 * kafka:// under faults, on an in-process librdkafka mock cluster: brokers
 * going down and up mid-run, injected Produce / Fetch / OffsetCommit errors
 * (transport drops included), a consumer closed mid-stream with a new member
 * taking over, and a member joining mid-stream. In every case each published
 * event must reach the group at least once.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka_test_util.h"

static atomic_int async_failed;
static void count_failure(const evbus_event_t *ev, int err, void *opaque)
{
    (void)ev;
    (void)opaque;
    if (err != EVBUS_OK)
        atomic_fetch_add(&async_failed, 1);
}

typedef struct {
    evbus_t *bus;
    const char *topic;
    int from, to;
    int pause_every_ms; /* sleep 1 ms every this many events (spread) */
    int sync_failed;
} pub_job_t;

static void *publisher(void *arg)
{
    pub_job_t *j = arg;
    for (int i = j->from; i < j->to; i++) {
        evbus_event_t *ev = kt_event(i);
        int rc = (i % 4 == 0) ? evbus_publish(j->bus, j->topic, ev)
                              : evbus_publish_async(j->bus, j->topic, ev,
                                                    count_failure, NULL);
        if (rc != EVBUS_OK)
            j->sync_failed++;
        evbus_event_free(ev);
        if (j->pause_every_ms && i % j->pause_every_ms == 0)
            usleep(2000);
    }
    return NULL;
}

/* Publishes [from, to) from this thread and checks every publish. */
static void publish_range(evbus_t *bus, const char *topic, int from, int to)
{
    pub_job_t j = {bus, topic, from, to, 0, 0};
    publisher(&j);
    ck_assert_int_eq(j.sync_failed, 0);
    ck_assert_int_eq(evbus_flush(bus, 60000), EVBUS_OK);
}

/* Waits until the consumer group is assigned and reading: one probe event
 * (seq probe) must come through. */
static void warm_up(evbus_t *pub, evbus_t **buses, kt_collector_t *c,
                    const char *topic, int probe)
{
    publish_range(pub, topic, probe, probe + 1);
    long long end = kt_now_ms() + 30000;
    while (!c->seen[probe] && kt_now_ms() < end)
        for (evbus_t **b = buses; *b; b++)
            evbus_poll(*b, 20);
    ck_assert_msg(c->seen[probe], "group never started reading %s", topic);
}

START_TEST(brokers_down_and_up_mid_run)
{
    enum { N = 3000 };
    kt_mock_t m;
    kt_mock_start(&m, 3, "");
    char topic[128];
    kt_topic(topic, sizeof topic, "brokers");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 3), 0);
    evbus_t *pub = kt_open(m.url), *con = kt_open(m.url);
    kt_collector_t c;
    kt_collector_init(&c, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(con, topic, "g", kt_handler, &c));
    evbus_t *buses[] = {con, NULL};
    warm_up(pub, buses, &c, topic, N);

    atomic_store(&async_failed, 0);
    pub_job_t job = {pub, topic, 0, N, 10, 0};
    pthread_t th;
    pthread_create(&th, NULL, publisher, &job);
    long long t0 = kt_now_ms();
    int stage = 0;
    while (kt_distinct(&c, N) < N && kt_now_ms() - t0 < 120000) {
        long long t = kt_now_ms() - t0;
        if (stage == 0 && t > 300) {
            rd_kafka_mock_broker_set_down(m.mc, 2); /* one broker */
            stage = 1;
        } else if (stage == 1 && t > 1000) {
            rd_kafka_mock_broker_set_down(m.mc, 1);
            rd_kafka_mock_broker_set_down(m.mc, 3); /* now all */
            stage = 2;
        } else if (stage == 2 && t > 2500) {
            rd_kafka_mock_broker_set_up(m.mc, 1);
            rd_kafka_mock_broker_set_up(m.mc, 2);
            rd_kafka_mock_broker_set_up(m.mc, 3);
            stage = 3;
        }
        evbus_poll(con, 20);
    }
    pthread_join(th, NULL);
    ck_assert_int_eq(stage, 3);
    ck_assert_int_eq(job.sync_failed, 0);
    ck_assert_int_eq(evbus_flush(pub, 60000), EVBUS_OK);
    ck_assert_int_eq(atomic_load(&async_failed), 0);
    ck_assert_int_eq(kt_distinct(&c, N), N);
    printf("brokers_down_and_up: %d events, %d duplicates\n", N, c.dups);
    evbus_close(pub);
    evbus_close(con);
    kt_collector_free(&c);
    kt_mock_stop(&m);
}
END_TEST

START_TEST(injected_produce_fetch_and_commit_errors)
{
    enum { N = 1000 };
    kt_mock_t m;
    kt_mock_start(&m, 3, "");
    char topic[128];
    kt_topic(topic, sizeof topic, "injected");
    evbus_t *pub = kt_open(m.url), *con = kt_open(m.url);
    kt_collector_t c;
    kt_collector_init(&c, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(con, topic, "g", kt_handler, &c));
    evbus_t *buses[] = {con, NULL};
    warm_up(pub, buses, &c, topic, N);

    rd_kafka_mock_push_request_errors(
        m.mc, 0 /* Produce */, 8, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
    rd_kafka_mock_push_request_errors(
        m.mc, 1 /* Fetch */, 8, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rd_kafka_mock_push_request_errors(
        m.mc, 8 /* OffsetCommit */, 3, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);

    atomic_store(&async_failed, 0);
    pub_job_t job = {pub, topic, 0, N, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, publisher, &job);
    long long t0 = kt_now_ms();
    while (kt_distinct(&c, N) < N && kt_now_ms() - t0 < 90000)
        evbus_poll(con, 20);
    pthread_join(th, NULL);
    ck_assert_int_eq(job.sync_failed, 0);
    ck_assert_int_eq(evbus_flush(pub, 60000), EVBUS_OK);
    ck_assert_int_eq(atomic_load(&async_failed), 0);
    ck_assert_int_eq(kt_distinct(&c, N), N);
    printf("injected errors: %d events, %d duplicates\n", N, c.dups);
    evbus_close(pub);
    evbus_close(con);
    kt_collector_free(&c);
    kt_mock_stop(&m);
}
END_TEST

/* Member A handles the first 200 events, then answers RETRY to everything
 * (so the rest stays unacknowledged) and is closed. Member B of the same
 * group must get exactly the other events: what A acked was committed, and
 * nothing A did not ack was committed. */
START_TEST(consumer_closed_mid_stream_new_member_takes_over)
{
    enum { N = 800, FIRST = 200 };
    kt_mock_t m;
    kt_mock_start(&m, 3, "");
    char topic[128];
    kt_topic(topic, sizeof topic, "takeover");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 3), 0);
    evbus_t *pub = kt_open(m.url);
    publish_range(pub, topic, 0, N);

    evbus_t *a = kt_open(m.url);
    kt_collector_t ca;
    kt_collector_init(&ca, KT_STOP_AFTER);
    ca.stop_after = FIRST;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 500;
    retry.max_attempts = 1000;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(a, topic, "takeover", &o, kt_handler, &ca, NULL, 0));
    evbus_t *buses[] = {a, NULL};
    ck_assert_int_eq(kt_poll_until(buses, &ca, kt_acked, FIRST, 30000), FIRST);
    kt_poll_until(buses, &ca, kt_acked, FIRST + 1, 300); /* some RETRYs */
    ck_assert_int_eq(kt_acked(&ca), FIRST);
    evbus_close(a); /* mid-stream: most events were never acked */

    evbus_t *b = kt_open(m.url);
    kt_collector_t cb;
    kt_collector_init(&cb, KT_ACK);
    /* B's policy is A's: attempts travel with the events, and A may have
     * retried some several times on a slow machine (under B's default of
     * 5 attempts one was dead-lettered instead of handled). */
    ck_assert_ptr_nonnull(evbus_subscribe_opts(b, topic, "takeover", &o,
                                               kt_handler, &cb, NULL, 0));
    buses[0] = b;
    kt_poll_until(buses, &cb, kt_acked, N - FIRST, 30000);
    kt_poll_until(buses, &cb, kt_acked, N, 500); /* nothing more may come */
    int union_cnt = 0, both = 0;
    for (int i = 0; i < N; i++) {
        union_cnt += ca.seen[i] || cb.seen[i];
        both += ca.seen[i] && cb.seen[i];
    }
    ck_assert_int_eq(union_cnt, N);
    ck_assert_msg(both == 0, "%d events acked by A came again to B", both);
    ck_assert_int_eq(kt_acked(&cb), N - FIRST);
    evbus_close(b);
    evbus_close(pub);
    kt_collector_free(&ca);
    kt_collector_free(&cb);
    kt_mock_stop(&m);
}
END_TEST

/* A second member joins while the first is consuming: the rebalance must
 * not lose anything. Repeats are expected here: librdkafka's mock refuses
 * OffsetCommit while the group is joining (a real broker accepts it), so
 * the commit on revoke fails and the new owners re-read from the last
 * commit that got through. */
START_TEST(member_joins_mid_stream)
{
    enum { N = 2000 };
    kt_mock_t m;
    kt_mock_start(&m, 3, "");
    char topic[128];
    kt_topic(topic, sizeof topic, "join");
    ck_assert_int_eq(rd_kafka_mock_topic_create(m.mc, topic, 4, 3), 0);
    evbus_t *pub = kt_open(m.url), *a = kt_open(m.url);
    kt_collector_t c; /* shared by both members */
    kt_collector_init(&c, KT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(a, topic, "join", kt_handler, &c));
    evbus_t *one[] = {a, NULL};
    warm_up(pub, one, &c, topic, N);

    pub_job_t job = {pub, topic, 0, N, 5, 0};
    pthread_t th;
    pthread_create(&th, NULL, publisher, &job);
    while (kt_acked(&c) < 400)
        evbus_poll(a, 20);
    evbus_t *b = kt_open(m.url);
    ck_assert_ptr_nonnull(evbus_subscribe(b, topic, "join", kt_handler, &c));
    evbus_t *both[] = {a, b, NULL};
    long long t0 = kt_now_ms();
    while (kt_distinct(&c, N) < N && kt_now_ms() - t0 < 90000)
        for (evbus_t **x = both; *x; x++)
            evbus_poll(*x, 10);
    pthread_join(th, NULL);
    ck_assert_int_eq(job.sync_failed, 0);
    ck_assert_int_eq(kt_distinct(&c, N), N);
    printf("member_joins_mid_stream: %d events, %d duplicates\n", N, c.dups);
    evbus_close(a);
    evbus_close(b);
    evbus_close(pub);
    kt_collector_free(&c);
    kt_mock_stop(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka-faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, brokers_down_and_up_mid_run);
    tcase_add_test(tc, injected_produce_fetch_and_commit_errors);
    tcase_add_test(tc, consumer_closed_mid_stream_new_member_takes_over);
    tcase_add_test(tc, member_joins_mid_stream);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
