/*
 * kafka:// consuming, one subscription's side: its buffer, the state of its
 * assigned partitions and its offsets. The group's consumer and its poll
 * thread (kafka_group.c) hand it the records of its topic
 * (evbus__kafka_sub_buffer); fetch() drains the buffer without blocking.
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
 * Rebalances (eager by default, cooperative handled; see kafka_group.c): on
 * revoke, for the partitions of this topic, the callback waits up to
 * REVOKE_WAIT_MS for records the core is handling, stores what is safe
 * (the group then commits once), and detaches the revoked partitions:
 * buffered records are dropped (the new owner reads them from the committed
 * offset) and settles of records still in the core's hands store nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_internal.h"

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
    if (--p->refs == 0) {
        free(p->prior);
        free(p);
    }
}

kafka_part_t *evbus__kafka_part_get(kafka_sub_t *s, int32_t id)
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
        p->commit_off = -1;
        p->window_end = -1;
        p->window_prev = -2;
        p->suspect_end = -1;
        p->max_started = -1;
        s->parts[id] = p;
    }
    return s->parts[id];
}

/* Pops the acked prefix of p's records for the poll thread to free
 * (evbus__kafka_sub_sweep); schedules the commit. Locked. */
static void advance(kafka_sub_t *s, kafka_part_t *p)
{
    int64_t last = -1;
    while (p->head && p->head->state == KMSG_ACKED) {
        kafka_msg_t *m = p->head;
        p->head = m->next_part;
        if (!p->head)
            p->tail = NULL;
        last = m->offset;
        m->next_ready = s->done;
        s->done = m;
        p->refs--; /* still attached: never reaches 0 here */
    }
    if (last >= 0) {
        p->commit_off = last + 1;
        p->commit_dirty = true;
        s->commits_dirty = true;
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

/* ---------------------------------------------------------- the buffer
 *
 * Each partition keeps its buffered records in offset order; the
 * partitions that have some wait in a ring, and fetch takes a slice of
 * each in turn. A consumer receives long runs of one partition (a fetch
 * response each), and one partition carries only a share of the keys:
 * handing out a run whole would leave the core's workers few keys to run
 * at once. Locked (s->mu), all of it. */

#define FETCH_SLICE 8 /* records of one partition per turn */

static void ring_push(kafka_sub_t *s, kafka_part_t *p, bool front)
{
    if (p->in_rr)
        return;
    p->in_rr = true;
    if (front || !s->rr_tail) {
        p->next_rr = s->rr_head;
        s->rr_head = p;
        if (!s->rr_tail)
            s->rr_tail = p;
    } else {
        p->next_rr = NULL;
        s->rr_tail->next_rr = p;
        s->rr_tail = p;
    }
}

/* Takes the partition at the front of the ring out of it. */
static kafka_part_t *ring_pop(kafka_sub_t *s)
{
    kafka_part_t *p = s->rr_head;
    if (p) {
        s->rr_head = p->next_rr;
        if (!s->rr_head)
            s->rr_tail = NULL;
        p->next_rr = NULL;
        p->in_rr = false;
    }
    return p;
}

/* Appends a record to its partition's buffer. */
static void buffer_append(kafka_sub_t *s, kafka_msg_t *m)
{
    kafka_part_t *p = m->part;
    m->next_ready = NULL;
    if (p->ready_tail)
        p->ready_tail->next_ready = m;
    else
        p->ready_head = m;
    p->ready_tail = m;
    s->ready_len++;
    ring_push(s, p, false);
}

/* Empties the buffer of the partitions keep() refuses (all when NULL). */
static void buffer_drop(kafka_sub_t *s, bool (*keep)(const kafka_part_t *))
{
    kafka_part_t *kept = NULL, *p;
    while ((p = ring_pop(s))) {
        if (keep && keep(p)) {
            p->next_rr = kept;
            kept = p;
            continue;
        }
        for (kafka_msg_t *m = p->ready_head; m; m = m->next_ready)
            s->ready_len--;
        p->ready_head = p->ready_tail = NULL;
    }
    while ((p = kept)) {
        kept = p->next_rr;
        ring_push(s, p, true);
    }
}

static bool not_revoked(const kafka_part_t *p)
{
    return !p->revoked;
}

/* Drops buffered records of revoked partitions from the buffer. */
static void buffer_drop_revoked(kafka_sub_t *s)
{
    buffer_drop(s, not_revoked);
}

void evbus__kafka_sub_revoke_locked(kafka_sub_t *s,
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

/* So that the acks of records the core is handling still count. */
void evbus__kafka_sub_wait_for_settles(
    kafka_sub_t *s, const rd_kafka_topic_partition_list_t *list)
{
    struct timespec end = evbus__deadline_in(REVOKE_WAIT_MS);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int busy = 0;
        for (int k = 0; k < list->cnt; k++) {
            int32_t id = list->elems[k].partition;
            if (strcmp(list->elems[k].topic, s->topic) != 0)
                continue;
            if (id >= 0 && (size_t)id < s->nparts && s->parts[id])
                busy += s->parts[id]->handed;
        }
        if (!busy ||
            evbus__cond_wait_until(&s->settled_cv, &s->mu, &end) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ records in */

/* Turns a consumed record into a buffer entry, not decoded yet (see
 * decode). Returns NULL when out of memory. */
static kafka_msg_t *make_record(rd_kafka_message_t *rkm)
{
    kafka_msg_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->rkm = rkm;
    m->offset = rkm->offset;
    /* librdkafka parses the headers into a list (an allocation per
     * header) on first access: here, where the sweep frees them; and
     * while they are in this thread's cache, the structured-mode test
     * (the thread that fetches then touches no header of such a record) */
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        h = NULL;
    m->structured = evbus__kafka_wire_structured(h);
    return m;
}

/* Decodes a fetched record unless that is done: a binary-mode event (the
 * core takes it), the reason it is no event, or nothing (the core decodes
 * a structured value). Every allocation of a record is freed by the
 * thread that made it: the event here, on the thread that fetches and
 * frees it after the handler; the record and its header list on the
 * poll thread (make_record, evbus__kafka_sub_sweep). Decoding on the poll
 * thread and freeing at settle had a dozen allocations per record freed
 * across threads, contending for glibc's arena lock. m is the fetcher's
 * (handed), so no lock. EVBUS_ENOMEM or EVBUS_OK. */
static int decode(kafka_msg_t *m)
{
    if (m->event || m->decode_error)
        return EVBUS_OK;
    char *why = NULL;
    int rc = m->structured
                 ? EVBUS_OK /* the core decodes the value */
                 : evbus__kafka_wire_classify(m->rkm, &m->event, &why);
    if (rc == EVBUS_ENOMEM) {
        free(why);
        return EVBUS_ENOMEM;
    }
    if (rc != EVBUS_OK)
        m->decode_error = why ? why : strdup("undecodable Kafka record");
    else if (!m->event && !m->rkm->payload)
        m->decode_error = strdup("record has no value (null or empty)");
    return EVBUS_OK;
}

static void free_list(kafka_msg_t *m)
{
    while (m) {
        kafka_msg_t *next = m->next_ready;
        msg_free(m);
        m = next;
    }
}

void evbus__kafka_sub_sweep(kafka_sub_t *s)
{
    pthread_mutex_lock(&s->mu);
    kafka_msg_t *done = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    free_list(done);
}

void evbus__kafka_sub_buffer(kafka_sub_t *s, rd_kafka_message_t **batch, int n)
{
    kafka_msg_t *recs[KAFKA_POLL_BATCH];
    int oom_part = -1;
    for (int i = 0; i < n; i++)
        recs[i] = make_record(batch[i]);
    pthread_mutex_lock(&s->mu);
    kafka_msg_t *done = s->done;
    s->done = NULL;
    for (int i = 0; i < n; i++) {
        kafka_msg_t *m = recs[i];
        kafka_part_t *p = evbus__kafka_part_get(s, batch[i]->partition);
        if (!m || !p) {
            /* Out of memory: the record cannot be tracked, so nothing of
             * its partition may be stored past it until reassignment. */
            oom_part = (int)batch[i]->partition;
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
        evbus__kafka_arrival(s, p, m);
        p->refs++;
        if (p->tail)
            p->tail->next_part = m;
        else
            p->head = m;
        p->tail = m;
        buffer_append(s, m);
    }
    pthread_mutex_unlock(&s->mu);
    free_list(done);
    if (oom_part >= 0)
        evbus_host_log(s->kb->host, EVBUS_LOG_ERROR,
                       "%s [%d]: out of memory; offsets of this partition "
                       "frozen until it is reassigned",
                       s->topic, oom_part);
}

/* ------------------------------------------------------------ lifetime */

kafka_sub_t *evbus__kafka_sub_new(kafka_bus_t *kb, const char *topic,
                                  const char *group)
{
    kafka_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kb = kb;
    pthread_mutex_init(&s->mu, NULL);
    evbus__cond_init(&s->settled_cv);
    evbus__cond_init(&s->room_cv);
    s->topic = strdup(topic);
    s->group = strdup(group);
    if (!s->topic || !s->group) {
        evbus__kafka_sub_free(s);
        return NULL;
    }
    return s;
}

void evbus__kafka_sub_free(kafka_sub_t *s)
{
    free_list(s->done);
    free(s->parts);
    free(s->topic);
    free(s->group);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->settled_cv);
    pthread_cond_destroy(&s->room_cv);
    free(s);
}

size_t evbus__kafka_sub_ready_len(kafka_sub_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->ready_len;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void evbus__kafka_sub_let_go(kafka_sub_t *s)
{
    evbus__kafka_commit_sub(s);
    /* rd_kafka_destroy waits for every message to be destroyed */
    evbus__kafka_sub_sweep(s);
    pthread_mutex_lock(&s->mu);
    buffer_drop(s, NULL);
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
}

/* ------------------------------------------------------------ vtable */

int evbus__kafka_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    kafka_sub_t *s = bsub;
    int n = 0, slice = 0;
    kafka_part_t *p = NULL;
    pthread_mutex_lock(&s->mu);
    while (n < max) {
        if (!p || !p->ready_head || slice == FETCH_SLICE) {
            if (p && p->ready_head)
                ring_push(s, p, false); /* its next slice, later */
            if (!(p = ring_pop(s)))
                break;
            slice = 0;
        }
        kafka_msg_t *m = p->ready_head;
        p->ready_head = m->next_ready;
        if (!p->ready_head)
            p->ready_tail = NULL;
        s->ready_len--;
        slice++;
        m->next_ready = NULL;
        m->state = KMSG_HANDED;
        m->part->handed++;
        evbus_msg_t *o = &out[n++];
        o->topic = s->topic;
        o->payload = m->rkm->payload;
        o->len = m->rkm->len;
        o->attempts = m->attempts;
        o->first_attempt_ms = m->first_ms;
        o->prev_delay_ms = m->prev_delay_ms;
        o->cookie = m;
        o->cookie_u64 = (uint64_t)m->offset;
    }
    if (p && p->ready_head) /* the rest of its slice comes first */
        ring_push(s, p, slice < FETCH_SLICE);
    if (s->room_waiting && s->ready_len <= KAFKA_BUF_LOW)
        pthread_cond_signal(&s->room_cv);
    pthread_mutex_unlock(&s->mu);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        kafka_msg_t *m = out[i].cookie;
        if (decode(m) != EVBUS_OK) {
            /* out of memory: back into the buffer, fetched again later */
            evbus__kafka_settle(priv, bsub, &out[i], EVBUS_SETTLE_RELEASE, 0);
            continue;
        }
        out[kept] = out[i];
        out[kept].event = m->event;
        m->event = NULL;
        out[kept].decode_error = m->decode_error;
        kept++;
    }
    return kept;
}

/* Puts a released record back into the buffer ahead of the later records
 * of its partition, so that this member fetches it again (evbus_stop gives
 * back what was fetched and not handled; nothing else would redeliver it
 * before a rebalance). A placeholder without its librdkafka message stays
 * released and pins its partition's offset until the next owner reads it.
 * Locked. */
static void requeue(kafka_sub_t *s, kafka_msg_t *m)
{
    if (!m->rkm) {
        m->state = KMSG_RELEASED;
        return;
    }
    /* the core took the binary-mode event: fetch decodes it again */
    m->state = KMSG_BUFFERED;
    kafka_part_t *p = m->part;
    kafka_msg_t **pp = &p->ready_head;
    while (*pp && (*pp)->offset < m->offset)
        pp = &(*pp)->next_ready;
    m->next_ready = *pp;
    *pp = m;
    if (!m->next_ready)
        p->ready_tail = m;
    s->ready_len++;
    ring_push(s, p, true);
}

int evbus__kafka_settle(void *priv, void *bsub, evbus_msg_t *msg,
                        evbus_settle_t how, int delay_ms)
{
    (void)priv;
    (void)delay_ms;
    kafka_sub_t *s = bsub;
    kafka_msg_t *m = msg->cookie;
    bool back = false;
    if (!m)
        return EVBUS_EINVAL;
    pthread_mutex_lock(&s->mu);
    kafka_part_t *p = m->part;
    /* The core settles each delivery once (m may be freed after that), so
     * this only turns away a message that is not handed out. */
    if (m->state != KMSG_HANDED) {
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
        if (how == EVBUS_SETTLE_ACK) {
            /* its librdkafka message goes with it (advance) */
            m->state = KMSG_ACKED;
            p->nexact -= m->exact; /* its entry is listed no more */
            advance(s, p);
        } else {
            /* RELEASE (or RETRY, never requested: no DELAYED_RETRY): it
             * must come back, and keeps the watermark below itself. */
            requeue(s, m);
            back = m->state == KMSG_BUFFERED;
        }
    }
    pthread_cond_broadcast(&s->settled_cv);
    pthread_mutex_unlock(&s->mu);
    if (back)
        evbus_host_notify(s->kb->host);
    return EVBUS_OK;
}
