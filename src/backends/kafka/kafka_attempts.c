/*
 * kafka:// durable attempts (backend table v2, record_attempts) and the
 * commits that carry them.
 *
 * Kafka keeps no per-record state, but a commit carries a metadata string
 * per partition (at most 4096 bytes on a broker). This backend commits
 * itself (enable.auto.commit is forced off) and every commit of a
 * partition carries:
 *
 *   evbus1;w=W;O:A:F:P;...
 *
 *   W        the started window: no record past offset W was handed to a
 *            handler. Before starting a record with offset > W the backend
 *            synchronously commits W = offset + WINDOW, so a normal stream
 *            costs one synchronous commit per WINDOW records (shared by
 *            the partitions about to cross: evbus__kafka_windows_align).
 *   O:A:F:P  an exact entry: record O had attempt A started (A >= 2), the
 *            first attempt at F ms since the epoch, P the previous backoff.
 *            Written with a synchronous commit before the handler runs.
 *
 * A member taking over a partition reads the committed offset L and this
 * metadata (rd_kafka_committed) before it assigns it. Records in [L, W]
 * are suspects: a previous owner may have crashed inside one of them. A
 * suspect without an exact entry is reported as one attempt done (fetch:
 * attempts = 1), so it runs as attempt 2 with an exact entry of its own -
 * a crash in suspect mode is exact. The bound: the record the previous
 * owner crashed on and those before it were really started; those after
 * it in the window are charged one attempt too many at most.
 *
 * A clean leave (unsubscribe, close, a revoke once running work settled)
 * commits no window, so a clean restart has no suspects; exact entries of
 * records still unsettled (released, waiting for a retry) stay. At most
 * MAX_EXACT entries per partition are kept (4096 bytes); beyond that an
 * attempt is counted in memory only (record_attempts answers
 * EVBUS_ENOTSUP for the call, logged with backoff).
 *
 * Ordering: every commit is built and sent with the group's commit_mu
 * held (taken before any other kafka lock), so a later metadata string
 * never reaches the broker before an earlier one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_internal.h"
#include "support/clock.h"

#define WINDOW 1024   /* records per started-window commit */
#define MAX_EXACT 64  /* exact entries per partition (<= 56 bytes) */
#define META_MAX 4000 /* below the broker's 4096-byte limit */
#define META_TAG "evbus1"

/* ------------------------------------------------------------ format */

static bool parse_i64(const char **pp, int64_t min, int64_t max, int64_t *out)
{
    const char *p = *pp;
    int64_t v = 0;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v < min || v > max)
        return false;
    *pp = p;
    *out = v;
    return true;
}

bool evbus__kafka_meta_parse(const char *s, size_t len, kafka_meta_t *m)
{
    m->window = -1;
    m->e = NULL;
    m->n = 0;
    if (!s || len < sizeof META_TAG - 1 || len > 4096 ||
        memcmp(s, META_TAG, sizeof META_TAG - 1) != 0 || memchr(s, '\0', len))
        return false;
    char buf[4097];
    memcpy(buf, s, len);
    buf[len] = '\0';
    const char *p = buf + sizeof META_TAG - 1;
    m->e = calloc(MAX_EXACT, sizeof *m->e);
    if (!m->e)
        return false;
    while (*p == ';') {
        p++;
        int64_t a, b, c, d;
        if (p[0] == 'w' && p[1] == '=') {
            p += 2;
            if (!parse_i64(&p, 0, INT64_MAX, &a))
                goto bad;
            m->window = a;
        } else if (m->n < MAX_EXACT && parse_i64(&p, 0, INT64_MAX, &a) &&
                   *p++ == ':' && parse_i64(&p, 1, 1000000, &b) &&
                   *p++ == ':' && parse_i64(&p, 0, INT64_MAX, &c) &&
                   *p++ == ':' && parse_i64(&p, 0, INT32_MAX, &d)) {
            m->e[m->n++] = (kafka_prior_t){a, (int)b, (int)d, c};
        } else {
            goto bad;
        }
    }
    if (*p)
        goto bad;
    return true;
bad:
    free(m->e);
    m->e = NULL;
    m->n = 0;
    m->window = -1;
    return false;
}

static void meta_add(char *buf, size_t *len, int64_t o, int a, int64_t f, int p)
{
    int w = snprintf(buf + *len, META_MAX - *len,
                     ";%" PRId64 ":%d:%" PRId64 ":%d", o, a, f, p);
    if (w > 0 && (size_t)w < META_MAX - *len)
        *len += (size_t)w;
}

/* Whether p's window must stay in its metadata: a record handed to a
 * handler is not covered by the commit offset yet, suspects of a previous
 * owner wait, or records are buffered to start next. Otherwise (all
 * started work acked and nothing waiting: an idle partition) a crash must
 * not make the next records suspects - with max_attempts 1 they would be
 * dead-lettered unhandled. Buffered records keep it open because fetch
 * takes a slice of each partition in turn: the slice before is often all
 * acked when the next starts, and closing then cost one synchronous
 * commit per slice (3,748 for 30,000 records instead of ~30); a crash in
 * that state charges the window's unstarted records one attempt, the
 * bound a stream already has (see the file comment). */
static bool window_open(const kafka_part_t *p)
{
    return p->max_started >= p->commit_off || p->suspect_end >= p->commit_off ||
           p->ready_head != NULL;
}

/* The metadata of p. s->mu held. */
static size_t meta_build(const kafka_part_t *p, bool clean, char *buf)
{
    size_t len = (size_t)snprintf(buf, META_MAX, "%s", META_TAG);
    if (p->window_end >= 0 && window_open(p) && !(clean && p->handed == 0))
        len += (size_t)snprintf(buf + len, META_MAX - len, ";w=%" PRId64,
                                p->window_end);
    /* The list holds every buffered record (thousands): walked to its end
     * under s->mu at each commit it stalled fetch and settle. A commit
     * that is not clean lists exact entries only, counted in nexact. */
    int n = 0, left = p->nexact;
    for (const kafka_msg_t *m = p->head; m && n < MAX_EXACT && (clean || left);
         m = m->next_part)
        if ((m->exact || (clean && m->started)) && m->state != KMSG_ACKED) {
            meta_add(buf, &len, m->offset, m->attempts, m->first_ms,
                     m->prev_delay_ms);
            n++;
            left -= m->exact;
        }
    for (int i = 0; i < p->nprior && n < MAX_EXACT; i++)
        if (p->prior[i].offset >= p->commit_off) {
            meta_add(buf, &len, p->prior[i].offset, p->prior[i].attempts,
                     p->prior[i].first_ms, p->prior[i].prev_delay_ms);
            n++;
        }
    return len;
}

static int exact_count(const kafka_part_t *p)
{
    int n = p->nexact;
    for (int i = 0; i < p->nprior; i++)
        n += p->prior[i].offset >= p->commit_off;
    return n;
}

/* ------------------------------------------------------------ adopt */

void evbus__kafka_adopt(kafka_sub_t *s,
                        const rd_kafka_topic_partition_list_t *list)
{
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &list->elems[i];
        if (strcmp(e->topic, s->topic) != 0)
            continue;
        kafka_part_t *p = evbus__kafka_part_get(s, e->partition);
        if (!p)
            continue; /* out of memory: no prior state, counts restart */
        p->commit_off = e->err || e->offset < 0 ? -1 : e->offset;
        kafka_meta_t m;
        if (!e->err &&
            evbus__kafka_meta_parse(e->metadata, e->metadata_size, &m)) {
            free(p->prior);
            p->prior = m.e;
            p->nprior = m.n;
            p->suspect_end = m.window;
            /* Keep the window for whoever comes after a crash of ours. */
            if (m.window > p->window_end)
                p->window_end = m.window;
        }
    }
}

void evbus__kafka_arrival(kafka_sub_t *s, kafka_part_t *p, kafka_msg_t *m)
{
    (void)s;
    if (p->commit_off < 0)
        p->commit_off = m->offset; /* nothing committed: start here */
    for (int i = 0; i < p->nprior; i++)
        if (p->prior[i].offset == m->offset) {
            m->attempts = p->prior[i].attempts;
            m->first_ms = p->prior[i].first_ms;
            m->prev_delay_ms = p->prior[i].prev_delay_ms;
            m->exact = true; /* the entry now travels with the record */
            p->nexact++;
            p->prior[i] = p->prior[--p->nprior];
            return;
        }
    if (m->offset <= p->suspect_end && m->offset >= p->commit_off)
        m->attempts = 1; /* maybe started by a crashed owner */
}

/* ------------------------------------------------------------ commits */

void evbus__kafka_commit_build(kafka_sub_t *s,
                               rd_kafka_topic_partition_list_t *out,
                               const rd_kafka_topic_partition_list_t *only,
                               bool clean)
{
    char buf[META_MAX];
    for (size_t i = 0; i < s->nparts; i++) {
        kafka_part_t *p = s->parts[i];
        if (!p || p->commit_off < 0)
            continue;
        if (only) {
            bool hit = false;
            for (int k = 0; k < only->cnt && !hit; k++)
                hit = only->elems[k].partition == p->partition &&
                      strcmp(only->elems[k].topic, s->topic) == 0;
            if (!hit)
                continue;
        } else if (!p->commit_dirty && !clean) {
            continue;
        }
        size_t len = meta_build(p, clean, buf);
        void *meta = malloc(len); /* freed with the list */
        if (!meta) {
            /* A commit without it would drop the window and the entries:
             * none now, the next one carries it. */
            s->commits_dirty = true;
            continue;
        }
        memcpy(meta, buf, len);
        p->commit_dirty = false;
        if (!window_open(p)) { /* sent without it: the next start syncs */
            p->window_end = -1;
            p->window_prev = -2;
        }
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_add(out, s->topic, p->partition);
        e->offset = p->commit_off;
        e->metadata = meta;
        e->metadata_size = len;
    }
}

/* Sends l and waits for the answer at most commit_timeout_ms. A plain
 * synchronous rd_kafka_commit waits without limit while the group has no
 * coordinator (a broker down), and the callers hold commit_mu on the
 * application's poll thread: evbus_poll would hang for as long as the
 * broker stays away. A commit that times out may still be sent later;
 * librdkafka keeps commits in order on the way to the coordinator, so a
 * later one still lands after it. */
rd_kafka_resp_err_t evbus__kafka_commit_send(kafka_group_t *g,
                                             rd_kafka_topic_partition_list_t *l)
{
    if (!l->cnt)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_queue_t *q = rd_kafka_queue_new(g->rk);
    if (!q)
        return RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE;
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(g->rk, l, q, NULL, NULL);
    if (!err) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, g->kb->commit_timeout_ms);
        if (!ev) {
            err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        } else {
            err = rd_kafka_event_error(ev);
            const rd_kafka_topic_partition_list_t *r =
                rd_kafka_event_topic_partition_list(ev);
            for (int i = 0; !err && r && i < r->cnt; i++)
                err = r->elems[i].err;
            rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(q);
    return err == RD_KAFKA_RESP_ERR__NO_OFFSET ? RD_KAFKA_RESP_ERR_NO_ERROR
                                               : err;
}

void evbus__kafka_commit_log(kafka_group_t *g, rd_kafka_resp_err_t err,
                             const char *what)
{
    /* While a rebalance runs, every attempt commit fails with "rebalance
     * in progress" and its event is fetched and tried again: thousands of
     * the same warning a second without a rate limit. */
    uint64_t n = 0;
    pthread_mutex_lock(&g->commit_mu);
    bool say = err ? evbus__lograte_fail(&g->commit_rate, (int)err, &n)
                   : (n = evbus__lograte_ok(&g->commit_rate)) > 0;
    pthread_mutex_unlock(&g->commit_mu);
    if (!say)
        return;
    if (err && n)
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "group %s: commit (%s) failed: %s (%llu more such "
                       "failures since the last report)",
                       g->id, what, rd_kafka_err2str(err),
                       (unsigned long long)n);
    else if (err)
        evbus_host_log(g->kb->host, EVBUS_LOG_WARN,
                       "group %s: commit (%s) failed: %s", g->id, what,
                       rd_kafka_err2str(err));
    else
        evbus_host_log(g->kb->host, EVBUS_LOG_INFO,
                       "group %s: commits succeed again (%llu failed)", g->id,
                       (unsigned long long)n);
}

void evbus__kafka_commit_sub(kafka_sub_t *s)
{
    kafka_group_t *g = s->g;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    if (!l)
        return;
    pthread_mutex_lock(&g->commit_mu);
    pthread_mutex_lock(&s->mu);
    evbus__kafka_commit_build(s, l, NULL, true);
    pthread_mutex_unlock(&s->mu);
    rd_kafka_resp_err_t err = evbus__kafka_commit_send(g, l);
    pthread_mutex_unlock(&g->commit_mu);
    evbus__kafka_commit_log(g, err, "unsubscribe");
    rd_kafka_topic_partition_list_destroy(l);
}

/* ------------------------------------------------------------ record */

/* Marks what msg needs; true when a synchronous commit must precede its
 * handler. *full: no room for its exact entry. s->mu held. */
static bool note_attempt(kafka_sub_t *s, const evbus_msg_t *msg, bool *full)
{
    kafka_msg_t *m = msg->cookie;
    kafka_part_t *p = m->part;
    if (p->revoked)
        return false; /* nothing of it is committed by this member now */
    m->attempts = msg->attempts;
    m->first_ms = msg->first_attempt_ms;
    m->prev_delay_ms = msg->prev_delay_ms;
    m->started = true;
    if (m->offset > p->max_started)
        p->max_started = m->offset;
    if (msg->attempts >= 2) {
        if (!m->exact && exact_count(p) >= MAX_EXACT) {
            *full = true;
            return false;
        }
        if (!m->exact) {
            m->exact = true;
            p->nexact++;
        }
        p->commit_dirty = true;
        return true;
    }
    if (m->offset > p->window_end) {
        p->window_prev = p->window_end;
        p->window_end = m->offset + WINDOW;
        p->commit_dirty = true;
        return true;
    }
    return false;
}

/* Widens, along with a window that must be committed now, those of the
 * partitions with records waiting to start and less than half a window
 * left: fetch takes a slice of each partition in turn, so they would each
 * cross soon after, with a synchronous commit apiece (~32 for 30,000
 * records over 8 partitions); carried by this one they cross together.
 * The bound stays that of a window: a crash charges at most WINDOW
 * records past the last started one (or the commit offset). s->mu held;
 * window_prev as note_attempt sets it, for a commit that fails. */
void evbus__kafka_windows_align(kafka_sub_t *s)
{
    for (size_t i = 0; i < s->nparts; i++) {
        kafka_part_t *p = s->parts[i];
        if (!p || p->revoked || !p->ready_head || p->commit_off < 0)
            continue;
        int64_t base = p->max_started > p->commit_off - 1 ? p->max_started
                                                          : p->commit_off - 1;
        if (p->window_end >= 0 && p->window_end - base >= WINDOW / 2)
            continue;
        if (p->window_prev == -2)
            p->window_prev = p->window_end;
        p->window_end = base + WINDOW;
        p->commit_dirty = true;
    }
}

/* Undoes note_attempt for a record whose attempt could not be recorded:
 * the core gives it back without calling the handler, so the count it
 * will report on the next fetch is the one it had (attempts = handler
 * calls, not recording tries). msg->attempts is the attempt that was
 * about to start, so the one before it is the last that ran. s->mu held. */
static void forget_attempt(const evbus_msg_t *msg)
{
    kafka_msg_t *m = msg->cookie;
    if (m->part->revoked)
        return;
    m->attempts = msg->attempts > 0 ? msg->attempts - 1 : 0;
    if (m->attempts == 0) {
        m->started = false;
        m->first_ms = 0;
    }
    if (m->attempts < 2 && m->exact) {
        m->exact = false;
        m->part->nexact--;
    }
}

int evbus__kafka_record_attempts(void *priv, void *bsub,
                                 evbus_msg_t *const *msgs, int n)
{
    (void)priv;
    kafka_sub_t *s = bsub;
    kafka_group_t *g = s->g;
    bool sync = false, full = false;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++)
        sync |= note_attempt(s, msgs[i], &full);
    uint64_t repeats = 0;
    bool say =
        full && evbus__lograte_fail(&s->meta_full, EVBUS_ENOTSUP, &repeats);
    pthread_mutex_unlock(&s->mu);
    if (say)
        evbus_host_log(s->kb->host, EVBUS_LOG_WARN,
                       "%s (group %s): over %d retried records in one "
                       "partition; counting the next attempts in memory only "
                       "(%" PRIu64 " times before)",
                       s->topic, s->group, MAX_EXACT, repeats);
    if (!sync)
        return full ? EVBUS_ENOTSUP : EVBUS_OK;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    if (!l)
        return EVBUS_ENOMEM;
    pthread_mutex_lock(&g->commit_mu);
    pthread_mutex_lock(&s->mu);
    evbus__kafka_windows_align(s);
    evbus__kafka_commit_build(s, l, NULL, false);
    pthread_mutex_unlock(&s->mu);
    rd_kafka_resp_err_t err = evbus__kafka_commit_send(g, l);
    pthread_mutex_unlock(&g->commit_mu);
    evbus__kafka_commit_log(g, err, "attempts");
    if (err) {
        /* Not recorded: send it again with the next commit. */
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n; i++)
            forget_attempt(msgs[i]);
        for (int i = 0; i < l->cnt; i++) {
            int32_t id = l->elems[i].partition;
            kafka_part_t *p =
                id >= 0 && (size_t)id < s->nparts ? s->parts[id] : NULL;
            if (!p)
                continue;
            p->commit_dirty = true;
            /* No handler ran under the window this call widened. */
            if (p->window_prev >= -1)
                p->window_end = p->window_prev;
        }
        s->commits_dirty = true;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nparts; i++)
        if (s->parts[i])
            s->parts[i]->window_prev = -2;
    pthread_mutex_unlock(&s->mu);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return evbus__kafka_map_err(err);
    return full ? EVBUS_ENOTSUP : EVBUS_OK;
}
