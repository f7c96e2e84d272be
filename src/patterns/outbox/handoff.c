#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "handoff.h"

typedef struct offer {
    int64_t seq;
    char *json;
    size_t len;
    evbus_event_t *ev;
} offer_t;

struct handoff {
    char *file;
    offer_t *ring; /* FIFO in offer order: head index, count, capacity */
    size_t head, count, cap;
    size_t bytes;
    struct handoff *next;
};

/* One lock for the registry and every FIFO: critical sections are a few
 * pointer moves, and producer and relay touch the same FIFO anyway. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static handoff_t *listeners;

static void offer_free(offer_t *o)
{
    free(o->json);
    evbus_event_free(o->ev);
}

handoff_t *evbus__handoff_open(const char *db_file)
{
    if (!db_file || !*db_file)
        return NULL;
    handoff_t *h = calloc(1, sizeof *h);
    if (!h || !(h->file = strdup(db_file))) {
        free(h);
        return NULL;
    }
    pthread_mutex_lock(&mu);
    h->next = listeners;
    listeners = h;
    pthread_mutex_unlock(&mu);
    return h;
}

void evbus__handoff_close(handoff_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&mu);
    for (handoff_t **p = &listeners; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < h->count; i++)
        offer_free(&h->ring[(h->head + i) & (h->cap - 1)]);
    free(h->ring);
    free(h->file);
    free(h);
}

static int ring_grow(handoff_t *h)
{
    size_t cap = h->cap ? h->cap * 2 : 256;
    offer_t *ring = malloc(cap * sizeof *ring);
    if (!ring)
        return -1;
    for (size_t i = 0; i < h->count; i++)
        ring[i] = h->ring[(h->head + i) & (h->cap - 1)];
    free(h->ring);
    h->ring = ring;
    h->head = 0;
    h->cap = cap;
    return 0;
}

void evbus__handoff_offer(const char *db_file, int64_t seq,
                          const evbus_event_t *ev, char *json, size_t len)
{
    pthread_mutex_lock(&mu);
    handoff_t *h = listeners;
    while (h && strcmp(h->file, db_file) != 0)
        h = h->next;
    if (!h || h->bytes + len > HANDOFF_MAX_BYTES ||
        (h->count == h->cap && ring_grow(h) != 0)) {
        pthread_mutex_unlock(&mu);
        free(json);
        return;
    }
    pthread_mutex_unlock(&mu);
    /* Clone outside the lock; the listener may go away meanwhile, so look
     * it up again before storing. */
    evbus_event_t *copy = evbus_event_clone(ev);
    pthread_mutex_lock(&mu);
    for (h = listeners; h && strcmp(h->file, db_file) != 0;)
        h = h->next;
    if (!copy || !h || (h->count == h->cap && ring_grow(h) != 0)) {
        pthread_mutex_unlock(&mu);
        free(json);
        evbus_event_free(copy);
        return;
    }
    h->ring[(h->head + h->count) & (h->cap - 1)] =
        (offer_t){seq, json, len, copy};
    h->count++;
    h->bytes += len;
    pthread_mutex_unlock(&mu);
}

evbus_event_t *evbus__handoff_take(handoff_t *h, int64_t seq, const char *json,
                                   size_t len)
{
    if (!h)
        return NULL;
    evbus_event_t *found = NULL;
    offer_t drop[8];
    size_t ndrop = 0;
    pthread_mutex_lock(&mu);
    while (h->count > 0 && ndrop < 8) {
        offer_t *o = &h->ring[h->head];
        if (o->seq > seq)
            break; /* offered for a later row */
        /* o->seq < seq: rolled back or skipped; o->seq == seq: ours if the
         * bytes match, else a rolled-back add whose seq was reused. */
        int match = o->seq == seq && o->len == len &&
                    memcmp(o->json, json, len) == 0;
        h->head = (h->head + 1) & (h->cap - 1);
        h->count--;
        h->bytes -= o->len;
        if (match) {
            found = o->ev;
            o->ev = NULL;
        }
        drop[ndrop++] = *o;
        if (match)
            break;
    }
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < ndrop; i++)
        offer_free(&drop[i]);
    return found;
}
