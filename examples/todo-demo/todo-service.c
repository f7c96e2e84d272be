/*
 * todo-service: todos, with the owner checked synchronously at user-service.
 *   POST /todos {userId, title}   -> 201 verified / 202 "accepted, user
 *                                    unverified" (user-service down) / 422
 *                                    unknown user; the todo and its
 *                                    todos.task.created event commit together
 *   POST /todos/{id}/complete     -> todos.task.completed (once)
 *   GET  /todos                   -> {count, verified, unverified, todos}
 *   GET  /breaker                 -> the user-service breaker's state
 *   POST /admin/replay/{id}       -> publishes the todo's created event again,
 *                                    same id and source (what a relay does
 *                                    after a crash): consumers must absorb it
 *   GET  /                        -> the one-page UI; /config.json tells it
 *                                    where the other services are
 *   POST/GET /selftest-result     -> the UI's self-test reports here
 *   GET  /healthz
 * Environment: EVBUS_URL, PORT, TODO_DB, USER_SERVICE_URL, NOTIFY_URL,
 * ANALYTICS_URL, UI_FILE, BREAKER_OPEN_MS, TIMELINE.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evbus/outbox.h>

#include "common/svc.h"
#include "user-check.h"

static sqlite3 *db;
static evbus_outbox_t *outbox;
static svc_producer_t *producer;
static char ui_file[PATH_MAX];
static char *selftest_result;

/* Builds a todos.task.* event for todo `id`. Caller frees. */
static evbus_event_t *todo_event(const char *type, long long id, long user_id,
                                 const char *title, int verified)
{
    evbus_event_t *ev = evbus_event_new(type, "/todos/api");
    char tid[32], uid[32];
    snprintf(tid, sizeof tid, "%lld", id);
    snprintf(uid, sizeof uid, "%ld", user_id);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "todoId", tid);
    cJSON_AddStringToObject(d, "userId", uid);
    cJSON_AddStringToObject(d, "title", title);
    if (verified >= 0)
        cJSON_AddBoolToObject(d, "userVerified", verified);
    char *dj = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    evbus_event_set_data_json(ev, dj);
    free(dj);
    evbus_event_set_subject(ev, tid);
    /* created and completed of one todo keep their order (Kafka key). */
    evbus_event_set_ext(ev, "partitionkey", tid);
    return ev;
}

/* INSERT + outbox in one transaction; returns the id or -1 (err set). */
static long long create_todo(long user_id, const char *title, int verified,
                             char *err, size_t errsz)
{
    sqlite3_stmt *st = NULL;
    evbus_event_t *ev = NULL;
    char *json = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errsz, "database busy");
        return -1;
    }
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO todos(user_id, title, verified) "
                           "VALUES(?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_text(st, 2, title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, verified);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(st);
    st = NULL;
    long long id = sqlite3_last_insert_rowid(db);
    ev = todo_event("todos.task.created", id, user_id, title, verified);
    int rc = evbus_outbox_add(outbox, "todos.task.created", ev);
    if (rc != EVBUS_OK) {
        snprintf(err, errsz, "outbox: %s", evbus_strerror(rc));
        goto fail_quiet;
    }
    /* Kept with the todo so /admin/replay can publish the very same event. */
    json = evbus_event_to_json(ev, NULL);
    if (sqlite3_prepare_v2(db, "UPDATE todos SET created_event = ? WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, id);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    char sid[9];
    svc_timeline("created todo %lld for user %ld (%s) + outbox "
                 "todos.task.created id=%s, one transaction",
                 id, user_id, verified ? "verified" : "UNVERIFIED",
                 svc_short_id(ev, sid));
    sqlite3_finalize(st);
    evbus_event_free(ev);
    free(json);
    return id;
fail:
    snprintf(err, errsz, "database: %s", sqlite3_errmsg(db));
fail_quiet:
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    evbus_event_free(ev);
    free(json);
    return -1;
}

static void post_todo(const char *body, svc_reply_t *r)
{
    cJSON *in = cJSON_Parse(body);
    cJSON *u = cJSON_GetObjectItem(in, "userId");
    const char *title = cJSON_GetStringValue(cJSON_GetObjectItem(in, "title"));
    long user_id = -1;
    if (cJSON_IsNumber(u) && u->valuedouble >= 1 && u->valuedouble <= 1e15 &&
        u->valuedouble == (double)(long)u->valuedouble)
        user_id = (long)u->valuedouble;
    else if (cJSON_IsString(u)) {
        char *end;
        user_id = strtol(u->valuestring, &end, 10);
        if (end == u->valuestring || *end)
            user_id = -1;
    }
    if (user_id <= 0 || !title || !*title) {
        cJSON_Delete(in);
        svc_reply_error(r, 400, "expected {\"userId\": N, \"title\": \"...\"}");
        return;
    }
    user_check_t c = {.user_id = user_id};
    user_check(&c);
    if (!c.exists) {
        cJSON_Delete(in);
        svc_timeline("POST /todos for user %ld -> 422 no such user", user_id);
        svc_reply_error(r, 422, "no such user");
        return;
    }
    if (!c.verified)
        svc_timeline("user %ld unverified: %s", user_id, c.why);
    char err[256];
    pthread_mutex_lock(&svc_db_lock);
    long long id = create_todo(user_id, title, c.verified, err, sizeof err);
    pthread_mutex_unlock(&svc_db_lock);
    if (id < 0) {
        cJSON_Delete(in);
        svc_reply_error(r, 503, err);
        return;
    }
    svc_producer_notify(producer);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "id", (double)id);
    cJSON_AddNumberToObject(out, "userId", user_id);
    cJSON_AddStringToObject(out, "title", title);
    cJSON_AddBoolToObject(out, "verified", c.verified);
    cJSON_AddStringToObject(out, "status",
                            c.verified ? "created" : "accepted, user unverified");
    if (!c.verified)
        cJSON_AddStringToObject(out, "reason", c.why);
    cJSON_Delete(in);
    svc_reply_cjson(r, c.verified ? 201 : 202, out);
}

static void complete_todo(long id, svc_reply_t *r)
{
    sqlite3_stmt *st = NULL;
    int status = 500;
    const char *msg = NULL;
    evbus_event_t *ev = NULL;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&svc_db_lock);
        svc_reply_error(r, 503, "database busy");
        return;
    }
    if (sqlite3_prepare_v2(db, "SELECT user_id, title, done FROM todos WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        status = 404;
        msg = "no such todo";
        goto out;
    }
    long user_id = (long)sqlite3_column_int64(st, 0);
    char title[256];
    snprintf(title, sizeof title, "%s", (const char *)sqlite3_column_text(st, 1));
    if (sqlite3_column_int(st, 2)) {
        status = 200;
        msg = "already completed";
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE todos SET done = 1 WHERE id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto out;
    ev = todo_event("todos.task.completed", id, user_id, title, -1);
    if (evbus_outbox_add(outbox, "todos.task.completed", ev) != EVBUS_OK)
        goto out;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    status = 200;
    char sid[9];
    svc_timeline("completed todo %ld + outbox todos.task.completed id=%s, one "
                 "transaction",
                 id, svc_short_id(ev, sid));
out:
    sqlite3_finalize(st);
    if (status != 200 || msg)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&svc_db_lock);
    evbus_event_free(ev);
    if (status == 200 && !msg)
        svc_producer_notify(producer);
    if (status != 200) {
        svc_reply_error(r, status, msg ? msg : "database error");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddBoolToObject(o, "done", 1);
    cJSON_AddStringToObject(o, "status", msg ? msg : "completed");
    svc_reply_cjson(r, 200, o);
}

static void list_todos(svc_reply_t *r)
{
    sqlite3_stmt *st;
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    int n = 0, verified = 0, done = 0;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db,
                           "SELECT id, user_id, title, verified, done FROM todos "
                           "ORDER BY id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "id", (double)sqlite3_column_int64(st, 0));
            cJSON_AddNumberToObject(t, "userId", (double)sqlite3_column_int64(st, 1));
            cJSON_AddStringToObject(t, "title", (const char *)sqlite3_column_text(st, 2));
            cJSON_AddBoolToObject(t, "verified", sqlite3_column_int(st, 3));
            cJSON_AddBoolToObject(t, "done", sqlite3_column_int(st, 4));
            cJSON_AddItemToArray(arr, t);
            n++;
            verified += sqlite3_column_int(st, 3) != 0;
            done += sqlite3_column_int(st, 4) != 0;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&svc_db_lock);
    cJSON_AddNumberToObject(out, "count", n);
    cJSON_AddNumberToObject(out, "verified", verified);
    cJSON_AddNumberToObject(out, "unverified", n - verified);
    cJSON_AddNumberToObject(out, "completed", done);
    cJSON_AddItemToObject(out, "todos", arr);
    svc_reply_cjson(r, 200, out);
}

/* Publishes the stored created event again, unchanged, straight to the bus:
 * the duplicate a relay produces when it dies after the broker's ack and
 * before recording it. */
static void replay(long id, svc_reply_t *r)
{
    sqlite3_stmt *st;
    char *json = NULL;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db, "SELECT created_event FROM todos WHERE id = ?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            json = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&svc_db_lock);
    if (!json) {
        svc_reply_error(r, 404, "no such todo");
        return;
    }
    char err[256];
    evbus_event_t *ev = evbus_event_from_json(json, strlen(json), err, sizeof err);
    free(json);
    if (!ev) {
        svc_reply_error(r, 500, err);
        return;
    }
    int rc = evbus_publish(svc_producer_bus(producer), evbus_event_type(ev), ev);
    char sid[9];
    svc_short_id(ev, sid);
    if (rc == EVBUS_OK)
        svc_timeline("REPLAYED todos.task.created id=%s of todo %ld (same id and "
                     "source, as a relay would after a crash)",
                     sid, id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", evbus_event_id(ev));
    cJSON_AddStringToObject(o, "source", evbus_event_source(ev));
    cJSON_AddStringToObject(o, "type", evbus_event_type(ev));
    cJSON_AddStringToObject(o, "result", evbus_strerror(rc));
    evbus_event_free(ev);
    svc_reply_cjson(r, rc == EVBUS_OK ? 200 : 503, o);
}

static void serve_ui(svc_reply_t *r)
{
    char *html = svc_read_file(ui_file);
    if (!html) {
        svc_reply_error(r, 500, "UI file not found (set UI_FILE)");
        return;
    }
    svc_reply_text(r, 200, "text/html; charset=utf-8", html);
}

static void ui_config(svc_reply_t *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "userService", svc_env("USER_SERVICE_URL", ""));
    cJSON_AddStringToObject(o, "notifyService", svc_env("NOTIFY_URL", ""));
    cJSON_AddStringToObject(o, "analyticsService", svc_env("ANALYTICS_URL", ""));
    svc_reply_cjson(r, 200, o);
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    long id;
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (post && strcmp(path, "/todos") == 0)
        post_todo(body, r);
    else if (get && strcmp(path, "/todos") == 0)
        list_todos(r);
    else if (post && (id = svc_path_id(path, "/todos/", "/complete")) >= 0)
        complete_todo(id, r);
    else if (get && strcmp(path, "/breaker") == 0)
        svc_reply_cjson(r, 200, user_check_breaker_json());
    else if (post && (id = svc_path_id(path, "/admin/replay/", "")) >= 0)
        replay(id, r);
    else if (get && (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0))
        serve_ui(r);
    else if (get && strcmp(path, "/config.json") == 0)
        ui_config(r);
    else if (post && strcmp(path, "/selftest-result") == 0) {
        pthread_mutex_lock(&svc_db_lock);
        free(selftest_result);
        selftest_result = strdup(body);
        pthread_mutex_unlock(&svc_db_lock);
        svc_timeline("UI self-test reported: %.200s", body);
        svc_reply_json(r, 200, strdup("{\"ok\":true}"));
    } else if (get && strcmp(path, "/selftest-result") == 0) {
        pthread_mutex_lock(&svc_db_lock);
        char *b = strdup(selftest_result ? selftest_result : "{}");
        pthread_mutex_unlock(&svc_db_lock);
        svc_reply_json(r, 200, b);
    }
}

/* UI_FILE, else ui/index.html next to the binary (the Makefile puts it
 * there), else the source tree's copy. */
static void find_ui(void)
{
    const char *env = getenv("UI_FILE");
    if (env && *env) {
        snprintf(ui_file, sizeof ui_file, "%s", env);
        return;
    }
    char exe[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        snprintf(ui_file, sizeof ui_file, "%s/ui/index.html", exe);
        if (access(ui_file, R_OK) == 0)
            return;
    }
    snprintf(ui_file, sizeof ui_file, "ui/index.html");
}

int main(void)
{
    svc_timeline_open("todo-service");
    const char *db_path = svc_env("TODO_DB", "todo.db");
    int port = atoi(svc_env_required("PORT"));
    find_ui();
    user_check_init();
    db = svc_open_db(db_path);
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS todos("
                    "id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, "
                    "title TEXT NOT NULL, verified INTEGER NOT NULL, "
                    "done INTEGER NOT NULL DEFAULT 0, created_event TEXT)");
    char err[256];
    outbox = evbus_outbox_open(db, err, sizeof err);
    if (!outbox) {
        fprintf(stderr, "todo-service: outbox: %s\n", err);
        return 1;
    }
    svc_signals(NULL);
    producer = svc_producer_start("todo-service", db_path);
    svc_http_start(port, route);
    svc_ready = 1;
    svc_timeline("listening on :%d, bus %s", port,
                 evbus_scheme(svc_producer_bus(producer)));

    svc_wait_for_signal();
    svc_timeline("SIGTERM: stopping");
    svc_http_stop();
    svc_producer_stop(producer);
    evbus_outbox_close(outbox);
    sqlite3_close(db);
    user_check_free();
    free(selftest_result);
    return 0;
}
