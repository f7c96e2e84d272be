/*
 * The fetcher thread of a subscription, with its own connection:
 *   1. XGROUP CREATE <topic> <group> 0 MKSTREAM (a new group reads the
 *      whole history; BUSYGROUP means it exists already);
 *   2. re-reads its own pending entries (XREADGROUP ... 0) before anything
 *      else, after the start and after every reconnect;
 *   3. runs the claim scan and the heartbeat (redis_claim.c);
 *   4. otherwise waits for new entries (XREADGROUP ... BLOCK ... >).
 * Entries go into the subscription's buffer (redis_entries.c); fetch()
 * hands them out without blocking and the thread wakes the poller with
 * evbus_host_notify(). While entries keep coming the fetcher sends the
 * collected acks itself, pipelined in front of its next XREADGROUP; while
 * it blocks, settles go through the writer thread (redis_settle.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fetch.h"

/* How long acks may wait while the buffer is full (see the fetcher loop). */
#define ACK_FLUSH_MS 5

/* Drops the fetcher's connection after an I/O failure. */
void evbus__redis_drop_conn(rds_sub_t *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    redisContext *c = s->c;
    s->c = NULL;
    s->fetcher_active = false;
    bool stopping = s->stop;
    pthread_mutex_unlock(&s->mu);
    if (c)
        redisFree(c);
    evbus__redis_schedule_settle(
        s); /* acks left for us go through the writer now */
    if (!stopping)
        evbus_host_log(s->bus->host, EVBUS_LOG_WARN,
                       "fetcher for %s/%s lost its connection (%s); "
                       "reconnecting",
                       s->topic, s->group, why);
}

/* Handles a failed command: I/O failures drop the connection; NOGROUP
 * (stream or group deleted) makes the fetcher create the group again. */
void evbus__redis_command_failed(rds_sub_t *s, rds_fetch_state_t *st,
                                 redisReply *r, const char *what)
{
    char why[300];
    int rc = evbus__redis_error(s->c, r, why, sizeof why);
    if (!r || s->c->err) {
        evbus__redis_drop_conn(s, why);
        return;
    }
    if (rc == EVBUS_ENOTFOUND) {
        st->group_ready = false;
        return;
    }
    evbus_host_log(s->bus->host, EVBUS_LOG_WARN, "%s on %s/%s failed: %s", what,
                   s->topic, s->group, why);
    /* Do not spin on a persistent error. */
    pthread_mutex_lock(&s->mu);
    if (!s->stop)
        evbus__cond_wait_ms(&s->cv, &s->mu, 500);
    pthread_mutex_unlock(&s->mu);
}

int evbus__redis_create_group(redisContext *c, const char *topic,
                              const char *group, char *errstr, size_t n)
{
    const char *argv[] = {"XGROUP", "CREATE", topic, group, "0", "MKSTREAM"};
    redisReply *r = evbus__redis_command(c, 6, argv, NULL);
    int rc = EVBUS_OK;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r && r->str && strncmp(r->str, "BUSYGROUP", 9) == 0)
            rc = EVBUS_OK; /* the group exists: fine */
        else
            rc = evbus__redis_error(c, r, errstr, n);
    }
    freeReplyObject(r);
    return rc;
}

/* One XREADGROUP round (with the queued acks in front). block > 0 waits
 * for new entries up to block ms; while it waits, settles go through the
 * writer. Returns how many entries the reply had, or -1 on failure. */
static int read_group(rds_sub_t *s, rds_fetch_state_t *st, int count, int block)
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
    /* Runs once the read returned (a blocked command holds back the ones
     * behind it): were entries handed back meanwhile by a member that
     * closed? Then they go into the buffer before what this read got. */
    bool check_handback = !st->pending_phase;
    if (check_handback) {
        const char *xp[] = {
            "XPENDING",           s->topic, s->group, "-", "+", "1",
            EVBUS__REDIS_HANDBACK};
        redisAppendCommandArgv(s->c, 7, xp, NULL);
    }
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
        st->last_ack_ms = evbus__mono_ms();
        if (evbus__redis_settle_done(s, acks, NULL, acked))
            evbus__redis_push_settle_job(s);
    }
    if (!acked || redisGetReply(s->c, (void **)&r) != REDIS_OK)
        r = NULL;
    bool handback = false;
    if (r && check_handback) {
        redisReply *hb = NULL;
        if (redisGetReply(s->c, (void **)&hb) != REDIS_OK) {
            freeReplyObject(r);
            r = NULL;
        } else {
            handback = hb && hb->type == REDIS_REPLY_ARRAY && hb->elements > 0;
        }
        freeReplyObject(hb);
    }
    if (!r || r->type == REDIS_REPLY_ERROR) {
        evbus__redis_command_failed(s, st, r, "XREADGROUP");
        freeReplyObject(r);
        return -1;
    }
    if (handback) {
        st->claiming = true;
        strcpy(st->claim_cursor, "0-0");
        while (st->claiming && s->c)
            evbus__redis_claim_step(s, st, s->bus->o.batch);
        if (!s->c) { /* what the read got is re-read after the reconnect */
            freeReplyObject(r);
            return -1;
        }
    }
    int n = evbus__redis_take_entries(s, evbus__redis_stream_entries(r),
                                      !st->pending_phase, st->pending_from,
                                      sizeof st->pending_from);
    if (n == EVBUS_ECONN) {
        evbus__redis_drop_conn(s, "reading attempt records failed");
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
static void flush_acks(rds_sub_t *s, rds_fetch_state_t *st)
{
    pthread_mutex_lock(&s->mu);
    rds_msg_t *acks = s->settle_queued ? NULL : s->acks;
    if (acks)
        s->acks = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!acks)
        return;
    int replies = evbus__redis_append_acks(s, s->c, acks);
    st->last_ack_ms = evbus__mono_ms();
    bool ok = true;
    for (int i = 0; i < replies && ok; i++) {
        redisReply *r = NULL;
        ok = redisGetReply(s->c, (void **)&r) == REDIS_OK && r;
        freeReplyObject(r);
    }
    if (evbus__redis_settle_done(s, acks, NULL, ok))
        evbus__redis_push_settle_job(s);
    if (!ok)
        evbus__redis_command_failed(s, st, NULL, "XACK");
}

void *evbus__redis_fetcher_main(void *arg)
{
    rds_sub_t *s = arg;
    rds_bus_t *b = s->bus;
    evbus__redis_thread_block_sigpipe();
    const int max_buf = b->o.batch * 2;
    rds_fetch_state_t st = {.group_ready = true,
                            .pending_phase = true,
                            .pending_from = "0",
                            .claiming = true,
                            .claim_cursor = "0-0"};
    st.next_beat_ms =
        evbus__mono_ms() + (uint64_t)evbus__redis_beat_interval(b);
    rds_backoff_t backoff = {0, 0};
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        bool connected = s->c != NULL;
        uint64_t now = evbus__mono_ms();
        if (!connected && now < backoff.next_ms) {
            uint64_t left = backoff.next_ms - now;
            evbus__cond_wait_ms(&s->cv, &s->mu, left > 100 ? 100 : (int)left);
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
            evbus__cond_wait_ms(&s->cv, &s->mu, left > 100 ? 100 : (int)left);
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
            int rc = evbus__redis_connect(
                &b->o, b->o.block_ms + b->o.command_timeout_ms, &c, why,
                sizeof why);
            if (rc != EVBUS_OK) {
                evbus__redis_backoff_failed(&backoff, b->o.reconnect_max_ms);
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
            evbus__redis_backoff_ok(&backoff);
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
            int rc = evbus__redis_create_group(s->c, s->topic, s->group, why,
                                               sizeof why);
            if (rc == EVBUS_OK) {
                st.group_ready = true;
            } else if (s->c->err) {
                evbus__redis_drop_conn(s, why);
            } else {
                evbus_host_log(b->host, EVBUS_LOG_WARN,
                               "XGROUP CREATE %s %s failed: %s", s->topic,
                               s->group, why);
                pthread_mutex_lock(&s->mu);
                if (!s->stop)
                    evbus__cond_wait_ms(&s->cv, &s->mu, 1000);
                pthread_mutex_unlock(&s->mu);
            }
            continue;
        }
        now = evbus__mono_ms();
        if (now >= st.next_beat_ms) {
            evbus__redis_heartbeat(s, &st);
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
            evbus__redis_claim_step(s, &st, count);
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
