/*
 * kafka:// consuming: one high-level consumer per subscription.
 *
 * A thread polls the consumer, classifies each record (kafka_wire.c) and
 * appends it to a buffer that fetch() drains without blocking; it calls
 * evbus_host_notify after each batch. A full buffer (BUF_HIGH records)
 * makes the thread wait for fetch() to drain it; see backpressure().
 *
 * Offsets (at-least-once): enable.auto.offset.store=false; a partition's
 * records stay in an offset-ordered list until settled. settle(ACK) marks a
 * record and pops the acked prefix of the list; the offset after the last
 * popped record is stored (rd_kafka_offsets_store, coalesced until the next
 * fetch or poll round) and auto-committed. A record the core keeps for a
 * RETRY stays unacked at the head, so later offsets of its partition are
 * never committed past it. settle(RELEASE) stores nothing: the record comes
 * back after a restart or rebalance.
 *
 * Rebalances (eager by default, cooperative handled): on revoke the
 * callback waits up to REVOKE_WAIT_MS for records the core is handling,
 * stores and synchronously commits what is safe, and detaches the revoked
 * partitions: buffered records are dropped (the new owner reads them from
 * the committed offset) and settles of records still in the core's hands
 * store nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_internal.h"

#define BUF_HIGH 20000      /* pause fetching at this many buffered records */
#define BUF_LOW 5000        /* and resume at this many */
#define POLL_BATCH 512      /* records taken per poll round */
#define REVOKE_WAIT_MS 1000 /* how long a revoke waits for running work */

/* ------------------------------------------------------------ records */

static void msg_free(kafka_msg_t *m)
{
    if (m->rkm)
        rd_kafka_message_destroy(m->rkm);
    evbus_event_free(m->event);
    free(m->decode_error);
    free(m);
}

static void part_unref(kafka_part_t *p)
{
    if (--p->refs == 0)
        free(p);
}

/* The attached state of partition id, created on first use. Locked. */
static kafka_part_t *part_get(kafka_sub_t *s, int32_t id)
{
    if (id < 0)
        return NULL;
    if ((size_t)id >= s->nparts) {
        size_t n = (size_t)id + 1 > s->nparts * 2 ? (size_t)id + 1
                                                  : s->nparts * 2;
        kafka_part_t **grown = realloc(s->parts, n * sizeof *grown);
        if (!grown)
            return NULL;
        memset(grown + s->nparts, 0, (n - s->nparts) * sizeof *grown);
        s->parts = grown;
        s->nparts = n;
    }
    if (!s->parts[id]) {
        kafka_part_t *p = calloc(1, sizeof *p);
        if (!p)
            return NULL;
        p->partition = id;
        p->refs = 1;
        p->pending_store = -1;
        s->parts[id] = p;
    }
    return s->parts[id];
}

/* Stores the coalesced offsets. Locked. */
static void flush_stores(kafka_sub_t *s)
{
    if (!s->stores_dirty)
        return;
    s->stores_dirty = false;
    int cnt = 0;
    for (size_t i = 0; i < s->nparts; i++)
        if (s->parts[i] && s->parts[i]->pending_store >= 0)
            cnt++;
    if (!cnt)
        return;
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(cnt);
    if (!l) {
        s->stores_dirty = true; /* try again next round */
        return;
    }
    for (size_t i = 0; i < s->nparts; i++) {
        kafka_part_t *p = s->parts[i];
        if (!p || p->pending_store < 0)
            continue;
        rd_kafka_topic_partition_list_add(l, s->topic, p->partition)->offset =
            p->pending_store;
        p->pending_store = -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(s->rk, l);
    if (err) {
        evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                       "storing offsets of %s (group %s) failed: %s", s->topic,
                       s->group, rd_kafka_err2str(err));
    } else {
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].err)
                evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                               "storing offset %lld of %s [%d] failed: %s",
                               (long long)l->elems[i].offset, s->topic,
                               (int)l->elems[i].partition,
                               rd_kafka_err2str(l->elems[i].err));
            else
                s->stored_total++;
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Pops the acked prefix of p's records; schedules the store. Locked. */
static void advance(kafka_sub_t *s, kafka_part_t *p)
{
    int64_t last = -1;
    while (p->head && p->head->state == KMSG_ACKED) {
        kafka_msg_t *m = p->head;
        p->head = m->next_part;
        if (!p->head)
            p->tail = NULL;
        last = m->offset;
        msg_free(m);
        p->refs--; /* still attached: never reaches 0 here */
    }
    if (last >= 0) {
        p->pending_store = last + 1;
        s->stores_dirty = true;
    }
}

/* Detaches p: frees every record the core does not hold. Locked; the
 * buffer must no longer contain p's records. */
static void part_detach(kafka_sub_t *s, kafka_part_t *p)
{
    p->revoked = true;
    if ((size_t)p->partition < s->nparts && s->parts[p->partition] == p)
        s->parts[p->partition] = NULL;
    kafka_msg_t *m = p->head;
    while (m) {
        kafka_msg_t *next = m->next_part;
        if (m->state != KMSG_HANDED) {
            msg_free(m);
            p->refs--;
        }
        m = next;
    }
    p->head = p->tail = NULL;
    part_unref(p); /* the attachment */
}

/* Drops buffered records of revoked partitions from the buffer. Locked. */
static void buffer_drop_revoked(kafka_sub_t *s)
{
    kafka_msg_t **pp = &s->ready_head, *last = NULL;
    while (*pp) {
        kafka_msg_t *m = *pp;
        if (m->part->revoked) {
            *pp = m->next_ready;
            s->ready_len--;
        } else {
            last = m;
            pp = &m->next_ready;
        }
    }
    s->ready_tail = last;
}

/* Detaches the partitions of list (NULL: all). Locked. */
static void revoke_locked(kafka_sub_t *s,
                          const rd_kafka_topic_partition_list_t *list)
{
    for (size_t i = 0; i < s->nparts; i++) {
        kafka_part_t *p = s->parts[i];
        if (!p)
            continue;
        bool hit = !list;
        for (int k = 0; list && k < list->cnt && !hit; k++)
            hit = list->elems[k].partition == p->partition &&
                  strcmp(list->elems[k].topic, s->topic) == 0;
        if (hit)
            p->revoked = true;
    }
    buffer_drop_revoked(s);
    for (size_t i = 0; i < s->nparts; i++)
        if (s->parts[i] && s->parts[i]->revoked)
            part_detach(s, s->parts[i]);
}

/* Waits (bounded) until the core has settled every record of the listed
 * partitions it holds, so their acks still count. */
static void wait_for_settles(kafka_sub_t *s,
                             const rd_kafka_topic_partition_list_t *list)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += REVOKE_WAIT_MS / 1000;
    end.tv_nsec += (long)(REVOKE_WAIT_MS % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int busy = 0;
        for (int k = 0; k < list->cnt; k++) {
            int32_t id = list->elems[k].partition;
            if (id >= 0 && (size_t)id < s->nparts && s->parts[id])
                busy += s->parts[id]->handed;
        }
        if (!busy ||
            pthread_cond_timedwait(&s->settled_cv, &s->mu, &end) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ rebalance */

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_sub_t *s = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        evbus_host_log(s->kb->host, EVBUS_LOG_INFO,
                       "%s (group %s): assigned %d partition(s)", s->topic,
                       s->group, parts->cnt);
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (s->paused)
            rd_kafka_pause_partitions(rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(rk);
        evbus_host_log(s->kb->host, EVBUS_LOG_INFO,
                       "%s (group %s): %s %d partition(s)", s->topic, s->group,
                       lost ? "lost" : "revoked", parts->cnt);
        if (!lost)
            wait_for_settles(s, parts);
        pthread_mutex_lock(&s->mu);
        if (!lost)
            flush_stores(s);
        revoke_locked(s, parts);
        pthread_mutex_unlock(&s->mu);
        if (!lost) {
            rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
            if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
                evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                               "%s (group %s): commit on revoke failed: %s",
                               s->topic, s->group, rd_kafka_err2str(cerr));
        }
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                       "%s (group %s): rebalance error: %s", s->topic,
                       s->group, rd_kafka_err2str(err));
        pthread_mutex_lock(&s->mu);
        revoke_locked(s, NULL);
        pthread_mutex_unlock(&s->mu);
        rd_kafka_assign(rk, NULL);
    }
    if (e) {
        evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                       "%s (group %s): incremental rebalance: %s", s->topic,
                       s->group, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/* ------------------------------------------------------------ poll thread */

static void consumer_error(kafka_sub_t *s, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    /* A topic nobody wrote to yet: the mock and brokers with auto-creation
     * create it; until then librdkafka reports it on every refresh. */
    int level = m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
                    ? EVBUS_LOG_DEBUG
                    : EVBUS_LOG_WARN;
    evbus_host_log(s->kb->host, level, "%s (group %s): consumer error: %s",
                   s->topic, s->group, rd_kafka_message_errstr(m));
}

/* Keeps the buffer bounded without pausing in the common case: while the
 * core is behind, wait for fetch() to drain it (polling the consumer at
 * least every WAIT_FULL_MS so rebalances are served). Only an application
 * that stops polling for STUCK_MS gets the assignment paused (pausing
 * purges librdkafka's prefetched data, which costs a refetch). */
#define WAIT_FULL_MS 500
#define STUCK_MS 5000

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void backpressure(kafka_sub_t *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->ready_len >= BUF_HIGH && !atomic_load(&s->stop)) {
        struct timespec end;
        clock_gettime(CLOCK_REALTIME, &end);
        end.tv_nsec += WAIT_FULL_MS * 1000000L;
        while (end.tv_nsec >= 1000000000L) {
            end.tv_sec++;
            end.tv_nsec -= 1000000000L;
        }
        s->room_waiting = true;
        while (s->ready_len > BUF_LOW && !atomic_load(&s->stop))
            if (pthread_cond_timedwait(&s->room_cv, &s->mu, &end) ==
                ETIMEDOUT)
                break;
        s->room_waiting = false;
    }
    size_t len = s->ready_len;
    pthread_mutex_unlock(&s->mu);
    long long now = mono_ms();
    if (len < BUF_HIGH)
        s->full_since = 0;
    else if (!s->full_since)
        s->full_since = now;
    bool pause = !s->paused && s->full_since && now - s->full_since > STUCK_MS;
    bool resume = s->paused && len <= BUF_LOW;
    if (!pause && !resume)
        return;
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(s->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause) {
        evbus_host_log(s->kb->host, EVBUS_LOG_INFO,
                       "%s (group %s): %zu records wait for the application; "
                       "pausing fetch",
                       s->topic, s->group, len);
        rd_kafka_pause_partitions(s->rk, l);
    } else {
        rd_kafka_resume_partitions(s->rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
    s->paused = pause;
}

/* Turns a consumed record into a buffer entry (decoding outside the lock).
 * Returns NULL when out of memory. */
static kafka_msg_t *make_record(rd_kafka_message_t *rkm)
{
    kafka_msg_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->rkm = rkm;
    m->offset = rkm->offset;
    char *why = NULL;
    int rc = kafka_wire_classify(rkm, &m->event, &why);
    if (rc == EVBUS_ENOMEM) {
        free(why);
        free(m);
        return NULL;
    }
    if (rc != EVBUS_OK)
        m->decode_error = why ? why : strdup("undecodable Kafka record");
    else if (!m->event && !rkm->payload)
        m->decode_error = strdup("record has no value (null or empty)");
    return m;
}

/* Appends a batch of records to the buffer and their partitions. */
static void buffer_batch(kafka_sub_t *s, rd_kafka_message_t **batch, int n)
{
    kafka_msg_t *recs[POLL_BATCH];
    for (int i = 0; i < n; i++)
        recs[i] = make_record(batch[i]);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) {
        kafka_msg_t *m = recs[i];
        kafka_part_t *p = part_get(s, batch[i]->partition);
        if (!m || !p) {
            /* Out of memory: the record cannot be tracked, so nothing of
             * its partition may be stored past it until reassignment. */
            evbus_host_log(s->kb->host, EVBUS_LOG_ERROR,
                           "%s [%d]: out of memory; offsets of this "
                           "partition frozen until it is reassigned",
                           s->topic, (int)batch[i]->partition);
            if (p && !p->head) {
                /* a released placeholder blocks the watermark */
                kafka_msg_t *ph = calloc(1, sizeof *ph);
                if (ph) {
                    ph->state = KMSG_RELEASED;
                    ph->part = p;
                    ph->offset = batch[i]->offset;
                    p->head = p->tail = ph;
                    p->refs++;
                }
            }
            if (m)
                msg_free(m);
            else
                rd_kafka_message_destroy(batch[i]);
            continue;
        }
        if (p->tail && m->offset <= p->tail->offset) {
            msg_free(m); /* already buffered (refetch): keep the first */
            continue;
        }
        m->part = p;
        p->refs++;
        if (p->tail)
            p->tail->next_part = m;
        else
            p->head = m;
        p->tail = m;
        if (s->ready_tail)
            s->ready_tail->next_ready = m;
        else
            s->ready_head = m;
        s->ready_tail = m;
        s->ready_len++;
    }
    flush_stores(s);
    pthread_mutex_unlock(&s->mu);
}

static void *poll_main(void *arg)
{
    kafka_sub_t *s = arg;
    rd_kafka_message_t *batch[POLL_BATCH];
    while (!atomic_load(&s->stop)) {
        backpressure(s);
        int n = 0;
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(s->rk, s->paused ? 20 : 100);
        while (m) {
            if (m->err) {
                consumer_error(s, m);
                rd_kafka_message_destroy(m);
            } else {
                batch[n++] = m;
            }
            if (n == POLL_BATCH)
                break;
            m = rd_kafka_consumer_poll(s->rk, 0);
        }
        if (n) {
            buffer_batch(s, batch, n);
            evbus_host_notify(s->kb->host);
        } else {
            pthread_mutex_lock(&s->mu);
            flush_stores(s);
            pthread_mutex_unlock(&s->mu);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ vtable */

static void sub_free(kafka_sub_t *s)
{
    if (s->rk)
        rd_kafka_destroy(s->rk);
    free(s->parts);
    free(s->topic);
    free(s->group);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->settled_cv);
    pthread_cond_destroy(&s->room_cv);
    free(s);
}

int kafka_subscribe(void *priv, const char *topic, const char *group,
                    void **bsub, char *errstr, size_t n)
{
    kafka_bus_t *kb = priv;
    if (kafka_topic_check(topic) != EVBUS_OK) {
        snprintf(errstr, n,
                 "kafka: '%s' is not a Kafka topic name (1-249 of "
                 "[A-Za-z0-9._-])",
                 topic);
        return EVBUS_EINVAL;
    }
    kafka_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return EVBUS_ENOMEM;
    s->kb = kb;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->settled_cv, NULL);
    pthread_cond_init(&s->room_cv, NULL);
    s->topic = strdup(topic);
    s->group = strdup(group);
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(kb->consumer_conf);
    char why[512];
    if (!s->topic || !s->group || !conf) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        sub_free(s);
        return EVBUS_ENOMEM;
    }
    if (rd_kafka_conf_set(conf, "group.id", group, why, sizeof why) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, n, "kafka: bad group '%s': %s", group, why);
        sub_free(s);
        return EVBUS_EINVAL;
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    kafka_set_log_callbacks(conf);
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!s->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, n, "kafka: cannot create a consumer: %s", why);
        sub_free(s);
        return EVBUS_EOPTION;
    }
    rd_kafka_poll_set_consumer(s->rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(s->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(errstr, n, "kafka: cannot subscribe to %s: %s", topic,
                 rd_kafka_err2str(err));
        sub_free(s);
        return kafka_map_err(err);
    }
    if (pthread_create(&s->thread, NULL, poll_main, s) != 0) {
        snprintf(errstr, n, "kafka: cannot start the consumer thread");
        rd_kafka_consumer_close(s->rk);
        sub_free(s);
        return EVBUS_ENOMEM;
    }
    s->thread_started = true;
    *bsub = s;
    return EVBUS_OK;
}

void kafka_unsubscribe(void *priv, void *bsub)
{
    (void)priv;
    kafka_sub_t *s = bsub;
    atomic_store(&s->stop, true);
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->room_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    /* Every fetched record was settled: store what is safe, let go of the
     * rest (unacked records are read again by the next owner), then leave
     * the group; the revoke callback and close commit the stored offsets. */
    pthread_mutex_lock(&s->mu);
    flush_stores(s);
    s->ready_head = s->ready_tail = NULL;
    s->ready_len = 0;
    for (size_t i = 0; i < s->nparts; i++)
        if (s->parts[i]) {
            kafka_part_t *p = s->parts[i];
            for (kafka_msg_t *m = p->head; m; m = m->next_part)
                if (m->state == KMSG_HANDED) /* not settled: contract */
                    m->state = KMSG_RELEASED;
            p->handed = 0;
            part_detach(s, p);
        }
    pthread_mutex_unlock(&s->mu);
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(s->rk);
    if (err)
        evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                       "%s (group %s): consumer close: %s", s->topic, s->group,
                       rd_kafka_err2str(err));
    sub_free(s);
}

int kafka_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    (void)priv;
    kafka_sub_t *s = bsub;
    int n = 0;
    pthread_mutex_lock(&s->mu);
    while (n < max && s->ready_head) {
        kafka_msg_t *m = s->ready_head;
        s->ready_head = m->next_ready;
        if (!s->ready_head)
            s->ready_tail = NULL;
        s->ready_len--;
        m->next_ready = NULL;
        m->state = KMSG_HANDED;
        m->part->handed++;
        evbus_msg_t *o = &out[n++];
        o->topic = s->topic;
        o->payload = m->rkm->payload;
        o->len = m->rkm->len;
        o->event = m->event;
        m->event = NULL;
        o->decode_error = m->decode_error;
        o->delivery_count = 0; /* Kafka does not count deliveries */
        o->cookie = m;
        o->cookie_u64 = (uint64_t)m->offset;
    }
    if (s->room_waiting && s->ready_len <= BUF_LOW)
        pthread_cond_signal(&s->room_cv);
    flush_stores(s);
    pthread_mutex_unlock(&s->mu);
    return n;
}

int kafka_settle(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
                 int delay_ms)
{
    (void)priv;
    (void)delay_ms;
    kafka_sub_t *s = bsub;
    kafka_msg_t *m = msg->cookie;
    if (!m)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&s->mu);
    kafka_part_t *p = m->part;
    if (m->state != KMSG_HANDED) { /* settled twice: ignore */
        pthread_mutex_unlock(&s->mu);
        return EVBUS_OK;
    }
    p->handed--;
    if (p->revoked) {
        /* The partition moved to another member, which reads this record
         * again from the committed offset; nothing to store here. */
        msg_free(m);
        part_unref(p);
    } else {
        if (m->rkm) {
            rd_kafka_message_destroy(m->rkm);
            m->rkm = NULL;
        }
        free(m->decode_error);
        m->decode_error = NULL;
        if (how == EVBUS_SETTLE_ACK) {
            m->state = KMSG_ACKED;
            advance(s, p);
        } else {
            /* RELEASE (or RETRY, never requested: no DELAYED_RETRY):
             * unacked, it keeps the watermark below itself. */
            m->state = KMSG_RELEASED;
        }
    }
    pthread_cond_broadcast(&s->settled_cv);
    pthread_mutex_unlock(&s->mu);
    return EVBUS_OK;
}
