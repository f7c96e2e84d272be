/*
 * A subscription's life: subscribe (consumer name, group, fetcher thread),
 * the non-blocking fetch() from its buffer, and unsubscribe (stop the
 * fetcher, wait for the acks, hand back the rest - redis_handback.c).
 * How entries are fetched: redis_fetcher.c; settled: redis_settle.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis_internal.h"

static atomic_uint consumer_counter;

void evbus__redis_sub_unref(rds_sub_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    evbus__redis_msg_list_free(s->buf_head);
    evbus__redis_msg_list_free(s->acks);
    evbus__redis_msg_list_free(s->releases);
    evbus__redis_idset_free(&s->held);
    if (s->c)
        redisFree(s->c);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->topic);
    free(s->group);
    free(s->akey);
    free(s);
}

static void consumer_name(const rds_bus_t *b, char *out, size_t n)
{
    if (b->o.consumer) {
        snprintf(out, n, "%s", b->o.consumer);
        return;
    }
    char host[64] = "host";
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "host");
    host[sizeof host - 1] = '\0';
    snprintf(out, n, "%s-%d-%u", host, (int)getpid(),
             atomic_fetch_add(&consumer_counter, 1) + 1);
}

int evbus__redis_subscribe(void *priv, const char *topic, const char *group,
                           void **bsub, char *errstr, size_t n)
{
    rds_bus_t *b = priv;
    rds_sub_t *s = calloc(1, sizeof *s);
    if (!s || !(s->topic = strdup(topic)) || !(s->group = strdup(group)) ||
        !(s->akey = evbus__redis_attempts_key(topic, group))) {
        if (s) {
            free(s->topic);
            free(s->group);
        }
        free(s);
        snprintf(errstr, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    s->bus = b;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    evbus__cond_init(&s->cv);
    consumer_name(b, s->consumer, sizeof s->consumer);
    char why[512];
    int rc = evbus__redis_connect(
        &b->o, b->o.block_ms + b->o.command_timeout_ms, &s->c, why, sizeof why);
    if (rc == EVBUS_OK) {
        char reason[300];
        rc = evbus__redis_create_group(s->c, topic, group, reason,
                                       sizeof reason);
        if (rc != EVBUS_OK)
            snprintf(why, sizeof why, "XGROUP CREATE %.100s %.60s failed: %.120s",
                     topic, group, reason);
        else
            evbus__redis_sweep_consumers(s, s->c);
    }
    if (rc == EVBUS_OK &&
        pthread_create(&s->thread, NULL, evbus__redis_fetcher_main, s) != 0) {
        snprintf(why, sizeof why, "cannot start the fetcher thread");
        rc = EVBUS_ENOMEM;
    }
    if (rc != EVBUS_OK) {
        snprintf(errstr, n, "%s", why);
        evbus__redis_sub_unref(s);
        return rc;
    }
    s->thread_started = true;
    evbus_host_log(b->host, EVBUS_LOG_DEBUG,
                   "subscribed to %s as %s in group %s", topic, s->consumer,
                   group);
    *bsub = s;
    return EVBUS_OK;
}

int evbus__redis_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    (void)priv;
    rds_sub_t *s = bsub;
    int n = 0;
    pthread_mutex_lock(&s->mu);
    while (n < max && s->buf_head) {
        rds_msg_t *m = s->buf_head;
        s->buf_head = m->next;
        if (!s->buf_head)
            s->buf_tail = NULL;
        m->next = NULL;
        s->nbuf--;
        out[n].topic = s->topic;
        out[n].payload = m->payload;
        out[n].len = m->len;
        out[n].decode_error = m->decode_error;
        out[n].attempts = m->attempts;
        out[n].prev_delay_ms = m->prev_delay_ms;
        out[n].first_attempt_ms = m->first_attempt_ms;
        out[n].event = m->event; /* the core owns it from here */
        m->event = NULL;
        out[n].cookie = m;
        n++;
    }
    if (n && s->nbuf <= s->bus->o.batch)
        pthread_cond_broadcast(&s->cv); /* room for the fetcher */
    pthread_mutex_unlock(&s->mu);
    return n;
}

void evbus__redis_unsubscribe(void *priv, void *bsub)
{
    rds_bus_t *b = priv;
    rds_sub_t *s = bsub;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (s->c) /* wakes a blocked XREADGROUP */
        shutdown(s->c->fd, SHUT_RDWR);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started)
        pthread_join(s->thread, NULL);

    /* Entries buffered but never handed out are no longer held: the
     * handback below gives them to the group with everything else still
     * pending for this consumer. */
    pthread_mutex_lock(&s->mu);
    for (rds_msg_t *m = s->buf_head; m; m = m->next)
        evbus__redis_idset_del(&s->held, m->id);
    evbus__redis_msg_list_free(s->buf_head);
    s->buf_head = s->buf_tail = NULL;
    s->nbuf = 0;
    pthread_mutex_unlock(&s->mu);

    /* Wait (bounded) until the writer confirmed every ack and release, so
     * a reopened member does not get acked entries again, and no release
     * lands after the handback (see rds_sub_t.releasing). */
    uint64_t deadline = evbus__mono_ms() + (uint64_t)b->o.command_timeout_ms;
    for (;;) {
        evbus__redis_schedule_settle(s);
        pthread_mutex_lock(&s->mu);
        bool drained = !s->acks && !s->releases && !s->settle_queued;
        /* settle_queued is cleared when the writer takes the lists; the
         * held set empties once the acks it sent are confirmed, releasing
         * once the releases are. */
        drained = drained && s->held.len == 0 && s->releasing == 0;
        if (!drained && evbus__mono_ms() < deadline)
            evbus__cond_wait_ms(&s->cv, &s->mu, 20);
        pthread_mutex_unlock(&s->mu);
        if (drained)
            break;
        if (evbus__mono_ms() >= deadline) {
            evbus_host_log(b->host, EVBUS_LOG_WARN,
                           "unsubscribe from %s/%s: some acks were not "
                           "confirmed in time; those entries will be "
                           "delivered again",
                           s->topic, s->group);
            break;
        }
    }
    evbus__redis_handback(s);
    evbus__redis_sub_unref(s);
}
