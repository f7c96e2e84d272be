/*
 * Opening the wrapper and the publish-side faults. The URL is
 *   faulty+<scheme>://<rest>?<fault options>&<inner options>
 * Fault options (each a probability 0..1 unless noted):
 *   seed=N  dup=P  redeliver=P (alias drop_ack)  redeliver_ms=MS
 *   delay=MS (hold each delivery a random 0..MS, never reordering within a
 *   partitionkey)  fail_publish=P  lost_reply=P  poison=P
 *   reject_dlq=P (a dead-letter publish - an event carrying dlqreason - is
 *   refused with EVBUS_EREJECTED)
 * Everything else is passed to the inner backend.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faulty.h"

static const char *const fault_keys[] = {
    "seed", "dup", "redeliver", "drop_ack", "redeliver_ms", "delay",
    "fail_publish", "lost_reply", "poison", "reject_dlq", NULL};

static bool is_fault_key(const char *k)
{
    for (size_t i = 0; fault_keys[i]; i++)
        if (strcmp(k, fault_keys[i]) == 0)
            return true;
    return false;
}

static int read_prob(const evbus_url_t *url, const char *key, double *out,
                     char *errstr, size_t n)
{
    const char *v = evbus_url_param(url, key);
    *out = 0;
    if (!v)
        return EVBUS_OK;
    char *end;
    double p = strtod(v, &end);
    if (end == v || *end || p < 0 || p > 1) {
        snprintf(errstr, n, "option %s=%s: expected a probability from 0 to 1",
                 key, v);
        return EVBUS_EOPTION;
    }
    *out = p;
    return EVBUS_OK;
}

static int read_opts(const evbus_url_t *url, faulty_opts_t *o, char *errstr,
                     size_t n)
{
    long long v;
    int rc;
    if ((rc = read_prob(url, "dup", &o->dup, errstr, n)) ||
        (rc = read_prob(url, "redeliver", &o->redeliver, errstr, n)) ||
        (rc = read_prob(url, "fail_publish", &o->fail_publish, errstr, n)) ||
        (rc = read_prob(url, "lost_reply", &o->lost_reply, errstr, n)) ||
        (rc = read_prob(url, "poison", &o->poison, errstr, n)) ||
        (rc = read_prob(url, "reject_dlq", &o->reject_dlq, errstr, n)))
        return rc;
    if (!o->redeliver &&
        (rc = read_prob(url, "drop_ack", &o->redeliver, errstr, n)))
        return rc;
    evbus_url_mark(url, "drop_ack");
    if ((rc = evbus_url_param_int(url, "delay", 0, 0, 600000, &v, errstr, n)))
        return rc;
    o->delay_ms = (int)v;
    if ((rc = evbus_url_param_int(url, "redeliver_ms", 200, 0, 600000, &v,
                                  errstr, n)))
        return rc;
    o->redeliver_ms = (int)v;
    if ((rc = evbus_url_param_int(url, "seed", 1, 0, INT64_MAX, &v, errstr,
                                  n)))
        return rc;
    o->seed = (uint64_t)v;
    return EVBUS_OK;
}

/* "faulty+redis://h:1?dup=0.1&db=2" -> "redis://h:1?db=2", marking every
 * outer option as handled (the inner backend judges its own). */
static char *inner_url_string(const evbus_url_t *url, const char *inner_scheme)
{
    size_t cap = strlen(inner_scheme) + strlen(evbus_url_rest(url)) + 8;
    const char *k, *v;
    for (size_t i = 0; evbus_url_param_at(url, i, &k, &v) == 0; i++)
        cap += 3 * (strlen(k) + strlen(v)) + 2;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t len = (size_t)snprintf(s, cap, "%s://%s", inner_scheme,
                                  evbus_url_rest(url));
    char sep = '?';
    for (size_t i = 0; evbus_url_param_at(url, i, &k, &v) == 0; i++) {
        /* The core's own options (read before open) stay with the outer
         * bus; fault options are ours. */
        bool ours = is_fault_key(k) || evbus_url_param_is_marked(url, k);
        evbus_url_mark(url, k);
        if (ours)
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%c%s=", sep, k);
        for (const char *p = v; *p; p++) /* re-escape the decoded value */
            len += (size_t)snprintf(s + len, cap - len,
                                    (*p == '&' || *p == '%' || *p == '?' ||
                                     *p == '=' || *p == '#')
                                        ? "%%%02X"
                                        : "%c",
                                    (unsigned char)*p);
        sep = '&';
    }
    return s;
}

static int faulty_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                       char *errstr, size_t n)
{
    faulty_t *f = priv;
    const char *scheme = evbus_url_scheme(url);
    const char *plus = strchr(scheme, '+');
    if (!plus || !plus[1]) {
        snprintf(errstr, n, "faulty needs an inner scheme: faulty+memory://…");
        return EVBUS_EURL;
    }
    f->inner = evbus_backend_find(plus + 1);
    if (!f->inner || strcmp(f->inner->scheme, "faulty") == 0) {
        snprintf(errstr, n, "faulty: no backend for inner scheme '%s'",
                 plus + 1);
        return EVBUS_ENOBACKEND;
    }
    int rc = read_opts(url, &f->o, errstr, n);
    if (rc)
        return rc;
    char *inner = inner_url_string(url, plus + 1);
    if (!inner)
        return EVBUS_ENOMEM;
    f->inner_url = evbus_url_new(inner, errstr, n);
    free(inner);
    if (!f->inner_url)
        return EVBUS_EURL;
    f->inner_priv = calloc(1, f->inner->priv_size ? f->inner->priv_size : 1);
    if (!f->inner_priv) {
        evbus_url_free(f->inner_url);
        return EVBUS_ENOMEM;
    }
    rc = f->inner->open(f->inner_priv, host, f->inner_url, errstr, n);
    const char *unused = rc == EVBUS_OK ? evbus_url_unused(f->inner_url) : NULL;
    if (unused) {
        snprintf(errstr, n, "unknown option '%s' for %s:// URLs", unused,
                 f->inner->scheme);
        f->inner->close(f->inner_priv);
        rc = EVBUS_EOPTION;
    }
    if (rc != EVBUS_OK) {
        free(f->inner_priv);
        evbus_url_free(f->inner_url);
        return rc;
    }
    f->host = host;
    f->pub_rng = f->o.seed * 2 + 1;
    f->del_rng = f->o.seed * 2 + 2;
    f->dlq_rng = f->o.seed * 2 + 3;
    pthread_mutex_init(&f->pub_mu, NULL);
    evbus_host_log(host, EVBUS_LOG_INFO,
                   "faulty over %s: seed=%llu dup=%g redeliver=%g delay=%d "
                   "fail_publish=%g lost_reply=%g poison=%g",
                   f->inner->scheme, (unsigned long long)f->o.seed, f->o.dup,
                   f->o.redeliver, f->o.delay_ms, f->o.fail_publish,
                   f->o.lost_reply, f->o.poison);
    return EVBUS_OK;
}

static void faulty_close(void *priv)
{
    faulty_t *f = priv;
    f->inner->close(f->inner_priv);
    free(f->inner_priv);
    evbus_url_free(f->inner_url);
    pthread_mutex_destroy(&f->pub_mu);
}

static int faulty_publish(void *priv, const char *topic,
                          const evbus_event_t *ev, const void *payload,
                          size_t len)
{
    faulty_t *f = priv;
    /* Dead-letter writes draw from their own stream: they interleave with
     * the application's publishes in time, not in a reproducible order. */
    size_t tl = strlen(topic);
    bool dlq = tl > 4 && strcmp(topic + tl - 4, ".dlq") == 0;
    pthread_mutex_lock(&f->pub_mu);
    uint64_t *rng = dlq ? &f->dlq_rng : &f->pub_rng;
    bool fail = faulty_roll(rng, f->o.fail_publish);
    bool lose = !fail && faulty_roll(rng, f->o.lost_reply);
    bool reject = ev && evbus_event_ext(ev, "dlqreason") &&
                  faulty_roll(rng, f->o.reject_dlq);
    pthread_mutex_unlock(&f->pub_mu);
    if (reject) {
        evbus_host_count_fault(f->host);
        evbus_host_log(f->host, EVBUS_LOG_INFO,
                       "fault reject_dlq: dead letter %s to %s refused",
                       evbus_event_id(ev), topic);
        return EVBUS_EREJECTED;
    }
    if (fail) {
        evbus_host_count_fault(f->host);
        evbus_host_log(f->host, EVBUS_LOG_INFO,
                       "fault fail_publish: %s to %s not published",
                       ev ? evbus_event_id(ev) : "(raw)", topic);
        return EVBUS_EAGAIN;
    }
    int rc = f->inner->publish(f->inner_priv, topic, ev, payload, len);
    if (rc == EVBUS_OK && lose) {
        evbus_host_count_fault(f->host);
        evbus_host_log(f->host, EVBUS_LOG_INFO,
                       "fault lost_reply: %s to %s published, reported lost",
                       ev ? evbus_event_id(ev) : "(raw)", topic);
        return EVBUS_ETIMEDOUT;
    }
    return rc;
}

static int faulty_flush(void *priv, int timeout_ms)
{
    faulty_t *f = priv;
    return f->inner->flush ? f->inner->flush(f->inner_priv, timeout_ms)
                           : EVBUS_OK;
}

static int faulty_health(void *priv, char *errstr, size_t n)
{
    faulty_t *f = priv;
    return f->inner->health ? f->inner->health(f->inner_priv, errstr, n)
                            : EVBUS_OK;
}

static unsigned faulty_features(void *priv)
{
    faulty_t *f = priv;
    unsigned feat = f->inner->features_of ? f->inner->features_of(f->inner_priv)
                                          : f->inner->features;
    const faulty_opts_t *o = &f->o;
    if (o->dup > 0 || o->redeliver > 0 || o->delay_ms > 0)
        feat &= ~(EVBUS_FEAT_ORDERED | EVBUS_FEAT_ORDERED_BY_KEY);
    return feat;
}

/* Publishes go through the synchronous path, one fault decision each, so a
 * seed gives the same faults for the same sequence of publishes. */
const evbus_backend_t evbus_backend_faulty = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "faulty",
    .priv_size = sizeof(faulty_t),
    .features = 0,
    .open = faulty_open,
    .close = faulty_close,
    .publish = faulty_publish,
    .flush = faulty_flush,
    .subscribe = evbus__faulty_subscribe,
    .unsubscribe = evbus__faulty_unsubscribe,
    .fetch = evbus__faulty_fetch,
    .settle = evbus__faulty_settle,
    .health = faulty_health,
    .features_of = faulty_features,
    .record_attempts = evbus__faulty_record_attempts,
};
