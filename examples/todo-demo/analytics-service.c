/*
 * analytics-service: counts every todos.* and users.* event per type and per
 * user, deduplicated through an inbox so the counts are exact.
 * Consumes the catalogue's topics as group "analytics".
 *   GET /stats   -> {total, duplicates, byType: {...}, byUser: {...}}
 *   GET /metrics -> Prometheus text: these counters plus the bus's own
 *                   (evbus_metrics_prometheus)
 *   GET /healthz
 * Environment: EVBUS_URL, PORT, ANALYTICS_DB, TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/svc.h"

static sqlite3 *db;

static int bump(sqlite3 *db_, const char *sql, const char *key)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
}

/* Inside the inbox transaction: one more event of this type and user. */
static int count(sqlite3 *db_, const evbus_event_t *ev, char *what)
{
    cJSON *data = cJSON_ParseWithLength(evbus_event_data(ev),
                                        evbus_event_data_len(ev));
    const char *user = cJSON_GetStringValue(cJSON_GetObjectItem(data, "userId"));
    if (!bump(db_,
              "INSERT INTO by_type(type, n) VALUES(?, 1) "
              "ON CONFLICT(type) DO UPDATE SET n = n + 1",
              evbus_event_type(ev)) ||
        (user && !bump(db_,
                       "INSERT INTO by_user(user_id, n) VALUES(?, 1) "
                       "ON CONFLICT(user_id) DO UPDATE SET n = n + 1",
                       user))) {
        cJSON_Delete(data);
        return EVBUS_RETRY;
    }
    snprintf(what, 160, "counted (type %s, user %s)", evbus_event_type(ev),
             user ? user : "-");
    cJSON_Delete(data);
    return EVBUS_ACK;
}

/* {key: n, ...} from a two-column table; adds the sum to *total. */
static cJSON *counts(const char *sql, long *total)
{
    cJSON *o = cJSON_CreateObject();
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            long n = (long)sqlite3_column_int64(st, 1);
            cJSON_AddNumberToObject(o, (const char *)sqlite3_column_text(st, 0), n);
            if (total)
                *total += n;
        }
        sqlite3_finalize(st);
    }
    return o;
}

static void stats(svc_reply_t *r)
{
    long total = 0;
    cJSON *out = cJSON_CreateObject();
    pthread_mutex_lock(&svc_db_lock);
    cJSON *types = counts("SELECT type, n FROM by_type ORDER BY type", &total);
    cJSON *users = counts("SELECT user_id, n FROM by_user ORDER BY "
                          "CAST(user_id AS INTEGER)",
                          NULL);
    long dups = svc_duplicates(db);
    cJSON *dup_ids = svc_duplicate_ids(db);
    pthread_mutex_unlock(&svc_db_lock);
    cJSON_AddNumberToObject(out, "total", total);
    cJSON_AddNumberToObject(out, "duplicates", dups);
    cJSON_AddItemToObject(out, "duplicateIds", dup_ids);
    cJSON_AddItemToObject(out, "byType", types);
    cJSON_AddItemToObject(out, "byUser", users);
    svc_reply_cjson(r, 200, out);
}

static void metrics(svc_reply_t *r)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    buf[0] = '\0';
#define APPEND(...)                                                             \
    do {                                                                        \
        int n_ = snprintf(NULL, 0, __VA_ARGS__);                                \
        while (len + (size_t)n_ + 1 > cap)                                      \
            buf = realloc(buf, cap *= 2);                                       \
        len += (size_t)sprintf(buf + len, __VA_ARGS__);                         \
    } while (0)
    APPEND("# HELP todo_demo_events_total Events counted by analytics, by type.\n"
           "# TYPE todo_demo_events_total counter\n");
    sqlite3_stmt *st;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db, "SELECT type, n FROM by_type ORDER BY type", -1,
                           &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW)
            APPEND("todo_demo_events_total{type=\"%s\"} %lld\n",
                   sqlite3_column_text(st, 0),
                   (long long)sqlite3_column_int64(st, 1));
        sqlite3_finalize(st);
    }
    APPEND("# HELP todo_demo_user_events_total Events counted by analytics, by "
           "user.\n# TYPE todo_demo_user_events_total counter\n");
    if (sqlite3_prepare_v2(db, "SELECT user_id, n FROM by_user ORDER BY user_id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW)
            APPEND("todo_demo_user_events_total{user=\"%s\"} %lld\n",
                   sqlite3_column_text(st, 0),
                   (long long)sqlite3_column_int64(st, 1));
        sqlite3_finalize(st);
    }
    long dups = svc_duplicates(db);
    pthread_mutex_unlock(&svc_db_lock);
    APPEND("# HELP todo_demo_duplicates_total Redeliveries the inbox absorbed.\n"
           "# TYPE todo_demo_duplicates_total counter\n"
           "todo_demo_duplicates_total %ld\n",
           dups);
    evbus_t *bus = svc_consumer_bus();
    char *lib = bus ? evbus_metrics_prometheus(bus) : NULL;
    if (lib)
        APPEND("%s", lib);
    free(lib);
#undef APPEND
    svc_reply_text(r, 200, "text/plain; version=0.0.4", buf);
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    (void)body;
    if (strcmp(method, "GET") != 0)
        return;
    if (strcmp(path, "/stats") == 0)
        stats(r);
    else if (strcmp(path, "/metrics") == 0)
        metrics(r);
}

int main(void)
{
    /* Every todos.* and users.* type of the catalogue (docs/todo-demo.md);
     * topics are named after the type they carry. */
    static const char *const topics[] = {"users.account.registered",
                                         "todos.task.created",
                                         "todos.task.completed", NULL};
    svc_timeline_open("analytics-service");
    int port = atoi(svc_env_required("PORT"));
    db = svc_open_db(svc_env("ANALYTICS_DB", "analytics.db"));
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS by_type("
                    "type TEXT PRIMARY KEY, n INTEGER NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS by_user("
                    "user_id TEXT PRIMARY KEY, n INTEGER NOT NULL)");
    svc_http_start(port, route);
    svc_consumer_start("analytics-service", "analytics", db, topics, count);
    svc_consumer_run();
    svc_http_stop();
    sqlite3_close(db);
    svc_timeline("stopped");
    return 0;
}
