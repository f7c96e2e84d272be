/*
 * memory://NAME - an in-process broker shared by every bus opened with the
 * same NAME. Each topic keeps one FIFO per consumer group; a publish appends
 * a reference-counted copy of the bytes to every group's FIFO, and the
 * members of a group take from the same FIFO, so they share the events.
 * Events published while a topic has no group are not kept (nothing would
 * ever read them), as in any non-persistent pub/sub.
 *
 * Being in-process, the broker keeps the published event object itself
 * (immutable, shared by every group) and hands each delivery a clone - one
 * allocation - instead of JSON bytes to parse again. Raw publishes
 * (evbus_publish_raw) travel as bytes and are decoded by the core as usual.
 *
 * Locking: a global mutex for the broker list, one mutex per broker for its
 * topic list, one per topic for its groups and FIFOs. Topics live as long as
 * their broker, so a topic pointer can be used without the broker lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"

typedef struct blob {
    atomic_int refs;
    evbus_event_t *event; /* the published event, or NULL for raw bytes */
    size_t len;
    char bytes[];
} blob_t;

typedef struct member {
    evbus_host_t *host;
    struct member *next;
} member_t;

typedef struct group {
    char *name;
    blob_t **ring; /* FIFO: head index, count, capacity (power of two) */
    size_t head, count, cap;
    member_t *members;
    struct group *next;
} group_t;

typedef struct topic {
    char *name;
    pthread_mutex_t mu;
    group_t *groups;
    struct topic *next;
} topic_t;

typedef struct broker {
    char *name;
    int refs;
    pthread_mutex_t mu;
    topic_t *topics;
    struct broker *next;
} broker_t;

typedef struct {
    broker_t *broker;
    evbus_host_t *host;
} mem_t;

typedef struct {
    topic_t *topic;
    group_t *group;
    member_t *member;
} mem_sub_t;

static pthread_mutex_t brokers_mu = PTHREAD_MUTEX_INITIALIZER;
static broker_t *brokers;

static void blob_unref(blob_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        evbus_event_free(b->event);
        free(b);
    }
}

/* ------------------------------------------------------------- FIFO */

static int ring_grow(group_t *g)
{
    size_t cap = g->cap ? g->cap * 2 : 256;
    blob_t **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return EVBUS_ENOMEM;
    for (size_t i = 0; i < g->count; i++)
        ring[i] = g->ring[(g->head + i) & (g->cap - 1)];
    free(g->ring);
    g->ring = ring;
    g->head = 0;
    g->cap = cap;
    return EVBUS_OK;
}

static int ring_push_back(group_t *g, blob_t *b)
{
    if (g->count == g->cap && ring_grow(g) != EVBUS_OK)
        return EVBUS_ENOMEM;
    g->ring[(g->head + g->count++) & (g->cap - 1)] = b;
    return EVBUS_OK;
}

static int ring_push_front(group_t *g, blob_t *b)
{
    if (g->count == g->cap && ring_grow(g) != EVBUS_OK)
        return EVBUS_ENOMEM;
    g->head = (g->head - 1) & (g->cap - 1);
    g->ring[g->head] = b;
    g->count++;
    return EVBUS_OK;
}

static blob_t *ring_pop(group_t *g)
{
    blob_t *b = g->ring[g->head];
    g->head = (g->head + 1) & (g->cap - 1);
    g->count--;
    return b;
}

static void notify_members(group_t *g)
{
    for (member_t *m = g->members; m; m = m->next)
        evbus_host_notify(m->host);
}

/* ----------------------------------------------------- brokers, topics */

static broker_t *broker_acquire(const char *name)
{
    pthread_mutex_lock(&brokers_mu);
    broker_t *b = brokers;
    while (b && strcmp(b->name, name) != 0)
        b = b->next;
    if (!b && (b = calloc(1, sizeof *b))) {
        if (!(b->name = strdup(name))) {
            free(b);
            b = NULL;
        } else {
            pthread_mutex_init(&b->mu, NULL);
            b->next = brokers;
            brokers = b;
        }
    }
    if (b)
        b->refs++;
    pthread_mutex_unlock(&brokers_mu);
    return b;
}

static void group_free(group_t *g)
{
    while (g->count)
        blob_unref(ring_pop(g));
    free(g->ring);
    free(g->name);
    free(g);
}

static void broker_release(broker_t *b)
{
    pthread_mutex_lock(&brokers_mu);
    bool last = --b->refs == 0;
    if (last) {
        broker_t **pp = &brokers;
        while (*pp != b)
            pp = &(*pp)->next;
        *pp = b->next;
    }
    pthread_mutex_unlock(&brokers_mu);
    if (!last)
        return;
    while (b->topics) {
        topic_t *t = b->topics;
        b->topics = t->next;
        while (t->groups) {
            group_t *g = t->groups;
            t->groups = g->next;
            group_free(g);
        }
        pthread_mutex_destroy(&t->mu);
        free(t->name);
        free(t);
    }
    pthread_mutex_destroy(&b->mu);
    free(b->name);
    free(b);
}

static topic_t *topic_get(broker_t *b, const char *name)
{
    pthread_mutex_lock(&b->mu);
    topic_t *t = b->topics;
    while (t && strcmp(t->name, name) != 0)
        t = t->next;
    if (!t && (t = calloc(1, sizeof *t))) {
        if (!(t->name = strdup(name))) {
            free(t);
            t = NULL;
        } else {
            pthread_mutex_init(&t->mu, NULL);
            t->next = b->topics;
            b->topics = t;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return t;
}

/* ------------------------------------------------------------- vtable */

static int mem_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                    char *errstr, size_t n)
{
    mem_t *m = priv;
    const char *name = evbus_url_rest(url);
    m->host = host;
    m->broker = broker_acquire(*name ? name : "default");
    if (!m->broker) {
        snprintf(errstr, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    return EVBUS_OK;
}

static void mem_close(void *priv)
{
    mem_t *m = priv;
    broker_release(m->broker);
}

static int mem_publish(void *priv, const char *topic, const evbus_event_t *ev,
                       const void *payload, size_t len)
{
    mem_t *m = priv;
    topic_t *t = topic_get(m->broker, topic);
    if (!t)
        return EVBUS_ENOMEM;
    pthread_mutex_lock(&t->mu);
    if (!t->groups) {
        pthread_mutex_unlock(&t->mu);
        return EVBUS_OK;
    }
    if (ev)
        len = 0; /* the event object travels instead of its bytes */
    blob_t *b = malloc(sizeof *b + len + 1);
    if (!b || (ev && !(b->event = evbus_event_clone(ev)))) {
        pthread_mutex_unlock(&t->mu);
        free(b);
        return EVBUS_ENOMEM;
    }
    if (!ev)
        b->event = NULL;
    atomic_init(&b->refs, 1); /* ours until every group has its own */
    b->len = len;
    memcpy(b->bytes, payload, len);
    b->bytes[len] = '\0';
    int rc = EVBUS_OK;
    for (group_t *g = t->groups; g; g = g->next) {
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
        if (ring_push_back(g, b) != EVBUS_OK) {
            blob_unref(b);
            rc = EVBUS_ENOMEM;
            continue;
        }
        notify_members(g);
    }
    pthread_mutex_unlock(&t->mu);
    blob_unref(b);
    return rc;
}

static int mem_subscribe(void *priv, const char *topic, const char *group,
                         void **bsub, char *errstr, size_t n)
{
    mem_t *m = priv;
    topic_t *t = topic_get(m->broker, topic);
    mem_sub_t *s = calloc(1, sizeof *s);
    member_t *mb = calloc(1, sizeof *mb);
    if (!t || !s || !mb)
        goto oom;
    pthread_mutex_lock(&t->mu);
    group_t *g = t->groups;
    while (g && strcmp(g->name, group) != 0)
        g = g->next;
    if (!g) {
        if (!(g = calloc(1, sizeof *g)) || !(g->name = strdup(group))) {
            pthread_mutex_unlock(&t->mu);
            free(g);
            goto oom;
        }
        g->next = t->groups;
        t->groups = g;
    }
    mb->host = m->host;
    mb->next = g->members;
    g->members = mb;
    pthread_mutex_unlock(&t->mu);
    s->topic = t;
    s->group = g;
    s->member = mb;
    *bsub = s;
    return EVBUS_OK;
oom:
    free(s);
    free(mb);
    snprintf(errstr, n, "out of memory");
    return EVBUS_ENOMEM;
}

static void mem_unsubscribe(void *priv, void *bsub)
{
    (void)priv;
    mem_sub_t *s = bsub;
    topic_t *t = s->topic;
    pthread_mutex_lock(&t->mu);
    member_t **pp = &s->group->members;
    while (*pp != s->member)
        pp = &(*pp)->next;
    *pp = s->member->next;
    if (!s->group->members) { /* last member: the group and backlog go */
        group_t **gp = &t->groups;
        while (*gp != s->group)
            gp = &(*gp)->next;
        *gp = s->group->next;
        group_free(s->group);
    }
    pthread_mutex_unlock(&t->mu);
    free(s->member);
    free(s);
}

static int mem_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    (void)priv;
    mem_sub_t *s = bsub;
    pthread_mutex_lock(&s->topic->mu);
    int n = 0;
    while (n < max && s->group->count) {
        blob_t *b = s->group->ring[s->group->head];
        evbus_event_t *copy = NULL;
        if (b->event && !(copy = evbus_event_clone(b->event)))
            break; /* out of memory: leave it queued */
        ring_pop(s->group);
        out[n].topic = s->topic->name;
        out[n].payload = b->bytes;
        out[n].len = b->len;
        out[n].event = copy; /* the core owns and frees the clone */
        out[n].cookie = b;
        n++;
    }
    pthread_mutex_unlock(&s->topic->mu);
    return n;
}

static int mem_settle(void *priv, void *bsub, evbus_msg_t *msg,
                      evbus_settle_t how, int delay_ms)
{
    (void)priv;
    (void)delay_ms;
    mem_sub_t *s = bsub;
    blob_t *b = msg->cookie;
    if (how == EVBUS_SETTLE_ACK) {
        blob_unref(b);
        return EVBUS_OK;
    }
    if (how != EVBUS_SETTLE_RELEASE)
        return EVBUS_ENOTSUP;
    /* Back to the front of the group's FIFO for any member to take. */
    pthread_mutex_lock(&s->topic->mu);
    int rc = ring_push_front(s->group, b);
    if (rc == EVBUS_OK)
        notify_members(s->group);
    pthread_mutex_unlock(&s->topic->mu);
    if (rc != EVBUS_OK)
        blob_unref(b);
    return rc;
}

const evbus_backend_t evbus_backend_memory = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "memory",
    .priv_size = sizeof(mem_t),
    .features = EVBUS_FEAT_ORDERED,
    .open = mem_open,
    .close = mem_close,
    .publish = mem_publish,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .fetch = mem_fetch,
    .settle = mem_settle,
};
