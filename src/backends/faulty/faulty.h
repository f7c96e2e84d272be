/*
 * faulty+<scheme>:// - wraps any backend and injects seeded, reproducible
 * faults, so a service can prove in its own tests that its handlers are
 * idempotent and its publishers retry. Uses only the inner backend's public
 * vtable, as SQLite's VFS shims wrap another VFS.
 */
#ifndef EVBUS_FAULTY_H
#define EVBUS_FAULTY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "evbus/backend.h"

typedef struct {
    double dup;          /* deliver an event twice */
    double redeliver;    /* the handler's ACK is lost: it comes back later */
    double fail_publish; /* publish fails (retriable) and publishes nothing */
    double lost_reply;   /* publish succeeds but reports a timeout */
    double poison;       /* a delivery's bytes are corrupted */
    double reject_dlq;   /* a dead-letter publish is refused for good
                            (EVBUS_EREJECTED) */
    int delay_ms;        /* hold deliveries up to this long (0 = off) */
    int redeliver_ms;    /* when a lost-ACK event comes back */
    uint64_t seed;
} faulty_opts_t;

typedef struct faulty {
    const evbus_backend_t *inner;
    void *inner_priv;
    evbus_url_t *inner_url;
    evbus_host_t *host;
    faulty_opts_t o;
    pthread_mutex_t pub_mu;
    uint64_t pub_rng;    /* publishing threads, under pub_mu */
    uint64_t dlq_rng;    /* dead-letter publishes (the poller), under pub_mu */
    uint64_t del_rng;    /* the polling thread only */
} faulty_t;

/* splitmix64: small, seedable, good enough for fault decisions */
static inline uint64_t faulty_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline bool faulty_roll(uint64_t *state, double p)
{
    if (p <= 0)
        return false;
    return (double)(faulty_next(state) >> 11) * 0x1.0p-53 < p;
}

/* faulty_delivery.c */
int evbus__faulty_subscribe(void *priv, const char *topic, const char *group,
                            void **bsub, char *errstr, size_t n);
void evbus__faulty_unsubscribe(void *priv, void *bsub);
int evbus__faulty_fetch(void *priv, void *bsub, evbus_msg_t *out, int max);
int evbus__faulty_settle(void *priv, void *bsub, evbus_msg_t *msg,
                         evbus_settle_t how, int delay_ms);
/* Keeps the context for the core and passes real deliveries' attempts on
 * to the inner backend; EVBUS_ENOTSUP when the inner one keeps none. */
int evbus__faulty_record_attempts(void *priv, void *bsub,
                                  evbus_msg_t *const *msgs, int n);

#endif
