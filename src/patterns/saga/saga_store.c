/*
 * The orchestrator's rows: prepared statements that insert, load and update
 * an instance, its step rows and its history, and find the instances whose
 * timer is due. Every call runs inside the transaction the caller opened.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saga_internal.h"

#define INST_COLS                                                              \
    "id, saga, state, step, attempt, waiting, data, reason, due_at,"           \
    " prev_delay_ms, comp_started_at, steps, hseq"

static const char *wait_name(saga_wait_t w)
{
    return w == SAGA_WAIT_REPLY ? "reply" : w == SAGA_WAIT_RETRY ? "retry"
                                                                 : NULL;
}

static int state_from_name(const char *s)
{
    for (int i = EVBUS_SAGA_RUNNING; i <= EVBUS_SAGA_FAILED; i++)
        if (s && strcmp(s, evbus_saga_state_name(i)) == 0)
            return i;
    return -1;
}

int evbus__saga_store_open(saga_store_t *st, sqlite3 *db, char *why, size_t n)
{
    memset(st, 0, sizeof *st);
    st->db = db;
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } q[] = {
        {&st->insert,
         "INSERT INTO evbus_saga(" INST_COLS ", created_at, updated_at)"
         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
         " ?14, ?14) ON CONFLICT(id) DO NOTHING"},
        {&st->exists, "SELECT 1 FROM evbus_saga WHERE id = ?1"},
        {&st->load, "SELECT " INST_COLS " FROM evbus_saga WHERE id = ?1"},
        {&st->update,
         "UPDATE evbus_saga SET state = ?3, step = ?4, attempt = ?5,"
         " waiting = ?6, data = ?7, reason = ?8, due_at = ?9,"
         " prev_delay_ms = ?10, comp_started_at = ?11, steps = ?12,"
         " hseq = ?13, updated_at = ?14,"
         /* an ended instance keeps its end time (a late reply only adds
          * history); one that moves again has none */
         " ended_at = CASE WHEN ?15 IS NULL THEN NULL"
         " ELSE coalesce(ended_at, ?15) END"
         " WHERE id = ?1 AND saga = ?2"},
        /* the state as it was: the state index (and the end time) stay as
         * they are, so the transition writes one page less */
        {&st->update_same,
         "UPDATE evbus_saga SET step = ?4, attempt = ?5,"
         " waiting = ?6, data = ?7, reason = ?8, due_at = ?9,"
         " prev_delay_ms = ?10, comp_started_at = ?11, steps = ?12,"
         " hseq = ?13, updated_at = ?14"
         " WHERE id = ?1 AND saga = ?2"},
        {&st->history,
         "INSERT INTO evbus_saga_history(saga_id, seq, at, step, event,"
         " from_state, to_state, detail)"
         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
        {&st->due,
         "SELECT id FROM evbus_saga WHERE saga = ?1 AND due_at <= ?2"
         " ORDER BY due_at LIMIT ?3"},
        {&st->next_due,
         "SELECT min(due_at) FROM evbus_saga"
         " WHERE saga = ?1 AND due_at IS NOT NULL"},
        {&st->count_states,
         "SELECT saga, state, count(*) FROM evbus_saga GROUP BY state, saga"},
        /* IMMEDIATE takes the write lock now (see evbus__saga_tx_begin) */
        {&st->begin, "BEGIN IMMEDIATE"},
        {&st->commit, "COMMIT"},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        int rc = evbus__sql_prepare(db, q[i].sql, q[i].st, why, n);
        if (rc != EVBUS_OK) {
            evbus__saga_store_close(st);
            return rc;
        }
    }
    return EVBUS_OK;
}

void evbus__saga_store_close(saga_store_t *st)
{
    sqlite3_stmt *all[] = {st->insert,      st->exists,  st->load,
                           st->update,      st->update_same,
                           st->history,     st->due,     st->next_due,
                           st->count_states, st->begin, st->commit};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    memset(st, 0, sizeof *st);
}

int evbus__saga_store_begin(saga_store_t *st, int *nested,
                            const char *savepoint)
{
    if (!sqlite3_get_autocommit(st->db))
        return evbus__saga_tx_begin(st->db, nested, savepoint);
    *nested = 0;
    return evbus__sql_step_done(st->begin);
}

int evbus__saga_store_commit(saga_store_t *st, int nested,
                             const char *savepoint)
{
    return nested ? evbus__saga_tx_commit(st->db, nested, savepoint)
                  : evbus__sql_step_done(st->commit);
}

static void bind_opt_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static void bind_opt_i64(sqlite3_stmt *s, int i, int64_t v)
{
    if (v >= 0)
        sqlite3_bind_int64(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

/* Binds columns 1..13 (INST_COLS order); steps is the printed list. */
static void bind_inst(sqlite3_stmt *s, const saga_inst_t *in,
                      const char *steps)
{
    sqlite3_bind_text(s, 1, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, in->saga, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, evbus_saga_state_name(in->state), -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(s, 4, in->step);
    sqlite3_bind_int(s, 5, in->attempt);
    bind_opt_text(s, 6, wait_name(in->waiting));
    sqlite3_bind_text(s, 7, in->data, -1, SQLITE_STATIC);
    bind_opt_text(s, 8, in->reason);
    bind_opt_i64(s, 9, in->due_at);
    sqlite3_bind_int(s, 10, in->prev_delay_ms);
    sqlite3_bind_int64(s, 11, in->comp_started_at);
    sqlite3_bind_text(s, 12, steps, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 13, in->hseq);
}

/* Binds the instance, runs st with now at ?14 (and, for updates, the end
 * time at ?15). */
static int write_inst(sqlite3_stmt *st, const saga_inst_t *in, int64_t now,
                      bool update)
{
    char *steps = evbus__saga_steps_print(in);
    if (!steps)
        return EVBUS_ENOMEM;
    bind_inst(st, in, steps);
    sqlite3_bind_int64(st, 14, now);
    if (update)
        bind_opt_i64(st, 15, in->state >= EVBUS_SAGA_COMPLETED ? now : -1);
    int rc = evbus__sql_step_done(st);
    sqlite3_clear_bindings(st);
    free(steps);
    return rc;
}

int evbus__saga_store_exists(saga_store_t *st, const char *id)
{
    sqlite3_bind_text(st->exists, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st->exists);
    sqlite3_reset(st->exists);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : evbus__sqlite_err(rc);
}

int evbus__saga_store_insert(saga_store_t *st, const saga_inst_t *in,
                             int64_t now)
{
    int rc = write_inst(st->insert, in, now, false);
    if (rc != EVBUS_OK)
        return rc;
    return sqlite3_changes(st->db) > 0 ? 1 : 0;
}

static char *col_dup(sqlite3_stmt *s, int i, bool *oom)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t)
        return NULL;
    char *c = strdup((const char *)t);
    if (!c)
        *oom = true;
    return c;
}

int evbus__saga_store_load(saga_store_t *st, const char *id, saga_inst_t *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = st->load;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? EVBUS_ENOTFOUND : evbus__sqlite_err(rc);
    }
    bool oom = false;
    out->id = col_dup(s, 0, &oom);
    out->saga = col_dup(s, 1, &oom);
    out->state = state_from_name((const char *)sqlite3_column_text(s, 2));
    out->step = sqlite3_column_int(s, 3);
    out->attempt = sqlite3_column_int(s, 4);
    const char *w = (const char *)sqlite3_column_text(s, 5);
    out->waiting = !w                        ? SAGA_WAIT_NONE
                   : strcmp(w, "reply") == 0 ? SAGA_WAIT_REPLY
                                             : SAGA_WAIT_RETRY;
    out->data = col_dup(s, 6, &oom);
    out->reason = col_dup(s, 7, &oom);
    out->due_at = sqlite3_column_type(s, 8) == SQLITE_NULL
                      ? -1
                      : sqlite3_column_int64(s, 8);
    out->prev_delay_ms = sqlite3_column_int(s, 9);
    out->comp_started_at = sqlite3_column_int64(s, 10);
    int steps_rc = evbus__saga_steps_parse(
        out, (const char *)sqlite3_column_text(s, 11));
    out->hseq = sqlite3_column_int64(s, 12);
    out->stored_state = out->state;
    sqlite3_reset(s);
    if (steps_rc != EVBUS_OK || oom || !out->id || !out->saga || !out->data) {
        evbus__saga_inst_free(out);
        return oom ? EVBUS_ENOMEM : EVBUS_EIO;
    }
    if (out->state < 0) {
        evbus__saga_inst_free(out);
        return EVBUS_EIO; /* a state name this library does not know */
    }
    return EVBUS_OK;
}

int evbus__saga_store_update(saga_store_t *st, const saga_inst_t *in,
                             int64_t now)
{
    return write_inst(in->state == in->stored_state ? st->update_same
                                                    : st->update,
                      in, now, in->state != in->stored_state);
}

void evbus__saga_inst_free(saga_inst_t *in)
{
    free(in->id);
    free(in->saga);
    free(in->data);
    free(in->reason);
    cJSON_Delete(in->steps);
    memset(in, 0, sizeof *in);
}

int evbus__saga_history(saga_store_t *st, saga_inst_t *in, int64_t at,
                        int step, const char *event, int from, int to,
                        const char *detail)
{
    sqlite3_stmt *s = st->history;
    sqlite3_bind_text(s, 1, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, ++in->hseq);
    sqlite3_bind_int64(s, 3, at);
    bind_opt_i64(s, 4, step);
    sqlite3_bind_text(s, 5, event, -1, SQLITE_STATIC);
    bind_opt_text(s, 6, from >= 0 ? evbus_saga_state_name(from) : NULL);
    bind_opt_text(s, 7, to >= 0 ? evbus_saga_state_name(to) : NULL);
    bind_opt_text(s, 8, detail);
    int rc = evbus__sql_step_done(s);
    sqlite3_clear_bindings(s);
    return rc;
}

int evbus__saga_store_due(saga_store_t *st, const char *saga, int64_t now,
                          int max, char ***ids)
{
    *ids = calloc((size_t)max, sizeof **ids);
    if (!*ids)
        return EVBUS_ENOMEM;
    sqlite3_stmt *s = st->due;
    sqlite3_bind_text(s, 1, saga, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int(s, 3, max);
    int count = 0, rc;
    bool oom = false;
    while (count < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        char *id = col_dup(s, 0, &oom);
        if (id)
            (*ids)[count++] = id;
    }
    if (count == max)
        rc = SQLITE_DONE;
    sqlite3_reset(s);
    if (rc != SQLITE_DONE || oom) {
        for (int i = 0; i < count; i++)
            free((*ids)[i]);
        free(*ids);
        *ids = NULL;
        return oom ? EVBUS_ENOMEM : evbus__sqlite_err(rc);
    }
    return count;
}

int64_t evbus__saga_store_next_due(saga_store_t *st, const char *saga)
{
    sqlite3_stmt *s = st->next_due;
    sqlite3_bind_text(s, 1, saga, -1, SQLITE_STATIC);
    int64_t due = -1;
    if (sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_type(s, 0) != SQLITE_NULL)
        due = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return due;
}
