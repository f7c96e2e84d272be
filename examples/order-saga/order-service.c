/*
 * order-service: takes orders and runs the order saga (the orchestrator).
 *   order      local: the order row is PENDING     undo: CANCELLED
 *   payment    payment.charge -> payment-service   undo: payment.refund
 *   shipping   shipping.ship -> shipping-service   undo: shipping.cancel
 * Saga "order" waits up to a minute for each reply; "order-express" (an
 * order posted with "express": true) gives shipping SHIP_DEADLINE_MS.
 *   confirm    local: the order is CONFIRMED
 * The order row and the saga's start commit in one transaction; every
 * reply, timer and compensation is one transaction with the outbox.
 *   POST /orders {id?, item, qty, amount, card, address, express?}
 *                             -> 201 {id, state} started / 200 {id, state,
 *                                exists: true} when the id is known already
 *   GET  /orders              -> {count, orders: [{id, status, saga, ...}]}
 *   GET  /sagas[?state=S]     -> evbus_saga_list_json
 *   GET  /sagas/{id}          -> evbus_saga_show_json (steps, history)
 *   GET  /metrics             -> Prometheus: the saga and bus counters
 *   GET  /                    -> the page (instances, steps, histories)
 *   GET  /healthz
 * Environment: EVBUS_URL, PORT, ORDER_DB, UI_FILE, SHIP_DEADLINE_MS (3000),
 * COMP_TIMEOUT_MS (5000), TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/saga.h>

#include "common/svc.h"

static sqlite3 *db;
static evbus_t *bus;
static evbus_saga_orch_t *orch;

/* ---------------------------------------------------------- the saga */

static int set_status(sqlite3 *d, const char *order, const char *status)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d, "UPDATE orders SET status = ?2, updated_at ="
                              " strftime('%s','now') WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return EVBUS_EIO;
    sqlite3_bind_text(st, 1, order, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return EVBUS_EIO;
    svc_timeline("order %s is %s", order, status);
    return EVBUS_SAGA_SUCCESS;
}

static int order_pending(sqlite3 *d, const char *id, const char *data,
                         evbus_saga_answer_t *a, void *opaque)
{
    return set_status(d, id, "PENDING");
}

static int order_cancel(sqlite3 *d, const char *id, const char *data,
                        evbus_saga_answer_t *a, void *opaque)
{
    return set_status(d, id, "CANCELLED");
}

static int order_confirm(sqlite3 *d, const char *id, const char *data,
                         evbus_saga_answer_t *a, void *opaque)
{
    return set_status(d, id, "CONFIRMED");
}

static void add_step(evbus_saga_def_t *d, evbus_saga_step_t *s)
{
    char err[256];
    if (evbus_saga_def_add_step(d, s, err, sizeof err) != EVBUS_OK) {
        fprintf(stderr, "order-service: %s\n", err);
        exit(1);
    }
}

/* "order", or "order-express" whose shipment must be answered within
 * SHIP_DEADLINE_MS (the others wait up to a minute for each reply). */
static evbus_saga_def_t *order_saga(const char *name, int64_t ship_deadline)
{
    evbus_saga_def_t *d = evbus_saga_def_new(name, NULL, 0);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "order";
    s.local = order_pending;
    s.comp_local = order_cancel;
    add_step(d, &s);

    int64_t comp_timeout = atoll(svc_env("COMP_TIMEOUT_MS", "5000"));
    evbus_saga_step_init(&s);
    s.name = "payment";
    s.topic = "payment.charge";
    s.type = "payments.charge.requested";
    s.template_json = "{\"orderId\":\"$.orderId\",\"amount\":\"$.amount\","
                      "\"card\":\"$.card\"}";
    s.comp_topic = "payment.refund";
    s.comp_type = "payments.refund.requested";
    s.comp_template_json = "{\"orderId\":\"$.orderId\"}";
    s.deadline_ms = 60000;
    s.comp_timeout_ms = comp_timeout;
    add_step(d, &s);

    evbus_saga_step_init(&s);
    s.name = "shipping";
    s.topic = "shipping.ship";
    s.type = "shipping.shipment.requested";
    s.template_json = "{\"orderId\":\"$.orderId\",\"item\":\"$.item\","
                      "\"qty\":\"$.qty\",\"address\":\"$.address\"}";
    s.comp_topic = "shipping.cancel";
    s.comp_type = "shipping.shipment.cancel-requested";
    s.comp_template_json = "{\"orderId\":\"$.orderId\"}";
    s.deadline_ms = ship_deadline;
    s.comp_timeout_ms = comp_timeout;
    add_step(d, &s);

    evbus_saga_step_init(&s);
    s.name = "confirm";
    s.local = order_confirm;
    add_step(d, &s);
    return d;
}

/* ---------------------------------------------------------------- HTTP */

static const char *str_or(cJSON *o, const char *key, const char *def)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
    return v ? v : def;
}

/* The order row and the saga start, one transaction. 1 started, 0 known,
 * negative on error. */
static int place_order(const char *id, cJSON *in, const char *data)
{
    sqlite3_stmt *st = NULL;
    int rc = EVBUS_EIO;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return EVBUS_EBUSY;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO orders(id, item, qty, amount, card,"
                           " address, status, created_at, updated_at)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'NEW',"
                           " strftime('%s','now'), strftime('%s','now'))"
                           " ON CONFLICT(id) DO NOTHING",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, str_or(in, "item", "book"), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3,
                         (int)cJSON_GetNumberValue(cJSON_GetObjectItem(in,
                                                                       "qty")));
        sqlite3_bind_double(st, 4, cJSON_GetNumberValue(
                                       cJSON_GetObjectItem(in, "amount")));
        sqlite3_bind_text(st, 5, str_or(in, "card", "visa"), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, str_or(in, "address", ""), -1,
                          SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = evbus_saga_start(orch,
                                  cJSON_IsTrue(cJSON_GetObjectItem(in,
                                                                   "express"))
                                      ? "order-express"
                                      : "order",
                                  id, data);
        sqlite3_finalize(st);
    }
    if (rc >= 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return rc;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc < 0 ? rc : EVBUS_EIO;
}

static void post_order(const char *body, svc_reply_t *r)
{
    cJSON *in = cJSON_Parse(body);
    if (!cJSON_IsObject(in) ||
        !cJSON_IsNumber(cJSON_GetObjectItem(in, "amount"))) {
        cJSON_Delete(in);
        svc_reply_error(r, 400, "expected {id?, item, qty, amount, card, "
                                "address} with a numeric amount");
        return;
    }
    char id[96];
    static int seq;
    snprintf(id, sizeof id, "%s", str_or(in, "id", ""));
    if (!*id)
        snprintf(id, sizeof id, "order-%ld-%d", (long)time(NULL), ++seq);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "orderId", id);
    cJSON_AddStringToObject(data, "item", str_or(in, "item", "book"));
    cJSON_AddNumberToObject(data, "qty", cJSON_GetNumberValue(
                                             cJSON_GetObjectItem(in, "qty")));
    cJSON_AddNumberToObject(data, "amount", cJSON_GetNumberValue(
                                                cJSON_GetObjectItem(in,
                                                                    "amount")));
    cJSON_AddStringToObject(data, "card", str_or(in, "card", "visa"));
    cJSON_AddStringToObject(data, "address", str_or(in, "address", ""));
    char *dj = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    evbus_saga_lock(orch); /* our transaction must not mix with its own */
    int rc = place_order(id, in, dj);
    int state = evbus_saga_state_of(db, id);
    evbus_saga_unlock(orch);
    free(dj);
    cJSON_Delete(in);
    if (rc < 0) {
        svc_reply_error(r, rc == EVBUS_EINVAL ? 400 : 503, evbus_strerror(rc));
        return;
    }
    evbus_saga_notify(orch); /* our COMMIT: publish the command now */
    svc_timeline("POST /orders %s: %s", id, rc ? "saga started"
                                               : "exists already");
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "id", id);
    cJSON_AddStringToObject(out, "state", evbus_saga_state_name(state));
    if (!rc)
        cJSON_AddBoolToObject(out, "exists", 1);
    svc_reply_cjson(r, rc ? 201 : 200, out);
}

static void list_orders(svc_reply_t *r)
{
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    sqlite3_stmt *st;
    int n = 0;
    evbus_saga_lock(orch);
    if (sqlite3_prepare_v2(db,
                           "SELECT o.id, o.item, o.qty, o.amount, o.card,"
                           " o.address, o.status, s.state, s.reason"
                           " FROM orders o LEFT JOIN evbus_saga s"
                           " ON s.id = o.id ORDER BY o.created_at, o.id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            static const char *keys[] = {"id",   "item",    "qty",
                                         "amount", "card",  "address",
                                         "status", "saga",  "reason"};
            cJSON *o = cJSON_CreateObject();
            for (int i = 0; i < 9; i++) {
                if (sqlite3_column_type(st, i) == SQLITE_NULL)
                    cJSON_AddNullToObject(o, keys[i]);
                else if (i == 2 || i == 3)
                    cJSON_AddNumberToObject(o, keys[i],
                                            sqlite3_column_double(st, i));
                else
                    cJSON_AddStringToObject(
                        o, keys[i], (const char *)sqlite3_column_text(st, i));
            }
            cJSON_AddItemToArray(arr, o);
            n++;
        }
        sqlite3_finalize(st);
    }
    evbus_saga_unlock(orch);
    cJSON_AddNumberToObject(out, "count", n);
    cJSON_AddItemToObject(out, "orders", arr);
    svc_reply_cjson(r, 200, out);
}

static void saga_json(const char *id, const char *state, svc_reply_t *r)
{
    char *out = NULL, err[256] = "";
    evbus_saga_lock(orch);
    int rc = id ? evbus_saga_show_json(db, id, &out, err, sizeof err)
                : evbus_saga_list_json(db, state, 500, &out, err, sizeof err);
    evbus_saga_unlock(orch);
    if (rc != EVBUS_OK)
        svc_reply_error(r, rc == EVBUS_ENOTFOUND ? 404
                           : rc == EVBUS_EINVAL  ? 400
                                                 : 500,
                        err);
    else
        svc_reply_json(r, 200, out);
}

static void metrics(svc_reply_t *r)
{
    char *saga = evbus_saga_metrics_prometheus(orch);
    char *bus_text = evbus_metrics_prometheus(bus);
    size_t len = (saga ? strlen(saga) : 0) + (bus_text ? strlen(bus_text) : 0);
    char *all = malloc(len + 1);
    if (all)
        snprintf(all, len + 1, "%s%s", saga ? saga : "",
                 bus_text ? bus_text : "");
    free(saga);
    free(bus_text);
    svc_reply_text(r, all ? 200 : 500, "text/plain; version=0.0.4",
                   all ? all : strdup("out of memory\n"));
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    int get = strcmp(method, "GET") == 0;
    if (strcmp(method, "POST") == 0 && strcmp(path, "/orders") == 0) {
        post_order(body, r);
    } else if (get && strcmp(path, "/orders") == 0) {
        list_orders(r);
    } else if (get && strcmp(path, "/sagas") == 0) {
        saga_json(NULL, NULL, r);
    } else if (get && strncmp(path, "/sagas/state/", 13) == 0) {
        saga_json(NULL, path + 13, r);
    } else if (get && strncmp(path, "/sagas/", 7) == 0 && path[7]) {
        saga_json(path + 7, NULL, r);
    } else if (get && strcmp(path, "/metrics") == 0) {
        metrics(r);
    } else if (get && (strcmp(path, "/") == 0 ||
                       strcmp(path, "/index.html") == 0)) {
        char *html = svc_read_file(svc_env("UI_FILE", "ui/index.html"));
        if (html)
            svc_reply_text(r, 200, "text/html; charset=utf-8", html);
        else
            svc_reply_error(r, 500, "UI_FILE cannot be read");
    }
}

int main(void)
{
    svc_timeline_open("order-service");
    int port = atoi(svc_env_required("PORT"));
    db = svc_open_db(svc_env("ORDER_DB", "order.db"));
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS orders(id TEXT PRIMARY KEY,"
                    " item TEXT, qty INTEGER, amount REAL, card TEXT,"
                    " address TEXT, status TEXT NOT NULL,"
                    " created_at INTEGER, updated_at INTEGER)");
    bus = svc_open_bus("order-service");
    svc_signals(bus);
    char err[512];
    /* subscribes to order-service.replies and runs the relay that publishes
     * the commands from this database's outbox */
    orch = evbus_saga_orch_open(db, bus, "order-service", NULL, err,
                                sizeof err);
    int ok = orch != NULL;
    for (int i = 0; ok && i < 2; i++) {
        evbus_saga_def_t *d =
            i ? order_saga("order-express",
                           atoll(svc_env("SHIP_DEADLINE_MS", "3000")))
              : order_saga("order", 60000);
        ok = evbus_saga_orch_register(orch, d, err, sizeof err) == EVBUS_OK;
        evbus_saga_def_free(d);
    }
    if (!ok) {
        fprintf(stderr, "order-service: %s\n", err);
        return 1;
    }
    svc_ready = 1; /* before the HTTP thread exists: no race on it */
    svc_http_start(port, route);
    svc_timeline("ready: orchestrating saga 'order' (replies on "
                 "order-service.replies)");
    /* replies, deadlines and compensation retries; a bounded wait, so a
     * deadline set by a POST on the HTTP thread is noticed in time */
    while (svc_running()) {
        int rc = evbus_saga_poll(orch, 100);
        if (rc < 0 && rc != EVBUS_ECLOSED)
            svc_timeline("poll: %s", evbus_strerror(rc));
    }
    svc_http_stop();
    evbus_saga_orch_close(orch); /* stops the relay that uses the bus */
    evbus_close(bus);
    sqlite3_close(db);
    svc_timeline("stopped");
    return 0;
}
