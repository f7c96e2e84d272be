/*
 * sqlite:// backend - appending to the log.
 *
 * publish: one BEGIN IMMEDIATE / INSERT / COMMIT on the pub connection.
 * publish_async: the payload is copied into a queue; one writer thread
 * takes everything queued (up to a batch limit) and writes it in a single
 * transaction (group commit), then reports each outcome. When the queue
 * holds max_queue items or max_queue_bytes, publish_async waits for room
 * (back-pressure) instead of failing.
 *
 * Durability: with synchronous=NORMAL (default) a returned publish is in the
 * WAL and survives a crash of any process; a power loss may lose the last
 * commits. synchronous=full fsyncs the WAL on every commit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlite_internal.h"
#include "support/cond.h"

#define BATCH_MAX_ITEMS 8192
#define BATCH_MAX_BYTES (16u << 20)

static int insert_event(sq_conn_t *c, int64_t topic_id, int64_t now,
                        const void *payload, size_t len)
{
    sqlite3_stmt *st = evbus__sqlite_stmt(c, SQ_EV_INS);
    if (!st)
        return evbus__sqlite_fail(c, sqlite3_errcode(c->db));
    sqlite3_bind_int64(st, 1, topic_id);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_blob64(st, 3, len ? payload : "", len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_fail(c, rc);
}

static void notify_local(sq_bus_t *b)
{
    /* A subscriber of this bus learns of it at once; other processes
     * through the watcher. */
    if (atomic_load_explicit(&b->nsubs, memory_order_relaxed) > 0)
        evbus_host_notify(b->host);
}

/* Failures are logged through a lograte (one line per interval with a
 * count, and a line when it works again), with the reason naming the
 * file. rate_note updates the state (under the lock that guards it),
 * rate_emit logs (with no lock held). */
static bool rate_note(evbus__lograte_t *r, int err, uint64_t *n)
{
    if (err != EVBUS_OK)
        return evbus__lograte_fail(r, err, n);
    *n = evbus__lograte_ok(r);
    return *n > 0;
}

static void rate_emit(sq_bus_t *b, int err, uint64_t n, const char *what,
                      const char *why)
{
    if (err == EVBUS_OK)
        evbus_host_log(b->host, EVBUS_LOG_INFO,
                       "%s works again after %llu failures", what,
                       (unsigned long long)n);
    else if (n)
        evbus_host_log(b->host, EVBUS_LOG_WARN,
                       "%s still failing: %s (%llu times since the last "
                       "report)",
                       what, why, (unsigned long long)n);
    else
        evbus_host_log(b->host, EVBUS_LOG_WARN, "%s failed: %s", what, why);
}

int evbus__sqlite_publish(void *priv, const char *topic,
                          const evbus_event_t *ev, const void *payload,
                          size_t len)
{
    sq_bus_t *b = priv;
    int64_t tid;
    char why[600] = "";
    pthread_mutex_lock(&b->pub_mu);
    int err = evbus__sqlite_file_ok(b);
    if (err == EVBUS_OK)
        err = evbus__sqlite_topic_id(&b->pub, topic, &tid);
    if (err == EVBUS_OK)
        err = evbus__sqlite_begin(&b->pub);
    if (err == EVBUS_OK) {
        err = insert_event(&b->pub, tid, evbus__wall_ms(), payload, len);
        if (err == EVBUS_OK)
            err = evbus__sqlite_commit(&b->pub);
        else
            evbus__sqlite_rollback(&b->pub);
    }
    if (err != EVBUS_OK)
        evbus__sqlite_why(b, &b->pub, err, why, sizeof why);
    uint64_t n;
    bool emit = rate_note(&b->pub_log, err, &n);
    pthread_mutex_unlock(&b->pub_mu);
    if (err == EVBUS_OK)
        notify_local(b);
    if (emit) {
        char what[300];
        snprintf(what, sizeof what, "publish to %s", topic);
        rate_emit(b, err, n, what, why);
    }
    return err;
}

/* Writes a batch in one transaction. Returns the outcome for all. */
static int write_batch(sq_bus_t *b, sq_item_t *head, char *why, size_t n)
{
    sq_conn_t *c = &b->pub;
    pthread_mutex_lock(&b->pub_mu);
    int err = evbus__sqlite_file_ok(b);
    /* Topic ids first: a new topic is created in its own transaction. */
    for (sq_item_t *it = head; it && err == EVBUS_OK; it = it->next)
        err = evbus__sqlite_topic_id(c, it->topic, &it->topic_id);
    if (err == EVBUS_OK)
        err = evbus__sqlite_begin(c);
    if (err == EVBUS_OK) {
        int64_t now = evbus__wall_ms();
        for (sq_item_t *it = head; it && err == EVBUS_OK; it = it->next)
            err = insert_event(c, it->topic_id, now, it->payload, it->len);
        if (err == EVBUS_OK)
            err = evbus__sqlite_commit(c);
        else
            evbus__sqlite_rollback(c);
    }
    if (err != EVBUS_OK)
        evbus__sqlite_why(b, c, err, why, n);
    pthread_mutex_unlock(&b->pub_mu);
    return err;
}

static void *writer_main(void *arg)
{
    sq_bus_t *b = arg;
    pthread_mutex_lock(&b->q_mu);
    for (;;) {
        while (!b->q_head && !b->q_stop)
            pthread_cond_wait(&b->q_cv, &b->q_mu);
        if (b->q_stop) {
            /* Closing: flush() already had its chance; what is left is
             * reported as timed out, not written behind the core's back. */
            sq_item_t *left = b->q_head;
            b->q_head = b->q_tail = NULL;
            b->q_len = 0;
            b->q_bytes = 0;
            pthread_mutex_unlock(&b->q_mu);
            while (left) {
                sq_item_t *next = left->next;
                left->done(left->token, EVBUS_ETIMEDOUT);
                free(left);
                left = next;
            }
            pthread_mutex_lock(&b->q_mu);
            pthread_cond_broadcast(&b->q_idle);
            break;
        }
        /* Take a batch off the queue. */
        sq_item_t *head = b->q_head, *last = head;
        long n = 1;
        size_t bytes = head->len;
        while (last->next && n < BATCH_MAX_ITEMS &&
               bytes + last->next->len <= BATCH_MAX_BYTES) {
            last = last->next;
            bytes += last->len;
            n++;
        }
        b->q_head = last->next;
        if (!b->q_head)
            b->q_tail = NULL;
        last->next = NULL;
        b->q_len -= n;
        b->q_bytes -= bytes;
        b->q_busy = n;
        pthread_cond_broadcast(&b->q_idle); /* room for blocked producers */
        pthread_mutex_unlock(&b->q_mu);

        char why[600] = "";
        int err = write_batch(b, head, why, sizeof why);
        uint64_t times;
        if (rate_note(&b->writer_log, err, &times))
            rate_emit(b, err, times, "asynchronous publishing", why);
        if (err == EVBUS_OK)
            notify_local(b);
        while (head) {
            sq_item_t *next = head->next;
            head->done(head->token, err);
            free(head);
            head = next;
        }

        pthread_mutex_lock(&b->q_mu);
        b->q_busy = 0;
        pthread_cond_broadcast(&b->q_idle);
    }
    pthread_mutex_unlock(&b->q_mu);
    return NULL;
}

int evbus__sqlite_publish_async(void *priv, const char *topic,
                                const evbus_event_t *ev, const void *payload,
                                size_t len, evbus_publish_done_fn done,
                                void *token)
{
    sq_bus_t *b = priv;
    if (evbus__sqlite_file_ok(b) != EVBUS_OK)
        return EVBUS_EIO; /* logged once when it was found out */
    size_t tlen = strlen(topic) + 1;
    sq_item_t *it = malloc(sizeof *it + tlen + len);
    if (!it)
        return EVBUS_ENOMEM;
    memcpy(it->data, topic, tlen);
    memcpy(it->data + tlen, payload, len);
    it->next = NULL;
    it->topic = it->data;
    it->payload = it->data + tlen;
    it->len = len;
    it->topic_id = 0;
    it->done = done;
    it->token = token;

    pthread_mutex_lock(&b->q_mu);
    if (!b->writer_started && !b->q_stop) {
        if (pthread_create(&b->writer, NULL, writer_main, b) != 0) {
            pthread_mutex_unlock(&b->q_mu);
            free(it);
            return EVBUS_ENOMEM;
        }
        b->writer_started = true;
    }
    /* Back-pressure; a single event larger than the byte limit still goes
     * through once the queue is empty. */
    while (
        (b->q_len >= b->o.max_queue ||
         (b->q_len > 0 && b->q_bytes + len > (size_t)b->o.max_queue_bytes)) &&
        !b->q_stop)
        pthread_cond_wait(&b->q_idle, &b->q_mu);
    if (b->q_stop) {
        pthread_mutex_unlock(&b->q_mu);
        free(it);
        return EVBUS_ECLOSED;
    }
    if (b->q_tail)
        b->q_tail->next = it;
    else
        b->q_head = it;
    b->q_tail = it;
    b->q_len++;
    b->q_bytes += len;
    pthread_cond_signal(&b->q_cv);
    pthread_mutex_unlock(&b->q_mu);
    return EVBUS_OK;
}

int evbus__sqlite_flush(void *priv, int timeout_ms)
{
    sq_bus_t *b = priv;
    struct timespec until = evbus__deadline_in(timeout_ms);
    int err = EVBUS_OK;
    pthread_mutex_lock(&b->q_mu);
    while (b->q_len > 0 || b->q_busy > 0) {
        if (evbus__cond_wait_until(&b->q_idle, &b->q_mu, &until) != 0) {
            if (b->q_len > 0 || b->q_busy > 0)
                err = EVBUS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&b->q_mu);
    return err;
}

void evbus__sqlite_writer_stop(sq_bus_t *b)
{
    pthread_mutex_lock(&b->q_mu);
    b->q_stop = true;
    bool started = b->writer_started;
    pthread_cond_broadcast(&b->q_cv);
    pthread_cond_broadcast(&b->q_idle);
    pthread_mutex_unlock(&b->q_mu);
    /* The writer finishes the batch it is writing and completes the rest
     * with EVBUS_ETIMEDOUT, so every accepted publish gets its completion. */
    if (started)
        pthread_join(b->writer, NULL);
}
