/*
 * Publishing: validate, encode once, hand the bytes to the backend.
 * Asynchronous outcomes are queued and reported on the application's thread
 * (evbus_poll / evbus_flush / evbus_close), like librdkafka's delivery
 * reports, so callbacks never run on a broker thread.
 *
 * Back-pressure is one rule for every backend: a publish_async counts
 * against the bus's max_pending / max_pending_bytes from the moment it is
 * accepted until the backend answered and, with a callback, until that
 * callback ran. Past the bound publish_async waits up to publish_wait_ms
 * and then answers EVBUS_EAGAIN; no queue grows without limit.
 */
#include <stdlib.h>
#include <string.h>

#include "event_internal.h"
#include "internal.h"

typedef struct pub_token {
    evbus_t *bus;
    evbus_delivery_cb cb;
    void *opaque;
    evbus_event_t *event; /* copy for the callback */
    size_t len;
} pub_token_t;

int evbus_name_check(const evbus_t *bus, const char *name, char *errstr,
                     size_t n)
{
    return evbus__check_name(name, "topic or group", bus && bus->native_names,
                             errstr, n);
}

static int check_topic(const evbus_t *bus, const char *topic)
{
    char why[256];
    if (evbus__check_name(topic, "topic", bus->native_names, why,
                          sizeof why) == EVBUS_OK)
        return EVBUS_OK;
    evbus__log(EVBUS_LOG_WARN, "core", "publish refused: %s", why);
    return EVBUS_EINVAL;
}

static void count_outcome(evbus_t *bus, int err)
{
    if (err == EVBUS_OK)
        atomic_fetch_add_explicit(&bus->published, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&bus->publish_failed, 1,
                                  memory_order_relaxed);
}

int evbus__publish_encoded(evbus_t *bus, const char *topic,
                           const evbus_event_t *ev, const void *payload,
                           size_t len)
{
    int rc = bus->be->publish(bus->priv, topic, ev, payload, len);
    count_outcome(bus, rc);
    return rc;
}

/* ------------------------------------------------------------ the bound */

static bool room_for(evbus_t *bus, size_t len)
{
    long n = atomic_fetch_add(&bus->pending_pub, 1);
    size_t b = atomic_fetch_add(&bus->pending_bytes, len);
    /* An event larger than the byte bound alone still goes when nothing
     * else is pending; max_event_bytes limits it. */
    if (n < bus->max_pending && (b + len <= bus->max_pending_bytes || n == 0))
        return true;
    atomic_fetch_sub(&bus->pending_pub, 1);
    atomic_fetch_sub(&bus->pending_bytes, len);
    return false;
}

/* Takes a place under the bound for one publish of len bytes, waiting up
 * to publish_wait_ms. EVBUS_OK or EVBUS_EAGAIN. */
static int reserve(evbus_t *bus, size_t len)
{
    if (room_for(bus, len))
        return EVBUS_OK;
    if (bus->publish_wait_ms > 0) {
        struct timespec until = evbus__deadline_in(bus->publish_wait_ms);
        pthread_mutex_lock(&bus->mu);
        bus->room_waiters++;
        bool ok;
        while (!(ok = room_for(bus, len)) && !atomic_load(&bus->closing) &&
               evbus__cond_wait_until(&bus->cv, &bus->mu, &until) == 0)
            ;
        bus->room_waiters--;
        pthread_mutex_unlock(&bus->mu);
        if (ok)
            return EVBUS_OK;
    }
    atomic_fetch_add_explicit(&bus->publish_eagain, 1, memory_order_relaxed);
    return EVBUS_EAGAIN;
}

/* Gives back a place under the bound; wakes waiting publishers and, on
 * the last one, flush. */
static void unreserve(evbus_t *bus, size_t len)
{
    atomic_fetch_sub(&bus->pending_bytes, len);
    atomic_fetch_sub(&bus->pending_pub, 1);
    pthread_mutex_lock(&bus->mu);
    if (bus->room_waiters > 0)
        pthread_cond_broadcast(&bus->cv);
    pthread_mutex_unlock(&bus->mu);
}

/* One fewer publish unanswered by the backend. Flush waits under bus->mu
 * for the count to reach zero, so only that last decrement needs the lock
 * (to wake it); the waiter re-checks under the same lock, so no wakeup is
 * lost. */
static void unconfirmed_done(evbus_t *bus)
{
    if (atomic_fetch_sub(&bus->unconfirmed, 1) == 1) {
        pthread_mutex_lock(&bus->mu);
        pthread_cond_broadcast(&bus->cv);
        pthread_mutex_unlock(&bus->mu);
    }
}

/* ------------------------------------------------------------ encoding */

/* Each publishing thread encodes into a buffer of its own that is kept
 * between publishes: no allocation per event once it has grown. The key's
 * destructor frees it when the thread ends. */
typedef struct {
    char *buf;
    size_t cap;
} encode_buf_t;

static pthread_key_t encode_key;
static pthread_once_t encode_once = PTHREAD_ONCE_INIT;

static void encode_buf_free(void *p)
{
    encode_buf_t *b = p;
    free(b->buf);
    free(b);
}

static void encode_key_init(void)
{
    pthread_key_create(&encode_key, encode_buf_free);
}

static encode_buf_t *thread_encode_buf(void)
{
    pthread_once(&encode_once, encode_key_init);
    encode_buf_t *b = pthread_getspecific(encode_key);
    if (!b && (b = calloc(1, sizeof *b)) &&
        pthread_setspecific(encode_key, b) != 0) {
        free(b);
        b = NULL;
    }
    return b;
}

/* Validates ev and encodes it into the thread's buffer (*json points into
 * it: valid until this thread publishes again). */
static int encode(evbus_t *bus, const char *topic, const evbus_event_t *ev,
                  char **json, size_t *len)
{
    if (!bus || !ev)
        return EVBUS_EINVAL;
    if (atomic_load_explicit(&bus->closing, memory_order_relaxed))
        return EVBUS_ECLOSED;
    if (check_topic(bus, topic) != EVBUS_OK)
        return EVBUS_EINVAL;
    char why[256];
    if (evbus_event_validate(ev, why, sizeof why) != EVBUS_OK) {
        evbus__log(EVBUS_LOG_WARN, "core", "publish to %s refused: %s", topic,
                   why);
        return EVBUS_EINVAL;
    }
    encode_buf_t *b = thread_encode_buf();
    *json = b ? evbus__event_encode_reuse(ev, &b->buf, &b->cap, len) : NULL;
    if (!*json)
        return EVBUS_ENOMEM;
    if (*len > bus->max_event_bytes) {
        evbus__log(EVBUS_LOG_WARN, "core",
                   "publish to %s refused: event of %zu bytes is over "
                   "max_event_bytes %zu",
                   topic, *len, bus->max_event_bytes);
        return EVBUS_ETOOBIG;
    }
    return EVBUS_OK;
}

/* ------------------------------------------------------------ sync */

int evbus_publish(evbus_t *bus, const char *topic, const evbus_event_t *ev)
{
    char *json;
    size_t len;
    int rc = encode(bus, topic, ev, &json, &len);
    if (rc != EVBUS_OK)
        return rc;
    return evbus__publish_encoded(bus, topic, ev, json, len);
}

int evbus_publish_raw(evbus_t *bus, const char *topic, const void *bytes,
                      size_t len)
{
    if (!bus || (!bytes && len))
        return EVBUS_EINVAL;
    if (atomic_load(&bus->closing))
        return EVBUS_ECLOSED;
    if (check_topic(bus, topic) != EVBUS_OK)
        return EVBUS_EINVAL;
    if (bus->features & EVBUS_FEAT_NO_RAW)
        return EVBUS_ENOTSUP;
    if (len > bus->max_event_bytes) {
        evbus__log(EVBUS_LOG_WARN, "core",
                   "raw publish to %s refused: %zu bytes is over "
                   "max_event_bytes %zu",
                   topic, len, bus->max_event_bytes);
        return EVBUS_ETOOBIG;
    }
    return evbus__publish_encoded(bus, topic, NULL, bytes ? bytes : "", len);
}

/* ------------------------------------------------------------ async */

static void enqueue_completion(evbus_t *bus, pub_token_t *t, int err)
{
    evbus_completion_t *c = malloc(sizeof *c);
    if (!c) { /* cannot report: drop the callback, free its place */
        evbus__log(EVBUS_LOG_ERROR, "core",
                   "out of memory: a delivery callback (outcome %s) is lost",
                   evbus_strerror(err));
        evbus_event_free(t->event);
        unreserve(bus, t->len);
        return;
    }
    *c = (evbus_completion_t){NULL, t->event, t->cb, t->opaque, err, t->len};
    pthread_mutex_lock(&bus->mu);
    if (bus->done_tail)
        bus->done_tail->next = c;
    else
        bus->done_head = c;
    bus->done_tail = c;
    pthread_mutex_unlock(&bus->mu);
}

static void note_async_failure(evbus_t *bus, int err)
{
    int none = EVBUS_OK;
    atomic_compare_exchange_strong(&bus->first_async_err, &none, err);
    evbus__log(EVBUS_LOG_WARN, "core", "asynchronous publish failed: %s",
               evbus_strerror(err));
}

/* The token of a publish without a delivery callback: what its completion
 * needs to give its place under the bound back. */
typedef struct nocb_token {
    evbus_t *bus;
    size_t len;
} nocb_token_t;

static void publish_done_nocb(void *token, int err)
{
    nocb_token_t *t = token;
    evbus_t *bus = t->bus;
    size_t len = t->len;
    free(t);
    count_outcome(bus, err);
    if (err != EVBUS_OK)
        note_async_failure(bus, err);
    unreserve(bus, len);
    unconfirmed_done(bus);
}

/* Completion of a publish with a delivery callback (any thread): queue the
 * outcome for the application's thread; its place under the bound is
 * given back when the callback has run. */
static void publish_done(void *token, int err)
{
    pub_token_t *t = token;
    evbus_t *bus = t->bus;
    count_outcome(bus, err);
    enqueue_completion(bus, t, err);
    evbus_host_notify(&bus->host);
    free(t);
    unconfirmed_done(bus);
}

/* Hands an encoded, reserved publish to the backend. done(token) runs
 * exactly once when this returns EVBUS_OK; on an error it has not run and
 * the caller gives the reservation back. */
static int start_async(evbus_t *bus, const char *topic, const evbus_event_t *ev,
                       const void *json, size_t len,
                       evbus_publish_done_fn done, void *token)
{
    atomic_fetch_add(&bus->unconfirmed, 1);
    if (!bus->be->publish_async) {
        /* No asynchronous path: publish now, report as usual. */
        done(token, bus->be->publish(bus->priv, topic, ev, json, len));
        return EVBUS_OK;
    }
    int rc = bus->be->publish_async(bus->priv, topic, ev, json, len, done,
                                    token);
    if (rc != EVBUS_OK) {
        count_outcome(bus, rc);
        unconfirmed_done(bus);
    }
    return rc;
}

int evbus_publish_async(evbus_t *bus, const char *topic,
                        const evbus_event_t *ev, evbus_delivery_cb cb,
                        void *opaque)
{
    char *json;
    size_t len;
    int rc = encode(bus, topic, ev, &json, &len);
    if (rc != EVBUS_OK)
        return rc;
    if ((rc = reserve(bus, len)) != EVBUS_OK)
        return rc;
    evbus_publish_done_fn done;
    void *token;
    if (cb) {
        pub_token_t *t = malloc(sizeof *t);
        if (!t || !(t->event = evbus_event_clone(ev))) {
            free(t);
            unreserve(bus, len);
            return EVBUS_ENOMEM;
        }
        *t = (pub_token_t){bus, cb, opaque, t->event, len};
        done = publish_done;
        token = t;
    } else {
        nocb_token_t *t = malloc(sizeof *t);
        if (!t) {
            unreserve(bus, len);
            return EVBUS_ENOMEM;
        }
        *t = (nocb_token_t){bus, len};
        done = publish_done_nocb;
        token = t;
    }
    rc = start_async(bus, topic, ev, json, len, done, token);
    if (rc != EVBUS_OK) { /* not started: done will not be called */
        if (cb)
            evbus_event_free(((pub_token_t *)token)->event);
        free(token);
        unreserve(bus, len);
    }
    return rc;
}

static void ticket_done(void *token, int err)
{
    evbus__ticket_t *t = token;
    evbus_t *bus = t->bus; /* t may be gone once done returns */
    size_t len = t->len;
    count_outcome(bus, err);
    t->done(t, err);
    unreserve(bus, len);
    unconfirmed_done(bus);
}

int evbus__publish_encoded_async(evbus_t *bus, const char *topic,
                                 const evbus_event_t *ev, const void *json,
                                 size_t len, evbus__ticket_t *t)
{
    if (!bus || !json || !t ||
        (!ev && !(bus->features & EVBUS_FEAT_BYTES_ONLY)))
        return EVBUS_EINVAL;
    if (atomic_load_explicit(&bus->closing, memory_order_relaxed))
        return EVBUS_ECLOSED;
    if (check_topic(bus, topic) != EVBUS_OK)
        return EVBUS_EINVAL;
    if (len > bus->max_event_bytes)
        return EVBUS_ETOOBIG;
    int rc = reserve(bus, len);
    if (rc != EVBUS_OK)
        return rc;
    t->bus = bus;
    t->len = len;
    rc = start_async(bus, topic, ev, json, len, ticket_done, t);
    if (rc != EVBUS_OK)
        unreserve(bus, len);
    return rc;
}

void evbus__nudge(evbus_t *bus)
{
    if (bus && bus->be->flush)
        bus->be->flush(bus->priv, 0);
}

/* ------------------------------------------------------------ reporting */

int evbus__run_completions(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    evbus_completion_t *c = bus->done_head;
    bus->done_head = bus->done_tail = NULL;
    pthread_mutex_unlock(&bus->mu);
    int n = 0;
    while (c) {
        evbus_completion_t *next = c->next;
        c->cb(c->event, c->err, c->opaque);
        evbus_event_free(c->event);
        unreserve(bus, c->len);
        free(c);
        c = next;
        n++;
    }
    return n;
}

int evbus_flush(evbus_t *bus, int timeout_ms)
{
    if (!bus)
        return EVBUS_EINVAL;
    uint64_t until = timeout_ms < 0 ? UINT64_MAX
                                    : evbus__mono_ms() + (uint64_t)timeout_ms;
    if (bus->be->flush)
        bus->be->flush(bus->priv, timeout_ms);
    pthread_mutex_lock(&bus->mu);
    /* Wake at least every 100 ms: completions may also be waiting. */
    while (atomic_load(&bus->unconfirmed) > 0) {
        uint64_t now = evbus__mono_ms();
        if (now >= until)
            break;
        evbus__cond_wait_ms(&bus->cv, &bus->mu,
                            until - now < 100 ? (int64_t)(until - now) : 100);
    }
    long left = atomic_load(&bus->unconfirmed);
    pthread_mutex_unlock(&bus->mu);
    evbus__run_completions(bus);
    if (left > 0)
        return EVBUS_ETIMEDOUT;
    return atomic_exchange(&bus->first_async_err, EVBUS_OK);
}
