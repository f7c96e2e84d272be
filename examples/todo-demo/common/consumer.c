/* The consuming side of notify-service and analytics-service: subscribe to
 * a list of topics as one consumer group, process each event exactly once in
 * effect through an inbox (evbus_inbox_handle), and write what happened to
 * the timeline, duplicates included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/inbox.h>

#include "svc.h"

static evbus_t *bus;
static evbus_inbox_t *inbox;
static sqlite3 *cdb;
static svc_apply_fn apply_fn;
static const char *consumer_service;

typedef struct {
    int ran; /* the inbox called work: first delivery */
    char what[160];
} work_ctx_t;

static evbus_result_t work(sqlite3 *db, const evbus_event_t *ev,
                           evbus_outbox_t *ob, void *opaque)
{
    (void)ob;
    work_ctx_t *c = opaque;
    c->ran = 1;
    return (evbus_result_t)apply_fn(db, ev, c->what);
}

static void record_duplicate(const evbus_event_t *ev)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(cdb,
                           "INSERT INTO svc_duplicates(event_id, source, type, at) "
                           "VALUES(?, ?, ?, strftime('%s','now'))",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, evbus_event_id(ev), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, evbus_event_source(ev), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, evbus_event_type(ev), -1, SQLITE_TRANSIENT);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    work_ctx_t c = {0, ""};
    pthread_mutex_lock(&svc_db_lock);
    evbus_result_t r = evbus_inbox_handle(inbox, NULL, ev, work, &c);
    if (r == EVBUS_ACK && !c.ran)
        record_duplicate(ev);
    pthread_mutex_unlock(&svc_db_lock);

    char id[9];
    svc_short_id(ev, id);
    if (r == EVBUS_ACK && !c.ran)
        svc_timeline("duplicate ignored %s id=%s (inbox already has it)",
                     evbus_event_type(ev), id);
    else if (r == EVBUS_ACK)
        svc_timeline("consumed %s id=%s -> %s", evbus_event_type(ev), id, c.what);
    else
        svc_timeline("%s %s id=%s (attempt %d)",
                     r == EVBUS_RETRY ? "will retry" : "dead-lettered",
                     evbus_event_type(ev), id, evbus_delivery_attempt());
    return r;
}

long svc_duplicates(sqlite3 *db)
{
    sqlite3_stmt *st;
    long n = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM svc_duplicates", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

cJSON *svc_duplicate_ids(sqlite3 *db)
{
    sqlite3_stmt *st;
    cJSON *arr = cJSON_CreateArray();
    if (sqlite3_prepare_v2(db, "SELECT event_id FROM svc_duplicates ORDER BY rowid",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW)
            cJSON_AddItemToArray(arr, cJSON_CreateString(
                                          (const char *)sqlite3_column_text(st, 0)));
        sqlite3_finalize(st);
    }
    return arr;
}

void svc_consumer_start(const char *service, const char *group, sqlite3 *db,
                        const char *const *topics, svc_apply_fn apply)
{
    consumer_service = service;
    cdb = db;
    apply_fn = apply;
    svc_db_exec(db, "CREATE TABLE IF NOT EXISTS svc_duplicates("
                    "event_id TEXT, source TEXT, type TEXT, at INTEGER)");
    char err[256];
    pthread_mutex_lock(&svc_db_lock);
    inbox = evbus_inbox_open(db, group, err, sizeof err);
    pthread_mutex_unlock(&svc_db_lock);
    if (!inbox) {
        fprintf(stderr, "%s: cannot open the inbox: %s\n", service, err);
        exit(1);
    }
    bus = svc_open_bus(service);
    svc_signals(bus);
    for (const char *const *t = topics; *t; t++) {
        char why[512];
        if (!evbus_subscribe_opts(bus, *t, group, NULL, on_event, NULL, why,
                                  sizeof why)) {
            fprintf(stderr, "%s: cannot subscribe to %s: %s\n", service, *t,
                    why);
            exit(1);
        }
    }
    svc_timeline("subscribed as group \"%s\" on %s", group, evbus_scheme(bus));
    svc_ready = 1;
}

void svc_consumer_run(void)
{
    /* evbus_poll with a short wait rather than evbus_run: a SIGTERM that
     * arrives before the loop starts is still seen through svc_running(). */
    while (svc_running()) {
        int rc = evbus_poll(bus, 200);
        if (rc < 0 && rc != EVBUS_EBUSY && svc_running()) {
            fprintf(stderr, "%s: poll: %s\n", consumer_service,
                    evbus_strerror(rc));
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    svc_timeline("SIGTERM: draining and closing the bus");
    evbus_close(bus); /* lets a running handler finish; unsettled events
                         go back to the broker for the group */
    bus = NULL;
    pthread_mutex_lock(&svc_db_lock);
    evbus_inbox_close(inbox);
    inbox = NULL;
    pthread_mutex_unlock(&svc_db_lock);
}

evbus_t *svc_consumer_bus(void)
{
    return bus;
}
