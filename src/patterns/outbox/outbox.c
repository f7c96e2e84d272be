/*
 * The write side of the transactional outbox: one prepared INSERT into
 * evbus_outbox on the application's connection, inside whatever transaction
 * the application has open.
 */
#include <stdlib.h>

#include "evbus/outbox.h"
#include "handoff.h"
#include "sql_util.h"

struct evbus_outbox {
    sqlite3 *db;
    const char *file; /* the database file, for the in-process hand-off */
    sqlite3_stmt *insert;
};

evbus_outbox_t *evbus_outbox_open(sqlite3 *db, char *errstr, size_t n)
{
    if (!db) {
        evbus__seterr(errstr, n, "evbus_outbox_open: db is NULL");
        return NULL;
    }
    evbus_outbox_t *ob = calloc(1, sizeof *ob);
    if (!ob) {
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    ob->db = db;
    ob->file = sqlite3_db_filename(db, "main");
    char why[200] = "";
    if (evbus__sql_exec(db, OB_OUTBOX_DDL, why, sizeof why) != EVBUS_OK ||
        evbus__sql_prepare(db,
                           "INSERT INTO evbus_outbox(topic, event, created_at)"
                           " VALUES(?1, ?2, ?3)",
                           &ob->insert, why, sizeof why) != EVBUS_OK) {
        evbus__seterr(errstr, n, "outbox: cannot create evbus_outbox: %s", why);
        evbus_outbox_close(ob);
        return NULL;
    }
    evbus__sql_default_busy_timeout(db, 5000);
    return ob;
}

int evbus_outbox_add(evbus_outbox_t *ob, const char *topic,
                     const evbus_event_t *ev)
{
    if (!ob || !ev)
        return EVBUS_EINVAL;
    char why[256];
    /* The portable rule, as a bus applies it by default: a row the relay's
     * bus would refuse must not get in. */
    if (evbus__check_name(topic, "topic", false, why, sizeof why)) {
        evbus__outbox_log(EVBUS_LOG_WARN, "outbox_add refused: %s", why);
        return EVBUS_EINVAL;
    }
    /* The encoder refuses events that lack a required attribute; validate
     * only then, to tell that apart from running out of memory. */
    size_t len;
    char *json = evbus_event_to_json(ev, &len);
    if (!json) {
        if (evbus_event_validate(ev, why, sizeof why) != EVBUS_OK) {
            evbus__outbox_log(EVBUS_LOG_WARN, "outbox_add to %s refused: %s",
                              topic, why);
            return EVBUS_EINVAL;
        }
        return EVBUS_ENOMEM;
    }
    sqlite3_bind_text(ob->insert, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(ob->insert, 2, json, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(ob->insert, 3, evbus__wall_ms());
    int rc = evbus__sql_step_done(ob->insert);
    sqlite3_clear_bindings(ob->insert);
    if (rc == EVBUS_OK && ob->file && *ob->file)
        evbus__handoff_offer(ob->file, sqlite3_last_insert_rowid(ob->db), ev,
                             json, len); /* takes json */
    else
        free(json);
    if (rc != EVBUS_OK)
        evbus__outbox_log(EVBUS_LOG_WARN, "outbox_add to %s failed: %s", topic,
                          sqlite3_errmsg(ob->db));
    return rc;
}

sqlite3 *evbus_outbox_db(const evbus_outbox_t *ob)
{
    return ob ? ob->db : NULL;
}

void evbus_outbox_close(evbus_outbox_t *ob)
{
    if (!ob)
        return;
    sqlite3_finalize(ob->insert);
    free(ob);
}
