/*
 * Retry contexts remembered in memory, for backends that redeliver a RETRY
 * themselves (EVBUS_FEAT_DELAYED_RETRY) but keep no attempt count of their
 * own (no record_attempts): dapr://, whose sidecar owns redelivery. When
 * the event comes back, its attempt number, first-attempt time and last
 * delay are found here by source and id, so max_attempts and
 * max_elapsed_ms hold across broker-side retries. It lives as long as the
 * process: after a restart those events start counting again.
 *
 * An open-addressing table with linear probing and tombstones, bounded: a
 * FIFO of insertion order evicts the oldest entry when full.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct memo_ent {
    uint64_t hash;
    char *key;           /* "source\0id", NULL = empty, TOMB = deleted */
    evbus_retry_ctx_t ctx;
    uint64_t seq;        /* insertion number, for eviction */
} memo_ent_t;

struct evbus_memo {
    memo_ent_t *slots;
    size_t nslots;       /* power of two, >= 2 * capacity */
    size_t capacity, len;
    size_t filled;       /* slots not empty: entries and tombstones */
    uint64_t next_seq;
};

static char tomb_marker;
#define TOMB (&tomb_marker)

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The key of ev: source, NUL, id. *n gets its length. NULL when out of
 * memory. */
static char *key_of(const evbus_event_t *ev, size_t *n)
{
    const char *src = evbus_event_source(ev), *id = evbus_event_id(ev);
    size_t ls = strlen(src), li = strlen(id);
    char *k = malloc(ls + li + 2);
    if (k) {
        memcpy(k, src, ls + 1);
        memcpy(k + ls + 1, id, li + 1);
    }
    *n = ls + li + 1;
    return k;
}

static bool key_eq(const char *a, const char *b, size_t n)
{
    return a != TOMB && a && memcmp(a, b, n) == 0 && a[n] == '\0';
}

evbus_memo_t *evbus__memo_new(size_t capacity)
{
    evbus_memo_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->capacity = capacity;
    m->nslots = 16;
    while (m->nslots < capacity * 2)
        m->nslots *= 2;
    if (!(m->slots = calloc(m->nslots, sizeof *m->slots))) {
        free(m);
        return NULL;
    }
    return m;
}

void evbus__memo_free(evbus_memo_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nslots; i++)
        if (m->slots[i].key != TOMB)
            free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static memo_ent_t *find(evbus_memo_t *m, const char *key, size_t n,
                        uint64_t h)
{
    for (size_t i = h & (m->nslots - 1);; i = (i + 1) & (m->nslots - 1)) {
        memo_ent_t *e = &m->slots[i];
        if (!e->key)
            return NULL;
        if (e->hash == h && key_eq(e->key, key, n))
            return e;
    }
}

static void drop(evbus_memo_t *m, memo_ent_t *e)
{
    free(e->key);
    e->key = TOMB;
    m->len--;
}

/* Forgets the oldest entry (smallest seq). Linear in the table, but it
 * runs only when the table is full, once per insertion past capacity. */
static void evict_oldest(evbus_memo_t *m)
{
    memo_ent_t *oldest = NULL;
    for (size_t i = 0; i < m->nslots; i++) {
        memo_ent_t *e = &m->slots[i];
        if (e->key && e->key != TOMB && (!oldest || e->seq < oldest->seq))
            oldest = e;
    }
    if (oldest)
        drop(m, oldest);
}

/* Rebuilds the table without tombstones once they pile up. */
static void compact(evbus_memo_t *m)
{
    memo_ent_t *old = m->slots;
    memo_ent_t *fresh = calloc(m->nslots, sizeof *fresh);
    if (!fresh)
        return;
    for (size_t i = 0; i < m->nslots; i++) {
        if (!old[i].key || old[i].key == TOMB)
            continue;
        size_t j = old[i].hash & (m->nslots - 1);
        while (fresh[j].key)
            j = (j + 1) & (m->nslots - 1);
        fresh[j] = old[i];
    }
    free(old);
    m->slots = fresh;
    m->filled = m->len;
}

void evbus__memo_put(evbus_memo_t *m, const evbus_event_t *ev,
                     const evbus_retry_ctx_t *ctx)
{
    size_t n;
    char *key = key_of(ev, &n);
    if (!key)
        return; /* out of memory: the event restarts its count */
    uint64_t h = fnv1a(key, n);
    memo_ent_t *e = find(m, key, n, h);
    if (e) {
        e->ctx = *ctx;
        free(key);
        return;
    }
    if (m->len >= m->capacity)
        evict_oldest(m);
    /* Tombstones keep probe chains long: rebuild before the table fills
     * (so a probe always meets an empty slot). */
    if (m->filled + 1 > m->nslots / 4 * 3)
        compact(m);
    for (size_t i = h & (m->nslots - 1);; i = (i + 1) & (m->nslots - 1)) {
        e = &m->slots[i];
        if (!e->key || e->key == TOMB)
            break;
    }
    if (!e->key)
        m->filled++;
    *e = (memo_ent_t){h, key, *ctx, m->next_seq++};
    m->len++;
}

bool evbus__memo_take(evbus_memo_t *m, const evbus_event_t *ev,
                      evbus_retry_ctx_t *ctx)
{
    if (!m->len)
        return false;
    size_t n;
    char *key = key_of(ev, &n);
    if (!key)
        return false;
    memo_ent_t *e = find(m, key, n, fnv1a(key, n));
    free(key);
    if (!e)
        return false;
    *ctx = e->ctx;
    drop(m, e);
    return true;
}
