/*
 * Idempotent consumer ("inbox") on SQLite.
 *
 * Brokers deliver at least once and outbox relays may republish after a
 * crash, so a handler sees some events twice. The inbox records which events
 * a consumer has processed, in the same transaction as the processing, so a
 * redelivered event changes state exactly once:
 *
 *     BEGIN;
 *       evbus_inbox_claim(in, ev)  -> 1: first time, 0: duplicate
 *       ... the handler's writes ...
 *       evbus_outbox_add(ob, ...)     follow-up events (optional)
 *     COMMIT;                        or ROLLBACK: the claim is forgotten too
 *
 * evbus_inbox_handle() runs exactly that and maps the outcome to
 * EVBUS_ACK / EVBUS_RETRY / EVBUS_DROP.
 *
 * Table (created when missing):
 *   evbus_inbox(consumer, source, id, claimed_at,
 *               PRIMARY KEY(consumer, source, id)) WITHOUT ROWID
 * The dedup key is (consumer, source, id): CloudEvents ids are unique per
 * source, and each consumer (service, handler) keeps its own record.
 * Entries expire after opts.retention_ms: retention must exceed the longest
 * time a duplicate can arrive after the original (broker redelivery window,
 * relay outage), or that late duplicate is processed again.
 */
#ifndef EVBUS_INBOX_H
#define EVBUS_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "evbus/evbus.h"
#include "evbus/outbox.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evbus_inbox evbus_inbox_t;

/* Initialise with evbus_inbox_opts_init (it sets struct_size). */
typedef struct evbus_inbox_opts {
    size_t struct_size; /* set by evbus_inbox_opts_init */
    /* How long a claim is remembered, in milliseconds. A claim older than
     * this no longer makes an event a duplicate and is purged.
     * 0 = remember forever. Default 604800000 (7 days). */
    int64_t retention_ms;
    /* How often evbus_inbox_claim purges this consumer's expired claims
     * (inside the caller's transaction; the delete is bounded by the
     * expired rows). 0 = never automatically (call evbus_inbox_purge).
     * Default 60000. */
    int purge_interval_ms;
} evbus_inbox_opts_t;

/* Fills o with the defaults above and sets o->struct_size. Thread-safe. */
EVBUS_API void evbus_inbox_opts_init_sized(
    evbus_inbox_opts_t *o, size_t struct_size);
static inline void evbus_inbox_opts_init(evbus_inbox_opts_t *o)
{
    evbus_inbox_opts_init_sized(o, sizeof *o);
}

/*
 * Prepares the inbox of `consumer` (a non-empty name; the service or handler
 * that processes events) on the application's connection db: creates the
 * evbus_inbox table if missing and prepares the statements every claim
 * reuses. When the connection has no busy timeout yet, sets 5000 ms.
 * Returns NULL with a one-line reason in errstr on failure.
 * Ownership: consumer is copied; db stays the caller's and must outlive the
 * inbox; free the inbox with evbus_inbox_close before closing db.
 * Thread-safety: use an inbox only on the thread that uses db.
 */
EVBUS_API evbus_inbox_t *evbus_inbox_open(sqlite3 *db, const char *consumer,
                                          char *errstr, size_t errstr_size);

/* evbus_inbox_open with options (o NULL = defaults). o is copied. */
EVBUS_API evbus_inbox_t *evbus_inbox_open_opts(sqlite3 *db,
                                               const char *consumer,
                                               const evbus_inbox_opts_t *o,
                                               char *errstr,
                                               size_t errstr_size);

/*
 * Records that this consumer processes ev, keyed by (consumer, source, id),
 * in the transaction currently open on the connection (a ROLLBACK forgets
 * the claim, so a handler that fails leaves the event claimable for its
 * redelivery). Outside a transaction the claim commits on its own - then it
 * no longer rolls back with the work; avoid that.
 * Returns 1 the first time (or when the earlier claim is older than the
 * retention), 0 for a duplicate, or a negative error: EVBUS_EINVAL (NULL
 * argument, event without id or source), EVBUS_EBUSY (database locked past
 * the busy timeout), EVBUS_EIO (other SQLite error).
 * Ownership: ev stays the caller's. Thread-safety: the thread that uses db.
 */
EVBUS_API int evbus_inbox_claim(evbus_inbox_t *in, const evbus_event_t *ev);

/* Deletes this consumer's claims older than the retention now, in the
 * current transaction (or its own when none is open). Returns how many it
 * deleted (>= 0) or EVBUS_EBUSY / EVBUS_EIO. Same thread as db. */
EVBUS_API int evbus_inbox_purge(evbus_inbox_t *in);

/* The connection the inbox writes to. Same thread as the inbox. */
EVBUS_API sqlite3 *evbus_inbox_db(const evbus_inbox_t *in);

/* Finalizes the inbox's statements and frees it; claims stay in the table.
 * NULL is ignored. Same thread as db. */
EVBUS_API void evbus_inbox_close(evbus_inbox_t *in);

/*
 * The user's part of evbus_inbox_handle: apply ev to the database db (the
 * inbox's connection) and, when ob is not NULL, add follow-up events with
 * evbus_outbox_add(ob, ...). It runs inside the transaction, so it must not
 * BEGIN, COMMIT or ROLLBACK itself.
 * Returns EVBUS_ACK to commit, EVBUS_RETRY to roll back and have the event
 * delivered again later (also the answer to any failure: a database error,
 * a failed outbox add), EVBUS_DROP to roll back and dead-letter it. Any
 * other value is treated as EVBUS_RETRY.
 */
typedef evbus_result_t (*evbus_inbox_work_fn)(sqlite3 *db,
                                              const evbus_event_t *ev,
                                              evbus_outbox_t *ob,
                                              void *opaque);

/*
 * Processes ev exactly once for this consumer: in one SQLite transaction
 * (BEGIN IMMEDIATE, or a SAVEPOINT when the caller already has one open) it
 * claims ev, runs work (may be NULL: claim only) and commits, so the claim,
 * the work's writes and its outbox events commit or roll back together.
 * Use it from an evbus handler: return its result.
 *   first delivery, work returned EVBUS_ACK, commit ok -> EVBUS_ACK
 *   duplicate (already claimed)                        -> EVBUS_ACK, work
 *                                                         not called
 *   work returned EVBUS_DROP                           -> rolled back,
 *                                                         EVBUS_DROP
 *   work returned EVBUS_RETRY (or any other value),
 *   the claim, BEGIN or COMMIT failed (busy, I/O error),
 *   ob on another connection than the inbox            -> rolled back,
 *                                                         EVBUS_RETRY
 * Rolling back forgets the claim, so the retried delivery runs work again.
 * Ownership: nothing is kept. Thread-safety: the thread that uses the
 * inbox's connection (normally the evbus_poll thread).
 */
EVBUS_API evbus_result_t evbus_inbox_handle(evbus_inbox_t *in,
                                            evbus_outbox_t *ob,
                                            const evbus_event_t *ev,
                                            evbus_inbox_work_fn work,
                                            void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_INBOX_H */
