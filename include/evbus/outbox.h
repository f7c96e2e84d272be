/*
 * Transactional outbox and its relay, on SQLite.
 *
 * The problem: a service that writes its database and then publishes an
 * event can crash in between (the event is lost) or publish and then roll
 * back (the event lies). The outbox removes the gap: the event is written
 * into a table of the service's own database, in the same transaction as the
 * business change, so it exists if and only if the change committed. A relay
 * reads that table in commit order and publishes each event to the bus,
 * marking a row delivered only after the broker accepted it.
 *
 * Guarantees:
 *   - A rolled-back transaction publishes nothing.
 *   - A committed event is published at least once, in commit order
 *     (seq order: SQLite runs one writer at a time). A relay killed at any
 *     point and restarted may publish an event again; its id is unchanged,
 *     so an inbox (inbox.h) on the consumer side absorbs the duplicate.
 *   - Only one relay per database publishes at a time: relays take an
 *     exclusive advisory lock (flock) on "<database file>-evbus-relay.lock".
 *     The kernel drops it when the holder's process dies, so a standby relay
 *     takes over at once after a crash, and no clock or lease expiry can let
 *     two publish together.
 *
 * Tables (created when missing, in the database's main schema):
 *   evbus_outbox(seq INTEGER PRIMARY KEY, topic, event (the CloudEvents
 *                JSON), created_at, failed)
 *   evbus_outbox_relay(id = 1, delivered_seq, delivered_at): the relay's
 *                progress; rows with seq <= delivered_seq were accepted by
 *                the broker (or parked).
 * Times are Unix milliseconds. `failed` holds the reason for a row the relay
 * can never publish (undecodable JSON, rejected by the broker); such rows are
 * kept, logged, and skipped. Rows are deleted only by the relay (retention),
 * which always keeps the newest row so that seq values are never reused; do
 * not delete outbox rows yourself.
 *
 * In-process hand-off: while a relay of this process holds the lock for a
 * database file, evbus_outbox_add on that file also hands the relay a copy of
 * the event object, so the relay need not decode the row's JSON again. The
 * relay still reads every row from the database and uses a copy only when
 * its JSON equals the row byte for byte; at most 8 MB wait this way.
 *
 * Recommended database settings: PRAGMA journal_mode=WAL (the relay reads
 * while the service writes) and synchronous=NORMAL or FULL.
 */
#ifndef EVBUS_OUTBOX_H
#define EVBUS_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "evbus/evbus.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------- outbox */

typedef struct evbus_outbox evbus_outbox_t;

/*
 * Prepares an outbox on the application's connection db: creates the
 * evbus_outbox table if missing and prepares the insert statement (reused by
 * every evbus_outbox_add). When the connection has no busy timeout yet, sets
 * one of 5000 ms so a relay holding the write lock briefly does not turn into
 * SQLITE_BUSY errors.
 * Returns NULL with a one-line reason in errstr (may be NULL when
 * errstr_size is 0) on failure.
 * Ownership: db stays the caller's and must outlive the outbox; the caller
 * frees the outbox with evbus_outbox_close before closing db.
 * Thread-safety: an outbox is used only on the thread that uses db (SQLite
 * connection rules); distinct outboxes on distinct connections are
 * independent.
 */
EVBUS_API evbus_outbox_t *evbus_outbox_open(sqlite3 *db, char *errstr,
                                            size_t errstr_size);

/*
 * Writes ev (encoded with evbus_event_to_json) for topic into the outbox, as
 * part of the transaction currently open on the connection: a ROLLBACK
 * removes it, a COMMIT makes it visible to the relay. Outside a transaction
 * the insert commits on its own (SQLite autocommit) - legal, but it no
 * longer ties the event to a business change.
 * The event is validated first. The bus's max_event_bytes is not known here;
 * an event the broker later refuses as too big is parked by the relay.
 * Returns EVBUS_OK, EVBUS_EINVAL (NULL argument, bad topic, invalid event),
 * EVBUS_ENOMEM, EVBUS_EBUSY (database locked past the busy timeout) or
 * EVBUS_EIO (other SQLite error; sqlite3_errmsg(db) says which).
 * Ownership: topic and ev stay the caller's and are not referenced after the
 * call.
 * Thread-safety: the thread that uses db.
 */
EVBUS_API int evbus_outbox_add(evbus_outbox_t *ob, const char *topic,
                               const evbus_event_t *ev);

/* The connection the outbox writes to. Not owned by the outbox user.
 * Same thread as the outbox. */
EVBUS_API sqlite3 *evbus_outbox_db(const evbus_outbox_t *ob);

/* Finalizes the outbox's statements and frees it. The connection and the
 * rows already written are untouched. NULL is ignored. Same thread as db. */
EVBUS_API void evbus_outbox_close(evbus_outbox_t *ob);

/* ------------------------------------------------------------------ relay */

typedef struct evbus_relay evbus_relay_t;

/* Initialise with evbus_relay_opts_init (it sets struct_size) and change
 * what you need; fields added in later releases keep their defaults. */
typedef struct evbus_relay_opts {
    size_t struct_size; /* set by evbus_relay_opts_init */
    /* Rows published per batch: published with evbus_publish_async, then one
     * evbus_flush, then recorded as delivered in one transaction. After a
     * failed publish the relay continues with batches of an eighth of the
     * size and doubles back to this. Default 512. */
    int batch_size;
    /* Longest sleep of the background thread when the outbox is empty. It
     * polls: after a batch it looks again at once; when idle it waits 1 ms,
     * doubling up to this value (evbus_relay_notify wakes it earlier).
     * A standby relay (another holds the lock) retries the lock at this
     * interval. Default 100. */
    int poll_interval_ms;
    /* How long rows stay in the table, counted from when they were written;
     * a row is purged only once delivered (audit, debugging). 0 deletes rows
     * as soon as they are delivered. Default 3600000 (one hour). */
    int64_t retention_ms;
    /* How often the relay purges expired delivered rows. Default 10000. */
    int purge_interval_ms;
    /* How long one batch waits for the broker's acknowledgements before the
     * unacknowledged rows are treated as failed (republished later).
     * Default 10000. */
    int flush_timeout_ms;
    /* SQLite busy timeout of the relay's own connection. Default 5000. */
    int busy_timeout_ms;
    /* Backoff of the background thread while publishing fails (broker down).
     * NULL = 100 ms doubling up to 5000 ms, full jitter. The relay never
     * gives up: max_attempts and max_elapsed_ms are ignored. Copied. */
    const evbus_retry_policy_t *retry;
} evbus_relay_opts_t;

/* Fills o with the defaults above and sets o->struct_size. Thread-safe. */
EVBUS_API void evbus_relay_opts_init_sized(
    evbus_relay_opts_t *o, size_t struct_size);
static inline void evbus_relay_opts_init(evbus_relay_opts_t *o)
{
    evbus_relay_opts_init_sized(o, sizeof *o);
}

/*
 * Opens a relay that publishes the outbox of the SQLite database at
 * db_path (a file name, or a "file:" URI) to bus. The relay opens its own
 * connection (the evbus_outbox table is created if missing) and does not
 * publish anything until evbus_relay_run_once or evbus_relay_start.
 * Returns NULL with a one-line reason in errstr on failure.
 * Ownership: db_path is copied; bus stays the caller's and must outlive the
 * relay. Release the relay with evbus_relay_close.
 * Note: the relay's batches call evbus_flush on the whole bus, so delivery
 * callbacks of other asynchronous publishes on the same bus may run on the
 * relay's thread, and the first error of a callback-less publish may be
 * consumed by the relay's flush instead of yours; give the relay a bus of its
 * own when that matters. (The relay itself never relies on evbus_flush's
 * result: each event's own delivery callback decides.)
 * Thread-safe (distinct relays are independent).
 */
EVBUS_API evbus_relay_t *evbus_relay_open(const char *db_path, evbus_t *bus,
                                         char *errstr, size_t errstr_size);

/* evbus_relay_open with options (o NULL = defaults). o and the policy it
 * points to are copied; an o not initialised by evbus_relay_opts_init is
 * refused (NULL, with the reason). */
EVBUS_API evbus_relay_t *evbus_relay_open_opts(const char *db_path,
                                              evbus_t *bus,
                                              const evbus_relay_opts_t *o,
                                              char *errstr,
                                              size_t errstr_size);

/*
 * Publishes up to max pending events (max <= 0: all that are pending), in
 * commit order and in batches, and records as delivered those the broker
 * accepted (the mark only moves over an unbroken run of accepted rows: after
 * a failed one, the rest of the batch is published again next time, so the
 * last copy of every event arrives in commit order); purges expired
 * delivered rows when due. Does not sleep or retry: a failed publish leaves
 * its row pending for the next call.
 * Returns how many events it published (>= 0; 0 when the outbox is empty or
 * another relay holds the lock), or, when nothing could be published, a
 * negative error (the broker's, EVBUS_EBUSY / EVBUS_EIO from SQLite).
 * Thread-safe: calls are serialized with each other and with the background
 * thread.
 */
EVBUS_API int evbus_relay_run_once(evbus_relay_t *r, int max);

/*
 * Starts a background thread that runs the relay until evbus_relay_stop:
 * batch after batch while rows are pending, polling with the idle backoff
 * described at poll_interval_ms, and retrying with opts.retry while
 * publishing fails. Returns EVBUS_OK, EVBUS_ESTATE when already started, or
 * EVBUS_ENOMEM when no thread could be created. Thread-safe.
 */
EVBUS_API int evbus_relay_start(evbus_relay_t *r);

/* Wakes the background thread now (call after committing an outbox write to
 * cut the polling delay). Cheap; any thread. */
EVBUS_API void evbus_relay_notify(evbus_relay_t *r);

/*
 * Stops the background thread and waits for it (it finishes the batch it is
 * in; a batch waits at most flush_timeout_ms for the broker). Returns
 * EVBUS_OK, also when the thread was not running. Any thread except the
 * relay's own.
 */
EVBUS_API int evbus_relay_stop(evbus_relay_t *r);

/* 1 while this relay holds the database's relay lock (it is the one that
 * publishes), else 0. Any thread. */
EVBUS_API int evbus_relay_is_active(const evbus_relay_t *r);

/* Initialise with evbus_relay_stats_init before evbus_relay_stats. */
typedef struct evbus_relay_stats {
    size_t struct_size;
    uint64_t published; /* events the broker accepted, recorded delivered */
    uint64_t failed;    /* publish attempts that failed (will be retried) */
    uint64_t parked;    /* rows set aside as never publishable */
    uint64_t purged;    /* delivered rows deleted after the retention */
    uint64_t handed_off; /* rows published from the event object that an
                            evbus_outbox_add in this process handed over
                            (verified byte-for-byte against the row) instead
                            of decoding the row's JSON */
} evbus_relay_stats_t;

/* Zeroes out and sets its struct_size. Thread-safe. */
EVBUS_API void evbus_relay_stats_init_sized(
    evbus_relay_stats_t *out, size_t struct_size);
static inline void evbus_relay_stats_init(evbus_relay_stats_t *out)
{
    evbus_relay_stats_init_sized(out, sizeof *out);
}

/* Copies the relay's counters into out (initialised by
 * evbus_relay_stats_init). EVBUS_OK or EVBUS_EINVAL. Any thread. */
EVBUS_API int evbus_relay_stats(const evbus_relay_t *r,
                                evbus_relay_stats_t *out);

/* Stops the thread if running, releases the lock, closes the relay's
 * connection and frees it. The bus is not closed. NULL is ignored.
 * Any thread except the relay's own. */
EVBUS_API void evbus_relay_close(evbus_relay_t *r);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_OUTBOX_H */
