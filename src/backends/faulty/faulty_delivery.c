/*
 * Delivery-side faults. Every delivery the wrapper hands out is a `held_t`:
 * either a real inner message (settled through the inner backend) or a
 * phantom copy made by `dup` or `redeliver` (settling it touches nothing).
 * Deliveries wait in a per-subscription list ordered by due time, which is
 * how `delay` holds them; per partitionkey the due times never decrease, so
 * delays reorder across keys but never within one.
 *
 * Every decision for a delivery (delay, poison, dup, lost ACK) is drawn when
 * it arrives from the inner backend, in arrival order, so a seed gives the
 * same faults however the deliveries interleave in time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faulty.h"
#include "support/clock.h"

typedef struct held {
    uint64_t due_ms;
    evbus_msg_t inner; /* as the inner backend gave it (unused for phantoms) */
    bool phantom;
    bool lose_ack;     /* decided on arrival: its ACK will be "lost" */
    char *bytes;       /* what the core gets: owned copy */
    size_t len;
    /* the retry context the core sees (a phantom keeps its own) */
    int attempts, prev_delay_ms;
    int64_t first_attempt_ms;
    struct held *next;
} held_t;

typedef struct key_due {
    char *key;
    uint64_t due_ms;
    struct key_due *next;
} key_due_t;

typedef struct {
    void *inner_bsub;
    const char *topic;
    held_t *held; /* ordered by due_ms, stable */
    key_due_t *keys;
} fsub_t;

static uint64_t now_ms(void)
{
    return evbus__mono_ms();
}

static void insert(fsub_t *s, held_t *h)
{
    held_t **pp = &s->held;
    while (*pp && (*pp)->due_ms <= h->due_ms)
        pp = &(*pp)->next;
    h->next = *pp;
    *pp = h;
}

/* The due time for a delivery of key: never earlier than the last one. */
static uint64_t due_for_key(fsub_t *s, const char *key, uint64_t due)
{
    if (!key)
        return due;
    key_due_t *k = s->keys;
    while (k && strcmp(k->key, key) != 0)
        k = k->next;
    if (!k) {
        if (!(k = calloc(1, sizeof *k)) || !(k->key = strdup(key))) {
            free(k);
            return due;
        }
        k->next = s->keys;
        s->keys = k;
    }
    if (k->due_ms > due)
        due = k->due_ms;
    k->due_ms = due;
    return due;
}

static held_t *phantom_of(const held_t *h, uint64_t due_ms)
{
    held_t *p = calloc(1, sizeof *p);
    if (!p || !(p->bytes = malloc(h->len + 1))) {
        free(p);
        return NULL;
    }
    memcpy(p->bytes, h->bytes, h->len + 1);
    p->len = h->len;
    p->phantom = true;
    p->due_ms = due_ms;
    p->attempts = h->attempts;
    p->prev_delay_ms = h->prev_delay_ms;
    p->first_attempt_ms = h->first_attempt_ms;
    return p;
}

int evbus__faulty_subscribe(void *priv, const char *topic, const char *group,
                            void **bsub, char *errstr, size_t n)
{
    faulty_t *f = priv;
    fsub_t *s = calloc(1, sizeof *s);
    if (!s)
        return EVBUS_ENOMEM;
    int rc = f->inner->subscribe(f->inner_priv, topic, group, &s->inner_bsub,
                                 errstr, n);
    if (rc != EVBUS_OK) {
        free(s);
        return rc;
    }
    *bsub = s;
    return EVBUS_OK;
}

static void held_free(held_t *h)
{
    free(h->bytes);
    free(h);
}

void evbus__faulty_unsubscribe(void *priv, void *bsub)
{
    faulty_t *f = priv;
    fsub_t *s = bsub;
    while (s->held) {
        held_t *h = s->held;
        s->held = h->next;
        if (!h->phantom) /* never handed out: give it back */
            f->inner->settle(f->inner_priv, s->inner_bsub, &h->inner,
                             EVBUS_SETTLE_RELEASE, 0);
        held_free(h);
    }
    while (s->keys) {
        key_due_t *k = s->keys;
        s->keys = k->next;
        free(k->key);
        free(k);
    }
    f->inner->unsubscribe(f->inner_priv, s->inner_bsub);
    free(s);
}

static void fault(faulty_t *f, const char *what, const char *topic,
                  const held_t *h)
{
    evbus_host_count_fault(f->host);
    evbus_host_log(f->host, EVBUS_LOG_INFO, "fault %s on %s (%.60s)", what,
                   topic ? topic : "?", h->bytes);
}

/* Wraps one inner delivery: copies its bytes, decides delay, poison, dup. */
static void take(faulty_t *f, fsub_t *s, evbus_msg_t *m, uint64_t now)
{
    held_t *h = calloc(1, sizeof *h);
    char *json = NULL;
    size_t len = m->len;
    if (m->event) { /* decoded by the backend: hand the core bytes instead */
        json = evbus_event_to_json(m->event, &len);
        evbus_event_free(m->event);
        m->event = NULL;
    }
    const void *src = json ? json : m->payload;
    if (!h || !(h->bytes = malloc(len + 1))) {
        /* out of memory: give it back for later */
        free(h);
        free(json);
        f->inner->settle(f->inner_priv, s->inner_bsub, m,
                         EVBUS_SETTLE_RELEASE, 0);
        return;
    }
    memcpy(h->bytes, src ? src : "", len);
    h->bytes[len] = '\0';
    h->len = len;
    free(json);
    h->inner = *m;
    h->attempts = m->attempts;
    h->prev_delay_ms = m->prev_delay_ms;
    h->first_attempt_ms = m->first_attempt_ms;
    if (f->inner->version < 2) /* counted hand-outs, 1 the first time */
        h->attempts = m->delivery_count > 1 ? m->delivery_count - 1 : 0;
    if (!s->topic)
        s->topic = m->topic;

    uint64_t due = now;
    if (f->o.delay_ms > 0) {
        due += faulty_next(&f->del_rng) % (uint64_t)(f->o.delay_ms + 1);
        char why[8];
        evbus_event_t *ev = evbus_event_from_json_limit(h->bytes, h->len, 0,
                                                        why, sizeof why);
        due = due_for_key(s, ev ? evbus_event_ext(ev, "partitionkey") : NULL,
                          due);
        evbus_event_free(ev);
    }
    h->due_ms = due;
    if (faulty_roll(&f->del_rng, f->o.poison)) {
        /* break the first byte: never a valid event, yet the rest of the
         * bytes (the id among them) survive into the dead letter */
        if (h->len)
            h->bytes[0] = '#';
        fault(f, "poison", m->topic, h);
    }
    h->lose_ack = faulty_roll(&f->del_rng, f->o.redeliver);
    insert(s, h);
    if (faulty_roll(&f->del_rng, f->o.dup)) {
        held_t *p = phantom_of(h, due);
        if (p) {
            insert(s, p);
            fault(f, "dup", m->topic, h);
        }
    }
}

int evbus__faulty_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    faulty_t *f = priv;
    fsub_t *s = bsub;
    uint64_t now = now_ms();
    /* The inner backend fills elements of its own version's size. */
    evbus_msg_t in[64];
    size_t stride = evbus_backend_msg_size(f->inner);
    if (max > 64)
        max = 64;
    memset(in, 0, sizeof in);
    int n = f->inner->fetch(f->inner_priv, s->inner_bsub, in, max);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        evbus_msg_t m;
        memset(&m, 0, sizeof m);
        memcpy(&m, (const char *)in + (size_t)i * stride, stride);
        take(f, s, &m, now);
    }
    int k = 0;
    while (k < max && s->held && s->held->due_ms <= now) {
        held_t *h = s->held;
        s->held = h->next;
        out[k] = (evbus_msg_t){0};
        out[k].topic = h->inner.topic ? h->inner.topic : s->topic;
        out[k].payload = h->bytes;
        out[k].len = h->len;
        out[k].attempts = h->attempts;
        out[k].prev_delay_ms = h->prev_delay_ms;
        out[k].first_attempt_ms = h->first_attempt_ms;
        out[k].cookie = h;
        k++;
    }
    return k;
}

int evbus__faulty_settle(void *priv, void *bsub, evbus_msg_t *msg,
                         evbus_settle_t how, int delay_ms)
{
    faulty_t *f = priv;
    fsub_t *s = bsub;
    held_t *h = msg->cookie;
    if (h->phantom) {
        if (how == EVBUS_SETTLE_RETRY) { /* the inner backend would redeliver */
            h->due_ms = now_ms() + (uint64_t)delay_ms;
            h->prev_delay_ms = delay_ms;
            insert(s, h);
        } else {
            held_free(h);
        }
        return EVBUS_OK;
    }
    held_t *echo = NULL;
    if (how == EVBUS_SETTLE_ACK && h->lose_ack) {
        /* The ACK "is lost": the broker forgets it was handled and the
         * event comes back once more. */
        echo = phantom_of(h, now_ms() + (uint64_t)f->o.redeliver_ms);
        if (echo)
            fault(f, "redeliver", h->inner.topic, h);
    }
    int rc = f->inner->settle(f->inner_priv, s->inner_bsub, &h->inner, how,
                              delay_ms);
    if (rc != EVBUS_OK) { /* the core will try again with the same msg */
        if (echo)
            held_free(echo);
        return rc;
    }
    if (echo)
        insert(s, echo);
    held_free(h);
    return EVBUS_OK;
}

int evbus__faulty_record_attempts(void *priv, void *bsub,
                                  evbus_msg_t *const *msgs, int n)
{
    faulty_t *f = priv;
    fsub_t *s = bsub;
    int (*rec)(void *, void *, evbus_msg_t *const *, int) =
        f->inner->version >= 2 ? f->inner->record_attempts : NULL;
    int rc = EVBUS_OK;
    for (int i = 0; i < n; i++) {
        held_t *h = msgs[i]->cookie;
        h->attempts = msgs[i]->attempts;
        h->prev_delay_ms = msgs[i]->prev_delay_ms;
        h->first_attempt_ms = msgs[i]->first_attempt_ms;
        if (h->phantom)
            continue; /* a copy: the inner backend knows nothing of it */
        if (!rec) {
            rc = EVBUS_ENOTSUP; /* the core counts in memory */
            continue;
        }
        h->inner.attempts = h->attempts;
        h->inner.prev_delay_ms = h->prev_delay_ms;
        h->inner.first_attempt_ms = h->first_attempt_ms;
        evbus_msg_t *one = &h->inner;
        int r = rec(f->inner_priv, s->inner_bsub, &one, 1);
        if (r != EVBUS_OK)
            return r;
    }
    return rc;
}
