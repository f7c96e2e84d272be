/* A binary min-heap of messages waiting for their retry time. Used only by
 * the polling thread, so it needs no lock. */
#include <stdlib.h>

#include "internal.h"

static void swap(evbus_pending_t **a, evbus_pending_t **b)
{
    evbus_pending_t *t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(evbus_heap_t *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->due_ms <= h->items[i]->due_ms)
            break;
        swap(&h->items[parent], &h->items[i]);
        i = parent;
    }
}

static void sift_down(evbus_heap_t *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && h->items[l]->due_ms < h->items[m]->due_ms)
            m = l;
        if (r < h->len && h->items[r]->due_ms < h->items[m]->due_ms)
            m = r;
        if (m == i)
            return;
        swap(&h->items[m], &h->items[i]);
        i = m;
    }
}

int evbus__heap_push(evbus_heap_t *h, evbus_pending_t *p)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        evbus_pending_t **items = realloc(h->items, cap * sizeof *items);
        if (!items)
            return EVBUS_ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len] = p;
    sift_up(h, h->len++);
    return EVBUS_OK;
}

evbus_pending_t *evbus__heap_peek(const evbus_heap_t *h)
{
    return h->len ? h->items[0] : NULL;
}

evbus_pending_t *evbus__heap_pop(evbus_heap_t *h)
{
    if (!h->len)
        return NULL;
    evbus_pending_t *top = h->items[0];
    h->items[0] = h->items[--h->len];
    sift_down(h, 0);
    return top;
}

size_t evbus__heap_drain_sub(evbus_heap_t *h, const struct evbus_sub *sub,
                             void (*fn)(evbus_pending_t *p, void *arg),
                             void *arg)
{
    /* Compacts the kept entries in place (no allocation: this runs when a
     * subscription ends, where failing is not an option), then restores
     * the heap order bottom-up. */
    size_t kept = 0, taken = 0;
    for (size_t i = 0; i < h->len; i++) {
        evbus_pending_t *p = h->items[i];
        if (!sub || p->sub == sub) {
            h->items[i] = NULL;
            fn(p, arg);
            taken++;
        } else {
            h->items[kept++] = p;
        }
    }
    h->len = kept;
    for (size_t i = kept / 2 + 1; i-- > 0;)
        sift_down(h, i);
    return taken;
}

void evbus__heap_free(evbus_heap_t *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}
