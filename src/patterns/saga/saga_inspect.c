/*
 * Looking after sagas with nothing but the database: the instance list,
 * one instance with its steps and history (JSON for the CLI and status
 * pages), an instance's state, resuming an instance parked as FAILED, and
 * purging ended instances.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saga_internal.h"

#define LIST_COLS                                                              \
    "s.id, s.saga, s.state, s.step,"                                           \
    " json_extract(s.steps, printf('$[%d].name', s.step)), s.attempt,"        \
    " s.reason, s.created_at, s.updated_at, s.ended_at, s.due_at, s.waiting"
#define LIST_FROM " FROM evbus_saga s"

static int no_tables(sqlite3 *db, char *errstr, size_t n)
{
    int have = evbus__saga_has_tables(db);
    if (have < 0) {
        evbus__seterr(errstr, n, "%s", sqlite3_errmsg(db));
        return have;
    }
    if (have == 0) {
        evbus__seterr(errstr, n, "no saga tables in this database");
        return EVBUS_ENOTFOUND;
    }
    return EVBUS_OK;
}

/* Adds column i as a JSON string, number or null named key. */
static void add_col(cJSON *obj, const char *key, sqlite3_stmt *s, int i)
{
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_NULL:
        cJSON_AddNullToObject(obj, key);
        break;
    case SQLITE_INTEGER:
        cJSON_AddNumberToObject(obj, key, (double)sqlite3_column_int64(s, i));
        break;
    default:
        cJSON_AddStringToObject(obj, key,
                                (const char *)sqlite3_column_text(s, i));
    }
}

/* Adds a JSON text column parsed, or as a string when it is not JSON. */
static void add_json_col(cJSON *obj, const char *key, sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    cJSON *v = t ? cJSON_Parse(t) : NULL;
    if (v)
        cJSON_AddItemToObject(obj, key, v);
    else
        add_col(obj, key, s, i);
}

static cJSON *list_entry(sqlite3_stmt *s)
{
    static const char *keys[] = {"id",        "saga",      "state",
                                 "step",      "stepName",  "attempt",
                                 "reason",    "createdAt", "updatedAt",
                                 "endedAt",   "dueAt",     "waiting"};
    cJSON *e = cJSON_CreateObject();
    for (int i = 0; e && i < 12; i++)
        add_col(e, keys[i], s, i);
    return e;
}

/* Runs query (bound by bind) and returns its rows through fn as an array. */
static int rows(sqlite3 *db, const char *query, const char *arg, int limit,
                cJSON *array, cJSON *(*fn)(sqlite3_stmt *))
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, query, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return evbus__sqlite_err(rc);
    if (arg)
        sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
    if (limit > 0)
        sqlite3_bind_int(s, 2, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cJSON *e = fn(s);
        if (!e || !cJSON_AddItemToArray(array, e)) {
            cJSON_Delete(e);
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_err(rc);
}

static cJSON *state_count(sqlite3_stmt *s)
{
    cJSON *e = cJSON_CreateObject();
    if (e) {
        add_col(e, "state", s, 0);
        add_col(e, "n", s, 1);
    }
    return e;
}

static int finish(cJSON *root, int rc, char **out, sqlite3 *db, char *errstr,
                  size_t n)
{
    if (rc == EVBUS_OK && !(*out = cJSON_PrintUnformatted(root)))
        rc = EVBUS_ENOMEM;
    if (rc != EVBUS_OK && rc != EVBUS_ENOTFOUND && rc != EVBUS_EINVAL)
        evbus__seterr(errstr, n, "%s", rc == EVBUS_ENOMEM ? "out of memory"
                                                       : sqlite3_errmsg(db));
    cJSON_Delete(root);
    return rc;
}

int evbus_saga_list_json(sqlite3 *db, const char *state, int limit,
                         char **out, char *errstr, size_t n)
{
    if (!db || !out)
        return EVBUS_EINVAL;
    *out = NULL;
    if (state) {
        int ok = 0;
        for (int i = EVBUS_SAGA_RUNNING; i <= EVBUS_SAGA_FAILED; i++)
            ok |= strcmp(state, evbus_saga_state_name(i)) == 0;
        if (!ok) {
            evbus__seterr(errstr, n, "unknown state '%s' (RUNNING, "
                       "COMPENSATING, COMPLETED, COMPENSATED or FAILED)",
                       state);
            return EVBUS_EINVAL;
        }
    }
    int rc = no_tables(db, errstr, n);
    if (rc != EVBUS_OK)
        return rc;
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "sagas");
    cJSON *counts = cJSON_CreateArray();
    cJSON *states = cJSON_AddObjectToObject(root, "states");
    if (!root || !list || !counts || !states) {
        cJSON_Delete(counts);
        return finish(root, EVBUS_ENOMEM, out, db, errstr, n);
    }
    rc = rows(db,
              state ? "SELECT " LIST_COLS LIST_FROM
                      " WHERE s.state = ?1 ORDER BY s.seq DESC LIMIT ?2"
                    : "SELECT " LIST_COLS LIST_FROM
                      " WHERE ?1 IS NULL ORDER BY s.seq DESC LIMIT ?2",
              state, limit > 0 ? limit : 100, list, list_entry);
    if (rc == EVBUS_OK)
        rc = rows(db,
                  "SELECT state, count(*) FROM evbus_saga GROUP BY state",
                  NULL, 0, counts, state_count);
    long total = 0;
    for (cJSON *c = counts->child; c; c = c->next) {
        double v = cJSON_GetObjectItem(c, "n")->valuedouble;
        cJSON_AddNumberToObject(states,
                                cJSON_GetObjectItem(c, "state")->valuestring,
                                v);
        total += (long)v;
    }
    cJSON_Delete(counts);
    cJSON_AddNumberToObject(root, "count", (double)total);
    return finish(root, rc, out, db, errstr, n);
}

static cJSON *history_entry(sqlite3_stmt *s)
{
    static const char *keys[] = {"at", "step", "event", "from", "to",
                                 "detail"};
    cJSON *e = cJSON_CreateObject();
    for (int i = 0; e && i < 6; i++)
        add_col(e, keys[i], s, i);
    return e;
}

static cJSON *show_entry(sqlite3_stmt *s)
{
    cJSON *e = list_entry(s);
    if (e) {
        add_json_col(e, "data", s, 12);
        add_json_col(e, "steps", s, 13);
    }
    return e;
}

int evbus_saga_show_json(sqlite3 *db, const char *id, char **out,
                         char *errstr, size_t n)
{
    if (!db || !id || !out)
        return EVBUS_EINVAL;
    *out = NULL;
    int rc = no_tables(db, errstr, n);
    if (rc != EVBUS_OK)
        return rc;
    cJSON *found = cJSON_CreateArray();
    if (!found)
        return EVBUS_ENOMEM;
    rc = rows(db,
              "SELECT " LIST_COLS ", s.data, s.steps" LIST_FROM
              " WHERE s.id = ?1",
              id, 0, found, show_entry);
    cJSON *root = found->child ? cJSON_DetachItemFromArray(found, 0) : NULL;
    cJSON_Delete(found);
    if (rc == EVBUS_OK && !root) {
        evbus__seterr(errstr, n, "no saga instance '%s'", id);
        return EVBUS_ENOTFOUND;
    }
    cJSON *hist = cJSON_AddArrayToObject(root, "history");
    if (rc == EVBUS_OK && !hist)
        rc = EVBUS_ENOMEM;
    if (rc == EVBUS_OK)
        rc = rows(db,
                  "SELECT at, step, event, from_state, to_state, detail"
                  " FROM evbus_saga_history WHERE saga_id = ?1 ORDER BY seq",
                  id, 0, hist, history_entry);
    return finish(root, rc, out, db, errstr, n);
}

int evbus_saga_state_of(sqlite3 *db, const char *id)
{
    if (!db || !id)
        return EVBUS_EINVAL;
    int rc = no_tables(db, NULL, 0);
    if (rc != EVBUS_OK)
        return rc;
    sqlite3_stmt *s;
    if ((rc = sqlite3_prepare_v2(db, "SELECT state FROM evbus_saga WHERE id = ?1",
                                 -1, &s, NULL)) != SQLITE_OK)
        return evbus__sqlite_err(rc);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int state = EVBUS_ENOTFOUND;
    if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        for (int i = EVBUS_SAGA_RUNNING; i <= EVBUS_SAGA_FAILED; i++)
            if (name && strcmp(name, evbus_saga_state_name(i)) == 0)
                state = i;
        if (state < 0)
            state = EVBUS_EIO;
    } else if (rc != SQLITE_DONE) {
        state = evbus__sqlite_err(rc);
    }
    sqlite3_finalize(s);
    return state;
}

int evbus_saga_resume(sqlite3 *db, const char *id, char *errstr, size_t n)
{
    if (!db || !id)
        return EVBUS_EINVAL;
    int rc = no_tables(db, errstr, n);
    if (rc != EVBUS_OK)
        return rc;
    int nested;
    if ((rc = evbus__saga_tx_begin(db, &nested, "evbus_saga_resume")) !=
        EVBUS_OK) {
        evbus__seterr(errstr, n, "%s", sqlite3_errmsg(db));
        return rc;
    }
    int state = evbus_saga_state_of(db, id);
    int64_t now = evbus__wall_ms();
    sqlite3_stmt *up = NULL, *hist = NULL;
    if (state == EVBUS_SAGA_FAILED) {
        /* attempt 0 + WAIT_RETRY: the timer makes attempt 1 of a fresh
         * series at once (comp_started_at restarts the elapsed limit) */
        rc = evbus__sql_prepare(db,
                         "UPDATE evbus_saga SET state = 'COMPENSATING',"
                         " waiting = 'retry', due_at = ?2, attempt = 0,"
                         " prev_delay_ms = 0, comp_started_at = ?2,"
                         " updated_at = ?2, ended_at = NULL,"
                         " hseq = hseq + 1 WHERE id = ?1",
                         &up, errstr, n);
        if (rc == EVBUS_OK)
            rc = evbus__sql_prepare(db,
                             "INSERT INTO evbus_saga_history(saga_id, seq,"
                             " at, step, event, from_state, to_state, detail)"
                             " SELECT id, hseq, ?2, step, 'resumed', 'FAILED',"
                             " 'COMPENSATING', 'by evbus_saga_resume'"
                             " FROM evbus_saga WHERE id = ?1",
                             &hist, errstr, n);
        for (int i = 0; rc == EVBUS_OK && i < 2; i++) {
            sqlite3_stmt *s = i ? hist : up;
            sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, 2, now);
            rc = evbus__sql_step_done(s);
        }
    } else {
        rc = state < 0 ? state : EVBUS_ESTATE;
        if (rc == EVBUS_ESTATE)
            evbus__seterr(errstr, n, "saga %s is %s, not FAILED", id,
                       evbus_saga_state_name(state));
        else if (rc == EVBUS_ENOTFOUND)
            evbus__seterr(errstr, n, "no saga instance '%s'", id);
    }
    sqlite3_finalize(up);
    sqlite3_finalize(hist);
    if (rc == EVBUS_OK &&
        (rc = evbus__saga_tx_commit(db, nested, "evbus_saga_resume")) ==
            EVBUS_OK)
        return EVBUS_OK;
    if (rc != EVBUS_ESTATE && rc != EVBUS_ENOTFOUND)
        evbus__seterr(errstr, n, "%s", sqlite3_errmsg(db));
    evbus__saga_tx_rollback(db, nested, "evbus_saga_resume");
    return rc;
}

#define PURGE_BATCH 500

int evbus_saga_purge(sqlite3 *db, int64_t ended_before_ms, char *errstr,
                     size_t n)
{
    if (!db)
        return EVBUS_EINVAL;
    int rc = no_tables(db, errstr, n);
    if (rc != EVBUS_OK)
        return rc;
    /* the instances of one batch: ended, not FAILED, old enough */
#define ENDED_BATCH                                                            \
    "SELECT id FROM evbus_saga WHERE state IN ('COMPLETED', 'COMPENSATED')"   \
    " AND ended_at < ?1 ORDER BY seq LIMIT 500"
    sqlite3_stmt *hist = NULL, *inst = NULL;
    rc = evbus__sql_prepare(db,
                     "DELETE FROM evbus_saga_history WHERE saga_id IN"
                     " (" ENDED_BATCH ")",
                     &hist, errstr, n);
    if (rc == EVBUS_OK)
        rc = evbus__sql_prepare(db,
                         "DELETE FROM evbus_saga WHERE id IN (" ENDED_BATCH ")",
                         &inst, errstr, n);
#undef ENDED_BATCH
    int total = 0, deleted = PURGE_BATCH;
    while (rc == EVBUS_OK && deleted == PURGE_BATCH) {
        int nested;
        if ((rc = evbus__saga_tx_begin(db, &nested, "evbus_saga_purge")) !=
            EVBUS_OK)
            break;
        sqlite3_bind_int64(hist, 1, ended_before_ms);
        sqlite3_bind_int64(inst, 1, ended_before_ms);
        rc = evbus__sql_step_done(hist); /* history first: it finds them by id */
        if (rc == EVBUS_OK && (rc = evbus__sql_step_done(inst)) == EVBUS_OK) {
            deleted = sqlite3_changes(db);
            rc = evbus__saga_tx_commit(db, nested, "evbus_saga_purge");
        }
        if (rc != EVBUS_OK) {
            evbus__seterr(errstr, n, "%s", sqlite3_errmsg(db));
            evbus__saga_tx_rollback(db, nested, "evbus_saga_purge");
        } else {
            total += deleted;
        }
    }
    sqlite3_finalize(hist);
    sqlite3_finalize(inst);
    return rc == EVBUS_OK ? total : rc;
}
