/*
 * shipping-service: a participant of the order saga.
 *   shipping.ship    ships the order - or refuses: the address "nowhere";
 *                    the address "slow" is never answered at all (this
 *                    service hangs on it), so the saga's deadline passes
 *   shipping.cancel  cancels the shipment; for a shipment that never
 *                    happened the participant helper answers at once and
 *                    refuses the shipment should it still arrive
 *   GET /shipments -> {shipped, cancelled, unanswered, byOrder: {id:
 *                     {shipped, cancelled, status}}}
 *   GET /healthz
 * Environment: EVBUS_URL, PORT, SHIPPING_DB, TIMELINE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "participant.h"

static int ship(sqlite3 *db, const evbus_event_t *cmd, evbus_saga_answer_t *a,
                void *opaque)
{
    (void)opaque;
    cJSON *data = NULL;
    const char *order = part_field(cmd, "orderId", &data);
    const char *address = part_field(cmd, "address", &data);
    int rc;
    if (!*address || strcmp(address, "nowhere") == 0) {
        char why[160];
        snprintf(why, sizeof why, "no courier delivers to '%s'", address);
        evbus_saga_answer_set_reason(a, why);
        svc_timeline("cannot ship %s: %s", order, why);
        rc = EVBUS_SAGA_FAILURE;
    } else {
        rc = part_exec(db, "INSERT INTO shipments(order_id, status)"
                            " VALUES(?1, 'shipped')", order);
        if (rc == EVBUS_OK) {
            char reply[96];
            snprintf(reply, sizeof reply, "{\"trackingId\":\"trk-%lld\"}",
                     (long long)sqlite3_last_insert_rowid(db));
            evbus_saga_answer_set_data(a, reply);
            svc_timeline("shipped %s to %s", order, address);
        }
    }
    cJSON_Delete(data);
    return rc;
}

static int cancel(sqlite3 *db, const evbus_event_t *cmd,
                  evbus_saga_answer_t *a, void *opaque)
{
    (void)a;
    (void)opaque;
    cJSON *data = NULL;
    const char *order = part_field(cmd, "orderId", &data);
    int rc = part_exec(db, "INSERT INTO cancellations(order_id) VALUES(?1)",
                        order);
    if (rc == EVBUS_OK)
        rc = part_exec(db, "UPDATE shipments SET status = 'cancelled'"
                            " WHERE order_id = ?1", order);
    if (rc == EVBUS_OK)
        svc_timeline("cancelled the shipment of %s", order);
    cJSON_Delete(data);
    return rc;
}

static int hangs(sqlite3 *db, const evbus_event_t *cmd)
{
    cJSON *data = NULL;
    int slow = strcmp(part_field(cmd, "address", &data), "slow") == 0;
    if (slow)
        part_exec(db, "INSERT INTO unanswered(order_id) VALUES(?1)",
                   part_field(cmd, "orderId", &data));
    cJSON_Delete(data);
    return slow;
}

static cJSON *list(sqlite3 *db)
{
    cJSON *out = cJSON_CreateObject(), *by = cJSON_CreateObject();
    sqlite3_stmt *st;
    long shipped = 0, cancelled = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT o.order_id,"
                           " (SELECT count(*) FROM shipments s WHERE"
                           "  s.order_id = o.order_id),"
                           " (SELECT count(*) FROM cancellations c WHERE"
                           "  c.order_id = o.order_id),"
                           " (SELECT status FROM shipments s WHERE s.order_id"
                           "  = o.order_id)"
                           " FROM (SELECT order_id FROM shipments UNION"
                           "  SELECT order_id FROM cancellations) o",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "shipped", sqlite3_column_int(st, 1));
            cJSON_AddNumberToObject(o, "cancelled", sqlite3_column_int(st, 2));
            const char *status = (const char *)sqlite3_column_text(st, 3);
            cJSON_AddStringToObject(o, "status", status ? status : "none");
            cJSON_AddItemToObject(by, (const char *)sqlite3_column_text(st, 0),
                                  o);
            shipped += sqlite3_column_int(st, 1);
            cancelled += sqlite3_column_int(st, 2);
        }
        sqlite3_finalize(st);
    }
    long unanswered = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM unanswered", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            unanswered = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    cJSON_AddNumberToObject(out, "shipped", shipped);
    cJSON_AddNumberToObject(out, "cancelled", cancelled);
    cJSON_AddNumberToObject(out, "unanswered", unanswered);
    cJSON_AddItemToObject(out, "byOrder", by);
    return out;
}

int main(void)
{
    static const part_svc_t s = {
        .service = "shipping-service",
        .consumer = "shipping",
        .action_topic = "shipping.ship",
        .comp_topic = "shipping.cancel",
        .action = ship,
        .compensate = cancel,
        .db_env = "SHIPPING_DB",
        .db_default = "shipping.db",
        .schema = "CREATE TABLE IF NOT EXISTS shipments(id INTEGER PRIMARY"
                  " KEY, order_id TEXT NOT NULL, status TEXT NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS cancellations(id INTEGER"
                  " PRIMARY KEY, order_id TEXT NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS unanswered(id INTEGER PRIMARY"
                  " KEY, order_id TEXT NOT NULL)",
        .list_path = "/shipments",
        .list = list,
        .ignore = hangs,
    };
    return part_svc_main(&s);
}
