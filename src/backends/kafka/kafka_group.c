/*
 * kafka:// consuming, the group's side: one high-level consumer per
 * (bus, group id), shared by every subscription of the bus in that group
 * and subscribed to the union of their topics. One member per process and
 * group means that a subscription coming or going does not make the other
 * subscriptions' partitions move, and that closing a bus leaves each group
 * once.
 *
 * The group's thread polls the consumer and routes each record to the
 * subscription of its topic (kafka_consume.c buffers it); a record whose
 * topic has no subscription (just unsubscribed) is dropped without storing
 * its offset, so whoever owns the partition next reads it again.
 *
 * Topic set: the first subscription of a group creates the consumer;
 * every subscription only marks the set changed, and the thread calls
 * rd_kafka_subscribe(union) once it has not changed for a round (100 ms)
 * and no earlier subscribe still waits for its assignment (update_topics),
 * so several subscribes in a row cause one join.
 * A non-last unsubscribe commits its offsets at once but the smaller set is
 * applied only after SHRINK_GRACE_MS: a bus closing all its subscriptions
 * leaves the group once (the last one closes the consumer, whose revoke
 * commits everything) instead of rebalancing for each.
 *
 * Two subscriptions of one bus to the same topic in the same group are
 * refused (EVBUS_EBUSY): one consumer cannot be two members, and sharing
 * one partition's records between two handlers would break its order.
 *
 * Backpressure: with one subscription, a full buffer makes the thread wait
 * for fetch() to drain it, pausing the assignment only when the
 * application stops polling for STUCK_MS. With several, a full buffer
 * pauses that subscription's partitions (KAFKA_BUF_HIGH) until it drains
 * (KAFKA_BUF_LOW), so one slow handler does not stall the others.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_internal.h"

#define POLL_MS 100          /* consumer poll timeout: topic-set latency */
#define SHRINK_GRACE_MS 1000 /* wait before leaving a topic */
#define WAIT_FULL_MS 500     /* longest wait for fetch() in one round */
#define STUCK_MS 5000        /* one subscription: pause after this long full */
#define RETRY_SUBSCRIBE_MS 5000 /* after rd_kafka_subscribe failed */
#define COMMIT_MS 1000          /* periodic commit: what a crash repeats */
#define JOIN_WAIT_MS                                                           \
    30000 /* longest wait for an assignment before a                           \
             changed topic set is applied anyway */

/* The subscription of topic, NULL if none. g->mu held. */
static kafka_sub_t *sub_of(kafka_group_t *g, const char *topic)
{
    for (kafka_sub_t *s = g->subs; s; s = s->next)
        if (strcmp(s->topic, topic) == 0)
            return s;
    return NULL;
}

static bool applied_has(const kafka_group_t *g, const char *topic)
{
    for (int i = 0; i < g->napplied; i++)
        if (strcmp(g->applied[i], topic) == 0)
            return true;
    return false;
}

/* The partitions of list that belong to topic (NULL when none or out of
 * memory). The caller destroys it. */
static rd_kafka_topic_partition_list_t *
parts_of(const rd_kafka_topic_partition_list_t *list, const char *topic)
{
    int cnt = 0;
    for (int i = 0; i < list->cnt; i++)
        cnt += strcmp(list->elems[i].topic, topic) == 0;
    if (!cnt)
        return NULL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(cnt);
    for (int i = 0; l && i < list->cnt; i++)
        if (strcmp(list->elems[i].topic, topic) == 0)
            rd_kafka_topic_partition_list_add(l, topic,
                                              list->elems[i].partition);
    return l;
}

/* The assigned partitions of topic (NULL when none). */
static rd_kafka_topic_partition_list_t *assigned_of(kafka_group_t *g,
                                                    const char *topic)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(g->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    rd_kafka_topic_partition_list_t *l = parts_of(a, topic);
    rd_kafka_topic_partition_list_destroy(a);
    return l;
}

/* ------------------------------------------------------------ rebalance */

/* Reads the committed offsets and metadata of parts (no lock held: a
 * broker call), gives each subscription its partitions' state and returns
 * the offsets to assign from (the caller destroys it; NULL when the read
 * failed: then librdkafka fetches the offsets itself and no attempts
 * carry over). */
static rd_kafka_topic_partition_list_t *
adopt_committed(kafka_group_t *g, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *c =
        rd_kafka_topic_partition_list_copy(parts);
    if (!c)
        return NULL;
    /* Without them the attempts of earlier members are lost (a crash-looping
     * poison event would start at 1 every time): retry until the connect
     * timeout while the coordinator is busy (a rebalance, a dead member). */
    long long end = (long long)evbus__mono_ms() + g->kb->timeout_ms;
    rd_kafka_resp_err_t err;
    for (int i = 0;; i++) {
        long long left = end - (long long)evbus__mono_ms();
        err = rd_kafka_committed(g->rk, c, left > 0 ? (int)left : 1);
        for (int k = 0; !err && k < c->cnt; k++)
            err = c->elems[k].err;
        if (!err || (long long)evbus__mono_ms() >= end || atomic_load(&g->stop))
            break;
        struct timespec ts = {0, (long)(50 << (i < 4 ? i : 4)) * 1000000L};
        nanosleep(&ts, NULL);
        for (int k = 0; k < c->cnt; k++)
            c->elems[k].err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    if (err) {
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "group %s: reading the committed offsets failed (%s); "
                       "attempts recorded by earlier members are not seen",
                       g->id, rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(c);
        return NULL;
    }
    pthread_mutex_lock(&g->mu);
    for (kafka_sub_t *s = g->subs; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        evbus__kafka_adopt(s, c);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < c->cnt; i++) {
        if (c->elems[i].err || c->elems[i].offset < 0)
            c->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
        c->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    return c;
}

/* Revoke: lets running work settle, commits what is safe with its
 * attempts (one commit for the consumer) and detaches the partitions. */
static void on_revoke(kafka_group_t *g, rd_kafka_topic_partition_list_t *parts,
                      bool lost)
{
    if (!lost) {
        pthread_mutex_lock(&g->mu);
        for (kafka_sub_t *s = g->subs; s; s = s->next)
            evbus__kafka_sub_wait_for_settles(s, parts);
        pthread_mutex_unlock(&g->mu);
    }
    rd_kafka_topic_partition_list_t *l =
        lost ? NULL : rd_kafka_topic_partition_list_new(parts->cnt);
    pthread_mutex_lock(&g->commit_mu);
    pthread_mutex_lock(&g->mu);
    for (kafka_sub_t *s = g->subs; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        if (l)
            evbus__kafka_commit_build(s, l, parts, true);
        evbus__kafka_sub_revoke_locked(s, parts);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&g->mu);
    rd_kafka_resp_err_t err = l ? evbus__kafka_commit_send(g, l) : 0;
    pthread_mutex_unlock(&g->commit_mu);
    evbus__kafka_commit_log(g, err, "revoke");
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_group_t *g = opaque;
    evbus_host_t *host = g->kb->host;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        evbus_host_log(host, EVBUS_LOG_INFO,
                       "group %s: assigned %d partition(s)", g->id,
                       parts->cnt);
        rd_kafka_topic_partition_list_t *from = adopt_committed(g, parts);
        if (coop)
            e = rd_kafka_incremental_assign(rk, from ? from : parts);
        else
            rd_kafka_assign(rk, from ? from : parts);
        if (from)
            rd_kafka_topic_partition_list_destroy(from);
        pthread_mutex_lock(&g->mu);
        g->joining = false;
        for (kafka_sub_t *s = g->subs; s; s = s->next) {
            if (!s->paused)
                continue;
            rd_kafka_topic_partition_list_t *l = parts_of(parts, s->topic);
            if (l) {
                rd_kafka_pause_partitions(rk, l);
                rd_kafka_topic_partition_list_destroy(l);
            }
        }
        pthread_mutex_unlock(&g->mu);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(rk);
        evbus_host_log(host, EVBUS_LOG_INFO, "group %s: %s %d partition(s)",
                       g->id, lost ? "lost" : "revoked", parts->cnt);
        on_revoke(g, parts, lost);
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        evbus_host_log(host, EVBUS_LOG_WARN, "group %s: rebalance error: %s",
                       g->id, rd_kafka_err2str(err));
        pthread_mutex_lock(&g->mu);
        for (kafka_sub_t *s = g->subs; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            evbus__kafka_sub_revoke_locked(s, NULL);
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&g->mu);
        rd_kafka_assign(rk, NULL);
    }
    if (e) {
        evbus_host_log(host, EVBUS_LOG_WARN,
                       "group %s: incremental rebalance: %s", g->id,
                       rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/* ------------------------------------------------------------ topic set */

/* Subscribes the consumer to the topics of g->subs and remembers them as
 * applied. g->mu held (rd_kafka_subscribe does not run the rebalance
 * callback: that happens in a later consumer poll). */
static rd_kafka_resp_err_t apply_topics_locked(kafka_group_t *g)
{
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(g->nsubs);
    char **names = calloc((size_t)g->nsubs + 1, sizeof *names);
    int n = 0;
    if (!l || !names)
        goto oom;
    for (kafka_sub_t *s = g->subs; s; s = s->next) {
        rd_kafka_topic_partition_list_add(l, s->topic, RD_KAFKA_PARTITION_UA);
        if (!(names[n++] = strdup(s->topic)))
            goto oom;
    }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(g->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return err;
    }
    for (int i = 0; i < g->napplied; i++)
        free(g->applied[i]);
    free(g->applied);
    g->applied = names;
    g->napplied = n;
    g->topics_changed = false;
    g->shrink_at = 0;
    g->joining = true; /* until the assignment arrives */
    g->joined_at = (long long)evbus__mono_ms();
    return RD_KAFKA_RESP_ERR_NO_ERROR;
oom:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    return RD_KAFKA_RESP_ERR__FAIL;
}

/* A subscription that takes over a topic the consumer kept reading (and
 * dropping) since the previous subscription of it ended: seeks its
 * assigned partitions back to the committed offsets and adopts their
 * attempts. The broker calls run without g->mu; the subscription is
 * looked up again afterwards (it may have gone). Poll thread only. */
static void rewind_one(kafka_group_t *g)
{
    pthread_mutex_lock(&g->mu);
    kafka_sub_t *s = g->subs;
    while (s && !s->rewind)
        s = s->next;
    char *topic = s ? strdup(s->topic) : NULL;
    rd_kafka_topic_partition_list_t *l = topic ? assigned_of(g, topic) : NULL;
    if (s && (!topic || !l))
        s->rewind = false; /* not assigned: a later assignment adopts */
    pthread_mutex_unlock(&g->mu);
    if (!l) {
        free(topic);
        return;
    }
    rd_kafka_resp_err_t err = rd_kafka_committed(g->rk, l, g->kb->timeout_ms);
    if (!err) {
        rd_kafka_topic_partition_list_t *to =
            rd_kafka_topic_partition_list_copy(l);
        for (int i = 0; to && i < to->cnt; i++)
            if (to->elems[i].offset < 0)
                to->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_error_t *e =
            to ? rd_kafka_seek_partitions(g->rk, to, g->kb->timeout_ms) : NULL;
        if (e) {
            evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                           "%s (group %s): seek to the committed offsets: %s",
                           topic, g->id, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        if (to)
            rd_kafka_topic_partition_list_destroy(to);
    } else {
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "%s (group %s): reading the committed offsets: %s",
                       topic, g->id, rd_kafka_err2str(err));
    }
    pthread_mutex_lock(&g->mu);
    s = sub_of(g, topic);
    if (s && s->rewind) {
        s->rewind = false;
        pthread_mutex_lock(&s->mu);
        if (!err)
            evbus__kafka_adopt(s, l);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&g->mu);
    rd_kafka_topic_partition_list_destroy(l);
    free(topic);
}

/* At the start of a poll round: rewinds taken-over topics and applies a
 * changed topic set (a smaller one only after the grace). Subscriptions
 * made in a row coalesce: the set is applied once it has not changed for
 * a poll round, and never while the previous subscribe still waits for
 * its assignment (a second JoinGroup then makes the broker discard the
 * first and the group can stall for a long time). */
static void update_topics(kafka_group_t *g)
{
    for (int i = 0; i < 64; i++) { /* bounded: a few per round */
        pthread_mutex_lock(&g->mu);
        bool more = false;
        for (kafka_sub_t *s = g->subs; s && !more; s = s->next)
            more = s->rewind;
        pthread_mutex_unlock(&g->mu);
        if (!more)
            break;
        rewind_one(g);
    }
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    pthread_mutex_lock(&g->mu);
    long long now = (long long)evbus__mono_ms();
    bool settled = now - g->changed_at >= POLL_MS;
    bool joined = !g->joining || now - g->joined_at >= JOIN_WAIT_MS;
    if (g->topics_changed && g->nsubs > 0 && now >= g->retry_at && settled &&
        joined) {
        bool shrinks = false;
        for (int i = 0; i < g->napplied && !shrinks; i++)
            shrinks = !sub_of(g, g->applied[i]);
        bool grows = false;
        for (kafka_sub_t *s = g->subs; s && !grows; s = s->next)
            grows = !applied_has(g, s->topic);
        if (!shrinks && !grows) {
            g->topics_changed = false;
            g->shrink_at = 0;
        } else if (grows || now >= g->shrink_at) {
            err = apply_topics_locked(g);
            g->retry_at = err ? now + RETRY_SUBSCRIBE_MS : 0;
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (err) /* logged without a lock held */
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "group %s: changing the topic set failed (again in "
                       "%d ms): %s",
                       g->id, RETRY_SUBSCRIBE_MS, rd_kafka_err2str(err));
}

/* ------------------------------------------------------------ backpressure */

/* g->mu held; the caller logs the pause after unlocking. */
static void pause_sub(kafka_group_t *g, kafka_sub_t *s, bool pause)
{
    rd_kafka_topic_partition_list_t *l = assigned_of(g, s->topic);
    if (l) {
        if (pause)
            rd_kafka_pause_partitions(g->rk, l);
        else
            rd_kafka_resume_partitions(g->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    s->paused = pause;
}

/* One subscription: waits (bounded) for fetch() to drain a full buffer. A
 * subscription that unsubscribes meanwhile ends the wait (leaving) and is
 * not freed before the wait is over (waiting_on). g->mu held; released
 * while waiting. */
static void wait_for_room(kafka_group_t *g, kafka_sub_t *s)
{
    g->waiting_on = s;
    pthread_mutex_unlock(&g->mu);
    struct timespec end = evbus__deadline_in(WAIT_FULL_MS);
    pthread_mutex_lock(&s->mu);
    s->room_waiting = true;
    while (s->ready_len > KAFKA_BUF_LOW && !s->leaving &&
           !atomic_load(&g->stop))
        if (evbus__cond_wait_until(&s->room_cv, &s->mu, &end) == ETIMEDOUT)
            break;
    s->room_waiting = false;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&g->mu);
    g->waiting_on = NULL;
    pthread_cond_broadcast(&g->cv);
}

/* Keeps every buffer bounded (see the file comment). Returns whether some
 * subscription is paused. */
static bool backpressure(kafka_group_t *g)
{
    long long now = (long long)evbus__mono_ms();
    bool any_paused = false;
    int pauses = 0;
    char note[400];
    pthread_mutex_lock(&g->mu);
    bool alone = g->nsubs == 1;
    if (alone && evbus__kafka_sub_ready_len(g->subs) >= KAFKA_BUF_HIGH &&
        !atomic_load(&g->stop))
        wait_for_room(g, g->subs);
    for (kafka_sub_t *s = g->subs; s; s = s->next) {
        size_t len = evbus__kafka_sub_ready_len(s);
        if (len < KAFKA_BUF_HIGH)
            s->full_since = 0;
        else if (!s->full_since)
            s->full_since = now;
        bool full = s->full_since &&
                    (!alone || now - s->full_since > STUCK_MS);
        if (!s->paused && full) {
            pause_sub(g, s, true);
            if (!pauses++)
                snprintf(note, sizeof note,
                         "%s (group %s): %zu records wait for the "
                         "application; pausing fetch",
                         s->topic, g->id, len);
        } else if (s->paused && len <= KAFKA_BUF_LOW) {
            pause_sub(g, s, false);
        }
        any_paused |= s->paused;
    }
    pthread_mutex_unlock(&g->mu);
    if (pauses)
        evbus_host_log(g->kb->host, EVBUS_LOG_INFO, "%s", note);
    return any_paused;
}

/* ------------------------------------------------------------ poll thread */

static void consumer_error(kafka_group_t *g, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    /* A topic nobody wrote to yet: the mock and brokers with auto-creation
     * create it; until then librdkafka reports it on every refresh. */
    int level = m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
                    ? EVBUS_LOG_DEBUG
                    : EVBUS_LOG_WARN;
    evbus_host_log(g->kb->host, level, "%s (group %s): consumer error: %s",
                   m->rkt ? rd_kafka_topic_name(m->rkt) : "-", g->id,
                   rd_kafka_message_errstr(m));
}

/* Hands each subscription its records of the batch (order kept within a
 * topic); records of no subscription are dropped, their offsets unstored. */
static void route(kafka_group_t *g, rd_kafka_message_t **batch, int n)
{
    rd_kafka_message_t *mine[KAFKA_POLL_BATCH];
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < n; i++) {
        if (!batch[i])
            continue;
        const char *topic = rd_kafka_topic_name(batch[i]->rkt);
        kafka_sub_t *s = sub_of(g, topic);
        int k = 0;
        for (int j = i; j < n; j++) {
            if (!batch[j] ||
                (j > i && strcmp(rd_kafka_topic_name(batch[j]->rkt),
                                 topic) != 0))
                continue;
            if (s && !s->rewind)
                mine[k++] = batch[j];
            else
                rd_kafka_message_destroy(batch[j]);
            batch[j] = NULL;
        }
        if (k)
            evbus__kafka_sub_buffer(s, mine, k);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Commits the partitions whose offset or attempts changed (the
 * periodic commit that replaces auto-commit, see kafka_attempts.c). */
static void commit_changed(kafka_group_t *g)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    if (!l)
        return;
    pthread_mutex_lock(&g->commit_mu);
    pthread_mutex_lock(&g->mu);
    for (kafka_sub_t *s = g->subs; s; s = s->next) {
        evbus__kafka_sub_sweep(s); /* when no record came to do it */
        pthread_mutex_lock(&s->mu);
        if (s->commits_dirty) {
            s->commits_dirty = false;
            evbus__kafka_commit_build(s, l, NULL, false);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&g->mu);
    rd_kafka_resp_err_t err = evbus__kafka_commit_send(g, l);
    pthread_mutex_unlock(&g->commit_mu);
    evbus__kafka_commit_log(g, err, "periodic");
    rd_kafka_topic_partition_list_destroy(l);
}

static void *poll_main(void *arg)
{
    kafka_group_t *g = arg;
    rd_kafka_message_t *batch[KAFKA_POLL_BATCH];
    while (!atomic_load(&g->stop)) {
        update_topics(g);
        bool paused = backpressure(g);
        int n = 0;
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(g->rk, paused ? 20 : POLL_MS);
        while (m) {
            if (m->err) {
                consumer_error(g, m);
                rd_kafka_message_destroy(m);
            } else {
                batch[n++] = m;
            }
            if (n == KAFKA_POLL_BATCH)
                break;
            m = rd_kafka_consumer_poll(g->rk, 0);
        }
        if (n) {
            route(g, batch, n);
            evbus_host_notify(g->kb->host);
        }
        if ((long long)evbus__mono_ms() >= g->next_commit) {
            commit_changed(g);
            g->next_commit = (long long)evbus__mono_ms() + COMMIT_MS;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ lifetime */

static void group_free(kafka_group_t *g)
{
    if (g->rk)
        rd_kafka_destroy(g->rk);
    for (int i = 0; i < g->napplied; i++)
        free(g->applied[i]);
    free(g->applied);
    free(g->id);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->commit_mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

/* A consumer for group with s as its only subscription, subscribed and
 * polling; NULL with errstr and *rc set on failure. */
static kafka_group_t *group_open(kafka_bus_t *kb, kafka_sub_t *s,
                                 const char *group, int *rc, char *errstr,
                                 size_t n)
{
    kafka_group_t *g = calloc(1, sizeof *g);
    rd_kafka_conf_t *conf = g ? rd_kafka_conf_dup(kb->consumer_conf) : NULL;
    *rc = EVBUS_ENOMEM;
    if (!g || !conf || !(g->id = strdup(group))) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        if (g)
            free(g->id);
        free(g);
        snprintf(errstr, n, "kafka: out of memory");
        return NULL;
    }
    g->kb = kb;
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->commit_mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    char why[512];
    if (rd_kafka_conf_set(conf, "group.id", group, why, sizeof why) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, n, "kafka: bad group '%s': %s", group, why);
        group_free(g);
        *rc = EVBUS_EINVAL;
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, g);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    evbus__kafka_set_log_callbacks(conf);
    g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!g->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, n, "kafka: cannot create a consumer: %s", why);
        group_free(g);
        *rc = EVBUS_EOPTION;
        return NULL;
    }
    rd_kafka_poll_set_consumer(g->rk);
    s->g = g;
    s->rk = g->rk;
    g->subs = s;
    g->nsubs = 1;
    /* The thread subscribes once the topic set settles, so that the
     * subscriptions a service makes at start-up join the group once. */
    g->topics_changed = true;
    g->changed_at = (long long)evbus__mono_ms();
    if (pthread_create(&g->thread, NULL, poll_main, g) != 0) {
        snprintf(errstr, n, "kafka: cannot start the consumer thread");
        rd_kafka_consumer_close(g->rk);
        group_free(g);
        return NULL;
    }
    g->thread_started = true;
    *rc = EVBUS_OK;
    return g;
}

/* Stops the thread and leaves the group; the revoke callback of
 * rd_kafka_consumer_close commits what the subscriptions stored. */
static void group_close(kafka_group_t *g)
{
    atomic_store(&g->stop, true);
    if (g->thread_started)
        pthread_join(g->thread, NULL);
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(g->rk);
    if (err)
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "group %s: consumer close: %s", g->id,
                       rd_kafka_err2str(err));
    group_free(g);
}

/* ------------------------------------------------------------ vtable */

int evbus__kafka_subscribe(void *priv, const char *topic, const char *group,
                           void **bsub, char *errstr, size_t n)
{
    kafka_bus_t *kb = priv;
    if (evbus__kafka_topic_check(topic) != EVBUS_OK) {
        snprintf(errstr, n,
                 "kafka: '%s' is not a Kafka topic name (1-249 of "
                 "[A-Za-z0-9._-])",
                 topic);
        return EVBUS_EINVAL;
    }
    kafka_sub_t *s = evbus__kafka_sub_new(kb, topic, group);
    if (!s) {
        snprintf(errstr, n, "kafka: out of memory");
        return EVBUS_ENOMEM;
    }
    int rc = EVBUS_OK;
    pthread_mutex_lock(&kb->groups_mu);
    kafka_group_t *g = kb->groups;
    while (g && strcmp(g->id, group) != 0)
        g = g->next;
    if (!g) {
        g = group_open(kb, s, group, &rc, errstr, n);
        if (g) {
            g->next = kb->groups;
            kb->groups = g;
        }
    } else {
        pthread_mutex_lock(&g->mu);
        if (sub_of(g, topic)) {
            snprintf(errstr, n,
                     "kafka: this bus already has a subscription to %s in "
                     "group %s (open another bus for a second member)",
                     topic, group);
            rc = EVBUS_EBUSY;
        } else {
            s->g = g;
            s->rk = g->rk;
            /* The consumer still reads this topic for a subscription that
             * ended within the grace: start again from the commit. */
            s->rewind = applied_has(g, topic);
            s->next = g->subs;
            g->subs = s;
            g->nsubs++;
            g->topics_changed = true;
            g->changed_at = (long long)evbus__mono_ms();
        }
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_unlock(&kb->groups_mu);
    if (rc != EVBUS_OK) {
        evbus__kafka_sub_free(s);
        return rc;
    }
    *bsub = s;
    return EVBUS_OK;
}

void evbus__kafka_unsubscribe(void *priv, void *bsub)
{
    kafka_bus_t *kb = priv;
    kafka_sub_t *s = bsub;
    kafka_group_t *g = s->g;
    pthread_mutex_lock(&kb->groups_mu);
    pthread_mutex_lock(&g->mu);
    bool last = g->nsubs == 1;
    if (last) {
        kafka_group_t **pp = &kb->groups;
        while (*pp != g)
            pp = &(*pp)->next;
        *pp = g->next;
        atomic_store(&g->stop, true);
    }
    /* Out of the routing; the thread no longer touches s once it is not
     * waiting for its room. */
    kafka_sub_t **sp = &g->subs;
    while (*sp != s)
        sp = &(*sp)->next;
    *sp = s->next;
    g->nsubs--;
    pthread_mutex_lock(&s->mu);
    s->leaving = true;
    pthread_cond_signal(&s->room_cv);
    pthread_mutex_unlock(&s->mu);
    while (g->waiting_on == s)
        pthread_cond_wait(&g->cv, &g->mu);
    if (!last) {
        g->topics_changed = true;
        g->changed_at = (long long)evbus__mono_ms();
        g->shrink_at = (long long)evbus__mono_ms() + SHRINK_GRACE_MS;
    }
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_unlock(&kb->groups_mu);

    /* Commits its offsets now (clean: no window); the consumer keeps its
     * partitions (and drops their records) until the smaller topic set is
     * applied. */
    evbus__kafka_sub_let_go(s);
    if (last)
        group_close(g);
    evbus__kafka_sub_free(s);
}

void evbus__kafka_groups_close(kafka_bus_t *kb)
{
    /* The core unsubscribes everything before closing the bus; this only
     * runs when it did not. */
    pthread_mutex_lock(&kb->groups_mu);
    kafka_group_t *g = kb->groups;
    kb->groups = NULL;
    pthread_mutex_unlock(&kb->groups_mu);
    while (g) {
        kafka_group_t *next = g->next;
        atomic_store(&g->stop, true);
        if (g->thread_started)
            pthread_join(g->thread, NULL);
        g->thread_started = false;
        while (g->subs) {
            kafka_sub_t *s = g->subs;
            g->subs = s->next;
            evbus__kafka_sub_let_go(s);
            evbus__kafka_sub_free(s);
        }
        group_close(g);
        g = next;
    }
}
