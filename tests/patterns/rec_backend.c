#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <evbus/backend.h>
#include <evbus/evbus.h>

#include "rec_backend.h"

typedef struct {
    char *id;
    char *topic;
    char *payload; /* the bytes as published, NUL-terminated */
} rec_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rec_t *recs;
static size_t nrecs, caprecs, attempts;
static int fail_err;

static int rec_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                    char *errstr, size_t n)
{
    return EVBUS_OK;
}

static void rec_close(void *priv) {}

static int rec_publish(void *priv, const char *topic, const evbus_event_t *ev,
                       const void *payload, size_t len)
{
    pthread_mutex_lock(&mu);
    attempts++;
    int err = fail_err;
    if (!err) {
        if (nrecs == caprecs) {
            caprecs = caprecs ? caprecs * 2 : 1024;
            recs = realloc(recs, caprecs * sizeof *recs);
        }
        recs[nrecs].id = strdup(ev ? evbus_event_id(ev) : "(raw)");
        recs[nrecs].topic = strdup(topic);
        recs[nrecs].payload = strndup(payload, len);
        nrecs++;
    }
    pthread_mutex_unlock(&mu);
    return err;
}

static int rec_subscribe(void *priv, const char *topic, const char *group,
                         void **bsub, char *errstr, size_t n)
{
    return EVBUS_ENOTSUP;
}

static void rec_unsubscribe(void *priv, void *bsub) {}

static int rec_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    return 0;
}

static int rec_settle(void *priv, void *bsub, evbus_msg_t *msg,
                      evbus_settle_t how, int delay_ms)
{
    return EVBUS_OK;
}

static const evbus_backend_t rec_backend = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "obrec",
    .priv_size = 8,
    .features = 0,
    .open = rec_open,
    .close = rec_close,
    .publish = rec_publish,
    .subscribe = rec_subscribe,
    .unsubscribe = rec_unsubscribe,
    .fetch = rec_fetch,
    .settle = rec_settle,
};

void rec_register(void)
{
    if (!evbus_backend_find("obrec"))
        evbus_backend_register(&rec_backend);
    /* the same recorder declaring EVBUS_FEAT_BYTES_ONLY: it is promised
     * the bytes only (ev may be NULL) and records exactly those */
    static evbus_backend_t bytes_only;
    if (!evbus_backend_find("obrecb")) {
        bytes_only = rec_backend;
        bytes_only.scheme = "obrecb";
        bytes_only.features = EVBUS_FEAT_BYTES_ONLY;
        evbus_backend_register(&bytes_only);
    }
}

void rec_reset(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nrecs; i++) {
        free(recs[i].id);
        free(recs[i].topic);
        free(recs[i].payload);
    }
    nrecs = attempts = 0;
    fail_err = 0;
    pthread_mutex_unlock(&mu);
}

void rec_fail_with(int err)
{
    pthread_mutex_lock(&mu);
    fail_err = err;
    pthread_mutex_unlock(&mu);
}

size_t rec_count(void)
{
    pthread_mutex_lock(&mu);
    size_t n = nrecs;
    pthread_mutex_unlock(&mu);
    return n;
}

size_t rec_attempts(void)
{
    pthread_mutex_lock(&mu);
    size_t n = attempts;
    pthread_mutex_unlock(&mu);
    return n;
}

const char *rec_id(size_t i)
{
    pthread_mutex_lock(&mu);
    const char *s = i < nrecs ? recs[i].id : NULL;
    pthread_mutex_unlock(&mu);
    return s;
}

const char *rec_topic(size_t i)
{
    pthread_mutex_lock(&mu);
    const char *s = i < nrecs ? recs[i].topic : NULL;
    pthread_mutex_unlock(&mu);
    return s;
}

const char *rec_payload(size_t i)
{
    pthread_mutex_lock(&mu);
    const char *s = i < nrecs ? recs[i].payload : NULL;
    pthread_mutex_unlock(&mu);
    return s;
}

size_t rec_times(const char *id)
{
    size_t n = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nrecs; i++)
        n += strcmp(recs[i].id, id) == 0;
    pthread_mutex_unlock(&mu);
    return n;
}
