#include "kafka_test_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac,
                      const char *buf)
{
    (void)rk;
    if (level <= 3 && getenv("KT_VERBOSE"))
        fprintf(stderr, "rdkafka %s: %s\n", fac, buf);
}

void kt_mock_start(kt_mock_t *m, int nbrokers, const char *extra)
{
    memset(m, 0, sizeof *m);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(m->rk != NULL, "mock handle: %s", err);
    m->mc = rd_kafka_mock_cluster_new(m->rk, nbrokers);
    ck_assert_ptr_nonnull(m->mc);
    snprintf(m->brokers, sizeof m->brokers, "%s",
             rd_kafka_mock_cluster_bootstraps(m->mc));
    snprintf(m->url, sizeof m->url,
             "kafka://%s?kafka.consumer.session.timeout.ms=6000%s",
             m->brokers, extra ? extra : "");
    if (getenv("KT_VERBOSE"))
        evbus_set_log(evbus_log_stderr, EVBUS_LOG_INFO, NULL);
}

void kt_mock_stop(kt_mock_t *m)
{
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    memset(m, 0, sizeof *m);
}

void kt_topic(char *buf, size_t n, const char *name)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "kt.%s.%ld%06ld.%d.%u", name, (long)ts.tv_sec,
             ts.tv_nsec / 1000, (int)getpid(), counter++);
}

evbus_event_t *kt_event(int seq)
{
    evbus_event_t *ev = evbus_event_new("kafka.test.event", "/tests/kafka");
    ck_assert_ptr_nonnull(ev);
    char buf[64];
    snprintf(buf, sizeof buf, "%d", seq);
    ck_assert_int_eq(evbus_event_set_ext(ev, "seq", buf), EVBUS_OK);
    snprintf(buf, sizeof buf, "{\"seq\":%d}", seq);
    ck_assert_int_eq(evbus_event_set_data_json(ev, buf), EVBUS_OK);
    return ev;
}

void kt_collector_init(kt_collector_t *c, kt_mode_t mode)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->mode = mode;
    c->retry_seq = -1;
}

void kt_collector_free(kt_collector_t *c)
{
    evbus_event_free(c->last);
    pthread_mutex_destroy(&c->mu);
}

evbus_result_t kt_handler(const evbus_event_t *ev, void *opaque)
{
    kt_collector_t *c = opaque;
    const char *s = evbus_event_ext(ev, "seq");
    int seq = s ? atoi(s) : -1;
    evbus_result_t r = EVBUS_ACK;
    pthread_mutex_lock(&c->mu);
    c->calls++;
    if (c->mode == KT_RETRY_SEQ && seq == c->retry_seq)
        r = EVBUS_RETRY;
    if (c->mode == KT_STOP_AFTER && c->acked >= c->stop_after)
        r = EVBUS_RETRY;
    if (r == EVBUS_ACK) {
        c->acked++;
        if (seq >= 0 && seq < KT_MAX_SEQ) {
            if (c->seen[seq])
                c->dups++;
            if (c->seen[seq] < 255)
                c->seen[seq]++;
        }
    }
    evbus_event_free(c->last);
    c->last = evbus_event_clone(ev);
    pthread_mutex_unlock(&c->mu);
    return r;
}

int kt_distinct(kt_collector_t *c, int n)
{
    int d = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < n && i < KT_MAX_SEQ; i++)
        d += c->seen[i] != 0;
    pthread_mutex_unlock(&c->mu);
    return d;
}

int kt_acked(kt_collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    int a = c->acked;
    pthread_mutex_unlock(&c->mu);
    return a;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kt_poll_until(evbus_t **buses, kt_collector_t *c,
                  int (*cond)(kt_collector_t *), int want, int ms)
{
    long long end = now_ms() + ms;
    int v;
    while ((v = cond(c)) < want && now_ms() < end)
        for (evbus_t **b = buses; *b; b++)
            evbus_poll(*b, 20);
    return v;
}

rd_kafka_t *kt_raw_producer(const char *brokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers,
                                       err, sizeof err),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    return rk;
}

rd_kafka_t *kt_raw_consumer(const char *brokers, const char *group,
                            const char *topic)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    const char *kv[][2] = {{"bootstrap.servers", brokers},
                           {"group.id", group},
                           {"auto.offset.reset", "earliest"},
                           {"session.timeout.ms", "6000"},
                           {"enable.auto.commit", "false"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        ck_assert_int_eq(
            rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err),
            RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    rd_kafka_poll_set_consumer(rk);
    if (topic) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
        ck_assert_int_eq(rd_kafka_subscribe(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
    }
    return rk;
}

rd_kafka_message_t *kt_raw_next(rd_kafka_t *consumer, int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        if (!m)
            continue;
        if (!m->err)
            return m;
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

int64_t kt_committed(const char *brokers, const char *group,
                     const char *topic, int32_t partition)
{
    rd_kafka_t *rk = kt_raw_consumer(brokers, group, NULL);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 10000);
    ck_assert_msg(err == 0, "committed: %s", rd_kafka_err2str(err));
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return off;
}

long long kt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

evbus_t *kt_open(const char *url)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "open %s: %s", url, err);
    return bus;
}

void kt_publish_range(evbus_t *bus, const char *topic, int from, int to,
                      int flush_ms)
{
    for (int i = from; i < to; i++) {
        evbus_event_t *ev = kt_event(i);
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, flush_ms), EVBUS_OK);
}
