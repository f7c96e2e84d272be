/* The publishing side of user-service and todo-service: an outbox relay on
 * the service's own database, and a watcher that tells the timeline which
 * events the relay delivered (the relay has no per-event callback, so the
 * watcher reads its progress mark and the rows below it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/outbox.h>

#include "svc.h"

struct svc_producer {
    evbus_t *bus;
    evbus_relay_t *relay;
    char *db_path;
    pthread_t watcher;
    volatile int stop;
};

/* delivered_seq from the relay's progress row; -1 while there is none. */
static sqlite3_int64 delivered_seq(sqlite3 *db)
{
    sqlite3_stmt *st;
    sqlite3_int64 seq = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT delivered_seq FROM evbus_outbox_relay "
                           "WHERE id = 1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return seq;
}

static void log_delivered(sqlite3 *db, sqlite3_int64 from, sqlite3_int64 to)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT topic, event, failed FROM evbus_outbox "
                           "WHERE seq > ? AND seq <= ? ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 0);
        const char *json = (const char *)sqlite3_column_text(st, 1);
        const char *failed = (const char *)sqlite3_column_text(st, 2);
        evbus_event_t *ev =
            json ? evbus_event_from_json(json, strlen(json), NULL, 0) : NULL;
        char id[9];
        if (failed)
            svc_timeline("relay PARKED an event on %s: %s", topic, failed);
        else if (ev)
            svc_timeline("relay: broker acked %s id=%s %s", evbus_event_type(ev),
                         svc_short_id(ev, id),
                         evbus_event_data(ev) ? (const char *)evbus_event_data(ev)
                                              : "");
        evbus_event_free(ev);
    }
    sqlite3_finalize(st);
}

static void *watch(void *arg)
{
    svc_producer_t *p = arg;
    sqlite3 *db;
    if (sqlite3_open_v2(p->db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 1000);
    sqlite3_int64 seen = delivered_seq(db); /* older rows were logged before */
    while (!p->stop) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        sqlite3_int64 now = delivered_seq(db);
        if (now > seen) {
            log_delivered(db, seen < 0 ? 0 : seen, now);
            seen = now;
        }
    }
    sqlite3_close(db);
    return NULL;
}

svc_producer_t *svc_producer_start(const char *service, const char *db_path)
{
    svc_producer_t *p = calloc(1, sizeof *p);
    if (!p)
        exit(1);
    p->db_path = strdup(db_path);
    p->bus = svc_open_bus(service);
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.poll_interval_ms = 50;
    /* While the broker is down the relay backs off up to 1 s, not 5 s: the
     * demo wants waiting events to move soon after the broker is back. */
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_ms = 1000;
    o.retry = &retry;
    char err[256];
    p->relay = evbus_relay_open_opts(db_path, p->bus, &o, err, sizeof err);
    if (!p->relay) {
        fprintf(stderr, "%s: cannot create the outbox relay: %s\n", service, err);
        exit(1);
    }
    int rc = evbus_relay_start(p->relay);
    if (rc != EVBUS_OK) {
        fprintf(stderr, "%s: cannot start the relay: %s\n", service,
                evbus_strerror(rc));
        exit(1);
    }
    pthread_create(&p->watcher, NULL, watch, p);
    return p;
}

evbus_t *svc_producer_bus(svc_producer_t *p)
{
    return p->bus;
}

void svc_producer_notify(svc_producer_t *p)
{
    evbus_relay_notify(p->relay);
}

void svc_producer_stop(svc_producer_t *p)
{
    if (!p)
        return;
    evbus_relay_close(p->relay); /* finishes its batch, releases the lock */
    /* Let the watcher see the last mark before it goes. */
    struct timespec ts = {0, 60 * 1000 * 1000};
    nanosleep(&ts, NULL);
    p->stop = 1;
    pthread_join(p->watcher, NULL);
    evbus_close(p->bus);
    free(p->db_path);
    free(p);
}
