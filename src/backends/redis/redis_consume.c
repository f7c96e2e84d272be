/*
 * Consuming a stream as a member of a consumer group.
 *
 * Each subscription runs a fetcher thread with its own connection:
 *   1. XGROUP CREATE <topic> <group> 0 MKSTREAM (a new group reads the
 *      whole history; BUSYGROUP means it exists already);
 *   2. re-reads its own pending entries (XREADGROUP ... 0) before anything
 *      else, after the start and after every reconnect;
 *   3. takes over entries of dead members idle longer than
 *      claim_timeout_ms (XAUTOCLAIM, following the cursor), every
 *      claim_timeout_ms / 2 but at least every 2 s;
 *   4. otherwise waits for new entries (XREADGROUP ... BLOCK ... >).
 * Entries go into a local buffer; fetch() hands them out without blocking
 * and the thread wakes the poller with evbus_host_notify().
 *
 * The member remembers every entry it holds (buffered, handed out, or acked
 * and not yet confirmed), skips those when it re-reads or claims, and
 * refreshes their idle time every claim_timeout_ms / 3 (XCLAIM ... JUSTID),
 * so neither it nor another member takes a message it is still working on
 * (the core may keep one for a long retry backoff).
 *
 * Settling: ACKs are collected and sent as one XACK - by the fetcher in
 * front of its next non-blocking XREADGROUP while entries keep coming, by
 * the writer thread while the fetcher is blocked (so no ack waits for the
 * next event). RELEASE goes through the writer and gives an entry back by
 * marking it long idle (XCLAIM ... IDLE ... JUSTID), so any member's next
 * claim scan takes it.
 * Deleted entries (nil fields, e.g. trimmed by MAXLEN) are acked and skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis_internal.h"

static atomic_uint consumer_counter;

static const char *const no_data_field =
    "redis stream entry has no 'data' field";

/* ------------------------------------------------------------ lifetime */

static void msg_list_free(rds_msg_t *m)
{
    while (m) {
        rds_msg_t *next = m->next;
        evbus_event_free(m->event); /* never handed to the core */
        free(m);
        m = next;
    }
}

static void schedule_settle(rds_sub_t *s);

void rds_sub_unref(rds_sub_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    msg_list_free(s->buf_head);
    msg_list_free(s->acks);
    msg_list_free(s->releases);
    rds_idset_free(&s->held);
    if (s->c)
        redisFree(s->c);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->topic);
    free(s->group);
    free(s->akey);
    free(s);
}

/* ------------------------------------------------------------ fetcher */

typedef struct {
    bool group_ready;    /* XGROUP CREATE done on this connection */
    bool pending_phase;  /* still re-reading our own pending entries */
    char pending_from[44];
    bool claiming;       /* an XAUTOCLAIM scan is under way */
    char claim_cursor[44];
    uint64_t next_claim_ms, next_beat_ms;
    bool was_down;
    bool caught_up; /* the last non-blocking read found nothing new */
    uint64_t last_ack_ms; /* when the fetcher last sent acks */
} fetch_state_t;

/* How long acks may wait while the buffer is full (see fetcher_main). */
#define ACK_FLUSH_MS 5

/* How often the claim scan runs: often enough that entries released by a
 * closing member (marked long idle) are picked up within seconds, and at
 * least twice per claim timeout. */
static int claim_interval(const rds_bus_t *b)
{
    int ms = b->o.claim_timeout_ms / 2;
    if (ms > 2000)
        ms = 2000;
    return ms < 50 ? 50 : ms;
}

static int beat_interval(const rds_bus_t *b)
{
    int ms = b->o.claim_timeout_ms / 3;
    return ms < 30 ? 30 : ms;
}

/* Drops the fetcher's connection after an I/O failure. */
static void drop_conn(rds_sub_t *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    redisContext *c = s->c;
    s->c = NULL;
    s->fetcher_active = false;
    bool stopping = s->stop;
    pthread_mutex_unlock(&s->mu);
    if (c)
        redisFree(c);
    schedule_settle(s); /* acks left for us go through the writer now */
    if (!stopping)
        evbus_host_log(s->bus->host, EVBUS_LOG_WARN,
                       "fetcher for %s/%s lost its connection (%s); "
                       "reconnecting",
                       s->topic, s->group, why);
}

/* Handles a failed command: I/O failures drop the connection; NOGROUP
 * (stream or group deleted) makes the fetcher create the group again. */
static void command_failed(rds_sub_t *s, fetch_state_t *st, redisReply *r,
                           const char *what)
{
    char why[300];
    int rc = rds_error(s->c, r, why, sizeof why);
    if (!r || s->c->err) {
        drop_conn(s, why);
        return;
    }
    if (rc == EVBUS_ENOTFOUND) {
        st->group_ready = false;
        return;
    }
    evbus_host_log(s->bus->host, EVBUS_LOG_WARN, "%s on %s/%s failed: %s",
                   what, s->topic, s->group, why);
    /* Do not spin on a persistent error. */
    pthread_mutex_lock(&s->mu);
    if (!s->stop)
        rds_timedwait(&s->cv, &s->mu, 500);
    pthread_mutex_unlock(&s->mu);
}

static int create_group(redisContext *c, const char *topic, const char *group,
                        char *errstr, size_t n)
{
    const char *argv[] = {"XGROUP", "CREATE", topic, group, "0", "MKSTREAM"};
    redisReply *r = rds_command(c, 6, argv, NULL);
    int rc = EVBUS_OK;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r && r->str && strncmp(r->str, "BUSYGROUP", 9) == 0)
            rc = EVBUS_OK; /* the group exists: fine */
        else
            rc = rds_error(c, r, errstr, n);
    }
    freeReplyObject(r);
    return rc;
}

/* Makes a message from one [id, [field, value, ...]] entry. *deleted is set
 * for an entry whose fields are nil (deleted while pending). With
 * decode_max > 0 the CloudEvent is decoded here (then the bytes are not
 * kept: the core only needs them for an undecodable payload). */
static rds_msg_t *entry_to_msg(const redisReply *e, bool *deleted,
                               size_t decode_max)
{
    *deleted = false;
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    const redisReply *idr = e->element[0], *f = e->element[1];
    rds_id_t id;
    if (idr->len >= sizeof(((rds_msg_t *)0)->idstr) ||
        !rds_id_parse(idr->str, idr->len, &id))
        return NULL;
    const redisReply *data = NULL;
    if (f->type == REDIS_REPLY_ARRAY && f->elements) {
        for (size_t i = 0; i + 1 < f->elements; i += 2)
            if (f->element[i]->type == REDIS_REPLY_STRING &&
                f->element[i]->len == 4 &&
                memcmp(f->element[i]->str, "data", 4) == 0 &&
                f->element[i + 1]->type == REDIS_REPLY_STRING) {
                data = f->element[i + 1];
                break;
            }
    } else {
        *deleted = true;
    }
    evbus_event_t *ev = NULL;
    if (data && decode_max) {
        char why[8];
        ev = evbus_event_from_json_limit(data->str, data->len, decode_max, why,
                                         sizeof why);
    }
    size_t len = data && !ev ? data->len : 0;
    rds_msg_t *m = malloc(sizeof *m + len + 1);
    if (!m) {
        evbus_event_free(ev);
        return NULL;
    }
    m->next = NULL;
    m->id = id;
    memcpy(m->idstr, idr->str, idr->len);
    m->idstr[idr->len] = '\0';
    m->attempts = m->prev_delay_ms = 0;
    m->first_attempt_ms = 0;
    m->decode_error = data || *deleted ? NULL : no_data_field;
    m->event = ev;
    m->len = len;
    if (len)
        memcpy(m->payload, data->str, len);
    m->payload[len] = '\0';
    return m;
}

/* Acks entries that were deleted while pending (nothing to deliver). */
static void ack_deleted(rds_sub_t *s, const char **ids, int n)
{
    if (!n)
        return;
    const char **argv = malloc((size_t)(n + 3) * sizeof *argv);
    if (!argv)
        return;
    argv[0] = "XACK";
    argv[1] = s->topic;
    argv[2] = s->group;
    memcpy(argv + 3, ids, (size_t)n * sizeof *ids);
    redisAppendCommandArgv(s->c, n + 3, argv, NULL);
    free(argv);
    int replies = 1 + evbus__redis_attempts_append_del(s, s->c, ids, (size_t)n);
    for (int i = 0; i < replies; i++) {
        redisReply *r = NULL;
        if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
            break; /* the caller's next command sees c->err */
        freeReplyObject(r);
    }
    evbus_host_log(s->bus->host, EVBUS_LOG_INFO,
                   "acked %d entries of %s/%s that were deleted while pending",
                   n, s->topic, s->group);
}

/* Turns an array of entries into buffered messages. known_new: entries
 * from '>' (never held before, delivered for the first time); otherwise
 * held ones are skipped and delivery counts looked up. Returns how many
 * entries the array had (including skipped and deleted), or an error. */
static int take_entries(rds_sub_t *s, const redisReply *entries,
                        bool known_new, char *last_id, size_t last_id_size)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    rds_msg_t *head = NULL, **tail = &head;
    const char **deleted = calloc(entries->elements + 1, sizeof *deleted);
    int ndeleted = 0;
    if (!deleted)
        return EVBUS_ENOMEM;
    /* Decoding is shared with the poller: while the poller still has at
     * least a batch buffered (it is the slower stage), the fetcher decodes
     * new entries itself; when the poller is about to run dry they go in
     * undecoded and the core decodes them on the polling thread. So both
     * cores work, whichever stage is slower. Re-read and claimed entries
     * are decoded by the core (their delivery counts come first). */
    pthread_mutex_lock(&s->mu);
    bool decode_here = known_new && s->nbuf >= s->bus->o.batch;
    pthread_mutex_unlock(&s->mu);
    size_t decode_max = decode_here ? evbus_host_max_event_bytes(s->bus->host)
                                    : 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING && last_id &&
            e->element[0]->len < last_id_size) {
            memcpy(last_id, e->element[0]->str, e->element[0]->len);
            last_id[e->element[0]->len] = '\0';
        }
        if (!known_new && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING) {
            rds_id_t id;
            bool held = false;
            if (rds_id_parse(e->element[0]->str, e->element[0]->len, &id)) {
                pthread_mutex_lock(&s->mu);
                held = rds_idset_has(&s->held, id);
                pthread_mutex_unlock(&s->mu);
            }
            if (held)
                continue; /* we still hold it: not a new delivery */
        }
        bool del;
        rds_msg_t *m = entry_to_msg(e, &del, decode_max);
        if (!m)
            continue;
        if (del) {
            deleted[ndeleted++] = e->element[0]->str;
            free(m);
            continue;
        }
        *tail = m;
        tail = &m->next;
    }
    ack_deleted(s, deleted, ndeleted);
    free(deleted);
    /* Re-read and claimed entries: what record_attempts stored. */
    if (!known_new && head &&
        evbus__redis_attempts_load(s, s->c, head) == EVBUS_ECONN) {
        msg_list_free(head);
        return EVBUS_ECONN;
    }
    int added = 0;
    pthread_mutex_lock(&s->mu);
    while (head) {
        rds_msg_t *m = head;
        head = m->next;
        m->next = NULL;
        if (rds_idset_add(&s->held, m->id) != EVBUS_OK) {
            evbus_event_free(m->event);
            free(m); /* stays pending in Redis: claimed again later */
            continue;
        }
        if (s->buf_tail)
            s->buf_tail->next = m;
        else
            s->buf_head = m;
        s->buf_tail = m;
        s->nbuf++;
        added++;
    }
    pthread_mutex_unlock(&s->mu);
    if (added)
        evbus_host_notify(s->bus->host);
    return (int)entries->elements;
}

/* Entries of the single stream in an XREADGROUP reply, or NULL. */
static const redisReply *stream_entries(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return NULL;
    const redisReply *st = r->element[0];
    if (st->type != REDIS_REPLY_ARRAY || st->elements < 2)
        return NULL;
    return st->element[1];
}

/* One XREADGROUP round (with the queued acks in front). block > 0 waits
 * for new entries up to block ms; while it waits, settles go through the
 * writer. Returns how many entries the reply had, or -1 on failure. */
static int read_group(rds_sub_t *s, fetch_state_t *st, int count, int block)
{
    char cnt[16], blk[16];
    snprintf(cnt, sizeof cnt, "%d", count);
    snprintf(blk, sizeof blk, "%d", block);
    const char *argv[11];
    int argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = s->group;
    argv[argc++] = s->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = cnt;
    if (block > 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = blk;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = s->topic;
    argv[argc++] = st->pending_phase ? st->pending_from : ">";
    /* Acks collected since the last round go in the same round trip; while
     * this read blocks, new settles go through the writer. */
    rds_msg_t *acks = NULL;
    pthread_mutex_lock(&s->mu);
    if (!s->settle_queued) {
        acks = s->acks;
        s->acks = NULL;
    }
    if (block > 0)
        s->fetcher_active = false;
    pthread_mutex_unlock(&s->mu);
    int nack = evbus__redis_append_acks(s, s->c, acks);
    redisAppendCommandArgv(s->c, argc, argv, NULL);
    redisReply *r = NULL;
    bool acked = true;
    for (int i = 0; i < nack && acked; i++) {
        redisReply *ar = NULL;
        if (redisGetReply(s->c, (void **)&ar) != REDIS_OK || !ar)
            acked = false;
        else if (ar->type == REDIS_REPLY_ERROR)
            evbus_host_log(s->bus->host, EVBUS_LOG_WARN, "XACK on %s/%s: %s",
                           s->topic, s->group, ar->str);
        freeReplyObject(ar);
    }
    if (acks) {
        st->last_ack_ms = rds_now_ms();
        if (rds_settle_done(s, acks, NULL, acked))
            evbus__redis_push_settle_job(s);
    }
    if (!acked || redisGetReply(s->c, (void **)&r) != REDIS_OK)
        r = NULL;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        command_failed(s, st, r, "XREADGROUP");
        freeReplyObject(r);
        return -1;
    }
    int n = take_entries(s, stream_entries(r), !st->pending_phase,
                         st->pending_from, sizeof st->pending_from);
    if (n == EVBUS_ECONN) {
        drop_conn(s, "reading delivery counts failed");
        n = -1;
    } else if (n > 0) {
        /* We come straight back: the next rounds carry the acks. */
        pthread_mutex_lock(&s->mu);
        s->fetcher_active = true;
        pthread_mutex_unlock(&s->mu);
    } else if (n == 0 && st->pending_phase) {
        st->pending_phase = false; /* our backlog is done: now '>' */
    }
    freeReplyObject(r);
    return n;
}

/* Sends the queued acks on the fetcher's connection (the buffer is full and
 * the fetcher waits for the poller, so no read goes with them). */
static void flush_acks(rds_sub_t *s, fetch_state_t *st)
{
    pthread_mutex_lock(&s->mu);
    rds_msg_t *acks = s->settle_queued ? NULL : s->acks;
    if (acks)
        s->acks = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!acks)
        return;
    int replies = evbus__redis_append_acks(s, s->c, acks);
    st->last_ack_ms = rds_now_ms();
    bool ok = true;
    for (int i = 0; i < replies && ok; i++) {
        redisReply *r = NULL;
        ok = redisGetReply(s->c, (void **)&r) == REDIS_OK && r;
        freeReplyObject(r);
    }
    if (rds_settle_done(s, acks, NULL, ok))
        evbus__redis_push_settle_job(s);
    if (!ok)
        command_failed(s, st, NULL, "XACK");
}

static void claim_step(rds_sub_t *s, fetch_state_t *st, int count)
{
    char idle[24], cnt[16];
    snprintf(idle, sizeof idle, "%d", s->bus->o.claim_timeout_ms);
    snprintf(cnt, sizeof cnt, "%d", count);
    const char *argv[] = {"XAUTOCLAIM", s->topic,        s->group, s->consumer,
                          idle,         st->claim_cursor, "COUNT",  cnt};
    redisReply *r = redisCommandArgv(s->c, 8, argv, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        command_failed(s, st, r, "XAUTOCLAIM");
        st->claiming = false;
        st->next_claim_ms = rds_now_ms() + (uint64_t)claim_interval(s->bus);
        freeReplyObject(r);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= sizeof st->claim_cursor) {
        freeReplyObject(r);
        st->claiming = false;
        return;
    }
    memcpy(st->claim_cursor, r->element[0]->str, r->element[0]->len);
    st->claim_cursor[r->element[0]->len] = '\0';
    int before;
    pthread_mutex_lock(&s->mu);
    before = s->nbuf;
    pthread_mutex_unlock(&s->mu);
    int n = take_entries(s, r->element[1], false, NULL, 0);
    if (n == EVBUS_ECONN) {
        drop_conn(s, "reading delivery counts failed");
    } else {
        pthread_mutex_lock(&s->mu);
        int got = s->nbuf - before;
        pthread_mutex_unlock(&s->mu);
        if (got > 0)
            evbus_host_log(s->bus->host, EVBUS_LOG_INFO,
                           "took over %d entries of %s/%s idle longer than "
                           "%d ms",
                           got, s->topic, s->group, s->bus->o.claim_timeout_ms);
    }
    if (strcmp(st->claim_cursor, "0-0") == 0) {
        st->claiming = false;
        st->next_claim_ms = rds_now_ms() + (uint64_t)claim_interval(s->bus);
    }
    freeReplyObject(r);
}

/* Resets the idle time of everything this member holds (XCLAIM to itself,
 * JUSTID: no delivery counted), so no claim takes it while we work on it. */
static void heartbeat(rds_sub_t *s, fetch_state_t *st)
{
    st->next_beat_ms = rds_now_ms() + (uint64_t)beat_interval(s->bus);
    pthread_mutex_lock(&s->mu);
    size_t n = s->held.len;
    char (*ids)[44] = n ? malloc(n * sizeof *ids) : NULL;
    const char **argv = n ? malloc((n + 6) * sizeof *argv) : NULL;
    size_t k = 0;
    if (ids && argv)
        for (size_t i = 0; i < s->held.cap; i++)
            if (s->held.used[i]) {
                snprintf(ids[k], sizeof ids[k], "%llu-%llu",
                         (unsigned long long)s->held.slots[i].ms,
                         (unsigned long long)s->held.slots[i].seq);
                argv[5 + k] = ids[k];
                k++;
            }
    pthread_mutex_unlock(&s->mu);
    if (k) {
        argv[0] = "XCLAIM";
        argv[1] = s->topic;
        argv[2] = s->group;
        argv[3] = s->consumer;
        argv[4] = "0";
        argv[5 + k] = "JUSTID";
        redisReply *r = redisCommandArgv(s->c, (int)(k + 6), argv, NULL);
        if (!r || r->type == REDIS_REPLY_ERROR)
            command_failed(s, st, r, "XCLAIM (keeping held entries)");
        freeReplyObject(r);
    }
    free(ids);
    free(argv);
}

static void *fetcher_main(void *arg)
{
    rds_sub_t *s = arg;
    rds_bus_t *b = s->bus;
    rds_thread_block_sigpipe();
    const int max_buf = b->o.batch * 2;
    fetch_state_t st = {.group_ready = true, .pending_phase = true,
                        .pending_from = "0", .claiming = true,
                        .claim_cursor = "0-0"};
    st.next_beat_ms = rds_now_ms() + (uint64_t)beat_interval(b);
    rds_backoff_t backoff = {0, 0};
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        bool connected = s->c != NULL;
        uint64_t now = rds_now_ms();
        if (!connected && now < backoff.next_ms) {
            uint64_t left = backoff.next_ms - now;
            rds_timedwait(&s->cv, &s->mu, left > 100 ? 100 : (int)left);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        int room = max_buf - s->nbuf;
        /* With a full buffer no read carries the acks: send them alone,
         * but batched, at most every ACK_FLUSH_MS. */
        bool flush = s->acks && !s->settle_queued &&
                     now >= st.last_ack_ms + ACK_FLUSH_MS;
        if (connected && room <= 0 && now < st.next_beat_ms && !flush) {
            /* Full: wait for fetch() to make room (or the next beat). */
            uint64_t left = st.next_beat_ms - now;
            if (s->acks && left > ACK_FLUSH_MS)
                left = ACK_FLUSH_MS;
            rds_timedwait(&s->cv, &s->mu, left > 100 ? 100 : (int)left);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        if (connected && room <= 0 && flush) {
            flush_acks(s, &st);
            continue;
        }

        if (!connected) {
            char why[300];
            redisContext *c = NULL;
            int rc = rds_connect(&b->o, b->o.block_ms + b->o.command_timeout_ms,
                                 &c, why, sizeof why);
            if (rc != EVBUS_OK) {
                rds_backoff_failed(&backoff, b->o.reconnect_max_ms);
                if (!st.was_down)
                    evbus_host_log(b->host, EVBUS_LOG_WARN,
                                   "fetcher for %s/%s cannot connect: %s; "
                                   "retrying with backoff",
                                   s->topic, s->group, why);
                st.was_down = true;
                continue;
            }
            if (st.was_down)
                evbus_host_log(b->host, EVBUS_LOG_INFO,
                               "fetcher for %s/%s reconnected", s->topic,
                               s->group);
            st.was_down = false;
            rds_backoff_ok(&backoff);
            pthread_mutex_lock(&s->mu);
            bool stop = s->stop;
            if (!stop)
                s->c = c;
            pthread_mutex_unlock(&s->mu);
            if (stop) {
                redisFree(c);
                break;
            }
            /* A new connection: check the group, re-read our backlog. */
            st.group_ready = false;
            st.pending_phase = true;
            strcpy(st.pending_from, "0");
            continue;
        }
        if (!st.group_ready) {
            char why[300];
            int rc = create_group(s->c, s->topic, s->group, why, sizeof why);
            if (rc == EVBUS_OK) {
                st.group_ready = true;
            } else if (s->c->err) {
                drop_conn(s, why);
            } else {
                evbus_host_log(b->host, EVBUS_LOG_WARN,
                               "XGROUP CREATE %s %s failed: %s", s->topic,
                               s->group, why);
                pthread_mutex_lock(&s->mu);
                if (!s->stop)
                    rds_timedwait(&s->cv, &s->mu, 1000);
                pthread_mutex_unlock(&s->mu);
            }
            continue;
        }
        now = rds_now_ms();
        if (now >= st.next_beat_ms) {
            heartbeat(s, &st);
            continue;
        }
        if (room <= 0)
            continue;
        int count = room < b->o.batch ? room : b->o.batch;
        if (st.pending_phase) {
            read_group(s, &st, count, 0);
            continue;
        }
        if (!st.claiming && now >= st.next_claim_ms) {
            st.claiming = true;
            strcpy(st.claim_cursor, "0-0");
        }
        if (st.claiming) {
            claim_step(s, &st, count);
            continue;
        }
        uint64_t until = st.next_claim_ms < st.next_beat_ms ? st.next_claim_ms
                                                            : st.next_beat_ms;
        if (!st.caught_up) {
            /* Busy stream: read without blocking, acks ride along. */
            st.caught_up = read_group(s, &st, count, 0) == 0;
            continue;
        }
        int block = b->o.block_ms;
        if (until - now < (uint64_t)block)
            block = (int)(until - now);
        if (block < 1)
            block = 1; /* BLOCK 0 would wait forever */
        st.caught_up = read_group(s, &st, count, block) <= 0;
    }
    return NULL;
}

/* ------------------------------------------------------------ vtable */

static void consumer_name(const rds_bus_t *b, char *out, size_t n)
{
    if (b->o.consumer) {
        snprintf(out, n, "%s", b->o.consumer);
        return;
    }
    char host[64] = "host";
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "host");
    host[sizeof host - 1] = '\0';
    snprintf(out, n, "%s-%d-%u", host, (int)getpid(),
             atomic_fetch_add(&consumer_counter, 1) + 1);
}

int rds_subscribe(void *priv, const char *topic, const char *group,
                  void **bsub, char *errstr, size_t n)
{
    rds_bus_t *b = priv;
    rds_sub_t *s = calloc(1, sizeof *s);
    if (!s || !(s->topic = strdup(topic)) || !(s->group = strdup(group)) ||
        !(s->akey = evbus__redis_attempts_key(topic, group))) {
        if (s) {
            free(s->topic);
            free(s->group);
        }
        free(s);
        snprintf(errstr, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    s->bus = b;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    consumer_name(b, s->consumer, sizeof s->consumer);
    char why[512];
    int rc = rds_connect(&b->o, b->o.block_ms + b->o.command_timeout_ms, &s->c,
                         why, sizeof why);
    if (rc == EVBUS_OK) {
        char reason[300];
        rc = create_group(s->c, topic, group, reason, sizeof reason);
        if (rc != EVBUS_OK)
            snprintf(why, sizeof why, "XGROUP CREATE %.100s %.60s failed: %.120s",
                     topic, group, reason);
        else
            evbus__redis_sweep_consumers(s, s->c);
    }
    if (rc == EVBUS_OK &&
        pthread_create(&s->thread, NULL, fetcher_main, s) != 0) {
        snprintf(why, sizeof why, "cannot start the fetcher thread");
        rc = EVBUS_ENOMEM;
    }
    if (rc != EVBUS_OK) {
        snprintf(errstr, n, "%s", why);
        rds_sub_unref(s);
        return rc;
    }
    s->thread_started = true;
    evbus_host_log(b->host, EVBUS_LOG_DEBUG,
                   "subscribed to %s as %s in group %s", topic, s->consumer,
                   group);
    *bsub = s;
    return EVBUS_OK;
}

int rds_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    (void)priv;
    rds_sub_t *s = bsub;
    int n = 0;
    pthread_mutex_lock(&s->mu);
    while (n < max && s->buf_head) {
        rds_msg_t *m = s->buf_head;
        s->buf_head = m->next;
        if (!s->buf_head)
            s->buf_tail = NULL;
        m->next = NULL;
        s->nbuf--;
        s->nheld_out++;
        out[n].topic = s->topic;
        out[n].payload = m->payload;
        out[n].len = m->len;
        out[n].decode_error = m->decode_error;
        out[n].attempts = m->attempts;
        out[n].prev_delay_ms = m->prev_delay_ms;
        out[n].first_attempt_ms = m->first_attempt_ms;
        out[n].event = m->event; /* the core owns it from here */
        m->event = NULL;
        out[n].cookie = m;
        n++;
    }
    if (n && s->nbuf <= s->bus->o.batch)
        pthread_cond_broadcast(&s->cv); /* room for the fetcher */
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Queues a settle job for what s has collected; the caller set
 * s->settle_queued (under s->mu) and so owns this step. */
void evbus__redis_push_settle_job(rds_sub_t *s)
{
    rds_job_t *job = calloc(1, sizeof *job);
    if (job) {
        job->kind = RDS_JOB_SETTLE;
        job->sub = s;
        atomic_fetch_add(&s->refs, 1);
        if (rds_writer_push(s->bus, job) == EVBUS_OK)
            return;
        atomic_fetch_sub(&s->refs, 1);
        free(job);
    }
    /* Could not queue now: the next settle (or unsubscribe) tries again. */
    pthread_mutex_lock(&s->mu);
    s->settle_queued = false;
    pthread_mutex_unlock(&s->mu);
}

/* Makes sure a settle job is queued for what s has collected. */
static void schedule_settle(rds_sub_t *s)
{
    pthread_mutex_lock(&s->mu);
    bool need = !s->settle_queued && (s->acks || s->releases);
    if (need)
        s->settle_queued = true;
    pthread_mutex_unlock(&s->mu);
    if (need)
        evbus__redis_push_settle_job(s);
}

int rds_settle(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
               int delay_ms)
{
    (void)priv;
    (void)delay_ms;
    rds_sub_t *s = bsub;
    rds_msg_t *m = msg->cookie;
    if (how != EVBUS_SETTLE_ACK && how != EVBUS_SETTLE_RELEASE)
        return EVBUS_ENOTSUP; /* no EVBUS_FEAT_DELAYED_RETRY */
    pthread_mutex_lock(&s->mu);
    s->nheld_out--;
    if (how == EVBUS_SETTLE_ACK) {
        /* Still held until the XACK is confirmed. */
        m->next = s->acks;
        s->acks = m;
    } else {
        rds_idset_del(&s->held, m->id);
        m->next = s->releases;
        s->releases = m;
    }
    bool need = !s->settle_queued &&
                (how != EVBUS_SETTLE_ACK || !s->fetcher_active);
    if (need)
        s->settle_queued = true;
    pthread_mutex_unlock(&s->mu);
    if (need)
        evbus__redis_push_settle_job(s);
    return EVBUS_OK;
}

/* Appends one XACK for the listed messages to c; returns how many replies
 * to read (0 for an empty list). Out of memory, an XACK of nothing keeps
 * the reply count right; those entries stay pending and come back after
 * claim_timeout_ms (a duplicate, never a loss). */
int evbus__redis_append_acks(rds_sub_t *s, redisContext *c, rds_msg_t *acks)
{
    size_t n = 0;
    for (rds_msg_t *m = acks; m; m = m->next)
        n++;
    if (!n)
        return 0;
    const char **argv = malloc((n + 3) * sizeof *argv);
    size_t *lens = malloc((n + 3) * sizeof *lens);
    char *cmd = NULL;
    if (argv && lens) {
        argv[0] = "XACK";
        argv[1] = s->topic;
        argv[2] = s->group;
        size_t i = 3;
        for (rds_msg_t *m = acks; m; m = m->next)
            argv[i++] = m->idstr;
        for (i = 0; i < n + 3; i++)
            lens[i] = strlen(argv[i]);
        cmd = malloc(rds_resp_size((int)(n + 3), lens));
    }
    int replies = 1;
    if (cmd) {
        size_t len = rds_resp_write(cmd, (int)(n + 3), argv, lens);
        redisAppendFormattedCommand(c, cmd, len);
        /* The attempt counts of acked entries go with them. */
        replies += evbus__redis_attempts_append_del(s, c, argv + 3, n);
    } else {
        const char *argv0[] = {"XACK", s->topic, s->group, "0-0"};
        redisAppendCommandArgv(c, 4, argv0, NULL);
    }
    free(cmd);
    free(lens);
    free(argv);
    return replies;
}

int rds_settle_append(rds_sub_t *s, redisContext *c, rds_msg_t **acks,
                      rds_msg_t **releases)
{
    pthread_mutex_lock(&s->mu);
    *acks = s->acks;
    *releases = s->releases;
    s->acks = s->releases = NULL;
    s->settle_queued = false;
    pthread_mutex_unlock(&s->mu);
    int replies = 0;
    size_t na = 0, nr = 0;
    for (rds_msg_t *m = *acks; m; m = m->next)
        na++;
    for (rds_msg_t *m = *releases; m; m = m->next)
        nr++;
    size_t most = (na > nr ? na : nr) + 8;
    const char **argv = malloc(most * sizeof *argv);
    if (!argv) { /* put them back; sent with the next job */
        rds_settle_done(s, *acks, *releases, false);
        *acks = *releases = NULL;
        return 0;
    }
    if (na)
        replies += evbus__redis_append_acks(s, c, *acks);
    if (nr) {
        int argc = 0;
        argv[argc++] = "XCLAIM";
        argv[argc++] = s->topic;
        argv[argc++] = s->group;
        argv[argc++] = s->consumer;
        argv[argc++] = "0";
        for (rds_msg_t *m = *releases; m; m = m->next)
            argv[argc++] = m->idstr;
        argv[argc++] = "IDLE";
        argv[argc++] = EVBUS__REDIS_RELEASE_IDLE_MS;
        argv[argc++] = "JUSTID";
        redisAppendCommandArgv(c, argc, argv, NULL);
        replies++;
    }
    free(argv);
    return replies;
}

static void prepend(rds_msg_t **list, rds_msg_t *more)
{
    if (!more)
        return;
    rds_msg_t *last = more;
    while (last->next)
        last = last->next;
    last->next = *list;
    *list = more;
}

bool rds_settle_done(rds_sub_t *s, rds_msg_t *acks, rds_msg_t *releases,
                     bool ok)
{
    bool requeue = false;
    pthread_mutex_lock(&s->mu);
    if (ok) {
        for (rds_msg_t *m = acks; m; m = m->next)
            rds_idset_del(&s->held, m->id);
    } else {
        prepend(&s->acks, acks);
        prepend(&s->releases, releases);
        acks = releases = NULL;
        if ((s->acks || s->releases) && !s->settle_queued)
            requeue = s->settle_queued = true;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    msg_list_free(acks);
    msg_list_free(releases);
    return requeue;
}

void rds_unsubscribe(void *priv, void *bsub)
{
    rds_bus_t *b = priv;
    rds_sub_t *s = bsub;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (s->c) /* wakes a blocked XREADGROUP */
        shutdown(s->c->fd, SHUT_RDWR);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started)
        pthread_join(s->thread, NULL);

    /* Entries buffered but never handed out are no longer held: the
     * handback below gives them to the group with everything else still
     * pending for this consumer. */
    pthread_mutex_lock(&s->mu);
    for (rds_msg_t *m = s->buf_head; m; m = m->next)
        rds_idset_del(&s->held, m->id);
    msg_list_free(s->buf_head);
    s->buf_head = s->buf_tail = NULL;
    s->nbuf = 0;
    pthread_mutex_unlock(&s->mu);

    /* Wait (bounded) until the writer confirmed every ack and release, so
     * a reopened member does not get acked entries again. */
    uint64_t deadline = rds_now_ms() + (uint64_t)b->o.command_timeout_ms;
    for (;;) {
        schedule_settle(s);
        pthread_mutex_lock(&s->mu);
        bool drained = !s->acks && !s->releases && !s->settle_queued;
        /* settle_queued is cleared when the writer takes the lists; the
         * held set empties once the acks it sent are confirmed. */
        drained = drained && s->held.len == 0;
        if (!drained && rds_now_ms() < deadline)
            rds_timedwait(&s->cv, &s->mu, 20);
        pthread_mutex_unlock(&s->mu);
        if (drained)
            break;
        if (rds_now_ms() >= deadline) {
            evbus_host_log(b->host, EVBUS_LOG_WARN,
                           "unsubscribe from %s/%s: some acks were not "
                           "confirmed in time; those entries will be "
                           "delivered again",
                           s->topic, s->group);
            break;
        }
    }
    evbus__redis_handback(s);
    rds_sub_unref(s);
}
