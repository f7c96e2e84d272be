/*
 * The backend interface, for people who write backends.
 *
 * A backend is a versioned, append-only table of functions, modelled on
 * SQLite's sqlite3_vfs: `version` says which members exist, `priv_size` says
 * how much zeroed private state the core allocates per open bus, and
 * evbus_backend_register() adds a table to the registry that evbus_open
 * searches by URL scheme.
 *
 * Division of labour:
 *   - The core validates and encodes events, runs handlers, counts attempts,
 *     schedules retries, writes dead letters, runs delivery callbacks.
 *   - The backend moves bytes: it appends encoded events to a topic, hands
 *     out deliveries for a (topic, group) and settles them when the core says
 *     so. It never calls user code.
 *
 * Threading: the core calls publish/publish_async/flush from any thread the
 * application publishes on, and subscribe/fetch/record_attempts/settle/
 * unsubscribe from the polling thread (one at a time per bus; subscribe
 * also from the subscribing thread). A backend may run threads of its own;
 * when data may have become available it calls evbus_host_notify(), which
 * wakes a waiting evbus_poll.
 *
 * Back-pressure is the core's: it bounds the publishes a bus has not yet
 * seen confirmed (the max_pending and max_pending_bytes options) and
 * answers EVBUS_EAGAIN beyond that, the same on every backend. A backend's
 * publish_async therefore never blocks; if its own queue is full anyway it
 * returns EVBUS_EAGAIN at once.
 *
 * Attempts: an attempt is a handler call, never a hand-out. Before it runs
 * handlers the core calls record_attempts, and a backend that keeps state
 * stores the attempt number and retry context there (durably: a crash
 * right after must not lose it), so that a poison event that kills its
 * consumer reaches the dead-letter topic after max_attempts crashes, and
 * events that were fetched but never reached a handler are not counted.
 * fetch reports what was stored (evbus_msg_t.attempts ...).
 */
#ifndef EVBUS_BACKEND_H
#define EVBUS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/export.h"
#include "evbus/evbus.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of struct evbus_backend this header describes. Members are only
 * ever appended; a table with a lower version simply lacks the later ones. */
#define EVBUS_BACKEND_VERSION 2

/* The core's side of one open bus, passed to the backend. Opaque. */
typedef struct evbus_host evbus_host_t;

/* A parsed bus URL. Opaque; read with the evbus_url_* functions. */
typedef struct evbus_url evbus_url_t;

/*
 * One delivery handed from the backend to the core by fetch().
 * The backend fills it; the core owns the array, never the pointed-to data.
 * Everything the message points to must stay valid until the core settles it
 * (the core may keep a message for a long time while it waits to retry).
 *
 * Members are only appended. The array fetch() fills has elements of the
 * size this struct had in the version of this header the backend table
 * declares (`version`), so a backend built against an older header indexes
 * it correctly; members a table's version lacks read as zero.
 */
typedef struct evbus_msg {
    /* ---- version 1 ---- */
    const char *topic;        /* the topic it was read from */
    const void *payload;      /* wire bytes (normally CloudEvent JSON) */
    size_t len;
    /* Alternatively an already decoded event (e.g. a binary-mode Kafka
     * record). The core takes ownership and frees it with evbus_event_free.
     * When set, payload may be NULL. */
    evbus_event_t *event;
    /* When the backend knows the bytes are not an event, why; the core then
     * dead-letters them as undecodable. Static or backend-owned string. */
    const char *decode_error;
    /* Version 1 tables only: how often the broker has delivered this
     * message, 1 the first time, 0 when it does not count. Tables of
     * version 2 and later report `attempts` instead and leave this 0. */
    int delivery_count;
    /* The backend's own reference to the delivery (entry id, offset, row). */
    void *cookie;
    uint64_t cookie_u64;

    /* ---- version 2: the retry context, as record_attempts and
     * settle(EVBUS_SETTLE_RETRY) stored it; all 0 for a first delivery ---- */
    /* Handler calls already made on this event (recorded attempts). In
     * record_attempts: the number of the attempt about to start. */
    int attempts;
    /* The backoff delay that preceded this delivery (the delay_ms of the
     * last EVBUS_SETTLE_RETRY), for decorrelated jitter; 0 when none. */
    int prev_delay_ms;
    /* When the first handler call started, milliseconds since the Unix
     * epoch; 0 when none was recorded. Limits max_elapsed_ms. */
    int64_t first_attempt_ms;
} evbus_msg_t;

/* How the core settles a delivery. */
typedef enum {
    /* Done with it: handled (ACK) or written to the dead-letter topic.
     * Remove it from the group's backlog. */
    EVBUS_SETTLE_ACK = 0,
    /* Deliver it again after delay_ms, to any member of the group, keeping
     * its recorded attempts and first_attempt_ms and storing delay_ms as
     * its prev_delay_ms. Only used when the backend declares
     * EVBUS_FEAT_DELAYED_RETRY; otherwise the core keeps the message and
     * redelivers it itself. */
    EVBUS_SETTLE_RETRY = 1,
    /* Give it back (the subscription stops, evbus_stop, or a dead-letter
     * write that keeps failing): it must be delivered again to some member
     * later, with its recorded attempts unchanged. */
    EVBUS_SETTLE_RELEASE = 2
} evbus_settle_t;

/* Completion of publish_async: call exactly once per accepted call, from
 * any thread, with EVBUS_OK or the error. token is the one passed in. */
typedef void (*evbus_publish_done_fn)(void *token, int err);

typedef struct evbus_backend evbus_backend_t;

struct evbus_backend {
    int version;          /* EVBUS_BACKEND_VERSION when built */
    const char *scheme;   /* URL scheme, e.g. "redis" */
    size_t priv_size;     /* bytes of zeroed private state per bus */
    unsigned features;    /* EVBUS_FEAT_* */

    /* ---- version 1 ---- */

    /*
     * Connects. priv is priv_size zeroed bytes, owned by the core. Read
     * options with evbus_url_param() (every option read is marked as
     * understood; the core rejects the URL if any is left over).
     * Returns EVBUS_OK or an error with a one-line reason in errstr.
     * On failure the backend has released whatever it acquired; close is
     * not called.
     */
    int (*open)(void *priv, evbus_host_t *host, const evbus_url_t *url,
                char *errstr, size_t errstr_size);

    /* Releases everything. Called once, after every subscription was
     * unsubscribed and flush returned. Any publish_async still outstanding
     * is completed (done called) with an error before close returns. */
    void (*close)(void *priv);

    /*
     * Appends payload to topic and returns when the broker has durably
     * accepted it. ev is the decoded event (NULL for evbus_publish_raw);
     * backends may read it (e.g. partitionkey) but must not keep it.
     * Returns EVBUS_OK or an error; a request whose outcome is unknown is an
     * error (EVBUS_ETIMEDOUT / EVBUS_ECONN), never success.
     */
    int (*publish)(void *priv, const char *topic, const evbus_event_t *ev,
                   const void *payload, size_t len);

    /*
     * Optional (NULL = the core calls publish and completes at once).
     * Starts a publish and returns; calls done(token, err) exactly once,
     * later or before returning. Returns EVBUS_OK when started (done will
     * be called), or an error and done is not called. The payload must be
     * copied if it is needed after return.
     */
    int (*publish_async)(void *priv, const char *topic,
                         const evbus_event_t *ev, const void *payload,
                         size_t len, evbus_publish_done_fn done, void *token);

    /* Optional. Waits until every started publish_async completed, up to
     * timeout_ms (-1 = no limit). EVBUS_OK or EVBUS_ETIMEDOUT. */
    int (*flush)(void *priv, int timeout_ms);

    /*
     * Starts delivering topic to this bus as a member of group. *bsub
     * receives the backend's subscription handle. Ask for events with
     * fetch(). Called from the polling thread or the subscribing thread.
     */
    int (*subscribe)(void *priv, const char *topic, const char *group,
                     void **bsub, char *errstr, size_t errstr_size);

    /* Stops the subscription. Every message it fetched has been settled
     * (acked, retried or released) before this is called. */
    void (*unsubscribe)(void *priv, void *bsub);

    /*
     * Non-blocking: fills up to max messages for the subscription and
     * returns how many (0 = none ready now), or a negative error (logged and
     * retried later by the core). When nothing is ready, the backend must
     * call evbus_host_notify() once something may be, or the core will only
     * look again after its idle interval.
     */
    int (*fetch)(void *priv, void *bsub, evbus_msg_t *out, int max);

    /* Settles one fetched message (see evbus_settle_t). delay_ms is only
     * meaningful for EVBUS_SETTLE_RETRY. Returns EVBUS_OK or an error; the
     * core retries a failed ACK later rather than dropping it. */
    int (*settle)(void *priv, void *bsub, evbus_msg_t *msg, evbus_settle_t how,
                  int delay_ms);

    /* Optional. Checks the broker; EVBUS_OK or an error with the reason. */
    int (*health)(void *priv, char *errstr, size_t errstr_size);

    /* Optional. Features of this open bus when they differ from `features`
     * (a wrapper backend reports its inner backend's). Called once, right
     * after open; the core uses that word for the bus's whole life. */
    unsigned (*features_of)(void *priv);

    /* ---- version 2 ---- */

    /*
     * Optional. Records that the handler is about to be called for each of
     * msgs[0..n-1] (all of one subscription): msgs[i]->attempts is the
     * number of the attempt about to start (1 the first time),
     * first_attempt_ms and prev_delay_ms its context. Returns EVBUS_OK when
     * all are recorded durably enough to survive a crash of this process
     * right after, or an error (then the core runs none of those handlers
     * and releases the messages). A later fetch of the same event reports
     * what was stored. Backends without state of their own (memory://)
     * leave it NULL: the core then counts attempts in memory.
     */
    int (*record_attempts)(void *priv, void *bsub, evbus_msg_t *const *msgs,
                           int n);
};

/*
 * Adds a backend to the registry so evbus_open can find it by scheme. The
 * table must stay valid until the process ends (normally a static const).
 * Returns EVBUS_OK, EVBUS_EINVAL for a table lacking required members or a
 * version this library does not know, or EVBUS_EBUSY when the scheme is
 * taken. Built-in backends are registered already.
 * Thread-safe.
 */
EVBUS_API int evbus_backend_register(const evbus_backend_t *backend);

/* The registered backend for scheme, or NULL. Thread-safe. */
EVBUS_API const evbus_backend_t *evbus_backend_find(const char *scheme);

/* The size of one element of the evbus_msg_t array that be's fetch fills
 * (it depends on be->version), for wrapper backends that call another
 * backend's fetch. Thread-safe. */
EVBUS_API size_t evbus_backend_msg_size(const evbus_backend_t *be);

/* ---- what the core offers backends */

/* Wakes the bus's poller because fetch may now return something. Cheap;
 * call it from any thread, as often as needed. */
EVBUS_API void evbus_host_notify(evbus_host_t *host);

/* Logs through the application's log callback with the backend's scheme as
 * the component. printf-style. Any thread. */
EVBUS_API void evbus_host_log(evbus_host_t *host, int level, const char *fmt,
                              ...) __attribute__((format(printf, 3, 4)));

/* The most bytes one encoded event may have on this bus (max_event_bytes).
 * Any thread. */
EVBUS_API size_t evbus_host_max_event_bytes(const evbus_host_t *host);

/* The most unconfirmed publishes the core lets reach this backend at once
 * (max_pending): a backend sizes its own queues at least this large so
 * that they never fill before the core's bound. Any thread. */
EVBUS_API size_t evbus_host_max_pending(const evbus_host_t *host);

/* Counts one injected fault in the bus metrics (faults_injected); for
 * fault-injecting wrappers. Any thread. */
EVBUS_API void evbus_host_count_fault(evbus_host_t *host);

/* ---- parsed URLs. Strings are owned by the URL and live as long as it.
 * Every accessor below may be called from any thread: a URL is read-only
 * after parsing except for the "understood" marks, which are atomic. */

/* Parses a bus URL, for wrapper backends that open an inner backend with a
 * URL of their own. NULL with the reason in errstr when malformed.
 * Ownership: the caller frees it with evbus_url_free. Thread-safe. */
EVBUS_API evbus_url_t *evbus_url_new(const char *url, char *errstr,
                                     size_t errstr_size);
EVBUS_API void evbus_url_free(evbus_url_t *url);
/* The scheme, lower-cased ("faulty+redis"). */
EVBUS_API const char *evbus_url_scheme(const evbus_url_t *url);
/* The first query parameter nobody read or marked, or NULL. */
EVBUS_API const char *evbus_url_unused(const evbus_url_t *url);

/* Everything after "scheme://" up to '?' (authority and path), e.g.
 * "user:pw@host:6379/2", "/path/bus.db", "NAME". Never NULL. */
EVBUS_API const char *evbus_url_rest(const evbus_url_t *url);
/* Authority split into parts; NULL when absent. host:port lists (kafka)
 * stay whole in evbus_url_hostlist(). */
EVBUS_API const char *evbus_url_user(const evbus_url_t *url);
EVBUS_API const char *evbus_url_password(const evbus_url_t *url);
EVBUS_API const char *evbus_url_host(const evbus_url_t *url);
EVBUS_API int evbus_url_port(const evbus_url_t *url); /* 0 when absent */
EVBUS_API const char *evbus_url_hostlist(const evbus_url_t *url);
EVBUS_API const char *evbus_url_path(const evbus_url_t *url); /* from '/' */

/* Value of query parameter key (percent-decoded) or NULL, and marks it as
 * understood. */
EVBUS_API const char *evbus_url_param(const evbus_url_t *url, const char *key);

/* Integer parameter: *out = value or def when absent. EVBUS_OK, or
 * EVBUS_EOPTION with a message naming the key when it is not an integer
 * within [min, max]. */
EVBUS_API int evbus_url_param_int(const evbus_url_t *url, const char *key,
                                  long long def, long long min, long long max,
                                  long long *out, char *errstr,
                                  size_t errstr_size);

/* Iterates all parameters (for prefixed pass-through such as kafka.*):
 * returns EVBUS_OK and fills key/value for index i, or EVBUS_ENOTFOUND past
 * the end. Does not mark anything; call evbus_url_mark() for each one
 * consumed. */
EVBUS_API int evbus_url_param_at(const evbus_url_t *url, size_t i,
                                 const char **key, const char **value);
EVBUS_API void evbus_url_mark(const evbus_url_t *url, const char *key);
/* 1 when key is present and something already read or marked it - the
 * core reads its own options (max_pending, names, ...) before the
 * backend's open - else 0. Wrapper backends use it to pass on only the
 * options meant for their inner backend. */
EVBUS_API int evbus_url_param_is_marked(const evbus_url_t *url,
                                        const char *key);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_BACKEND_H */
