/*
 * kafka:// publishing: one idempotent producer per bus.
 *
 * Every record carries a kafka_pub_t as its opaque. A thread serves the
 * producer's delivery reports (rd_kafka_poll); the report completes the
 * publish: a synchronous caller waiting on its condition variable, or the
 * core's done(token, err) for publish_async. A delivery report with an
 * error is a failed publish.
 */
#include <errno.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka_internal.h"

typedef struct kafka_pub {
    bool sync;
    /* publish_async */
    evbus_publish_done_fn done;
    void *token;
    /* publish: the waiting caller */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool finished;
    int err;
} kafka_pub_t;

/*
 * A record's opaque is either a kafka_pub_t (low bit clear) or, for the
 * common publish_async whose done function is the bus's usual one, the
 * core's token with the low bit set: no allocation per record. Tokens are
 * heap pointers, so their low bit is free.
 */
#define TAG_ASYNC ((uintptr_t)1)

/* A record left the queue: wake publishers waiting for room. (Waiting for
 * outstanding publishes is the core's job: it counts them itself.) */
static void wake_room_waiters(kafka_bus_t *kb)
{
    if (atomic_load_explicit(&kb->space_waiters, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&kb->mu);
        pthread_cond_broadcast(&kb->cv);
        pthread_mutex_unlock(&kb->mu);
    }
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque)
{
    kafka_bus_t *kb = opaque;
    int err = evbus__kafka_map_err(m->err);
    if ((uintptr_t)m->_private & TAG_ASYNC) {
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
            m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
            evbus_host_log(kb->host, EVBUS_LOG_WARN,
                           "delivery to %s failed: %s",
                           rd_kafka_topic_name(m->rkt),
                           rd_kafka_err2str(m->err));
        kb->usual_done((void *)((uintptr_t)m->_private & ~TAG_ASYNC), err);
        wake_room_waiters(kb);
        return;
    }
    kafka_pub_t *p = m->_private;
    if (!p)
        return;
    if (m->err && m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
        m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        evbus_host_log(kb->host, EVBUS_LOG_WARN,
                       "delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                       rd_kafka_err2str(m->err));
    if (p->sync) {
        pthread_mutex_lock(&p->mu);
        p->err = err;
        p->finished = true;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->done(p->token, err);
    free(p);
    wake_room_waiters(kb);
    (void)rk;
}

/* Serves delivery reports. Under load (a poll served many reports) it
 * lets the next ones gather for a moment instead of waking once per
 * produce response: a thread switch per few records cost more than the
 * reports themselves. A lone synchronous publish is served at once. */
#define DR_BUSY 32
#define DR_GATHER_US 1000

#define DR_STANDBY_US 2000

static void *dr_thread_main(void *arg)
{
    kafka_bus_t *kb = arg;
    unsigned long seen = atomic_load(&kb->app_polls);
    while (!atomic_load(&kb->dr_stop)) {
        /* While the application keeps publishing asynchronously it serves
         * the reports itself (see evbus__kafka_publish_async); a second thread
         * waking on the same queue only fights it for the queue's lock and
         * for the CPU. Stand by until it stops, then serve what is left. */
        unsigned long now = atomic_load_explicit(&kb->app_polls,
                                                 memory_order_relaxed);
        if (now != seen) {
            seen = now;
            usleep(DR_STANDBY_US);
            continue;
        }
        int served = rd_kafka_poll(kb->producer, 100);
        if (served >= DR_BUSY)
            usleep(DR_GATHER_US);
    }
    return NULL;
}

int evbus__kafka_producer_open(kafka_bus_t *kb, rd_kafka_conf_t *pconf,
                               char *errstr, size_t n)
{
    rd_kafka_conf_set_opaque(pconf, kb);
    rd_kafka_conf_set_dr_msg_cb(pconf, on_delivery);
    evbus__kafka_set_log_callbacks(pconf);
    char why[512];
    kb->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, why, sizeof why);
    if (!kb->producer) {
        rd_kafka_conf_destroy(pconf);
        snprintf(errstr, n, "kafka: cannot create the producer: %s", why);
        return EVBUS_EOPTION;
    }
    atomic_store(&kb->dr_stop, false);
    if (pthread_create(&kb->dr_thread, NULL, dr_thread_main, kb) != 0) {
        snprintf(errstr, n, "kafka: cannot start the delivery thread");
        return EVBUS_ENOMEM;
    }
    kb->dr_started = true;
    return EVBUS_OK;
}

void evbus__kafka_producer_close(kafka_bus_t *kb)
{
    if (!kb->producer)
        return;
    /* The core flushed already (close_timeout_ms). Whatever is left is
     * purged: its delivery reports fail with a purge error, which reaches
     * done() as EVBUS_ETIMEDOUT. */
    rd_kafka_purge(kb->producer,
                   RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(kb->producer, 5000);
    if (kb->dr_started) {
        atomic_store(&kb->dr_stop, true);
        pthread_join(kb->dr_thread, NULL);
        kb->dr_started = false;
    }
    /* Serve any report that arrived after the thread stopped. */
    while (rd_kafka_outq_len(kb->producer) > 0 &&
           rd_kafka_poll(kb->producer, 100) > 0)
        ;
    rd_kafka_destroy(kb->producer);
    kb->producer = NULL;
}

/* Waits up to 10 ms for a delivery report to free queue room. */
static void wait_for_room(kafka_bus_t *kb)
{
    atomic_fetch_add(&kb->space_waiters, 1);
    pthread_mutex_lock(&kb->mu);
    evbus__cond_wait_ms(&kb->cv, &kb->mu, 10);
    pthread_mutex_unlock(&kb->mu);
    atomic_fetch_sub(&kb->space_waiters, 1);
}

/* Starts one record. p becomes the record's opaque on success. */
static int produce(kafka_bus_t *kb, const char *topic, const evbus_event_t *ev,
                   const void *payload, size_t len, void *p)
{
    if (atomic_load(&kb->closing))
        return EVBUS_ECLOSED;
    if (evbus__kafka_topic_check(topic) != EVBUS_OK) {
        evbus_host_log(kb->host, EVBUS_LOG_WARN,
                       "'%s' is not a Kafka topic name (1-249 of "
                       "[A-Za-z0-9._-])",
                       topic);
        return EVBUS_EINVAL;
    }
    const char *key = ev ? evbus_event_ext(ev, "partitionkey") : NULL;
    size_t keylen = key ? strlen(key) : 0;
    for (;;) {
        rd_kafka_resp_err_t err;
        if (!ev) { /* evbus_publish_raw: the bytes exactly as given */
            err = rd_kafka_producev(
                kb->producer, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_OPAQUE(p),
                RD_KAFKA_V_END);
        } else if (kb->mode == KAFKA_MODE_STRUCTURED) {
            err = rd_kafka_producev(
                kb->producer, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE((void *)payload, len),
                RD_KAFKA_V_KEY(key, keylen),
                RD_KAFKA_V_HEADER("content-type", KAFKA_CT_STRUCTURED,
                                  (ssize_t)strlen(KAFKA_CT_STRUCTURED)),
                RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
        } else {
            rd_kafka_headers_t *hdrs = evbus__kafka_wire_binary_headers(ev);
            if (!hdrs)
                return EVBUS_ENOMEM;
            err = rd_kafka_producev(
                kb->producer, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE((void *)evbus_event_data(ev),
                                 evbus_event_data_len(ev)),
                RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_HEADERS(hdrs),
                RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
            if (err) /* on failure the headers stay ours */
                rd_kafka_headers_destroy(hdrs);
        }
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return EVBUS_OK;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&kb->closing)) {
            evbus_host_log(kb->host, EVBUS_LOG_WARN,
                           "cannot produce to %s: %s", topic,
                           rd_kafka_err2str(err));
            return evbus__kafka_map_err(err);
        }
        /* The local queue is full: wait for delivery reports to make room
         * rather than failing a publish the broker could take. */
        wait_for_room(kb);
    }
}

int evbus__kafka_publish(void *priv, const char *topic, const evbus_event_t *ev,
                         const void *payload, size_t len)
{
    kafka_bus_t *kb = priv;
    kafka_pub_t p;
    memset(&p, 0, sizeof p);
    p.sync = true;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    int rc = produce(kb, topic, ev, payload, len, &p);
    if (rc == EVBUS_OK) {
        /* librdkafka reports every record within message.timeout.ms. */
        pthread_mutex_lock(&p.mu);
        while (!p.finished)
            pthread_cond_wait(&p.cv, &p.mu);
        rc = p.err;
        pthread_mutex_unlock(&p.mu);
    }
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    return rc;
}

int evbus__kafka_publish_async(void *priv, const char *topic,
                               const evbus_event_t *ev, const void *payload,
                               size_t len, evbus_publish_done_fn done,
                               void *token)
{
    kafka_bus_t *kb = priv;
    /* The first done function seen becomes the usual one (the core always
     * passes the same); others get a kafka_pub_t. */
    evbus_publish_done_fn expected = NULL;
    if (!atomic_load_explicit(&kb->usual_done, memory_order_acquire))
        atomic_compare_exchange_strong(&kb->usual_done, &expected, done);
    void *opaque;
    kafka_pub_t *p = NULL;
    if (done == atomic_load(&kb->usual_done) && token &&
        !((uintptr_t)token & TAG_ASYNC)) {
        opaque = (void *)((uintptr_t)token | TAG_ASYNC);
    } else {
        p = malloc(sizeof *p);
        if (!p)
            return EVBUS_ENOMEM;
        p->sync = false;
        p->done = done;
        p->token = token;
        opaque = p;
    }
    int rc = produce(kb, topic, ev, payload, len, opaque);
    if (rc != EVBUS_OK) {
        free(p);
        return rc;
    }
    /* Serve ready reports on the publishing thread, as a raw producer loop
     * does: the core's token is then freed by the thread that allocated
     * it, which spares malloc's arena lock a fight with the delivery
     * thread (that contention cost a third of the throughput). */
    rd_kafka_poll(kb->producer, 0);
    /* Only "it changed" matters to the delivery thread: no locked add. */
    atomic_store_explicit(
        &kb->app_polls,
        atomic_load_explicit(&kb->app_polls, memory_order_relaxed) + 1,
        memory_order_relaxed);
    return EVBUS_OK;
}

int evbus__kafka_flush(void *priv, int timeout_ms)
{
    kafka_bus_t *kb = priv;
    /* rd_kafka_flush also sends lingering batches at once. A report may
     * still be running its callback on the delivery thread when it returns;
     * the core waits for that (it counts every publish until done runs). */
    return rd_kafka_flush(kb->producer, timeout_ms) ? EVBUS_ETIMEDOUT
                                                     : EVBUS_OK;
}
