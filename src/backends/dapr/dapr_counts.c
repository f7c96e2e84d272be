/*
 * How often the sidecar has delivered an event, keyed by (topic, id,
 * fingerprint of the event without per-delivery fields): a redelivery
 * counts up, while distinct events that happen to share an id (a producer
 * reusing ids) are counted apart.
 * Dapr does not tell the app which attempt a delivery is, so the app counts
 * itself; the core uses the count to dead-letter a poison event after its
 * max attempts even though every RETRY goes back to the sidecar.
 * Bounded: past max_entries the oldest entry is forgotten (that event then
 * starts counting again at 1, which only costs extra attempts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dapr_internal.h"

typedef struct ent {
    char *key;
    int count;
    struct ent *hnext;            /* hash chain */
    struct ent *older, *newer;    /* insertion order */
} ent_t;

struct dapr_counts {
    ent_t **buckets;
    size_t nbuckets, len, max;
    ent_t *oldest, *newest;
};

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211u;
    return h;
}

dapr_counts_t *evbus__dapr_counts_new(size_t max_entries)
{
    dapr_counts_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max = max_entries ? max_entries : 1;
    c->nbuckets = 1024;
    while (c->nbuckets < c->max && c->nbuckets < (1u << 20))
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

static char *make_key(const char *topic, const char *id, uint64_t fp)
{
    size_t a = strlen(topic), b = strlen(id);
    char *k = malloc(a + b + 20);
    if (k) /* \x1f cannot appear in a topic (control character) */
        snprintf(k, a + b + 20, "%s\x1f%s\x1f%016llx", topic, id,
                 (unsigned long long)fp);
    return k;
}


static ent_t **find(dapr_counts_t *c, const char *key)
{
    ent_t **pp = &c->buckets[hash(key) & (c->nbuckets - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

static void unlink_remove(dapr_counts_t *c, ent_t **pp)
{
    ent_t *e = *pp;
    *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    free(e->key);
    free(e);
    c->len--;
}

int evbus__dapr_counts_hit(dapr_counts_t *c, const char *topic, const char *id,
                    uint64_t fp)
{
    char *key = make_key(topic, id, fp);
    if (!key)
        return 1;
    ent_t **pp = find(c, key);
    if (*pp) {
        free(key);
        return ++(*pp)->count;
    }
    if (c->len >= c->max && c->oldest)
        unlink_remove(c, find(c, c->oldest->key));
    ent_t *e = calloc(1, sizeof *e);
    if (!e) {
        free(key);
        return 1;
    }
    e->key = key;
    e->count = 1;
    pp = find(c, key); /* the eviction may have changed the chain */
    e->hnext = *pp;
    *pp = e;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->len++;
    return 1;
}

void evbus__dapr_counts_forget(dapr_counts_t *c, const char *topic, const char *id,
                        uint64_t fp)
{
    char *key = make_key(topic, id, fp);
    if (!key)
        return;
    ent_t **pp = find(c, key);
    if (*pp)
        unlink_remove(c, pp);
    free(key);
}

void evbus__dapr_counts_free(dapr_counts_t *c)
{
    if (!c)
        return;
    while (c->oldest)
        unlink_remove(c, find(c, c->oldest->key));
    free(c->buckets);
    free(c);
}
