/*
 * Publishing through the sidecar.
 *
 * publish: POST /v1.0/publish/<pubsub>/<topic> with the encoded CloudEvent
 * as application/cloudevents+json, so Dapr keeps our id, type and source;
 * the partitionkey extension goes along as metadata.partitionKey. 204 means
 * the broker took it.
 *
 * publish_async: a writer thread takes what is queued, groups it by topic
 * and sends it through the bulk endpoint
 * (/v1.0-alpha1/publish/bulk/<pubsub>/<topic>). Entries the sidecar names
 * in failedEntries, and whole batches that got no answer, are tried again
 * with backoff; the others are done. A sidecar without the bulk endpoint
 * gets single publishes instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dapr_internal.h"

typedef struct aitem {
    char *topic;
    char *payload;
    size_t len;
    char *pkey; /* partitionkey or NULL */
    evbus_publish_done_fn done;
    void *token;
    int tries;
    uint64_t due_ms;
    int last_err;
    struct aitem *next;
} aitem_t;

struct dapr_async {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* writer: work arrived or stop */
    pthread_cond_t idle_cv; /* flush: outstanding reached 0 */
    aitem_t *head, *tail;
    long outstanding; /* accepted and not completed */
    bool stop;
    bool no_bulk; /* the sidecar lacks the bulk endpoint */
    pthread_t thread;
    bool started;
};

/* ------------------------------------------------------------ single */

static char *publish_url(const dapr_t *d, const char *topic, const char *pkey,
                         bool bulk)
{
    char *t = evbus__dapr_urlenc(topic), *p = evbus__dapr_urlenc(d->pubsub);
    char *k = pkey ? evbus__dapr_urlenc(pkey) : NULL;
    evbus__buf_t b = {0};
    b.failed = !t || !p || (pkey && !k);
    if (!b.failed) {
        evbus__buf_puts(&b, d->base);
        evbus__buf_puts(&b, bulk ? "/v1.0-alpha1/publish/bulk/"
                                     : "/v1.0/publish/");
        evbus__buf_puts(&b, p);
        evbus__buf_puts(&b, "/");
        evbus__buf_puts(&b, t);
        if (k) {
            evbus__buf_puts(&b, "?metadata.partitionKey=");
            evbus__buf_puts(&b, k);
        }
    }
    free(t);
    free(p);
    free(k);
    return evbus__buf_take(&b, NULL);
}

static int publish_one(dapr_t *d, const char *topic, const char *pkey,
                       const void *payload, size_t len)
{
    char *url = publish_url(d, topic, pkey, false);
    if (!url)
        return EVBUS_ENOMEM;
    dapr_resp_t r;
    char why[384];
    int rc = evbus__dapr_request(d, url, d->hdr_ce, payload, len, d->timeout_ms, &r);
    if (rc == EVBUS_OK) {
        if (r.status >= 200 && r.status < 300) {
            rc = EVBUS_OK;
        } else {
            rc = evbus__dapr_map_status(&r, why, sizeof why);
            evbus_host_log(d->host, EVBUS_LOG_WARN, "publish to %s failed: %s",
                           topic, why);
        }
    } else {
        evbus__dapr_describe_curl(&r, why, sizeof why);
        evbus_host_log(d->host, EVBUS_LOG_WARN, "publish to %s failed: %s",
                       topic, why);
    }
    evbus__dapr_resp_free(&r);
    free(url);
    return rc;
}

int evbus__dapr_publish(void *priv, const char *topic, const evbus_event_t *ev,
                 const void *payload, size_t len)
{
    dapr_t *d = priv;
    const char *pkey = ev ? evbus_event_ext(ev, "partitionkey") : NULL;
    return publish_one(d, topic, pkey, payload, len);
}

/* ------------------------------------------------------------ async */

static void item_free(aitem_t *it)
{
    free(it->topic);
    free(it->payload);
    free(it->pkey);
    free(it);
}

int evbus__dapr_publish_async(void *priv, const char *topic, const evbus_event_t *ev,
                       const void *payload, size_t len,
                       evbus_publish_done_fn done, void *token)
{
    dapr_t *d = priv;
    dapr_async_t *a = d->async;
    const char *pkey = ev ? evbus_event_ext(ev, "partitionkey") : NULL;
    if (!ev) {
        /* Raw bytes may not be JSON, so they cannot sit inside a bulk
         * body: publish them on their own, now. */
        done(token, evbus__dapr_publish(priv, topic, ev, payload, len));
        return EVBUS_OK;
    }
    aitem_t *it = calloc(1, sizeof *it);
    if (!it)
        return EVBUS_ENOMEM;
    it->topic = strdup(topic);
    it->payload = malloc(len + 1);
    it->pkey = pkey ? strdup(pkey) : NULL;
    if (!it->topic || !it->payload || (pkey && !it->pkey)) {
        item_free(it);
        return EVBUS_ENOMEM;
    }
    memcpy(it->payload, payload, len);
    it->payload[len] = '\0';
    it->len = len;
    it->done = done;
    it->token = token;
    pthread_mutex_lock(&a->mu);
    if (a->stop) {
        pthread_mutex_unlock(&a->mu);
        item_free(it);
        return EVBUS_ECLOSED;
    }
    if (a->tail)
        a->tail->next = it;
    else
        a->head = it;
    a->tail = it;
    a->outstanding++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return EVBUS_OK;
}

/* Completes an item: calls done outside the lock. */
static void complete(dapr_async_t *a, aitem_t *it, int err)
{
    it->done(it->token, err);
    item_free(it);
    pthread_mutex_lock(&a->mu);
    if (--a->outstanding == 0)
        pthread_cond_broadcast(&a->idle_cv);
    pthread_mutex_unlock(&a->mu);
}

/* Puts a failed item back for another try, or completes it with err. */
static void again_or_fail(dapr_t *d, aitem_t *it, int err, const char *why)
{
    dapr_async_t *a = d->async;
    it->tries++;
    it->last_err = err;
    if (!evbus_err_retriable(err) || it->tries >= d->async_tries) {
        evbus_host_log(d->host, EVBUS_LOG_WARN,
                       "async publish to %s failed after %d tries: %s",
                       it->topic, it->tries, why);
        complete(a, it, err);
        return;
    }
    int delay = 50 << (it->tries < 6 ? it->tries : 6);
    it->due_ms = evbus__mono_ms() + (uint64_t)delay;
    pthread_mutex_lock(&a->mu);
    /* back to the front: it was queued before what is waiting now */
    it->next = a->head;
    a->head = it;
    if (!a->tail)
        a->tail = it;
    pthread_mutex_unlock(&a->mu);
}

/* Sends batch (n items of one topic) through the bulk endpoint. Returns
 * false when the sidecar has no such endpoint (nothing was completed). */
static bool send_bulk(dapr_t *d, aitem_t **batch, int n)
{
    evbus__buf_t b = {0};
    evbus__buf_puts(&b, "[");
    char id[16];
    for (int i = 0; i < n && !b.failed; i++) {
        snprintf(id, sizeof id, "%d", i);
        evbus__buf_puts(&b, i ? ",{\"entryId\":\"" : "{\"entryId\":\"");
        evbus__buf_puts(&b, id);
        evbus__buf_puts(&b, "\",\"contentType\":\"" DAPR_CT_CLOUDEVENT
                                "\",\"event\":");
        evbus__buf_append(&b, batch[i]->payload, batch[i]->len);
        if (batch[i]->pkey) {
            evbus__buf_puts(&b, ",\"metadata\":{\"partitionKey\":");
            evbus__buf_json_str(&b, batch[i]->pkey);
            evbus__buf_puts(&b, "}");
        }
        evbus__buf_puts(&b, "}");
    }
    evbus__buf_puts(&b, "]");
    char *url = b.failed ? NULL : publish_url(d, batch[0]->topic, NULL, true);
    if (!url) {
        evbus__buf_free(&b);
        for (int i = 0; i < n; i++)
            again_or_fail(d, batch[i], EVBUS_ENOMEM, "out of memory");
        return true;
    }
    dapr_resp_t r;
    char why[384];
    int rc = evbus__dapr_request(d, url, d->hdr_json, b.data, b.len, d->timeout_ms,
                          &r);
    free(url);
    evbus__buf_free(&b);
    if (rc != EVBUS_OK) {
        evbus__dapr_describe_curl(&r, why, sizeof why);
        for (int i = 0; i < n; i++)
            again_or_fail(d, batch[i], rc, why);
        evbus__dapr_resp_free(&r);
        return true;
    }
    if (r.status >= 200 && r.status < 300) {
        evbus__dapr_resp_free(&r);
        for (int i = 0; i < n; i++)
            complete(d->async, batch[i], EVBUS_OK);
        return true;
    }
    rc = evbus__dapr_map_status(&r, why, sizeof why);
    cJSON *j =
        r.body.data ? cJSON_ParseWithLength(r.body.data, r.body.len) : NULL;
    cJSON *failed = j ? cJSON_GetObjectItemCaseSensitive(j, "failedEntries")
                      : NULL;
    cJSON *code = j ? cJSON_GetObjectItemCaseSensitive(j, "errorCode") : NULL;
    if ((r.status == 404 || r.status == 405 || r.status == 501) &&
        !(cJSON_IsString(code) &&
          strcmp(code->valuestring, "ERR_PUBSUB_NOT_FOUND") == 0)) {
        /* "404 page not found": a sidecar without the alpha bulk API */
        cJSON_Delete(j);
        evbus__dapr_resp_free(&r);
        return false;
    }
    if (cJSON_IsArray(failed) && cJSON_GetArraySize(failed) > 0 &&
        r.status >= 500) {
        /* Only the named entries failed; the rest are in the broker. */
        char *bad_entry = calloc((size_t)n, 1);
        cJSON *e;
        cJSON_ArrayForEach(e, failed) {
            cJSON *eid = cJSON_GetObjectItemCaseSensitive(e, "entryId");
            if (cJSON_IsString(eid)) {
                char *end;
                long k = strtol(eid->valuestring, &end, 10);
                if (*end == '\0' && k >= 0 && k < n && bad_entry)
                    bad_entry[k] = 1;
            }
        }
        for (int i = 0; i < n; i++) {
            if (!bad_entry || bad_entry[i])
                again_or_fail(d, batch[i], rc, why);
            else
                complete(d->async, batch[i], EVBUS_OK);
        }
        free(bad_entry);
    } else {
        for (int i = 0; i < n; i++)
            again_or_fail(d, batch[i], rc, why);
    }
    cJSON_Delete(j);
    evbus__dapr_resp_free(&r);
    return true;
}

static void send_singly(dapr_t *d, aitem_t **batch, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = publish_one(d, batch[i]->topic, batch[i]->pkey,
                             batch[i]->payload, batch[i]->len);
        if (rc == EVBUS_OK)
            complete(d->async, batch[i], EVBUS_OK);
        else
            again_or_fail(d, batch[i], rc, evbus_strerror(rc));
    }
}

/* Takes up to max due items of the first due item's topic, keeping the
 * order of everything else. Called with the lock held. Returns how many;
 * *wait_ms says how long until the next item is due when none is. */
static int take_batch(dapr_async_t *a, aitem_t **batch, int max,
                      long *wait_ms)
{
    uint64_t now = evbus__mono_ms();
    const char *topic = NULL;
    int n = 0;
    uint64_t next_due = UINT64_MAX;
    aitem_t **pp = &a->head, *prev = NULL;
    while (*pp && n < max) {
        aitem_t *it = *pp;
        bool due = it->due_ms <= now;
        if (!due && it->due_ms < next_due)
            next_due = it->due_ms;
        if (due && (!topic || strcmp(topic, it->topic) == 0)) {
            topic = it->topic;
            *pp = it->next;
            if (a->tail == it)
                a->tail = prev;
            it->next = NULL;
            batch[n++] = it;
            continue;
        }
        prev = it;
        pp = &it->next;
    }
    *wait_ms = next_due == UINT64_MAX ? -1 : (long)(next_due - now);
    return n;
}

static void *writer(void *arg)
{
    dapr_t *d = arg;
    dapr_async_t *a = d->async;
    aitem_t **batch = calloc((size_t)d->bulk_max, sizeof *batch);
    pthread_mutex_lock(&a->mu);
    /* Stops after the batch in flight: close has waited for flush already,
     * and what is left is completed by evbus__dapr_async_stop. */
    while (batch && !a->stop) {
        long wait_ms = -1;
        int n = a->head ? take_batch(a, batch, d->bulk_max, &wait_ms) : 0;
        if (n == 0) {
            if (a->stop)
                break;
            if (wait_ms < 0 || !a->head) {
                pthread_cond_wait(&a->cv, &a->mu);
            } else {
                evbus__cond_wait_ms(&a->cv, &a->mu, wait_ms);
            }
            continue;
        }
        bool no_bulk = a->no_bulk;
        pthread_mutex_unlock(&a->mu);
        if (no_bulk || n == 1) {
            send_singly(d, batch, n);
        } else if (!send_bulk(d, batch, n)) {
            evbus_host_log(d->host, EVBUS_LOG_INFO,
                           "sidecar has no bulk publish endpoint; "
                           "publishing one event per request");
            pthread_mutex_lock(&a->mu);
            a->no_bulk = true;
            pthread_mutex_unlock(&a->mu);
            send_singly(d, batch, n);
        }
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    free(batch);
    return NULL;
}

int evbus__dapr_flush(void *priv, int timeout_ms)
{
    dapr_t *d = priv;
    dapr_async_t *a = d->async;
    struct timespec ts = evbus__deadline_in(timeout_ms);
    int rc = EVBUS_OK;
    pthread_mutex_lock(&a->mu);
    while (a->outstanding > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&a->idle_cv, &a->mu);
        } else if (evbus__cond_wait_until(&a->idle_cv, &a->mu, &ts) != 0 &&
                   a->outstanding > 0) {
            rc = EVBUS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int evbus__dapr_async_start(dapr_t *d, char *errstr, size_t n)
{
    dapr_async_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(errstr, n, "dapr: out of memory");
        return EVBUS_ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    evbus__cond_init(&a->cv);
    evbus__cond_init(&a->idle_cv);
    d->async = a;
    if (pthread_create(&a->thread, NULL, writer, d) != 0) {
        snprintf(errstr, n, "dapr: cannot start the publish thread");
        evbus__dapr_async_stop(d);
        return EVBUS_EINTERNAL;
    }
    a->started = true;
    return EVBUS_OK;
}

void evbus__dapr_async_stop(dapr_t *d)
{
    dapr_async_t *a = d->async;
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    /* Nothing waits any longer: what is left fails now. */
    aitem_t *left = a->head;
    a->head = a->tail = NULL;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->started)
        pthread_join(a->thread, NULL);
    /* The writer may have put items back while finishing its batch. */
    pthread_mutex_lock(&a->mu);
    aitem_t *more = a->head;
    a->head = a->tail = NULL;
    pthread_mutex_unlock(&a->mu);
    for (aitem_t *lists[2] = {left, more}, **l = lists; l < lists + 2; l++)
        while (*l) {
            aitem_t *it = *l;
            *l = it->next;
            complete(a, it, EVBUS_ETIMEDOUT);
        }
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->idle_cv);
    free(a);
    d->async = NULL;
}
