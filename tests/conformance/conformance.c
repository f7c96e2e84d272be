/*
 * Conformance cases: events arrive whole and once per group, retries,
 * dead letters, groups, ordering, persistence (main.c runs them).
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A hang guard, never a verdict: generous, since some brokers take seconds
 * to join a group and a sanitizer build on a busy machine is slow. */
#define WAIT_MS 60000

static int acked(collector_t *c) { return collector_acked(c); }

/* --------------------------------------------------------------- cases */

START_TEST(roundtrip_all_attributes)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "roundtrip");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", collector_handler, &c));

    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    ck_assert_int_eq(evbus_event_set_subject(ev, "task/123"), EVBUS_OK);
    ck_assert_int_eq(
        evbus_event_set_dataschema(ev, "https://example.com/todo.json"),
        EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_time(ev, "2024-01-15T10:30:00.123456Z"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "traceparent",
                                         "00-0af7651916cd43dd8448eb211c80319c-"
                                         "b7ad6b7169203331-01"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", "user-456"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_data_json(
                         ev, "{\"todoId\":\"123\",\"userId\":\"456\","
                             "\"title\":\"Buy groceries \\u00e9\"}"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);

    /* binary data with a NUL and high bytes */
    evbus_event_t *bin = evbus_event_new("conf.binary.sent", "/conformance");
    const unsigned char bytes[] = {0, 1, 2, 0xff, 0xfe, 'a', 0, 'z'};
    ck_assert_int_eq(evbus_event_set_data(bin, bytes, sizeof bytes,
                                          "application/octet-stream"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, bin), EVBUS_OK);

    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, 2, WAIT_MS), 2);
    /* the last one seen is the binary event (ordered or not, check both) */
    ck_assert_ptr_nonnull(c.last);
    const evbus_event_t *want =
        strcmp(evbus_event_id(c.last), evbus_event_id(bin)) == 0 ? bin : ev;
    ck_assert_msg(evbus_event_equal(c.last, want),
                  "event changed on the way through %s", conf_url);
    ck_assert_int_eq(c.duplicates, 0);
    ck_assert(strset_has(&c.ids, evbus_event_id(ev)));
    ck_assert(strset_has(&c.ids, evbus_event_id(bin)));
    evbus_event_free(ev);
    evbus_event_free(bin);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

START_TEST(ten_thousand_none_lost)
{
    enum { N = 10000 };
    char topic[128];
    unique_topic(topic, sizeof topic, "tenk");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", collector_handler, &c));
    publish_events(bus, topic, 0, N, PUBLISH_ASYNC);
    ck_assert_int_eq(evbus_flush(bus, WAIT_MS), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, N, 4 * WAIT_MS), N);
    ck_assert_int_eq((int)c.ids.len, N);
    ck_assert_int_eq(c.duplicates, 0);
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    evbus_metrics_get(bus, &m);
    ck_assert_uint_ge(m.published, N);
    ck_assert_uint_eq(m.publish_failed, 0);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

typedef struct {
    evbus_t *bus;
    const char *topic;
    int base, count;
    int failures;
} pub_job_t;

static void *publisher_thread(void *arg)
{
    pub_job_t *j = arg;
    for (int i = 0; i < j->count; i++) {
        evbus_event_t *ev = evbus_event_new("conf.test.event", "/conf/pub");
        char seq[16];
        snprintf(seq, sizeof seq, "%d", j->base + i);
        evbus_event_set_ext(ev, "seq", seq);
        /* mix both publish paths */
        int rc = (i % 2) ? evbus_publish(j->bus, j->topic, ev)
                         : evbus_publish_async(j->bus, j->topic, ev, NULL,
                                               NULL);
        if (rc != EVBUS_OK)
            j->failures++;
        evbus_event_free(ev);
    }
    return NULL;
}

START_TEST(four_concurrent_publishers)
{
    enum { THREADS = 4, EACH = 1000 };
    char topic[128];
    unique_topic(topic, sizeof topic, "concurrent");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", collector_handler, &c));
    pthread_t th[THREADS];
    pub_job_t jobs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (pub_job_t){bus, topic, t * EACH, EACH, 0};
        pthread_create(&th[t], NULL, publisher_thread, &jobs[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(jobs[t].failures, 0);
    }
    ck_assert_int_eq(evbus_flush(bus, WAIT_MS), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, THREADS * EACH, 2 * WAIT_MS),
                     THREADS * EACH);
    ck_assert_int_eq(c.duplicates, 0);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

START_TEST(two_groups_each_get_everything)
{
    enum { N = 200 };
    char topic[128];
    unique_topic(topic, sizeof topic, "twogroups");
    evbus_t *bus = open_bus();
    collector_t a, b;
    collector_init(&a, COLLECT_ACK);
    collector_init(&b, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "group-a", collector_handler, &a));
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "group-b", collector_handler, &b));
    publish_events(bus, topic, 0, N, PUBLISH_SYNC);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &a, acked, N, WAIT_MS), N);
    ck_assert_int_eq(poll_until(buses, &b, acked, N, WAIT_MS), N);
    ck_assert_int_eq(a.duplicates + b.duplicates, 0);
    evbus_close(bus);
    collector_free(&a);
    collector_free(&b);
}
END_TEST

START_TEST(group_members_share_without_duplicates)
{
    enum { N = 1000 };
    char topic[128];
    unique_topic(topic, sizeof topic, "share");
    evbus_t *m1 = open_bus(), *m2 = open_bus();
    collector_t c; /* one collector for both members: duplicates show */
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(m1, topic, "shared", collector_handler, &c));
    ck_assert_ptr_nonnull(
        evbus_subscribe(m2, topic, "shared", collector_handler, &c));
    publish_events(m1, topic, 0, N, PUBLISH_ASYNC);
    ck_assert_int_eq(evbus_flush(m1, WAIT_MS), EVBUS_OK);
    evbus_t *buses[] = {m1, m2, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, N, 2 * WAIT_MS), N);
    poll_for(buses, 300); /* nothing more may arrive */
    ck_assert_int_eq(c.acked, N);
    ck_assert_int_eq(c.duplicates, 0);
    evbus_close(m1);
    evbus_close(m2);
    collector_free(&c);
}
END_TEST

/* Subscribes a collector to the dead-letter topic of topic. */
static evbus_sub_t *watch_dlq(evbus_t *bus, const char *topic,
                              collector_t *dlq)
{
    char dlq_topic[160];
    snprintf(dlq_topic, sizeof dlq_topic, "%s.dlq", topic);
    collector_init(dlq, COLLECT_ACK);
    evbus_sub_t *s =
        evbus_subscribe(bus, dlq_topic, "dlq-watch", collector_handler, dlq);
    ck_assert_ptr_nonnull(s);
    return s;
}

START_TEST(retry_then_dead_letter_after_max_attempts)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "retrydlq");
    evbus_t *bus = open_bus();
    collector_t c, dlq;
    watch_dlq(bus, topic, &dlq);
    collector_init(&c, COLLECT_RETRY_N);
    c.retry_n = 1000; /* always RETRY */
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 3);
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, topic, "g", &o, collector_handler, &c, NULL, 0));
    evbus_event_t *ev = make_event(7);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &dlq, acked, 1, WAIT_MS), 1);
    poll_for(buses, 300);
    ck_assert_int_eq(collector_calls(&c), 3);
    ck_assert_int_eq(c.max_attempt, 3);
    const evbus_event_t *dl = dlq.last;
    ck_assert_str_eq(evbus_event_id(dl), evbus_event_id(ev));
    ck_assert_str_eq(evbus_event_type(dl), evbus_event_type(ev));
    ck_assert_str_eq(evbus_event_source(dl), evbus_event_source(ev));
    ck_assert_str_eq(evbus_event_ext(dl, "seq"), "7");
    ck_assert_str_eq((const char *)evbus_event_data(dl), "{\"seq\":7}");
    ck_assert_str_eq(evbus_event_ext(dl, "dlqattempts"), "3");
    ck_assert_str_eq(evbus_event_ext(dl, "dlqtopic"), topic);
    ck_assert_ptr_nonnull(strstr(evbus_event_ext(dl, "dlqreason"), "RETRY"));
    evbus_event_free(ev);
    evbus_close(bus);
    collector_free(&c);
    collector_free(&dlq);
}
END_TEST

START_TEST(retry_redelivers_then_succeeds)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "retryok");
    evbus_t *bus = open_bus();
    collector_t c, dlq;
    watch_dlq(bus, topic, &dlq);
    collector_init(&c, COLLECT_RETRY_N);
    c.retry_n = 2;
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 5);
    evbus_sub_t *sub =
        evbus_subscribe_opts(bus, topic, "g", &o, collector_handler, &c, NULL, 0);
    ck_assert_ptr_nonnull(sub);
    publish_events(bus, topic, 0, 10, PUBLISH_SYNC);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, 10, WAIT_MS), 10);
    poll_for(buses, 200);
    ck_assert_int_eq(c.calls, 30); /* two RETRYs and one ACK each */
    ck_assert_int_eq(c.max_attempt, 3);
    ck_assert_int_eq(dlq.calls, 0);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    evbus_sub_metrics_get(sub, &m);
    ck_assert_uint_eq(m.delivered, 30);
    ck_assert_uint_eq(m.retried, 20);
    ck_assert_uint_eq(m.acked, 10);
    ck_assert_uint_eq(m.dead_lettered, 0);
    evbus_close(bus);
    collector_free(&c);
    collector_free(&dlq);
}
END_TEST

START_TEST(retry_does_not_block_other_events)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "noblock");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_RETRY_N);
    c.retry_n = 1; /* every event needs a second attempt */
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    /* A backoff far beyond the hang guard: an event waiting for its retry
     * that held up the others would hang this test, whatever the speed of
     * the machine. (The retry itself is retry_then_ack's business.) */
    retry.initial_ms = retry.max_ms = 3600 * 1000;
    retry.jitter = EVBUS_JITTER_NONE;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, topic, "g", &o, collector_handler, &c, NULL, 0));
    publish_events(bus, topic, 0, 20, PUBLISH_SYNC);
    evbus_t *buses[] = {bus, NULL};
    /* Every event reaches the handler while the first ones wait. A broker
     * may hand an event out again by itself (at least once), so the count
     * is of distinct events, not of calls. */
    ck_assert_int_eq(poll_until(buses, &c, collector_distinct, 20, WAIT_MS),
                     20);
    ck_assert_int_ge(collector_calls(&c), 20);
    evbus_close(bus); /* gives the waiting events back to the broker */
    collector_free(&c);
}
END_TEST

START_TEST(drop_dead_letters_at_once)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "drop");
    evbus_t *bus = open_bus();
    collector_t c, dlq;
    watch_dlq(bus, topic, &dlq);
    collector_init(&c, COLLECT_DROP);
    evbus_sub_t *sub = evbus_subscribe(bus, topic, "g", collector_handler, &c);
    ck_assert_ptr_nonnull(sub);
    evbus_event_t *ev = make_event(1);
    ck_assert_int_eq(evbus_event_set_ext(ev, "tenant", "acme"), EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &dlq, acked, 1, WAIT_MS), 1);
    poll_for(buses, 200);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_str_eq(evbus_event_id(dlq.last), evbus_event_id(ev));
    ck_assert_str_eq(evbus_event_ext(dlq.last, "tenant"), "acme");
    ck_assert_str_eq(evbus_event_ext(dlq.last, "dlqattempts"), "1");
    ck_assert_ptr_nonnull(
        strstr(evbus_event_ext(dlq.last, "dlqreason"), "DROP"));
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    evbus_sub_metrics_get(sub, &m);
    ck_assert_uint_eq(m.dead_lettered, 1);
    evbus_event_free(ev);
    evbus_close(bus);
    collector_free(&c);
    collector_free(&dlq);
}
END_TEST

START_TEST(undecodable_payload_goes_to_dlq)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "undecodable");
    evbus_t *bus = open_bus();
    collector_t c, dlq;
    watch_dlq(bus, topic, &dlq);
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", collector_handler, &c));
    const char garbage[] = "{\"specversion\": \"1.0\", truncated";
    ck_assert_int_eq(evbus_publish_raw(bus, topic, garbage, strlen(garbage)),
                     EVBUS_OK);
    const char *noid = "{\"specversion\":\"1.0\",\"type\":\"a.b.c\","
                       "\"source\":\"/x\"}";
    ck_assert_int_eq(evbus_publish_raw(bus, topic, noid, strlen(noid)),
                     EVBUS_OK);
    evbus_event_t *good = make_event(1); /* still flows after the bad ones */
    ck_assert_int_eq(evbus_publish(bus, topic, good), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &dlq, acked, 2, WAIT_MS), 2);
    ck_assert_int_eq(poll_until(buses, &c, acked, 1, WAIT_MS), 1);
    poll_for(buses, 200);
    ck_assert_int_eq(c.calls, 1); /* the handler never saw the bad bytes */
    ck_assert_str_eq(evbus_event_type(dlq.last),
                     "evbus.deadletter.undecodable");
    ck_assert_ptr_nonnull(
        strstr(evbus_event_ext(dlq.last, "dlqreason"), "undecodable"));
    ck_assert_str_eq(evbus_event_ext(dlq.last, "dlqtopic"), topic);
    /* the raw bytes survive in the dead letter */
    size_t len = evbus_event_data_len(dlq.last);
    ck_assert(len == strlen(noid) || len == strlen(garbage));
    const char *data = evbus_event_data(dlq.last);
    ck_assert(memcmp(data, noid, len) == 0 || memcmp(data, garbage, len) == 0);
    evbus_event_free(good);
    evbus_close(bus);
    collector_free(&c);
    collector_free(&dlq);
}
END_TEST

START_TEST(topics_are_isolated)
{
    char ta[128], tb[128];
    unique_topic(ta, sizeof ta, "iso-a");
    unique_topic(tb, sizeof tb, "iso-b");
    evbus_t *bus = open_bus();
    collector_t a, b;
    collector_init(&a, COLLECT_ACK);
    collector_init(&b, COLLECT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, ta, "g", collector_handler, &a));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, tb, "g", collector_handler, &b));
    publish_events(bus, ta, 0, 50, PUBLISH_SYNC);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &a, acked, 50, WAIT_MS), 50);
    poll_for(buses, 300);
    ck_assert_int_eq(collector_calls(&b), 0);
    evbus_close(bus);
    collector_free(&a);
    collector_free(&b);
}
END_TEST

START_TEST(close_drains_pending_publishes)
{
    enum { N = 1000 };
    char topic[128];
    unique_topic(topic, sizeof topic, "drain");
    evbus_t *sub_bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(sub_bus, topic, "g", collector_handler, &c));
    evbus_t *buses[] = {sub_bus, NULL};
    poll_for(buses, 100);
    evbus_t *pub = open_bus();
    publish_events(pub, topic, 0, N, PUBLISH_ASYNC);
    evbus_close(pub); /* no flush: close must deliver them */
    ck_assert_int_eq(poll_until(buses, &c, acked, N, 2 * WAIT_MS), N);
    evbus_close(sub_bus);
    collector_free(&c);
}
END_TEST

static atomic_int in_handler;

static evbus_result_t slow_handler(const evbus_event_t *ev, void *opaque)
{
    collector_t *c = opaque;
    in_handler = 1;
    usleep(300 * 1000);
    collector_handler(ev, c);
    return EVBUS_ACK;
}

static void *run_thread(void *arg)
{
    evbus_run(arg);
    return NULL;
}

START_TEST(close_waits_for_running_handler)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "closewait");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", slow_handler, &c));
    evbus_event_t *ev = make_event(1);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    pthread_t th;
    in_handler = 0;
    pthread_create(&th, NULL, run_thread, bus);
    for (uint64_t guard = now_ms() + WAIT_MS; !in_handler && now_ms() < guard;)
        usleep(1000);
    ck_assert_msg(in_handler, "handler never started");
    evbus_close(bus); /* must wait for the handler to return */
    ck_assert_int_eq(collector_acked(&c), 1);
    pthread_join(th, NULL);
    collector_free(&c);
}
END_TEST

START_TEST(unsubscribe_stops_delivery)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "unsub");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    evbus_sub_t *sub = evbus_subscribe(bus, topic, "g", collector_handler, &c);
    ck_assert_ptr_nonnull(sub);
    evbus_event_t *ev = make_event(1);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, 1, WAIT_MS), 1);
    ck_assert_int_eq(evbus_unsubscribe(sub), EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    poll_for(buses, 300);
    ck_assert_int_eq(collector_calls(&c), 1);
    evbus_event_free(ev);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

START_TEST(new_group_reads_history)
{
    enum { N = 50 };
    char topic[128];
    unique_topic(topic, sizeof topic, "history");
    evbus_t *bus = open_bus();
    publish_events(bus, topic, 0, N, PUBLISH_SYNC);
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "late-group", collector_handler, &c));
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, N, WAIT_MS), N);
    ck_assert_int_eq(c.duplicates, 0);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

START_TEST(partitionkey_order_is_kept)
{
    enum { N = 1000, KEYS = 16 };
    char topic[128];
    unique_topic(topic, sizeof topic, "order");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", collector_handler, &c));
    for (int i = 0; i < N; i++) {
        evbus_event_t *ev = make_event(i);
        char key[16];
        snprintf(key, sizeof key, "key-%d", i % KEYS);
        ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", key),
                         EVBUS_OK);
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, WAIT_MS), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, N, 2 * WAIT_MS), N);
    ck_assert_int_eq(c.nkeys, KEYS);
    ck_assert_int_eq(c.order_violations, 0);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

START_TEST(reopen_continues_where_group_stopped)
{
    enum { N = 100 };
    char topic[128];
    unique_topic(topic, sizeof topic, "reopen");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "durable", collector_handler, &c));
    publish_events(bus, topic, 0, N, PUBLISH_SYNC);
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &c, acked, N, WAIT_MS), N);
    evbus_close(bus);

    /* Published while no member of the group is running. */
    bus = open_bus();
    publish_events(bus, topic, N, 2 * N, PUBLISH_SYNC);
    evbus_close(bus);

    bus = open_bus();
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "durable", collector_handler, &c));
    buses[0] = bus;
    ck_assert_int_eq(poll_until(buses, &c, acked, 2 * N, WAIT_MS), 2 * N);
    poll_for(buses, 300);
    ck_assert_int_eq(c.acked, 2 * N); /* nothing acked came back */
    ck_assert_int_eq(c.duplicates, 0);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

static void count_delivery(const evbus_event_t *ev, int err, void *opaque)
{
    int *outcomes = opaque;
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(evbus_event_type(ev), "conf.test.event");
    outcomes[err == EVBUS_OK ? 0 : 1]++;
}

START_TEST(delivery_callback_runs_once_per_publish)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "dr");
    evbus_t *bus = open_bus();
    int outcomes[2] = {0, 0};
    for (int i = 0; i < 100; i++) {
        evbus_event_t *ev = make_event(i);
        ck_assert_int_eq(
            evbus_publish_async(bus, topic, ev, count_delivery, outcomes),
            EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, WAIT_MS), EVBUS_OK);
    ck_assert_int_eq(outcomes[0], 100);
    ck_assert_int_eq(outcomes[1], 0);
    evbus_close(bus);
}
END_TEST

/* ----------------------------------------------------------- the cases */

size_t conformance_cases(conf_case_t *out, size_t max)
{
    const conf_case_t cases[] = {
        {"roundtrip_all_attributes", roundtrip_all_attributes, 0, 0, NULL, 0},
        {"ten_thousand_none_lost", ten_thousand_none_lost, 0, 0, NULL, 0},
        {"four_concurrent_publishers", four_concurrent_publishers, 0, 0, NULL, 0},
        {"two_groups_each_get_everything", two_groups_each_get_everything, 0,
         0, NULL, 0},
        {"group_members_share_without_duplicates",
         group_members_share_without_duplicates, 0, 0, NULL, 0},
        {"retry_then_dead_letter_after_max_attempts",
         retry_then_dead_letter_after_max_attempts, 0, 0, NULL, 0},
        {"retry_redelivers_then_succeeds", retry_redelivers_then_succeeds, 0,
         0, NULL, 0},
        {"retry_does_not_block_other_events",
         retry_does_not_block_other_events, 0, 0, NULL, 0},
        {"drop_dead_letters_at_once", drop_dead_letters_at_once, 0, 0, NULL, 0},
        {"undecodable_payload_goes_to_dlq", undecodable_payload_goes_to_dlq,
         0, 0, "backend cannot carry raw bytes", EVBUS_FEAT_NO_RAW},
        {"topics_are_isolated", topics_are_isolated, 0, 0, NULL, 0},
        {"close_drains_pending_publishes", close_drains_pending_publishes, 0,
         0, NULL, 0},
        {"close_waits_for_running_handler", close_waits_for_running_handler,
         0, 0, NULL, 0},
        {"unsubscribe_stops_delivery", unsubscribe_stops_delivery, 0, 0,
         NULL, 0},
        {"delivery_callback_runs_once_per_publish",
         delivery_callback_runs_once_per_publish, 0, 0, NULL, 0},
        {"new_group_reads_history", new_group_reads_history,
         EVBUS_FEAT_PERSISTENT, 0, "backend is not persistent", 0},
        {"reopen_continues_where_group_stopped",
         reopen_continues_where_group_stopped, EVBUS_FEAT_PERSISTENT, 0,
         "backend is not persistent", 0},
        {"partitionkey_order_is_kept", partitionkey_order_is_kept, 0,
         EVBUS_FEAT_ORDERED | EVBUS_FEAT_ORDERED_BY_KEY,
         "backend promises no order", 0},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = cases[i];
    return n < max ? n : max;
}

