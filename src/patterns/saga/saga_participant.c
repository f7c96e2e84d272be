/*
 * The participant's side: one transaction per command that claims it in
 * the inbox, consults and updates what this participant did for (saga
 * instance, step) in evbus_saga_part, runs the application's work in a
 * SAVEPOINT and writes the reply into the outbox. The per-step record is
 * what makes a compensation that overtakes its action safe (the action is
 * refused when it arrives later) and a repeated compensation harmless.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_internal.h"

#define PART_OPTS_SIZE_V1                                                      \
    EVBUS__SIZE_THROUGH(evbus_saga_participant_opts_t, inbox_retention_ms)
#define PURGE_EVERY_MS 3600000

struct evbus_saga_participant {
    sqlite3 *db;
    char *consumer, *source;
    int64_t retention_ms;
    evbus_inbox_t *in;
    evbus_outbox_t *ob;
    evbus_relay_t *relay;
    sqlite3_stmt *get, *set, *purge;
    /* the work's SAVEPOINT, prepared once: parsing these on every command
     * cost as much as the record's own statements */
    sqlite3_stmt *sp_open, *sp_release, *sp_undo;
    int64_t next_purge_ms; /* monotonic */
};

void evbus_saga_participant_opts_init_sized(evbus_saga_participant_opts_t *out, size_t size)
{
    evbus_saga_participant_opts_t defaults, *o = &defaults;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->retention_ms = INT64_C(30) * 24 * 3600 * 1000;
    o->inbox_retention_ms = INT64_C(7) * 24 * 3600 * 1000;
    evbus__struct_defaults(out, size, o, sizeof *o);
}

static const char *open_problem(evbus_saga_participant_t *p,
                                const evbus_saga_participant_opts_t *o,
                                evbus_saga_participant_opts_t *opts)
{
    evbus_saga_participant_opts_init(opts);
    if (o && evbus__struct_in(opts, sizeof *opts, o, PART_OPTS_SIZE_V1) !=
                 EVBUS_OK)
        return "struct_size is smaller than any release's (initialise "
               "with evbus_saga_participant_opts_init)";
    if (opts->retention_ms < 0 || opts->inbox_retention_ms < 0)
        return "retention_ms and inbox_retention_ms must be >= 0";
    size_t len = strlen(p->consumer) + 2;
    if (!(p->source = opts->source ? strdup(opts->source) : malloc(len)))
        return "out of memory";
    if (!opts->source)
        snprintf(p->source, len, "/%s", p->consumer);
    if (!*p->source)
        return "source is empty";
    p->retention_ms = opts->retention_ms;
    return NULL;
}

evbus_saga_participant_t *evbus_saga_participant_open(
    sqlite3 *db, const char *consumer, evbus_t *relay_bus,
    const evbus_saga_participant_opts_t *o, char *errstr, size_t n)
{
    if (!db || !consumer || !*consumer) {
        evbus__seterr(errstr, n, "evbus_saga_participant_open: %s",
                   !db ? "db is NULL" : "consumer is empty");
        return NULL;
    }
    evbus_saga_participant_t *p = calloc(1, sizeof *p);
    if (!p || !(p->consumer = strdup(consumer))) {
        free(p);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    p->db = db;
    evbus_saga_participant_opts_t opts;
    const char *bad = open_problem(p, o, &opts);
    if (bad) {
        evbus__seterr(errstr, n, "evbus_saga_participant_open: %s", bad);
        evbus_saga_participant_close(p);
        return NULL;
    }
    char why[256] = "";
    evbus_inbox_opts_t io;
    evbus_inbox_opts_init(&io);
    io.retention_ms = opts.inbox_retention_ms;
    if (evbus__saga_part_schema(db, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db,
                    "SELECT state FROM evbus_saga_part WHERE consumer = ?1"
                    " AND saga_id = ?2 AND step = ?3",
                    &p->get, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db,
                    "INSERT INTO evbus_saga_part VALUES(?1, ?2, ?3, ?4, ?5)"
                    " ON CONFLICT(consumer, saga_id, step) DO UPDATE SET"
                    " state = excluded.state, updated_at = excluded.updated_at",
                    &p->set, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db,
                    "DELETE FROM evbus_saga_part WHERE consumer = ?1"
                    " AND updated_at < ?2",
                    &p->purge, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db, "SAVEPOINT evbus_saga_work", &p->sp_open, why,
                           sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db, "RELEASE evbus_saga_work", &p->sp_release,
                           why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db, "ROLLBACK TO evbus_saga_work", &p->sp_undo,
                           why, sizeof why) != EVBUS_OK ||
        !(p->in = evbus_inbox_open_opts(db, consumer, &io, why, sizeof why)) ||
        !(p->ob = evbus_outbox_open(db, why, sizeof why))) {
        evbus__seterr(errstr, n, "saga participant %s: %s", consumer, why);
        evbus_saga_participant_close(p);
        return NULL;
    }
    if (relay_bus) {
        const char *file = sqlite3_db_filename(db, "main");
        evbus_relay_opts_t ro;
        evbus_relay_opts_init(&ro);
        ro.poll_interval_ms = 50;
        if (!file || !*file ||
            !(p->relay = evbus_relay_open_opts(file, relay_bus, &ro, why,
                                              sizeof why)) ||
            evbus_relay_start(p->relay) != EVBUS_OK) {
            evbus__seterr(errstr, n, "saga participant %s: relay: %s", consumer,
                       file && *file ? why : "the database has no file");
            evbus_saga_participant_close(p);
            return NULL;
        }
    }
    p->next_purge_ms = (int64_t)evbus__mono_ms() + PURGE_EVERY_MS;
    return p;
}

void evbus_saga_participant_close(evbus_saga_participant_t *p)
{
    if (!p)
        return;
    evbus_relay_close(p->relay);
    evbus_inbox_close(p->in);
    evbus_outbox_close(p->ob);
    sqlite3_finalize(p->get);
    sqlite3_finalize(p->set);
    sqlite3_finalize(p->purge);
    sqlite3_finalize(p->sp_open);
    sqlite3_finalize(p->sp_release);
    sqlite3_finalize(p->sp_undo);
    free(p->consumer);
    free(p->source);
    free(p);
}

void evbus_saga_participant_notify(evbus_saga_participant_t *p)
{
    if (p && p->relay)
        evbus_relay_notify(p->relay);
}

/* What this participant did for (saga, step): "" when nothing yet. */
static int part_get(evbus_saga_participant_t *p, const saga_msg_t *m,
                    char state[16])
{
    state[0] = 0;
    sqlite3_bind_text(p->get, 1, p->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_text(p->get, 2, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(p->get, 3, m->step);
    int rc = sqlite3_step(p->get);
    if (rc == SQLITE_ROW)
        snprintf(state, 16, "%s", sqlite3_column_text(p->get, 0));
    sqlite3_reset(p->get);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? EVBUS_OK
                                                 : evbus__sqlite_err(rc);
}

static int part_set(evbus_saga_participant_t *p, const saga_msg_t *m,
                    const char *state)
{
    sqlite3_bind_text(p->set, 1, p->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_text(p->set, 2, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(p->set, 3, m->step);
    sqlite3_bind_text(p->set, 4, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(p->set, 5, evbus__wall_ms());
    return evbus__sql_step_done(p->set);
}

/* Forgets records older than the retention, at most once an hour. */
static void maybe_purge(evbus_saga_participant_t *p)
{
    int64_t mono = (int64_t)evbus__mono_ms();
    if (p->retention_ms <= 0 || mono < p->next_purge_ms)
        return;
    p->next_purge_ms = mono + PURGE_EVERY_MS;
    sqlite3_bind_text(p->purge, 1, p->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(p->purge, 2, evbus__wall_ms() - p->retention_ms);
    if (evbus__sql_step_done(p->purge) != EVBUS_OK)
        evbus__saga_log(NULL, EVBUS_LOG_WARN, "participant %s: purge failed: %s",
                        p->consumer, sqlite3_errmsg(p->db));
}

typedef struct {
    evbus_saga_participant_t *p;
    evbus_saga_work_fn action, compensate;
    void *opaque;
} part_ctx_t;

/* Runs fn in a SAVEPOINT: its writes stay on success, go on failure.
 * Returns the outcome or a negative error. */
static int run_work(evbus_saga_participant_t *p, evbus_saga_work_fn fn,
                    const evbus_event_t *cmd, evbus_saga_answer_t *ans,
                    void *opaque)
{
    int rc = evbus__sql_step_done(p->sp_open);
    if (rc != EVBUS_OK)
        return rc;
    int r = fn(p->db, cmd, ans, opaque);
    if (r == EVBUS_SAGA_SUCCESS)
        return evbus__sql_step_done(p->sp_release);
    rc = evbus__sql_step_done(p->sp_undo);
    if (rc == EVBUS_OK)
        rc = evbus__sql_step_done(p->sp_release);
    if (r < 0 || rc != EVBUS_OK)
        return r < 0 ? r : rc;
    return EVBUS_SAGA_FAILURE;
}

/* Decides, runs and records; fills the outcome and the reply's contents. */
static int decide(part_ctx_t *c, sqlite3 *db, const evbus_event_t *cmd,
                  const saga_msg_t *m, evbus_saga_answer_t *ans, int *outcome)
{
    char state[16];
    int rc = part_get(c->p, m, state);
    if (rc != EVBUS_OK)
        return rc;
    const char *next = NULL;
    *outcome = EVBUS_SAGA_SUCCESS;
    if (m->kind == SAGA_ACTION) {
        if (!*state) {
            *outcome = run_work(c->p, c->action, cmd, ans, c->opaque);
            next = *outcome == EVBUS_SAGA_SUCCESS ? "done" : "failed";
        } else if (strcmp(state, "done") != 0) {
            *outcome = EVBUS_SAGA_FAILURE;
            if (!ans->reason)
                evbus_saga_answer_set_reason(
                    ans, strcmp(state, "failed") == 0
                             ? "failed before"
                             : "cancelled: its compensation came first");
        }
    } else if (strcmp(state, "done") == 0) {
        if (!c->compensate) {
            *outcome = EVBUS_SAGA_FAILURE;
            evbus_saga_answer_set_reason(ans, "this participant has no "
                                              "compensation");
            evbus__saga_log(NULL, EVBUS_LOG_ERROR, "participant %s: compensation "
                            "of %s step %d asked for, but no compensate "
                            "function was given", c->p->consumer, m->id,
                            m->step);
        } else {
            *outcome = run_work(c->p, c->compensate, cmd, ans, c->opaque);
            next = *outcome == EVBUS_SAGA_SUCCESS ? "compensated" : NULL;
        }
    } else if (!*state) {
        next = "cancelled"; /* nothing to undo; refuse the action later */
    }
    if (*outcome < 0)
        return *outcome;
    return next ? part_set(c->p, m, next) : EVBUS_OK;
}

/* Runs inside evbus_inbox_handle's transaction, after the claim. */
static evbus_result_t part_work(sqlite3 *db, const evbus_event_t *cmd,
                                evbus_outbox_t *ob, void *opaque)
{
    part_ctx_t *c = opaque;
    saga_msg_t m;
    char why[200];
    if (evbus__saga_msg_parse(cmd, true, &m, why, sizeof why) != EVBUS_OK) {
        evbus__saga_log(NULL, EVBUS_LOG_WARN, "participant %s: %s %s: %s",
                        c->p->consumer, evbus_event_type(cmd),
                        evbus_event_id(cmd), why);
        return EVBUS_DROP;
    }
    maybe_purge(c->p);
    evbus_saga_answer_t ans = {0};
    int outcome;
    int rc = decide(c, db, cmd, &m, &ans, &outcome);
    if (rc == EVBUS_OK) {
        evbus_event_t *reply = evbus_saga_reply_new(
            cmd, outcome, outcome == EVBUS_SAGA_SUCCESS ? ans.data : NULL,
            ans.reason, c->p->source);
        rc = reply ? evbus_outbox_add(ob, m.replyto, reply) : EVBUS_ENOMEM;
        evbus_event_free(reply);
    }
    evbus__saga_answer_reset(&ans);
    return rc == EVBUS_OK ? EVBUS_ACK : EVBUS_RETRY; /* RETRY rolls back */
}

evbus_result_t evbus_saga_participant_handle(evbus_saga_participant_t *p,
                                             const evbus_event_t *cmd,
                                             evbus_saga_work_fn action,
                                             evbus_saga_work_fn compensate,
                                             void *opaque)
{
    if (!p || !cmd || !action)
        return EVBUS_DROP;
    part_ctx_t c = {p, action, compensate, opaque};
    evbus_result_t r = evbus_inbox_handle(p->in, p->ob, cmd, part_work, &c);
    if (r == EVBUS_ACK)
        evbus_saga_participant_notify(p);
    return r;
}
