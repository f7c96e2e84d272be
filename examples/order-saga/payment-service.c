/*
 * payment-service: a participant of the order saga.
 *   payment.charge  charges the order's amount - or declines: the card
 *                   "declined", or an amount over DECLINE_OVER (1000)
 *   payment.refund  refunds the charge (nothing to refund: nothing happens)
 * Each command takes effect once, whatever the broker redelivers.
 *   GET /payments -> {charges, refunds, byOrder: {id: {charged, refunded,
 *                    status}}}
 *   GET /healthz
 * Environment: EVBUS_URL, PORT, PAYMENT_DB, DECLINE_OVER, TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "participant.h"

/* Records the charge of order (the row's id says its payment id). */
static int insert_charge(sqlite3 *db, const char *order, double amount)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO charges(order_id, amount, status)"
                               " VALUES(?1, ?2, 'charged')",
                           -1, &st, NULL) != SQLITE_OK)
        return EVBUS_EIO;
    sqlite3_bind_text(st, 1, order, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 2, amount);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? EVBUS_OK : EVBUS_EIO;
}

static int charge(sqlite3 *db, const evbus_event_t *cmd,
                  evbus_saga_answer_t *a, void *opaque)
{
    (void)opaque;
    cJSON *data = NULL;
    const char *order = part_field(cmd, "orderId", &data);
    const char *card = part_field(cmd, "card", &data);
    cJSON *amt = cJSON_GetObjectItem(data, "amount");
    double amount = cJSON_IsNumber(amt) ? amt->valuedouble : -1;
    double limit = atof(svc_env("DECLINE_OVER", "1000"));
    int rc;
    char why[160];
    if (!*order || amount <= 0) {
        snprintf(why, sizeof why, "no orderId or amount in the command");
        rc = EVBUS_SAGA_FAILURE;
    } else if (strcmp(card, "declined") == 0 || amount > limit) {
        snprintf(why, sizeof why, "card declined (%.2f)", amount);
        rc = EVBUS_SAGA_FAILURE;
    } else {
        rc = insert_charge(db, order, amount);
    }
    if (rc == EVBUS_SAGA_FAILURE) {
        evbus_saga_answer_set_reason(a, why);
        svc_timeline("declined %s: %s", order, why);
    } else if (rc == EVBUS_OK) {
        char reply[128];
        snprintf(reply, sizeof reply, "{\"paymentId\":\"pay-%lld\"}",
                 (long long)sqlite3_last_insert_rowid(db));
        evbus_saga_answer_set_data(a, reply);
        svc_timeline("charged %s %.2f (pay-%lld)", order, amount,
                     (long long)sqlite3_last_insert_rowid(db));
    }
    cJSON_Delete(data);
    return rc;
}

static int refund(sqlite3 *db, const evbus_event_t *cmd,
                  evbus_saga_answer_t *a, void *opaque)
{
    (void)a;
    (void)opaque;
    cJSON *data = NULL;
    const char *order = part_field(cmd, "orderId", &data);
    int rc = part_exec(db, "INSERT INTO refunds(order_id, amount) SELECT"
                           " order_id, amount FROM charges WHERE order_id ="
                           " ?1", order);
    if (rc == EVBUS_OK)
        rc = part_exec(db, "UPDATE charges SET status = 'refunded' WHERE"
                           " order_id = ?1", order);
    if (rc == EVBUS_OK)
        svc_timeline("refunded %s", order);
    cJSON_Delete(data);
    return rc;
}

static cJSON *list(sqlite3 *db)
{
    cJSON *out = cJSON_CreateObject(), *by = cJSON_CreateObject();
    sqlite3_stmt *st;
    long charges = 0, refunds = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT o.order_id,"
                           " (SELECT count(*) FROM charges c WHERE c.order_id"
                           "  = o.order_id),"
                           " (SELECT count(*) FROM refunds r WHERE r.order_id"
                           "  = o.order_id),"
                           " (SELECT status FROM charges c WHERE c.order_id ="
                           "  o.order_id)"
                           " FROM (SELECT order_id FROM charges UNION"
                           "  SELECT order_id FROM refunds) o",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "charged", sqlite3_column_int(st, 1));
            cJSON_AddNumberToObject(o, "refunded", sqlite3_column_int(st, 2));
            cJSON_AddStringToObject(o, "status",
                                    (const char *)sqlite3_column_text(st, 3));
            cJSON_AddItemToObject(by, (const char *)sqlite3_column_text(st, 0),
                                  o);
            charges += sqlite3_column_int(st, 1);
            refunds += sqlite3_column_int(st, 2);
        }
        sqlite3_finalize(st);
    }
    cJSON_AddNumberToObject(out, "charges", charges);
    cJSON_AddNumberToObject(out, "refunds", refunds);
    cJSON_AddItemToObject(out, "byOrder", by);
    return out;
}

int main(void)
{
    static const part_svc_t s = {
        .service = "payment-service",
        .consumer = "payment",
        .action_topic = "payment.charge",
        .comp_topic = "payment.refund",
        .action = charge,
        .compensate = refund,
        .db_env = "PAYMENT_DB",
        .db_default = "payment.db",
        .schema = "CREATE TABLE IF NOT EXISTS charges(id INTEGER PRIMARY KEY,"
                  " order_id TEXT NOT NULL, amount REAL NOT NULL,"
                  " status TEXT NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS refunds(id INTEGER PRIMARY KEY,"
                  " order_id TEXT NOT NULL, amount REAL NOT NULL)",
        .list_path = "/payments",
        .list = list,
    };
    return part_svc_main(&s);
}
