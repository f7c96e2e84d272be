/*
 * Publishing: validate, encode once, hand the bytes to the backend.
 * Asynchronous outcomes are queued and reported on the application's thread
 * (evbus_poll / evbus_flush / evbus_close), like librdkafka's delivery
 * reports, so callbacks never run on a broker thread.
 */
#include <stdlib.h>
#include <string.h>

#include "event_internal.h"
#include "internal.h"

typedef struct pub_token {
    evbus_t *bus;
    evbus_delivery_cb cb;
    void *opaque;
    evbus_event_t *event; /* copy for the callback; NULL without one */
} pub_token_t;

int evbus__check_topic(const char *topic)
{
    if (!topic || !*topic || strlen(topic) > 249)
        return EVBUS_EINVAL;
    for (const char *p = topic; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return EVBUS_EINVAL;
    return EVBUS_OK;
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
    if (!bus || !ev || evbus__check_topic(topic) != EVBUS_OK)
        return EVBUS_EINVAL;
    if (atomic_load_explicit(&bus->closing, memory_order_relaxed))
        return EVBUS_ECLOSED;
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
                   "publish to %s refused: %zu bytes > max_event_bytes %zu",
                   topic, *len, bus->max_event_bytes);
        return EVBUS_ETOOBIG;
    }
    return EVBUS_OK;
}

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
    if (!bus || (!bytes && len) || evbus__check_topic(topic) != EVBUS_OK)
        return EVBUS_EINVAL;
    if (atomic_load(&bus->closing))
        return EVBUS_ECLOSED;
    if (bus->be->features & EVBUS_FEAT_NO_RAW)
        return EVBUS_ENOTSUP;
    if (len > bus->max_event_bytes)
        return EVBUS_ETOOBIG;
    return evbus__publish_encoded(bus, topic, NULL, bytes ? bytes : "", len);
}

static void enqueue_completion(evbus_t *bus, pub_token_t *t, int err)
{
    evbus_completion_t *c = malloc(sizeof *c);
    if (!c) { /* cannot report: count and drop the callback */
        evbus_event_free(t->event);
        return;
    }
    *c = (evbus_completion_t){NULL, t->event, t->cb, t->opaque, err, bus};
    pthread_mutex_lock(&bus->mu);
    if (bus->done_tail)
        bus->done_tail->next = c;
    else
        bus->done_head = c;
    bus->done_tail = c;
    pthread_mutex_unlock(&bus->mu);
}

/* One fewer publish in flight. Flush waits under bus->mu for the count to
 * reach zero, so only that last decrement needs the lock (to wake it);
 * the waiter re-checks under the same lock, so no wakeup is lost. */
static void pending_done(evbus_t *bus)
{
    if (atomic_fetch_sub(&bus->pending_pub, 1) == 1) {
        pthread_mutex_lock(&bus->mu);
        pthread_cond_broadcast(&bus->cv);
        pthread_mutex_unlock(&bus->mu);
    }
}

static void note_async_failure(evbus_t *bus, int err)
{
    int none = EVBUS_OK;
    atomic_compare_exchange_strong(&bus->first_async_err, &none, err);
    evbus__log(EVBUS_LOG_WARN, "core", "asynchronous publish failed: %s",
               evbus_strerror(err));
}

/* Completion of a publish without a delivery callback: the token is the
 * bus itself, so the common case allocates nothing per event. */
static void publish_done_nocb(void *token, int err)
{
    evbus_t *bus = token;
    count_outcome(bus, err);
    if (err != EVBUS_OK)
        note_async_failure(bus, err);
    pending_done(bus);
}

/* Completion of a publish with a delivery callback (any thread): queue the
 * outcome for the application's thread. */
static void publish_done(void *token, int err)
{
    pub_token_t *t = token;
    evbus_t *bus = t->bus;
    count_outcome(bus, err);
    enqueue_completion(bus, t, err);
    evbus_host_notify(&bus->host);
    free(t);
    pending_done(bus);
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
    evbus_publish_done_fn done = publish_done_nocb;
    void *token = bus;
    if (cb) {
        pub_token_t *t = malloc(sizeof *t);
        if (!t || !(t->event = evbus_event_clone(ev))) {
            free(t);
            return EVBUS_ENOMEM;
        }
        t->bus = bus;
        t->cb = cb;
        t->opaque = opaque;
        done = publish_done;
        token = t;
    }
    atomic_fetch_add(&bus->pending_pub, 1);
    if (bus->be->publish_async) {
        rc = bus->be->publish_async(bus->priv, topic, ev, json, len, done,
                                    token);
        if (rc != EVBUS_OK) { /* not started: done will not be called */
            if (cb) {
                evbus_event_free(((pub_token_t *)token)->event);
                free(token);
            }
            count_outcome(bus, rc);
            pending_done(bus);
        }
    } else {
        /* No asynchronous path: publish now, report later as usual. */
        done(token, bus->be->publish(bus->priv, topic, ev, json, len));
    }
    return rc;
}

static void ticket_done(void *token, int err)
{
    evbus__ticket_t *t = token;
    evbus_t *bus = t->bus; /* t may be gone once done returns */
    count_outcome(bus, err);
    t->done(t, err);
    pending_done(bus);
}

int evbus__publish_encoded_async(evbus_t *bus, const char *topic,
                                 const evbus_event_t *ev, const void *json,
                                 size_t len, evbus__ticket_t *t)
{
    if (!bus || !json || !t || evbus__check_topic(topic) != EVBUS_OK ||
        (!ev && !(evbus_features(bus) & EVBUS_FEAT_BYTES_ONLY)))
        return EVBUS_EINVAL;
    if (atomic_load_explicit(&bus->closing, memory_order_relaxed))
        return EVBUS_ECLOSED;
    if (len > bus->max_event_bytes)
        return EVBUS_ETOOBIG;
    t->bus = bus;
    atomic_fetch_add(&bus->pending_pub, 1);
    if (!bus->be->publish_async) {
        ticket_done(t, bus->be->publish(bus->priv, topic, ev, json, len));
        return EVBUS_OK;
    }
    int rc = bus->be->publish_async(bus->priv, topic, ev, json, len,
                                    ticket_done, t);
    if (rc != EVBUS_OK) { /* not started: done will not be called */
        count_outcome(bus, rc);
        pending_done(bus);
    }
    return rc;
}

void evbus__nudge(evbus_t *bus)
{
    if (bus && bus->be->flush)
        bus->be->flush(bus->priv, 0);
}

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
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : evbus__now_ms() + (uint64_t)timeout_ms;
    if (bus->be->flush)
        bus->be->flush(bus->priv, timeout_ms);
    pthread_mutex_lock(&bus->mu);
    while (atomic_load(&bus->pending_pub) > 0) {
        uint64_t now = evbus__now_ms();
        if (now >= deadline)
            break;
        /* Wake at least every 100 ms: completions may also be waiting. */
        uint64_t wait = deadline - now < 100 ? deadline - now : 100;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        ts.tv_sec += (time_t)(wait / 1000) + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&bus->cv, &bus->mu, &ts);
    }
    long left = atomic_load(&bus->pending_pub);
    pthread_mutex_unlock(&bus->mu);
    evbus__run_completions(bus);
    if (left > 0)
        return EVBUS_ETIMEDOUT;
    return atomic_exchange(&bus->first_async_err, EVBUS_OK);
}
