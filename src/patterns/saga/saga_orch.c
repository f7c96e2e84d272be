/*
 * The orchestrator's life cycle and its three inputs - a start, a reply, a
 * timer - each applied as one transaction on the application's connection:
 * load the instance, run the transition (saga_engine.c), write the instance
 * row, commit, then wake the relay that publishes the commands the
 * transition wrote into the outbox.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "saga_engine.h"

/* The size of evbus_saga_opts_t in the first release. */
#define OPTS_SIZE_V1 EVBUS__SIZE_THROUGH(evbus_saga_opts_t, compensation_retry)

void evbus__saga_log(evbus_saga_orch_t *o, int level, const char *fmt, ...)
{
    if (!evbus__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    if (!o || o->lock_depth == 0) {
        evbus__vlog(level, "saga", fmt, ap);
    } else if (o->nlogs < (int)(sizeof o->logs / sizeof o->logs[0])) {
        o->logs[o->nlogs].level = level;
        vsnprintf(o->logs[o->nlogs].msg, sizeof o->logs[0].msg, fmt, ap);
        o->nlogs++;
    } else {
        o->logs_dropped++;
    }
    va_end(ap);
}

void evbus__saga_lock(evbus_saga_orch_t *o)
{
    pthread_mutex_lock(&o->mu);
    o->lock_depth++;
}

void evbus__saga_unlock(evbus_saga_orch_t *o)
{
    if (--o->lock_depth > 0 || (o->nlogs == 0 && o->logs_dropped == 0)) {
        pthread_mutex_unlock(&o->mu);
        return;
    }
    __typeof__(o->logs) lines;
    int n = o->nlogs;
    unsigned dropped = o->logs_dropped;
    memcpy(lines, o->logs, sizeof lines[0] * (size_t)n);
    o->nlogs = 0;
    o->logs_dropped = 0;
    pthread_mutex_unlock(&o->mu);
    for (int i = 0; i < n; i++)
        evbus__log(lines[i].level, "saga", "%s", lines[i].msg);
    if (dropped)
        evbus__log(EVBUS_LOG_WARN, "saga", "%u more log lines dropped",
                   dropped);
}

int64_t evbus__saga_now(const evbus_saga_orch_t *o)
{
    return o->o.now_ms ? (int64_t)o->o.now_ms(o->o.clock_opaque)
                       : evbus__wall_ms();
}

void evbus__saga_pend_commit(evbus_saga_orch_t *o)
{
    atomic_fetch_add(&o->commands_sent, o->pend.commands_sent);
    atomic_fetch_add(&o->timeouts, o->pend.timeouts);
    atomic_fetch_add(&o->comp_retried, o->pend.comp_retried);
    atomic_fetch_add(&o->parked, o->pend.parked);
    evbus__saga_pend_clear(o);
}

void evbus__saga_pend_clear(evbus_saga_orch_t *o)
{
    memset(&o->pend, 0, sizeof o->pend);
}

void evbus_saga_opts_init_sized(evbus_saga_opts_t *out, size_t size)
{
    evbus_saga_opts_t defaults, *o = &defaults;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->subscribe = 1;
    o->run_relay = 1;
    o->max_data_bytes = 262144;
    o->due_batch = 256;
    evbus__struct_defaults(out, size, o, sizeof *o);
}

static void default_comp_retry(evbus_retry_policy_t *p)
{
    evbus_retry_policy_init(p);
    p->initial_ms = 1000;
    p->max_ms = 60000;
    p->max_attempts = 10;
}

static evbus_result_t on_reply_event(const evbus_event_t *ev, void *opaque)
{
    return evbus_saga_on_reply(opaque, ev);
}

static char *name_or(const char *given, const char *fmt, const char *name)
{
    if (given)
        return strdup(given);
    size_t len = strlen(fmt) + strlen(name) + 1;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, fmt, name);
    return s;
}

/* Copies o (only its struct_size bytes) into the orchestrator and checks
 * it. NULL, or the reason. */
static const char *take_opts(evbus_saga_orch_t *s, const evbus_saga_opts_t *o,
                             const char *name)
{
    evbus_saga_opts_init(&s->o);
    if (o && evbus__struct_in(&s->o, sizeof s->o, o, OPTS_SIZE_V1) != EVBUS_OK)
        return "struct_size is smaller than any release's (initialise "
               "options with evbus_saga_opts_init)";
    if (!s->o.compensation_retry)
        default_comp_retry(&s->comp_retry);
    else if (evbus__retry_policy_copy(&s->comp_retry,
                                      s->o.compensation_retry) != EVBUS_OK)
        return "compensation_retry was not initialised with "
               "evbus_retry_policy_init";
    s->o.compensation_retry = &s->comp_retry;
    if (!(s->reply_topic = name_or(s->o.reply_topic, "%s.replies", name)) ||
        !(s->group = name_or(s->o.group, "%s", name)) ||
        !(s->source = name_or(s->o.source, "/%s", name)))
        return "out of memory";
    s->o.reply_topic = s->reply_topic;
    s->o.group = s->group;
    s->o.source = s->source;
    if (!saga_topic_ok(s->reply_topic, false))
        return "reply_topic is not a valid topic name";
    if (!*s->source)
        return "source is empty";
    if (s->o.max_data_bytes < 2)
        return "max_data_bytes must be >= 2";
    if (s->o.due_batch < 1)
        return "due_batch must be >= 1";
    if (s->comp_retry.max_attempts == 0 && s->comp_retry.max_elapsed_ms == 0)
        return "compensation_retry needs max_attempts or max_elapsed_ms: "
               "a compensation that never succeeds must end FAILED";
    return NULL;
}

static int open_parts(evbus_saga_orch_t *s, char *why, size_t n)
{
    char err[256] = "";
    if (evbus__saga_schema(s->db, err, sizeof err) != EVBUS_OK ||
        evbus__saga_store_open(&s->st, s->db, err, sizeof err) != EVBUS_OK) {
        evbus__seterr(why, n, "saga tables: %s", err);
        return EVBUS_EIO;
    }
    evbus_inbox_opts_t io;
    evbus_inbox_opts_init(&io);
    if (!(s->ob = evbus_outbox_open(s->db, err, sizeof err)) ||
        !(s->in = evbus_inbox_open_opts(s->db, s->name, &io, err,
                                        sizeof err))) {
        evbus__seterr(why, n, "%s", err);
        return EVBUS_EIO;
    }
    if (s->o.run_relay) {
        const char *file = sqlite3_db_filename(s->db, "main");
        if (!file || !*file) {
            evbus__seterr(why, n, "run_relay needs a database file, and this "
                               "connection has none (an in-memory "
                               "database?)");
            return EVBUS_EINVAL;
        }
        evbus_relay_opts_t ro;
        evbus_relay_opts_init(&ro);
        ro.poll_interval_ms = 50;
        if (!(s->relay = evbus_relay_open_opts(file, s->bus, &ro, err,
                                              sizeof err)) ||
            evbus_relay_start(s->relay) != EVBUS_OK) {
            evbus__seterr(why, n, "relay: %s", err);
            return EVBUS_EIO;
        }
    }
    if (s->o.subscribe) {
        evbus_retry_policy_t rp;
        evbus_retry_policy_init(&rp);
        rp.max_attempts = 20; /* a busy database is worth waiting for */
        evbus_sub_opts_t so;
        evbus_sub_opts_init(&so);
        so.retry = &rp;
        if (!(s->sub = evbus_subscribe_opts(s->bus, s->reply_topic, s->group,
                                            &so, on_reply_event, s, err,
                                            sizeof err))) {
            evbus__seterr(why, n, "cannot subscribe to %s as group %s: %s",
                          s->reply_topic, s->group, err);
            return EVBUS_EIO;
        }
    }
    return EVBUS_OK;
}

evbus_saga_orch_t *evbus_saga_orch_open(sqlite3 *db, evbus_t *bus,
                                        const char *name,
                                        const evbus_saga_opts_t *o,
                                        char *errstr, size_t n)
{
    if (!db || !evbus__saga_name_ok(name)) {
        evbus__seterr(errstr, n, "evbus_saga_orch_open: %s",
                   !db ? "db is NULL"
                       : "name must be 1-64 letters, digits, '.', '_' or "
                         "'-'");
        return NULL;
    }
    evbus_saga_orch_t *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    s->db = db;
    s->bus = bus;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    const char *bad = take_opts(s, o, name);
    if (!bad && !bus && (s->o.subscribe || s->o.run_relay))
        bad = "bus is NULL (needed unless subscribe and run_relay are 0)";
    if (bad) {
        evbus__seterr(errstr, n, "evbus_saga_orch_open: %s", bad);
        evbus_saga_orch_close(s);
        return NULL;
    }
    if (open_parts(s, errstr, n) != EVBUS_OK) {
        evbus_saga_orch_close(s);
        return NULL;
    }
    return s;
}

void evbus_saga_orch_close(evbus_saga_orch_t *o)
{
    if (!o)
        return;
    if (o->sub)
        evbus_unsubscribe(o->sub);
    evbus_relay_close(o->relay);
    evbus_inbox_close(o->in);
    evbus_outbox_close(o->ob);
    evbus__saga_store_close(&o->st);
    for (int i = 0; i < o->ndefs; i++)
        evbus_saga_def_free(o->defs[i]);
    free(o->defs);
    free(o->name);
    free(o->reply_topic);
    free(o->group);
    free(o->source);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

void evbus_saga_lock(evbus_saga_orch_t *o)
{
    if (o)
        evbus__saga_lock(o);
}

void evbus_saga_unlock(evbus_saga_orch_t *o)
{
    if (o)
        evbus__saga_unlock(o);
}

sqlite3 *evbus_saga_orch_db(const evbus_saga_orch_t *o)
{
    return o ? o->db : NULL;
}

void evbus_saga_notify(evbus_saga_orch_t *o)
{
    if (o && o->relay)
        evbus_relay_notify(o->relay);
}

int evbus_saga_orch_register(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                             char *errstr, size_t n)
{
    if (!o || !d || d->n == 0) {
        evbus__seterr(errstr, n, "evbus_saga_orch_register: %s",
                   !o || !d ? "NULL argument" : "the saga has no steps");
        return EVBUS_EINVAL;
    }
    evbus__saga_lock(o);
    int rc = EVBUS_OK;
    evbus_saga_def_t **grown;
    if (evbus__saga_find_def(o, d->name)) {
        evbus__seterr(errstr, n, "saga %s is registered already", d->name);
        rc = EVBUS_EINVAL;
    } else if (!(grown = realloc(o->defs, (size_t)(o->ndefs + 1) *
                                              sizeof *o->defs)) ||
               !((o->defs = grown)[o->ndefs] = evbus__saga_def_clone(d))) {
        evbus__seterr(errstr, n, "out of memory");
        rc = EVBUS_ENOMEM;
    } else {
        o->ndefs++;
    }
    evbus__saga_unlock(o);
    return rc;
}

/* An instance id: 1-200 bytes of valid UTF-8 without control characters. */
static bool id_ok(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > SAGA_ID_MAX || !evbus__saga_utf8_ok(id, len))
        return false;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

int evbus_saga_start(evbus_saga_orch_t *o, const char *saga, const char *id,
                     const char *data_json)
{
    if (!o || !id_ok(id))
        return EVBUS_EINVAL;
    const char *data = data_json ? data_json : "{}";
    if (strlen(data) > o->o.max_data_bytes)
        return EVBUS_ETOOBIG;
    if (!evbus__saga_is_object(data, 0))
        return EVBUS_EINVAL;
    evbus__saga_lock(o);
    const evbus_saga_def_t *d = evbus__saga_find_def(o, saga);
    if (!d) {
        evbus__saga_unlock(o);
        evbus__saga_log(o, EVBUS_LOG_WARN, "start %s: no saga called %s is "
                        "registered", id, saga ? saga : "(null)");
        return EVBUS_EINVAL;
    }
    int nested;
    int rc = evbus__saga_store_begin(&o->st, &nested, "evbus_saga_start");
    if (rc != EVBUS_OK) {
        evbus__saga_unlock(o);
        return rc;
    }
    evbus__saga_pend_clear(o);
    int64_t now = evbus__saga_now(o);
    saga_inst_t in = {.id = strdup(id), .saga = strdup(d->name),
                      .data = strdup(data), .state = EVBUS_SAGA_RUNNING,
                      .attempt = 1, .due_at = -1,
                      .stored_state = EVBUS_SAGA_RUNNING}; /* as inserted */
    int created = 0;
    if (!in.id || !in.saga || !in.data)
        rc = EVBUS_ENOMEM;
    else if ((rc = created = evbus__saga_store_insert(&o->st, &in, now)) == 1)
        rc = evbus__saga_note(o, &in, now, -1, "started", -1, in.state,
                              "%s", d->name);
    if (rc == EVBUS_OK && created)
        rc = evbus__saga_advance(o, d, &in, now);
    if (rc == EVBUS_OK && created)
        rc = evbus__saga_store_update(&o->st, &in, now);
    if (rc == EVBUS_OK)
        rc = evbus__saga_store_commit(&o->st, nested, "evbus_saga_start");
    if (rc == EVBUS_OK) {
        evbus__saga_pend_commit(o);
        if (created)
            atomic_fetch_add(&o->started, 1);
    } else {
        evbus__saga_tx_rollback(o->db, nested, "evbus_saga_start");
        evbus__saga_pend_clear(o);
        evbus__saga_log(o, EVBUS_LOG_WARN, "start %s %s failed: %s (%s)",
                        d->name, id, evbus_strerror(rc),
                        sqlite3_errmsg(o->db));
    }
    evbus__saga_inst_free(&in);
    evbus__saga_unlock(o);
    if (rc == EVBUS_OK && created)
        evbus_saga_notify(o);
    return rc == EVBUS_OK ? created : rc;
}

typedef struct {
    evbus_saga_orch_t *o;
    int ignored;
} reply_ctx_t;

/* Runs inside evbus_inbox_handle's transaction, after the claim. */
static evbus_result_t reply_work(sqlite3 *db, const evbus_event_t *ev,
                                 evbus_outbox_t *ob, void *opaque)
{
    reply_ctx_t *c = opaque;
    evbus_saga_orch_t *o = c->o;
    saga_msg_t m;
    char why[200];
    if (evbus__saga_msg_parse(ev, false, &m, why, sizeof why) != EVBUS_OK) {
        evbus__saga_log(o, EVBUS_LOG_WARN, "reply %s from %s dead-lettered: %s",
                        evbus_event_id(ev), evbus_event_source(ev), why);
        return EVBUS_DROP;
    }
    saga_inst_t in;
    int rc = evbus__saga_store_load(&o->st, m.id, &in);
    if (rc == EVBUS_ENOTFOUND) {
        c->ignored = 1;
        evbus__saga_log(o, EVBUS_LOG_WARN, "reply %s for unknown saga instance "
                        "%s ignored", evbus_event_id(ev), m.id);
        return EVBUS_ACK;
    }
    if (rc != EVBUS_OK)
        return EVBUS_RETRY;
    const evbus_saga_def_t *d = evbus__saga_find_def(o, in.saga);
    if (!d) {
        evbus__saga_log(o, EVBUS_LOG_WARN, "reply for %s: saga %s is not "
                        "registered here; delivered again later", in.id,
                        in.saga);
        evbus__saga_inst_free(&in);
        return EVBUS_RETRY;
    }
    int64_t now = evbus__saga_now(o);
    rc = evbus__saga_apply_reply(o, d, &in, &m, ev, now);
    if (rc == 1) /* ignored: only its history row (and hseq) changed */
        c->ignored = 1;
    if (rc >= 0)
        rc = evbus__saga_store_update(&o->st, &in, now);
    evbus__saga_inst_free(&in);
    return rc < 0 ? EVBUS_RETRY : EVBUS_ACK; /* RETRY rolls back */
}

evbus_result_t evbus_saga_on_reply(evbus_saga_orch_t *o,
                                   const evbus_event_t *reply)
{
    if (!o || !reply)
        return EVBUS_DROP;
    evbus__saga_lock(o);
    evbus__saga_pend_clear(o);
    reply_ctx_t c = {o, 0};
    evbus_result_t r = evbus_inbox_handle(o->in, o->ob, reply, reply_work, &c);
    if (r == EVBUS_ACK) {
        evbus__saga_pend_commit(o);
        atomic_fetch_add(c.ignored ? &o->replies_ignored : &o->replies, 1);
    } else {
        evbus__saga_pend_clear(o);
    }
    evbus__saga_unlock(o);
    if (r == EVBUS_ACK && !c.ignored)
        evbus_saga_notify(o);
    return r;
}

/* Moves one due instance in its own transaction: 1 moved, 0 not (it moved
 * on meanwhile), or a negative error. */
static int run_timer(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                     const char *id)
{
    int nested;
    int rc = evbus__saga_store_begin(&o->st, &nested, "evbus_saga_timer");
    if (rc != EVBUS_OK)
        return rc;
    evbus__saga_pend_clear(o);
    saga_inst_t in;
    int64_t now = evbus__saga_now(o);
    rc = evbus__saga_store_load(&o->st, id, &in);
    int moved = 0;
    if (rc == EVBUS_OK) {
        rc = evbus__saga_apply_timer(o, d, &in, now);
        if (rc == EVBUS_OK) {
            moved = 1;
            rc = evbus__saga_store_update(&o->st, &in, now);
        } else if (rc == 1) {
            rc = EVBUS_OK;
        }
        evbus__saga_inst_free(&in);
    } else if (rc == EVBUS_ENOTFOUND) {
        rc = EVBUS_OK;
    }
    if (rc == EVBUS_OK)
        rc = evbus__saga_store_commit(&o->st, nested, "evbus_saga_timer");
    if (rc == EVBUS_OK) {
        evbus__saga_pend_commit(o);
        return moved;
    }
    evbus__saga_tx_rollback(o->db, nested, "evbus_saga_timer");
    evbus__saga_pend_clear(o);
    evbus__saga_log(o, EVBUS_LOG_WARN, "timer of %s failed: %s (%s)", id,
                    evbus_strerror(rc), sqlite3_errmsg(o->db));
    return rc;
}

int evbus_saga_run_due(evbus_saga_orch_t *o)
{
    if (!o)
        return EVBUS_EINVAL;
    evbus__saga_lock(o);
    int moved = 0, rc = EVBUS_OK;
    for (int i = 0; i < o->ndefs && rc == EVBUS_OK; i++) {
        const evbus_saga_def_t *d = o->defs[i];
        char **ids;
        int n = evbus__saga_store_due(&o->st, d->name, evbus__saga_now(o),
                                      o->o.due_batch, &ids);
        if (n < 0) {
            rc = n;
            break;
        }
        for (int k = 0; k < n; k++) {
            int r = rc == EVBUS_OK ? run_timer(o, d, ids[k]) : 0;
            if (r < 0)
                rc = r;
            else
                moved += r;
            free(ids[k]);
        }
        free(ids);
    }
    evbus__saga_unlock(o);
    if (moved)
        evbus_saga_notify(o);
    return rc == EVBUS_OK || moved ? moved : rc;
}

int64_t evbus_saga_next_due_ms(evbus_saga_orch_t *o)
{
    if (!o)
        return -1;
    evbus__saga_lock(o);
    int64_t first = -1;
    for (int i = 0; i < o->ndefs; i++) {
        int64_t due = evbus__saga_store_next_due(&o->st, o->defs[i]->name);
        if (due >= 0 && (first < 0 || due < first))
            first = due;
    }
    int64_t now = evbus__saga_now(o);
    evbus__saga_unlock(o);
    return first < 0 ? -1 : first > now ? first - now : 0;
}

int evbus_saga_poll(evbus_saga_orch_t *o, int timeout_ms)
{
    if (!o || !o->bus)
        return EVBUS_EINVAL;
    int n = evbus_saga_run_due(o);
    if (n < 0)
        n = 0; /* logged; the timers are tried again next time */
    int64_t next = evbus_saga_next_due_ms(o);
    int wait = timeout_ms;
    if (next >= 0 && (wait < 0 || next < wait))
        wait = (int)next;
    int r = evbus_poll(o->bus, n > 0 ? 0 : wait);
    if (r < 0)
        return r;
    int t = evbus_saga_run_due(o);
    return n + r + (t > 0 ? t : 0);
}
