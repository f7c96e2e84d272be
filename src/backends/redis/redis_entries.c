/*
 * Turning stream replies into buffered messages: one [id, [field, value,
 * ...]] entry becomes an rds_msg_t holding the 'data' field (or the event
 * decoded from it); entries this member still holds are skipped; entries
 * deleted while pending (nil fields, e.g. trimmed by MAXLEN) are acked and
 * dropped; re-read and claimed entries get their recorded attempts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fetch.h"

static const char *const no_data_field =
    "redis stream entry has no 'data' field";

void evbus__redis_msg_list_free(rds_msg_t *m)
{
    while (m) {
        rds_msg_t *next = m->next;
        evbus_event_free(m->event); /* never handed to the core */
        free(m);
        m = next;
    }
}

/* Makes a message from one [id, [field, value, ...]] entry. *deleted is set
 * for an entry whose fields are nil (deleted while pending). With
 * decode_max > 0 the CloudEvent is decoded here (then the bytes are not
 * kept: the core only needs them for an undecodable payload). */
static rds_msg_t *entry_to_msg(const redisReply *e, bool *deleted,
                               size_t decode_max)
{
    *deleted = false;
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    const redisReply *idr = e->element[0], *f = e->element[1];
    rds_id_t id;
    if (idr->len >= sizeof(((rds_msg_t *)0)->idstr) ||
        !evbus__redis_id_parse(idr->str, idr->len, &id))
        return NULL;
    const redisReply *data = NULL;
    if (f->type == REDIS_REPLY_ARRAY && f->elements) {
        for (size_t i = 0; i + 1 < f->elements; i += 2)
            if (f->element[i]->type == REDIS_REPLY_STRING &&
                f->element[i]->len == 4 &&
                memcmp(f->element[i]->str, "data", 4) == 0 &&
                f->element[i + 1]->type == REDIS_REPLY_STRING) {
                data = f->element[i + 1];
                break;
            }
    } else {
        *deleted = true;
    }
    evbus_event_t *ev = NULL;
    if (data && decode_max) {
        char why[8];
        ev = evbus_event_from_json_limit(data->str, data->len, decode_max, why,
                                         sizeof why);
    }
    size_t len = data && !ev ? data->len : 0;
    rds_msg_t *m = malloc(sizeof *m + len + 1);
    if (!m) {
        evbus_event_free(ev);
        return NULL;
    }
    m->next = NULL;
    m->id = id;
    memcpy(m->idstr, idr->str, idr->len);
    m->idstr[idr->len] = '\0';
    m->attempts = m->prev_delay_ms = 0;
    m->first_attempt_ms = 0;
    m->decode_error = data || *deleted ? NULL : no_data_field;
    m->event = ev;
    m->len = len;
    if (len)
        memcpy(m->payload, data->str, len);
    m->payload[len] = '\0';
    return m;
}

/* Acks entries that were deleted while pending (nothing to deliver). */
static void ack_deleted(rds_sub_t *s, const char **ids, int n)
{
    if (!n)
        return;
    const char **argv = malloc((size_t)(n + 3) * sizeof *argv);
    if (!argv)
        return;
    argv[0] = "XACK";
    argv[1] = s->topic;
    argv[2] = s->group;
    memcpy(argv + 3, ids, (size_t)n * sizeof *ids);
    redisAppendCommandArgv(s->c, n + 3, argv, NULL);
    free(argv);
    int replies = 1 + evbus__redis_attempts_append_del(s, s->c, ids, (size_t)n);
    for (int i = 0; i < replies; i++) {
        redisReply *r = NULL;
        if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
            break; /* the caller's next command sees c->err */
        freeReplyObject(r);
    }
    evbus_host_log(s->bus->host, EVBUS_LOG_INFO,
                   "acked %d entries of %s/%s that were deleted while pending",
                   n, s->topic, s->group);
}

/* Turns an array of entries into buffered messages. known_new: entries
 * from '>' (never held before, delivered for the first time); otherwise
 * held ones are skipped and attempt records looked up. Returns how many
 * entries the array had (including skipped and deleted), or an error. */
int evbus__redis_take_entries(rds_sub_t *s, const redisReply *entries,
                              bool known_new, char *last_id,
                              size_t last_id_size)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    rds_msg_t *head = NULL, **tail = &head;
    const char **deleted = calloc(entries->elements + 1, sizeof *deleted);
    int ndeleted = 0;
    if (!deleted)
        return EVBUS_ENOMEM;
    /* Decoding is shared with the poller: while the poller still has at
     * least a batch buffered (it is the slower stage), the fetcher decodes
     * new entries itself; when the poller is about to run dry they go in
     * undecoded and the core decodes them on the polling thread. So both
     * cores work, whichever stage is slower. Re-read and claimed entries
     * are decoded by the core (their attempt records come first). */
    pthread_mutex_lock(&s->mu);
    bool decode_here = known_new && s->nbuf >= s->bus->o.batch;
    pthread_mutex_unlock(&s->mu);
    size_t decode_max =
        decode_here ? evbus_host_max_event_bytes(s->bus->host) : 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING && last_id &&
            e->element[0]->len < last_id_size) {
            memcpy(last_id, e->element[0]->str, e->element[0]->len);
            last_id[e->element[0]->len] = '\0';
        }
        if (!known_new && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING) {
            rds_id_t id;
            bool held = false;
            if (evbus__redis_id_parse(e->element[0]->str, e->element[0]->len,
                                      &id)) {
                pthread_mutex_lock(&s->mu);
                held = evbus__redis_idset_has(&s->held, id);
                pthread_mutex_unlock(&s->mu);
            }
            if (held)
                continue; /* we still hold it: not a new delivery */
        }
        bool del;
        rds_msg_t *m = entry_to_msg(e, &del, decode_max);
        if (!m)
            continue;
        if (del) {
            deleted[ndeleted++] = e->element[0]->str;
            free(m);
            continue;
        }
        *tail = m;
        tail = &m->next;
    }
    ack_deleted(s, deleted, ndeleted);
    free(deleted);
    /* Re-read and claimed entries: what record_attempts stored. */
    if (!known_new && head &&
        evbus__redis_attempts_load(s, s->c, head) == EVBUS_ECONN) {
        evbus__redis_msg_list_free(head);
        return EVBUS_ECONN;
    }
    int added = 0;
    pthread_mutex_lock(&s->mu);
    while (head) {
        rds_msg_t *m = head;
        head = m->next;
        m->next = NULL;
        if (evbus__redis_idset_add(&s->held, m->id) != EVBUS_OK) {
            evbus_event_free(m->event);
            free(m); /* stays pending in Redis: claimed again later */
            continue;
        }
        if (s->buf_tail)
            s->buf_tail->next = m;
        else
            s->buf_head = m;
        s->buf_tail = m;
        s->nbuf++;
        added++;
    }
    pthread_mutex_unlock(&s->mu);
    if (added)
        evbus_host_notify(s->bus->host);
    return (int)entries->elements;
}

/* Entries of the single stream in an XREADGROUP reply, or NULL. */
const redisReply *evbus__redis_stream_entries(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return NULL;
    const redisReply *st = r->element[0];
    if (st->type != REDIS_REPLY_ARRAY || st->elements < 2)
        return NULL;
    return st->element[1];
}
