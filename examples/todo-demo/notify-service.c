/*
 * notify-service: one notification per event, exactly once in effect.
 * Consumes users.account.registered, todos.task.created and
 * todos.task.completed as group "notify" through an inbox.
 *   GET /notifications -> {count, duplicates, notifications: [...]}
 *   GET /healthz
 * Environment: EVBUS_URL, PORT, NOTIFY_DB, TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/svc.h"

static sqlite3 *db;

static const char *field(cJSON *data, const char *name)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(data, name));
    return v ? v : "?";
}

/* Inside the inbox transaction: write the notification. */
static int notify(sqlite3 *db_, const evbus_event_t *ev, char *what)
{
    const char *type = evbus_event_type(ev);
    cJSON *data = cJSON_ParseWithLength(evbus_event_data(ev),
                                        evbus_event_data_len(ev));
    if (!data)
        return EVBUS_DROP; /* not the data we agreed on: dead-letter it */
    char msg[300];
    if (strcmp(type, "users.account.registered") == 0)
        snprintf(msg, sizeof msg, "Welcome, %s! (mail to %s)", field(data, "name"),
                 field(data, "email"));
    else if (strcmp(type, "todos.task.created") == 0)
        snprintf(msg, sizeof msg, "New todo #%s for user %s: %s",
                 field(data, "todoId"), field(data, "userId"),
                 field(data, "title"));
    else
        snprintf(msg, sizeof msg, "Todo #%s done: %s", field(data, "todoId"),
                 field(data, "title"));
    sqlite3_stmt *st;
    int rc = EVBUS_RETRY;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO notifications(event_id, type, user_id, "
                           "message) VALUES(?, ?, ?, ?)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, evbus_event_id(ev), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, type, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, field(data, "userId"), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, msg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_DONE) {
            rc = EVBUS_ACK;
            snprintf(what, 160, "notification #%lld \"%.100s\"",
                     (long long)sqlite3_last_insert_rowid(db_), msg);
        }
        sqlite3_finalize(st);
    }
    cJSON_Delete(data);
    return rc;
}

static void list(svc_reply_t *r)
{
    sqlite3_stmt *st;
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    int n = 0;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db,
                           "SELECT id, type, user_id, message, event_id FROM "
                           "notifications ORDER BY id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", (double)sqlite3_column_int64(st, 0));
            cJSON_AddStringToObject(o, "type", (const char *)sqlite3_column_text(st, 1));
            cJSON_AddStringToObject(o, "userId", (const char *)sqlite3_column_text(st, 2));
            cJSON_AddStringToObject(o, "message", (const char *)sqlite3_column_text(st, 3));
            cJSON_AddStringToObject(o, "eventId", (const char *)sqlite3_column_text(st, 4));
            cJSON_AddItemToArray(arr, o);
            n++;
        }
        sqlite3_finalize(st);
    }
    long dups = svc_duplicates(db);
    cJSON *dup_ids = svc_duplicate_ids(db);
    pthread_mutex_unlock(&svc_db_lock);
    cJSON_AddNumberToObject(out, "count", n);
    cJSON_AddNumberToObject(out, "duplicates", (double)dups);
    cJSON_AddItemToObject(out, "duplicateIds", dup_ids);
    cJSON_AddItemToObject(out, "notifications", arr);
    svc_reply_cjson(r, 200, out);
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    (void)body;
    if (strcmp(method, "GET") == 0 && strcmp(path, "/notifications") == 0)
        list(r);
}

int main(void)
{
    static const char *const topics[] = {"users.account.registered",
                                         "todos.task.created",
                                         "todos.task.completed", NULL};
    svc_timeline_open("notify-service");
    int port = atoi(svc_env_required("PORT"));
    db = svc_open_db(svc_env("NOTIFY_DB", "notify.db"));
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS notifications("
                    "id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, "
                    "type TEXT NOT NULL, user_id TEXT, message TEXT NOT NULL)");
    svc_http_start(port, route);
    svc_consumer_start("notify-service", "notify", db, topics, notify);
    svc_consumer_run();
    svc_http_stop();
    sqlite3_close(db);
    svc_timeline("stopped");
    return 0;
}
