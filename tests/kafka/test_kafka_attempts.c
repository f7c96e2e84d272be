/*
 * kafka:// - attempts recorded in the commit metadata (kafka_attempts.c)
 * and one group on several topics, on an in-process mock cluster:
 *   - a clean restart charges no extra attempt (no suspects after a clean
 *     close), even for events released unhandled by evbus_stop;
 *   - an event retried in one process continues its count in the next;
 *   - a bus subscribing one group to three topics back to back gets all
 *     three assigned, every time (issue 15.8).
 * Verdicts come from counts; timeouts only guard against hangs.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kafka_test_util.h"

#define HANG_MS 120000

static kt_mock_t mock;

/* Counts handler calls and the highest attempt number per seq. */
typedef struct {
    pthread_mutex_t mu;
    evbus_t *stop_bus; /* evbus_stop at the first call when set */
    int retry_seq;     /* answers RETRY for this seq (-1 none) */
    int calls, acked;
    int max_attempt[KT_MAX_SEQ];
} att_t;

static void att_init(att_t *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    a->retry_seq = -1;
}

static evbus_result_t att_handler(const evbus_event_t *ev, void *opaque)
{
    att_t *a = opaque;
    const char *seq_s = evbus_event_ext(ev, "seq");
    int seq = seq_s ? atoi(seq_s) : -1;
    int attempt = evbus_delivery_attempt();
    pthread_mutex_lock(&a->mu);
    bool stop = a->stop_bus && a->calls == 0;
    a->calls++;
    if (seq >= 0 && seq < KT_MAX_SEQ && attempt > a->max_attempt[seq])
        a->max_attempt[seq] = attempt;
    bool retry = seq == a->retry_seq;
    if (!retry)
        a->acked++;
    pthread_mutex_unlock(&a->mu);
    if (stop)
        evbus_stop(a->stop_bus);
    return retry ? EVBUS_RETRY : EVBUS_ACK;
}

static int att_acked(att_t *a)
{
    pthread_mutex_lock(&a->mu);
    int n = a->acked;
    pthread_mutex_unlock(&a->mu);
    return n;
}

static void poll_acked(evbus_t *bus, att_t *a, int want)
{
    long long end = kt_now_ms() + HANG_MS;
    while (att_acked(a) < want && kt_now_ms() < end)
        evbus_poll(bus, 50);
}

/* Subscribes a's handler with room for 50 attempts, delay_ms apart
 * (fixed, no jitter): far more than the tests below need to see, so none
 * of their events runs out of attempts and is dead-lettered. */
static void subscribe_retrying(evbus_t *bus, const char *topic,
                               const char *group, att_t *a, int delay_ms)
{
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 50;
    retry.initial_ms = delay_ms;
    retry.max_ms = delay_ms;
    retry.jitter = EVBUS_JITTER_NONE;
    o.retry = &retry;
    char err[256] = "";
    ck_assert_msg(evbus_subscribe_opts(bus, topic, group, &o, att_handler, a,
                                       err, sizeof err) != NULL,
                  "subscribe %s: %s", topic, err);
}

/* ------------------------------------------------------------ restart */

/* A consumer stopped with a backlog (evbus_stop: what was fetched and not
 * handled goes back) and closed cleanly; the next one handles the rest,
 * every event at attempt 1. */
START_TEST(clean_restart_charges_no_extra_attempts)
{
    enum { N = 600 };
    char topic[128];
    kt_topic(topic, sizeof topic, "restart");
    evbus_t *bus = kt_open(mock.url);
    att_t *a = malloc(sizeof *a);
    att_init(a);
    a->stop_bus = bus;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", att_handler, a));
    kt_publish_range(bus, topic, 0, N, HANG_MS);
    ck_assert_int_eq(evbus_run(bus), EVBUS_OK); /* stops after one call */
    poll_acked(bus, a, N / 2);
    int first = att_acked(a);
    ck_assert_int_ge(first, N / 2);
    ck_assert_int_lt(first, N); /* some left for the next consumer */
    evbus_close(bus);

    a->stop_bus = NULL;
    bus = kt_open(mock.url);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", att_handler, a));
    poll_acked(bus, a, N);
    ck_assert_int_ge(att_acked(a), N);
    for (int i = 0; i < N; i++)
        ck_assert_msg(a->max_attempt[i] == 1,
                      "event %d reached attempt %d after a clean restart", i,
                      a->max_attempt[i]);
    evbus_close(bus);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
END_TEST

/* An event retried twice in one process is attempt 3 in the next one: the
 * count travels in the commit metadata. */
START_TEST(retry_count_survives_a_restart)
{
    char topic[128];
    kt_topic(topic, sizeof topic, "carry");
    evbus_t *bus = kt_open(mock.url);
    att_t *a = malloc(sizeof *a);
    att_init(a);
    a->retry_seq = 1;
    /* Retries 50 ms apart and room for 50 attempts: the loop below sees
     * attempt 2 long before the event could run out of attempts and be
     * dead-lettered (with 1-5 ms and 10 attempts, a busy machine got
     * there first: "10 == 11"). */
    subscribe_retrying(bus, topic, "g", a, 50);
    kt_publish_range(bus, topic, 0, 3, HANG_MS);
    long long end = kt_now_ms() + HANG_MS;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool done = a->max_attempt[1] >= 2;
        pthread_mutex_unlock(&a->mu);
        if (done || kt_now_ms() >= end)
            break;
        evbus_poll(bus, 20);
    }
    evbus_close(bus); /* releases the retrying event */
    pthread_mutex_lock(&a->mu);
    int before = a->max_attempt[1];
    a->retry_seq = -1;
    pthread_mutex_unlock(&a->mu);
    ck_assert_int_ge(before, 2);

    bus = kt_open(mock.url);
    subscribe_retrying(bus, topic, "g", a, 50);
    end = kt_now_ms() + HANG_MS;
    /* Events 0 and 2 may sit in partitions the first bus never reached:
     * wait for all three, not only the retried one. */
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool done = a->max_attempt[1] > before && a->max_attempt[0] >= 1 &&
                    a->max_attempt[2] >= 1;
        pthread_mutex_unlock(&a->mu);
        if (done || kt_now_ms() >= end)
            break;
        evbus_poll(bus, 20);
    }
    ck_assert_int_eq(a->max_attempt[1], before + 1);
    ck_assert_int_eq(a->max_attempt[0], 1);
    ck_assert_int_eq(a->max_attempt[2], 1);
    evbus_close(bus);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
END_TEST

/* A consumer that handled everything and then died (no close) leaves no
 * suspects behind: with max_attempts 1 the next consumer handles every
 * later event instead of dead-lettering them unhandled. */
START_TEST(crash_when_idle_makes_no_suspects)
{
    enum { N = 20 };
    char topic[128];
    kt_topic(topic, sizeof topic, "idlecrash");
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock.mc, topic, 1, 1), 0);
    evbus_t *bus = kt_open(mock.url);
    kt_publish_range(bus, topic, 0, N, HANG_MS);
    evbus_close(bus);
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 1;
    o.retry = &retry;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        att_t *a = malloc(sizeof *a);
        att_init(a);
        evbus_t *b = evbus_open(mock.url, NULL, 0);
        if (!b || !evbus_subscribe_opts(b, topic, "ic", &o, att_handler, a,
                                        NULL, 0))
            _exit(71);
        poll_acked(b, a, N);
        if (att_acked(a) < N)
            _exit(72);
        long long end = kt_now_ms() + 2500; /* a periodic commit, idle */
        while (kt_now_ms() < end)
            evbus_poll(b, 50);
        _exit(0); /* dies without closing */
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "consumer ended with 0x%x", status);

    bus = kt_open(mock.url);
    kt_publish_range(bus, topic, N, 2 * N, HANG_MS);
    att_t *a = malloc(sizeof *a);
    att_init(a);
    evbus_sub_t *sub =
        evbus_subscribe_opts(bus, topic, "ic", &o, att_handler, a, NULL, 0);
    ck_assert_ptr_nonnull(sub);
    poll_acked(bus, a, N);
    ck_assert_int_eq(att_acked(a), N);
    for (int i = N; i < 2 * N; i++)
        ck_assert_msg(a->max_attempt[i] == 1, "event %d at attempt %d", i,
                      a->max_attempt[i]);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    ck_assert_int_eq(evbus_sub_metrics_get(sub, &m), EVBUS_OK);
    ck_assert_int_eq(m.dead_lettered, 0);
    evbus_close(bus);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
END_TEST

/* ------------------------------------------------------------ dlq */

static evbus_result_t drop_seq1(const evbus_event_t *ev, void *opaque)
{
    atomic_int *acked = opaque;
    const char *seq = evbus_event_ext(ev, "seq");
    if (seq && strcmp(seq, "1") == 0)
        return EVBUS_DROP;
    atomic_fetch_add(acked, 1);
    return EVBUS_ACK;
}

/* dlq_failure=ACK: an event whose dead letter the broker refuses for good
 * is dropped - and no longer holds its partition's committed offset. */
START_TEST(dlq_failure_ack_unpins_the_offset)
{
    enum { N = 5 };
    char topic[128], url[1200];
    kt_topic(topic, sizeof topic, "dlqack");
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock.mc, topic, 1, 1), 0);
    snprintf(url, sizeof url, "faulty+%s&reject_dlq=1", mock.url);
    evbus_t *bus = kt_open(url);
    kt_publish_range(bus, topic, 0, N, HANG_MS);
    atomic_int acked;
    atomic_init(&acked, 0);
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    o.dlq_failure = EVBUS_DLQ_FAILURE_ACK;
    char err[256];
    evbus_sub_t *sub = evbus_subscribe_opts(bus, topic, "dq", &o, drop_seq1,
                                            &acked, err, sizeof err);
    ck_assert_msg(sub != NULL, "%s", err);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    long long end = kt_now_ms() + HANG_MS;
    while ((atomic_load(&acked) < N - 1 || m.dlq_failed < 1) &&
           kt_now_ms() < end) {
        evbus_poll(bus, 50);
        ck_assert_int_eq(evbus_sub_metrics_get(sub, &m), EVBUS_OK);
    }
    ck_assert_int_eq(m.dlq_failed, 1);
    ck_assert_int_eq(atomic_load(&acked), N - 1);
    evbus_close(bus);
    ck_assert_int_eq(kt_committed(mock.brokers, "dq", topic, 0), N);
}
END_TEST

/* ------------------------------------------------------------ failures */

/* Every commit that would record an attempt fails, more times than the
 * retry policy allows attempts: the events go back unhandled each time and
 * must come through at attempt 1 once a commit succeeds - a recording that
 * failed is not a handler call, so nothing is dead-lettered. */
START_TEST(failed_recordings_charge_no_attempt)
{
    enum { N = 3, FAILS = 8 };
    char topic[128];
    kt_topic(topic, sizeof topic, "recfail");
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock.mc, topic, 1, 1), 0);
    evbus_t *bus = kt_open(mock.url);
    kt_publish_range(bus, topic, 0, N, HANG_MS);
    att_t *a = malloc(sizeof *a);
    att_init(a);
    rd_kafka_resp_err_t errs[FAILS];
    for (int i = 0; i < FAILS; i++)
        errs[i] = RD_KAFKA_RESP_ERR_INVALID_COMMIT_OFFSET_SIZE;
    rd_kafka_mock_push_request_errors_array(mock.mc, 8 /* OffsetCommit */,
                                            FAILS, errs);
    evbus_sub_t *sub = evbus_subscribe(bus, topic, "rf", att_handler, a);
    ck_assert_ptr_nonnull(sub);
    poll_acked(bus, a, N);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    ck_assert_int_eq(evbus_sub_metrics_get(sub, &m), EVBUS_OK);
    ck_assert_msg(m.dead_lettered == 0,
                  "%llu event(s) dead-lettered that no handler had seen",
                  (unsigned long long)m.dead_lettered);
    ck_assert_int_eq(att_acked(a), N);
    for (int i = 0; i < N; i++)
        ck_assert_msg(a->max_attempt[i] == 1,
                      "event %d ran as attempt %d after failed recordings", i,
                      a->max_attempt[i]);
    evbus_close(bus);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
END_TEST

/* The group coordinator goes away while an event waits for its second
 * attempt, whose recording needs a commit: the commit gives up after
 * commit_timeout_ms, evbus_poll returns, no handler runs while nothing can
 * be recorded, and once the coordinator is back the event runs as attempt
 * 2 - the failed recordings charged nothing. Without the bound, the first
 * poll waited inside rd_kafka_commit until the session timed out (for
 * good, in kafka-faults, when the test thread was the one to bring the
 * broker back), the partition was lost and the handler ran on. */
START_TEST(coordinator_down_does_not_hang_poll)
{
    char topic[128], url[1200];
    kt_topic(topic, sizeof topic, "coorddown");
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock.mc, topic, 1, 1), 0);
    /* Only the coordinator goes down: the others still answer
     * FindCoordinator with it, so librdkafka waits for it to return. */
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(mock.mc, topic, 0, 1),
                     0);
    ck_assert_int_eq(rd_kafka_mock_coordinator_set(mock.mc, "group", "cd", 2),
                     0);
    snprintf(url, sizeof url, "%s&commit_timeout_ms=300", mock.url);
    evbus_t *bus = kt_open(url);
    kt_publish_range(bus, topic, 0, 1, HANG_MS);
    att_t *a = malloc(sizeof *a);
    att_init(a);
    a->retry_seq = 0;
    subscribe_retrying(bus, topic, "cd", a, 200);
    long long end = kt_now_ms() + HANG_MS;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool ran = a->calls >= 1;
        pthread_mutex_unlock(&a->mu);
        if (ran || kt_now_ms() >= end)
            break;
        evbus_poll(bus, 20);
    }
    ck_assert_int_eq(a->max_attempt[0], 1);
    rd_kafka_mock_broker_set_down(mock.mc, 2);
    /* The retry falls due and cannot be recorded: each call comes back,
     * and the handler does not run. */
    for (int i = 0; i < 5; i++)
        evbus_poll(bus, 100);
    pthread_mutex_lock(&a->mu);
    int calls_while_down = a->calls;
    pthread_mutex_unlock(&a->mu);
    ck_assert_msg(calls_while_down == 1,
                  "%d handler call(s) while no attempt could be recorded",
                  calls_while_down - 1);
    rd_kafka_mock_broker_set_up(mock.mc, 2);
    pthread_mutex_lock(&a->mu);
    a->retry_seq = -1;
    pthread_mutex_unlock(&a->mu);
    poll_acked(bus, a, 1);
    ck_assert_int_eq(att_acked(a), 1);
    ck_assert_msg(a->max_attempt[0] == 2,
                  "the retried event ran as attempt %d, not 2",
                  a->max_attempt[0]);
    evbus_close(bus);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
END_TEST

/* ------------------------------------------------------------ topics */

typedef struct {
    evbus_t *bus;
    atomic_int got[3];
} three_t;

static evbus_result_t count_topic(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    atomic_int *n = opaque;
    atomic_fetch_add(n, 1);
    return EVBUS_ACK;
}

static int topics_received(three_t *c)
{
    int have = 0;
    for (int k = 0; k < 3; k++)
        have += atomic_load(&c->got[k]) > 0;
    return have;
}

/* One bus, one group, three topics subscribed back to back: all three
 * receive, 20 times in a row. The tries run PAR at a time, each with its
 * own bus and group (the mock delays a new group's first join 3 s). */
START_TEST(three_topics_back_to_back_all_receive)
{
    enum { TRIES = 20, PAR = 10 };
    int complete = 0;
    for (int t0 = 0; t0 < TRIES; t0 += PAR) {
        three_t *c = calloc(PAR, sizeof *c);
        ck_assert_ptr_nonnull(c);
        for (int i = 0; i < PAR; i++) {
            char topics[3][128], group[64];
            snprintf(group, sizeof group, "three-%d", t0 + i);
            c[i].bus = kt_open(mock.url);
            for (int k = 0; k < 3; k++) {
                char name[32];
                snprintf(name, sizeof name, "three%d", k);
                kt_topic(topics[k], sizeof topics[k], name);
                ck_assert_int_eq(
                    rd_kafka_mock_topic_create(mock.mc, topics[k], 2, 1), 0);
                evbus_event_t *ev = kt_event(k);
                ck_assert_int_eq(evbus_publish_async(c[i].bus, topics[k], ev,
                                                     NULL, NULL),
                                 EVBUS_OK);
                evbus_event_free(ev);
                atomic_init(&c[i].got[k], 0);
            }
            ck_assert_int_eq(evbus_flush(c[i].bus, HANG_MS), EVBUS_OK);
            for (int k = 0; k < 3; k++)
                ck_assert_ptr_nonnull(evbus_subscribe(c[i].bus, topics[k],
                                                      group, count_topic,
                                                      &c[i].got[k]));
        }
        long long end = kt_now_ms() + HANG_MS;
        int done = 0;
        while (kt_now_ms() < end) {
            done = 0;
            for (int i = 0; i < PAR; i++)
                done += topics_received(&c[i]) == 3;
            if (done == PAR)
                break;
            for (int i = 0; i < PAR; i++)
                evbus_poll(c[i].bus, 10);
        }
        complete += done;
        for (int i = 0; i < PAR; i++)
            evbus_close(c[i].bus);
        free(c);
    }
    ck_assert_int_eq(complete, TRIES);
}
END_TEST

static void setup(void) { kt_mock_start(&mock, 3, ""); }
static void teardown(void) { kt_mock_stop(&mock); }

int main(void)
{
    Suite *s = suite_create("kafka-attempts");
    TCase *tc = tcase_create("attempts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, clean_restart_charges_no_extra_attempts);
    tcase_add_test(tc, retry_count_survives_a_restart);
    tcase_add_test(tc, crash_when_idle_makes_no_suspects);
    tcase_add_test(tc, dlq_failure_ack_unpins_the_offset);
    tcase_add_test(tc, failed_recordings_charge_no_attempt);
    tcase_add_test(tc, coordinator_down_does_not_hang_poll);
    tcase_add_test(tc, three_topics_back_to_back_all_receive);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
