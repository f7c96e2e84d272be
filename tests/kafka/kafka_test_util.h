/* Helpers for the kafka:// tests: an in-process mock cluster, a collector
 * that records which "seq" numbers a handler saw, and raw librdkafka
 * clients to look at (or write) records without libevbus. */
#ifndef EVBUS_KAFKA_TEST_UTIL_H
#define EVBUS_KAFKA_TEST_UTIL_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdbool.h>

#include <evbus/evbus.h>

#define KT_MAX_SEQ 30000

typedef struct kt_mock {
    rd_kafka_t *rk;               /* the handle that owns the cluster */
    rd_kafka_mock_cluster_t *mc;
    char brokers[512];
    char url[1024];               /* kafka://brokers?<test options> */
} kt_mock_t;

/* Starts a cluster with n brokers; url gets the test options (short
 * session timeout) and `extra` ("&k=v..." or ""). */
void kt_mock_start(kt_mock_t *m, int nbrokers, const char *extra);
void kt_mock_stop(kt_mock_t *m);

/* A unique topic name. */
void kt_topic(char *buf, size_t n, const char *name);

/* An event with extension seq=<seq> and JSON data {"seq":N}. */
evbus_event_t *kt_event(int seq);

/* Monotonic milliseconds, for hang guards. */
long long kt_now_ms(void);

/* evbus_open, failing the test with the reason when it fails. */
evbus_t *kt_open(const char *url);

/* Publishes kt_event(from .. to-1) asynchronously, then flushes (the
 * flush may take flush_ms before the test fails). */
void kt_publish_range(evbus_t *bus, const char *topic, int from, int to,
                      int flush_ms);

typedef enum { KT_ACK, KT_RETRY_SEQ, KT_STOP_AFTER } kt_mode_t;

typedef struct kt_collector {
    pthread_mutex_t mu;
    kt_mode_t mode;
    int retry_seq;              /* KT_RETRY_SEQ: this seq always RETRYs */
    int stop_after;             /* KT_STOP_AFTER: RETRY once this many acked */
    int calls, acked, dups;
    unsigned char seen[KT_MAX_SEQ]; /* acks per seq (saturating) */
    evbus_event_t *last;
} kt_collector_t;

void kt_collector_init(kt_collector_t *c, kt_mode_t mode);
void kt_collector_free(kt_collector_t *c);
evbus_result_t kt_handler(const evbus_event_t *ev, void *opaque);
/* How many distinct seq in [0, n) were acked. */
int kt_distinct(kt_collector_t *c, int n);

/* Polls buses (NULL-terminated) until cond(c) >= want or ms pass.
 * Returns the last value of cond. */
int kt_poll_until(evbus_t **buses, kt_collector_t *c,
                  int (*cond)(kt_collector_t *), int want, int ms);
int kt_acked(kt_collector_t *c);

/* Raw clients. */
rd_kafka_t *kt_raw_producer(const char *brokers);
rd_kafka_t *kt_raw_consumer(const char *brokers, const char *group,
                            const char *topic);
/* The next record (caller destroys) or NULL after ms. */
rd_kafka_message_t *kt_raw_next(rd_kafka_t *consumer, int ms);
/* Committed offset of group for topic/partition (-1001 when none). */
int64_t kt_committed(const char *brokers, const char *group,
                     const char *topic, int32_t partition);

#endif
