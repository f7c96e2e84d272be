/*
 * What the four demo services share: configuration from the environment, a
 * small HTTP server (libmicrohttpd) with a route table and JSON replies,
 * the timeline log the run script merges, and SIGTERM handling that stops
 * the bus loop so evbus_close can drain.
 */
#ifndef TODO_DEMO_SVC_H
#define TODO_DEMO_SVC_H

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>

#include <cJSON.h>
#include <evbus/evbus.h>

/* ---- configuration */
/* getenv with a default. */
const char *svc_env(const char *name, const char *def);
/* Exits with a message when the variable is unset. */
const char *svc_env_required(const char *name);

/* ---- timeline: "HH:MM:SS.mmm <service> <what>" lines appended to the file
 * named by TIMELINE (stderr when unset); one write per line, so services
 * can share the file. */
void svc_timeline_open(const char *service);
void svc_timeline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- HTTP */
typedef struct {
    int status;
    char *body;               /* malloc'd; freed by the server */
    const char *content_type; /* static; default application/json */
} svc_reply_t;

/* A route handler: method "GET"/"POST", path without the query string,
 * body (NUL-terminated, may be empty). Fills reply. Runs on the server's
 * thread: one request at a time. */
typedef void (*svc_route_fn)(const char *method, const char *path,
                             const char *body, svc_reply_t *reply);

/* Starts the server on port with one catch-all handler (it routes by
 * itself). Exits on failure. */
void svc_http_start(int port, svc_route_fn fn);
void svc_http_stop(void);

/* Helpers for replies. */
void svc_reply_json(svc_reply_t *r, int status, char *json); /* takes json */
void svc_reply_cjson(svc_reply_t *r, int status, cJSON *obj); /* takes obj */
void svc_reply_text(svc_reply_t *r, int status, const char *content_type,
                    char *body); /* takes body */
void svc_reply_error(svc_reply_t *r, int status, const char *msg);

/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL on error. */
char *svc_read_file(const char *path);

/* "/todos/12/complete" against "/todos/" + number + "/complete": returns the
 * number or -1. */
long svc_path_id(const char *path, const char *prefix, const char *suffix);

/* ---- lifecycle */
/* Installs SIGTERM/SIGINT handlers that call evbus_stop(bus) and make
 * svc_running() return 0. bus may be NULL (publish-only services). */
void svc_signals(evbus_t *bus);
int svc_running(void);
/* Sleeps until SIGTERM/SIGINT. */
void svc_wait_for_signal(void);

/* Opens the bus from EVBUS_URL, logging library warnings to stderr. */
evbus_t *svc_open_bus(const char *service);

/* Opens (creating) a SQLite database with WAL and a busy timeout. */
sqlite3 *svc_open_db(const char *path);
/* sqlite3_exec that exits with the message on failure (schema setup). */
void svc_db_exec(sqlite3 *db, const char *sql);

/* "abcd1234" from an event id: the first 8 characters, for log lines. */
const char *svc_short_id(const evbus_event_t *ev, char buf[9]);

/* ---- producers (user-service, todo-service): outbox relay on the
 * service's database, publishing to the bus from EVBUS_URL, with a watcher
 * thread that writes a timeline line for every event the relay delivered. */
typedef struct svc_producer svc_producer_t;
svc_producer_t *svc_producer_start(const char *service, const char *db_path);
evbus_t *svc_producer_bus(svc_producer_t *p);
void svc_producer_notify(svc_producer_t *p); /* after a COMMIT */
void svc_producer_stop(svc_producer_t *p);   /* stops, flushes, closes */

/* ---- consumers (notify-service, analytics-service): every topic in
 * `topics` (NULL-terminated) as group `group`, each event processed once
 * through an inbox on db. apply runs inside the inbox transaction with
 * svc_db_lock held; it returns EVBUS_ACK / EVBUS_RETRY / EVBUS_DROP and may
 * write a short description of what it did into what[160] for the timeline.
 * Duplicates the inbox absorbed are recorded in the table svc_duplicates. */
typedef int (*svc_apply_fn)(sqlite3 *db, const evbus_event_t *ev, char *what);
/* Opens the bus, creates the inbox and subscribes; sets ready. */
void svc_consumer_start(const char *service, const char *group, sqlite3 *db,
                        const char *const *topics, svc_apply_fn apply);
/* Polls until SIGTERM, then closes the bus (drains) and the inbox. */
void svc_consumer_run(void);
evbus_t *svc_consumer_bus(void);
/* How many duplicates were absorbed (reads svc_duplicates; lock held by
 * the caller). */
long svc_duplicates(sqlite3 *db);
/* The ids of the absorbed duplicates, oldest first (caller owns the array;
 * lock held by the caller). */
cJSON *svc_duplicate_ids(sqlite3 *db);
/* 1 once the service subscribed (consumers) or opened its relay (producers);
 * /healthz answers 503 before. */
extern volatile int svc_ready;

/* One lock for everything a service keeps in SQLite: the HTTP thread and
 * the bus thread both use the one connection. */
extern pthread_mutex_t svc_db_lock;

#endif
