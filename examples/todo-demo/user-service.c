/*
 * user-service: registers users.
 *   POST /users {name, email}  -> 201 {id, name, email}; the row and its
 *                                 users.account.registered event commit in
 *                                 one transaction (outbox), a relay publishes
 *   GET  /users/{id}           -> 200 {id, name, email} or 404
 *   GET  /users                -> {count, users: [...]}
 *   GET  /healthz
 * Environment: EVBUS_URL, PORT, USER_DB (SQLite file), TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evbus/outbox.h>

#include "common/svc.h"

static sqlite3 *db;
static evbus_outbox_t *outbox;
static svc_producer_t *producer;

static cJSON *user_json(sqlite3_stmt *st)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "id", (double)sqlite3_column_int64(st, 0));
    cJSON_AddStringToObject(u, "name", (const char *)sqlite3_column_text(st, 1));
    cJSON_AddStringToObject(u, "email", (const char *)sqlite3_column_text(st, 2));
    return u;
}

/* The row and the event in one transaction. Returns the new id or -1. */
static long long register_user(const char *name, const char *email, char *err,
                               size_t errsz)
{
    sqlite3_stmt *st = NULL;
    long long id = -1;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errsz, "database busy");
        return -1;
    }
    if (sqlite3_prepare_v2(db, "INSERT INTO users(name, email) VALUES(?, ?)", -1,
                           &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, email, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    id = sqlite3_last_insert_rowid(db);

    evbus_event_t *ev = evbus_event_new("users.account.registered", "/users/api");
    char uid[32];
    snprintf(uid, sizeof uid, "%lld", id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "userId", uid);
    cJSON_AddStringToObject(data, "name", name);
    cJSON_AddStringToObject(data, "email", email);
    char *dj = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    evbus_event_set_data_json(ev, dj);
    evbus_event_set_subject(ev, uid);
    evbus_event_set_ext(ev, "partitionkey", uid);
    int rc = evbus_outbox_add(outbox, "users.account.registered", ev);
    char sid[9];
    svc_short_id(ev, sid);
    evbus_event_free(ev);
    free(dj);
    if (rc != EVBUS_OK) {
        snprintf(err, errsz, "outbox: %s", evbus_strerror(rc));
        goto fail_quiet;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_finalize(st);
    svc_timeline("registered user %lld (%s) + outbox users.account.registered "
                 "id=%s, one transaction",
                 id, name, sid);
    return id;
fail:
    snprintf(err, errsz, "database: %s", sqlite3_errmsg(db));
fail_quiet:
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void post_user(const char *body, svc_reply_t *r)
{
    cJSON *in = cJSON_Parse(body);
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(in, "name"));
    const char *email = cJSON_GetStringValue(cJSON_GetObjectItem(in, "email"));
    if (!name || !*name || !email || !*email) {
        cJSON_Delete(in);
        svc_reply_error(r, 400, "expected {\"name\": \"...\", \"email\": \"...\"}");
        return;
    }
    char err[256];
    pthread_mutex_lock(&svc_db_lock);
    long long id = register_user(name, email, err, sizeof err);
    pthread_mutex_unlock(&svc_db_lock);
    if (id < 0) {
        cJSON_Delete(in);
        svc_reply_error(r, 503, err);
        return;
    }
    svc_producer_notify(producer);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "id", (double)id);
    cJSON_AddStringToObject(out, "name", name);
    cJSON_AddStringToObject(out, "email", email);
    cJSON_Delete(in);
    svc_reply_cjson(r, 201, out);
}

static void get_user(long id, svc_reply_t *r)
{
    sqlite3_stmt *st;
    cJSON *u = NULL;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db, "SELECT id, name, email FROM users WHERE id = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW)
            u = user_json(st);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&svc_db_lock);
    svc_timeline("GET /users/%ld -> %s", id, u ? "200" : "404 no such user");
    if (u)
        svc_reply_cjson(r, 200, u);
    else
        svc_reply_error(r, 404, "no such user");
}

static void list_users(svc_reply_t *r)
{
    sqlite3_stmt *st;
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    int n = 0;
    pthread_mutex_lock(&svc_db_lock);
    if (sqlite3_prepare_v2(db, "SELECT id, name, email FROM users ORDER BY id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            cJSON_AddItemToArray(arr, user_json(st));
            n++;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&svc_db_lock);
    cJSON_AddNumberToObject(out, "count", n);
    cJSON_AddItemToObject(out, "users", arr);
    svc_reply_cjson(r, 200, out);
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    long id;
    if (strcmp(method, "POST") == 0 && strcmp(path, "/users") == 0)
        post_user(body, r);
    else if (strcmp(method, "GET") == 0 && strcmp(path, "/users") == 0)
        list_users(r);
    else if (strcmp(method, "GET") == 0 &&
             (id = svc_path_id(path, "/users/", "")) >= 0)
        get_user(id, r);
}

int main(void)
{
    svc_timeline_open("user-service");
    const char *db_path = svc_env("USER_DB", "user.db");
    int port = atoi(svc_env_required("PORT"));
    db = svc_open_db(db_path);
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS users("
                    "id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "email TEXT NOT NULL)");
    char err[256];
    outbox = evbus_outbox_open(db, err, sizeof err);
    if (!outbox) {
        fprintf(stderr, "user-service: outbox: %s\n", err);
        return 1;
    }
    svc_signals(NULL);
    producer = svc_producer_start("user-service", db_path);
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
    return 0;
}
