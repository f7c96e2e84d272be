/*
 * libevbus - publish and consume CloudEvents over any broker.
 *
 * This is the umbrella header: version, errors, logging, the bus, publishing,
 * subscriptions and the poll loop. It includes the event object (event.h) and
 * the backoff policy (retry.h) because the bus API uses them.
 *
 * Conventions used in every comment below:
 *   Ownership   - who frees what a function takes or returns.
 *   Thread-safe - whether several threads may call it on the same object at
 *                 once. "Any thread" means yes without restriction.
 */
#ifndef EVBUS_EVBUS_H
#define EVBUS_EVBUS_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/export.h"
#include "evbus/version.h"
#include "evbus/event.h"
#include "evbus/retry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

/*
 * One table gives the enum, evbus_strerror() and evbus_err_name().
 * 0 is success; every error is negative. Codes are stable across releases;
 * new ones are only appended.
 *   X(NAME, value, retriable, message)
 */
#define EVBUS_ERRNO_MAP(X)                                                     \
    X(OK,          0, 0, "success")                                            \
    X(EINVAL,     -1, 0, "invalid argument")                                   \
    X(ENOMEM,     -2, 1, "out of memory")                                      \
    X(EURL,       -3, 0, "malformed bus URL")                                  \
    X(ENOBACKEND, -4, 0, "no backend for this URL scheme")                     \
    X(EOPTION,    -5, 0, "unknown or invalid option")                          \
    X(EDECODE,    -6, 0, "malformed event")                                    \
    X(ETOOBIG,    -7, 0, "event exceeds the size limit")                       \
    X(ECONN,      -8, 1, "cannot reach the broker")                            \
    X(EIO,        -9, 1, "broker or storage I/O error")                        \
    X(ETIMEDOUT, -10, 1, "timed out")                                          \
    X(EAGAIN,    -11, 1, "temporary failure, try again")                       \
    X(EAUTH,     -12, 0, "authentication or authorization failed")             \
    X(ECLOSED,   -13, 0, "bus is closing or closed")                           \
    X(ENOTSUP,   -14, 0, "not supported by this backend")                      \
    X(ESTATE,    -15, 0, "call not valid in the current state")                \
    X(EBUSY,     -16, 1, "resource busy")                                      \
    X(ENOTFOUND, -17, 0, "not found")                                          \
    X(EREJECTED, -18, 0, "broker rejected the request permanently")            \
    X(EBREAKER,  -19, 1, "circuit breaker is open")                            \
    X(EINTERNAL, -20, 0, "internal error")

typedef enum {
#define EVBUS_ERR_ENUM_(name, val, retr, msg) EVBUS_##name = (val),
    EVBUS_ERRNO_MAP(EVBUS_ERR_ENUM_)
#undef EVBUS_ERR_ENUM_
} evbus_err_t;

/* Human-readable message for an error code; never NULL ("unknown error" for
 * codes outside the table). Returns a static string. Thread-safe. */
EVBUS_API const char *evbus_strerror(int err);

/* Symbolic name of an error code ("EVBUS_ECONN"); never NULL. Static string.
 * Thread-safe. */
EVBUS_API const char *evbus_err_name(int err);

/* 1 when an operation that failed with err may succeed if tried again later
 * (connection lost, timeout, broker busy), 0 otherwise. Thread-safe. */
EVBUS_API int evbus_err_retriable(int err);

/* ----------------------------------------------------------------- version */

/* The library's version as "MAJOR.MINOR.PATCH". Static string. Thread-safe.
 * Compare with EVBUS_VERSION_STRING to detect header/library mismatch. */
EVBUS_API const char *evbus_version(void);

/* EVBUS_VERSION_NUM of the linked library. Thread-safe. */
EVBUS_API int evbus_version_num(void);

/* ----------------------------------------------------------------- logging */

typedef enum {
    EVBUS_LOG_ERROR = 3,
    EVBUS_LOG_WARN = 4,
    EVBUS_LOG_INFO = 6,
    EVBUS_LOG_DEBUG = 7
} evbus_log_level_t;

/* component: "core", "sqlite", "redis", ... msg: one line, no newline.
 * Both strings are only valid during the call. */
typedef void (*evbus_log_fn)(int level, const char *component, const char *msg,
                             void *opaque);

/*
 * Installs the process-wide log callback. The library is silent until one is
 * installed: it never writes to stdout or stderr by itself. Messages above
 * max_level are not formatted at all. fn NULL turns logging off again.
 * The callback may be invoked from any thread the library runs (broker
 * threads included) and must not call back into the bus it reports on.
 * Thread-safe; intended to be called once at startup.
 */
EVBUS_API void evbus_set_log(evbus_log_fn fn, int max_level, void *opaque);

/* A ready-made callback that writes "evbus <level> <component>: msg" lines to
 * stderr. Install with evbus_set_log(evbus_log_stderr, EVBUS_LOG_INFO, NULL).
 * Any thread (one write per line). */
EVBUS_API void evbus_log_stderr(int level, const char *component,
                                const char *msg, void *opaque);

/* --------------------------------------------------------------------- bus */

typedef struct evbus evbus_t;
typedef struct evbus_sub evbus_sub_t;

/*
 * Opens a bus on the broker named by url:
 *   memory://NAME                          in-process, shared by NAME
 *   sqlite:///path/to/bus.db               embedded durable log
 *   redis://[user:pass@]host:port[/db]     Redis Streams
 *   kafka://host:port[,host:port...]       Kafka
 *   dapr://host:port?pubsub=NAME&app_port=N  Dapr sidecar
 * Query parameters carry options. Options the core understands for every
 * backend:
 *   close_timeout_ms=N   how long evbus_close waits for pending publishes
 *                        (default 10000)
 *   max_event_bytes=N    largest encoded event accepted, published or
 *                        consumed (default 1048576)
 *   max_pending=N        most asynchronous publishes not yet confirmed
 *                        (delivery callbacks not yet run included) before
 *                        evbus_publish_async answers EVBUS_EAGAIN
 *                        (default 100000)
 *   max_pending_bytes=N  ... and most bytes of them (default 268435456)
 *   publish_wait_ms=N    how long evbus_publish_async waits for room before
 *                        it answers EVBUS_EAGAIN (default 0: at once)
 *   names=portable|native  topic and group names: portable (default) is
 *                        Kafka's rule, 1-249 bytes of [A-Za-z0-9._-] and not
 *                        "." or "..", so code runs on every backend; native
 *                        accepts what this backend accepts (1-249 bytes of
 *                        UTF-8 without spaces or control characters; Kafka
 *                        topics still follow Kafka's rule, which is the
 *                        portable one), for existing streams
 * Backend options are documented per backend (docs/backends/<scheme>.md);
 * native client options pass through with a prefix (kafka.linger.ms=5). An
 * option nobody understands is an error, so typos do not go unnoticed.
 * When url is NULL, the EVBUS_URL environment variable is used.
 *
 * Returns NULL on failure with a one-line reason in errstr (which may be NULL
 * when errstr_size is 0). A backend that cannot run here (library built
 * without it, server unreachable) fails here, never later and never silently.
 * Ownership: the caller owns the bus and releases it with evbus_close.
 * Thread-safe (opening several buses at once is fine).
 */
EVBUS_API evbus_t *evbus_open(const char *url, char *errstr,
                              size_t errstr_size);

/*
 * Closes the bus: stops taking new deliveries, waits for running handlers to
 * return (a thread inside evbus_run is stopped and waited for), gives events
 * still waiting for a retry back to the broker (they stay unacknowledged and
 * will be delivered again), flushes pending publishes for up to
 * close_timeout_ms and then releases everything, subscriptions included.
 * Delivery callbacks of publishes that could not complete in time run with
 * EVBUS_ETIMEDOUT. NULL is ignored.
 * Must not be called from inside a handler or delivery callback of this bus.
 * Thread-safety: a thread inside evbus_run / evbus_poll is stopped and
 * waited for; other calls on the bus must have returned before evbus_close
 * is called, and none may start after (the pointer is invalid then).
 */
EVBUS_API void evbus_close(evbus_t *bus);

/* The backend's URL scheme ("redis") for an open bus. Static string. Any
 * thread. */
EVBUS_API const char *evbus_scheme(const evbus_t *bus);

/* What a backend guarantees (evbus_features; backends declare them). */
#define EVBUS_FEAT_PERSISTENT (1u << 0)    /* events outlive the bus; a new
                                              group reads history; reopen
                                              continues where a group stopped */
#define EVBUS_FEAT_ORDERED_BY_KEY (1u << 1) /* per-partitionkey order kept for
                                              one member while no retry */
#define EVBUS_FEAT_ORDERED (1u << 2)       /* whole-topic order for a single
                                              member while no retry */
#define EVBUS_FEAT_DELAYED_RETRY (1u << 3) /* settle(EVBUS_SETTLE_RETRY) is
                                              implemented (see below) */
#define EVBUS_FEAT_CROSS_PROCESS (1u << 4) /* several processes share a bus */
#define EVBUS_FEAT_NO_RAW (1u << 5)        /* cannot carry arbitrary bytes
                                              (evbus_publish_raw refused) */
#define EVBUS_FEAT_BYTES_ONLY (1u << 6)    /* publish stores the encoded
                                              bytes and never reads the
                                              event object (so a sender
                                              holding only an event's JSON
                                              need not decode it) */

/* The backend's EVBUS_FEAT_* flags for an open bus: whether it is
 * persistent, ordered, shared across processes. Fixed when the bus opens.
 * Any thread. */
EVBUS_API unsigned evbus_features(const evbus_t *bus);

/*
 * Checks that the broker is reachable and usable (PING, metadata request,
 * sidecar health endpoint, a storage query). Returns EVBUS_OK, or an error
 * with what is wrong in errstr. Blocks for at most a few seconds.
 * Any thread.
 */
EVBUS_API int evbus_health(evbus_t *bus, char *errstr, size_t errstr_size);

/*
 * Checks a topic or group name against the bus's name rule without using
 * it: the portable rule, or with names=native (see evbus_open) the rule
 * every backend shares (1-249 bytes of UTF-8 without spaces or control
 * characters) - a backend may refuse more when the name is used: kafka://
 * refuses topics outside Kafka's rule (the portable one); bus NULL checks
 * the portable rule.
 * Returns EVBUS_OK, or EVBUS_EINVAL with a one-line reason naming the rule
 * and the offending byte in errstr (may be NULL when errstr_size is 0).
 * Any thread.
 */
EVBUS_API int evbus_name_check(const evbus_t *bus, const char *name,
                               char *errstr, size_t errstr_size);

/* ------------------------------------------------------------- publishing */

/*
 * Publishes ev to topic and returns once the broker has durably accepted it
 * (committed to the WAL for sqlite - fsync'd too with ?synchronous=full -,
 * the server's reply for redis, acks=all for kafka, 204 from the sidecar).
 * The event is validated and encoded first; an invalid event or topic name
 * fails with EVBUS_EINVAL / EVBUS_ETOOBIG (the reason is logged) and
 * nothing is sent.
 * Returns EVBUS_OK or a negative error; evbus_err_retriable() tells whether
 * trying again may help. A publish that got no answer is reported as failed,
 * never as success.
 * Ownership: ev and topic stay the caller's; they are not referenced after
 * the call returns.
 * Thread-safe: any number of threads may publish on one bus.
 */
EVBUS_API int evbus_publish(evbus_t *bus, const char *topic,
                            const evbus_event_t *ev);

/*
 * Outcome of an asynchronous publish. ev is a copy of the published event,
 * valid only during the call; err is EVBUS_OK when the broker accepted it.
 * Runs on the thread that calls evbus_poll, evbus_flush or evbus_close
 * (like librdkafka's delivery reports), never inside evbus_publish_async.
 */
typedef void (*evbus_delivery_cb)(const evbus_event_t *ev, int err,
                                  void *opaque);

/*
 * Queues ev for publishing and returns without waiting for the broker.
 * cb (may be NULL) reports the outcome later; see evbus_delivery_cb.
 * Returns EVBUS_OK when queued, or an error when the event could not even be
 * queued (invalid event, bus closed); then cb is not called.
 * Back-pressure, the same on every backend: when max_pending publishes (or
 * max_pending_bytes) are unconfirmed - a publish counts until the broker
 * answered and, with a callback, until that callback ran - it waits up to
 * publish_wait_ms for room and then answers EVBUS_EAGAIN (retriable): run
 * evbus_poll or evbus_flush and try again. Memory stays bounded.
 * Failures without a callback are counted in the bus metrics
 * (publish_failed) and logged.
 * Ownership: the event is copied; the caller may free it at once.
 * Thread-safe.
 */
EVBUS_API int evbus_publish_async(evbus_t *bus, const char *topic,
                                  const evbus_event_t *ev, evbus_delivery_cb cb,
                                  void *opaque);

/*
 * Waits until every publish queued so far has been accepted or has failed,
 * running their delivery callbacks, for at most timeout_ms (-1 = no limit).
 * Returns EVBUS_OK, EVBUS_ETIMEDOUT when some are still pending, or the
 * first error of a publish that had no callback since the last flush.
 * Thread-safe, but delivery callbacks run on the flushing thread.
 */
EVBUS_API int evbus_flush(evbus_t *bus, int timeout_ms);

/*
 * Publishes bytes exactly as given, with no validation or encoding. For
 * tools, bridges from foreign producers and tests; consumers treat bytes that
 * are not a CloudEvent as undecodable and dead-letter them.
 * Same durability, ownership and thread-safety as evbus_publish.
 */
EVBUS_API int evbus_publish_raw(evbus_t *bus, const char *topic,
                                const void *bytes, size_t len);

/* ---------------------------------------------------------- subscriptions */

/* What a handler answers; the Dapr app statuses SUCCESS / RETRY / DROP. */
typedef enum {
    EVBUS_ACK = 0,   /* processed: remove it from the group's backlog */
    EVBUS_RETRY = 1, /* deliver again after a backoff delay; dead-letter after
                        the subscription's max attempts */
    EVBUS_DROP = 2   /* cannot ever be processed: dead-letter now */
} evbus_result_t;

/*
 * Handles one event. ev is valid only during the call (copy what you keep).
 * Runs on the thread that calls evbus_poll / evbus_run, or, for a
 * subscription with concurrency > 1, on one of its worker threads (then
 * several calls of the same handler run at once: opaque must be safe for
 * that). A handler may publish
 * on any bus, including this one, and may call evbus_stop, but must not
 * close this bus or unsubscribe its own subscription and wait for it.
 */
typedef evbus_result_t (*evbus_handler_fn)(const evbus_event_t *ev,
                                           void *opaque);

/* What happens to an event whose dead-letter write failed for good (the
 * broker refused it, or a retriable error outlasted the retry policy). */
typedef enum {
    /* Keep it: after the retry policy's max_ms it goes back to the broker
     * and is delivered (and dead-lettered) again later. Nothing is lost;
     * each such failure is logged at ERROR and counted (dlq_failed). */
    EVBUS_DLQ_FAILURE_RELEASE = 0,
    /* Drop it: acknowledge it after logging its id at ERROR and counting
     * it (dlq_failed). The event is lost; the partition, lease or pending
     * entry it held is freed. */
    EVBUS_DLQ_FAILURE_ACK = 1
} evbus_dlq_failure_t;

/* Per-subscription options. Initialise with evbus_sub_opts_init and change
 * what you need; fields added in later releases keep their defaults for
 * programs built against this header. */
typedef struct evbus_sub_opts {
    size_t struct_size; /* set by evbus_sub_opts_init; do not change */
    /* Backoff between RETRY answers and how many attempts before the event
     * is dead-lettered (see retry.h). NULL = the defaults: 5 attempts, 100
     * ms doubling up to 30 s with full jitter. Copied by subscribe. */
    const evbus_retry_policy_t *retry;
    /* Dead-letter topic; NULL = "<topic>.dlq", which follows the name rule
     * too (a topic over 245 bytes needs one set here). Copied. */
    const char *dlq_topic;
    /* Most events fetched from the broker and not yet settled (handled or
     * waiting for a retry) per subscription; default 1000. */
    int max_inflight;
    /* When a dead-letter write fails for good; default
     * EVBUS_DLQ_FAILURE_RELEASE. */
    evbus_dlq_failure_t dlq_failure;
    /* Handler calls of this subscription that may run at once (default 1:
     * handlers run on the polling thread). With N > 1 the bus starts N
     * worker threads for the subscription; events with the same
     * partitionkey never run at once and keep the order the backend
     * delivered them in, events without one run in any order. The polling
     * thread still fetches, records attempts, settles and dead-letters;
     * it stops fetching while more than N events wait for a worker, and
     * max_inflight bounds everything fetched and not settled. See
     * docs/concepts.md, "Threads and ordering". 1 to 1024. */
    int concurrency;
} evbus_sub_opts_t;

/* Fills o with the defaults listed above and sets o->struct_size.
 * Thread-safe. */
EVBUS_API void evbus_sub_opts_init_sized(
    evbus_sub_opts_t *o, size_t struct_size);
static inline void evbus_sub_opts_init(evbus_sub_opts_t *o)
{
    evbus_sub_opts_init_sized(o, sizeof *o);
}

/* The largest evbus_sub_opts_t.concurrency. */
#define EVBUS_MAX_CONCURRENCY 1024

/*
 * Subscribes fn to topic as a member of consumer group `group` (NULL means
 * the group "default"). Every group receives every event of the topic; the
 * members of one group - in this process or others - share them, each event
 * going to one member at a time. Events published before the group existed
 * are delivered on persistent backends (sqlite, redis, kafka: from the start
 * of the retained log) and not on memory:// or dapr://.
 * Handlers run only inside evbus_poll / evbus_run.
 * Topic and group names follow the bus's name rule (portable by default,
 * see evbus_open); publish checks topics the same way.
 * Returns NULL on failure (invalid name or option, backend refused;
 * kafka:// refuses a second subscription of one bus to the same topic and
 * group: open another bus for a second member); the reason is logged.
 * Use evbus_subscribe_opts to receive it.
 * Ownership: topic and group are copied; the subscription belongs to the bus
 * and is freed by evbus_unsubscribe or evbus_close.
 * Thread-safe.
 */
EVBUS_API evbus_sub_t *evbus_subscribe(evbus_t *bus, const char *topic,
                                       const char *group, evbus_handler_fn fn,
                                       void *opaque);

/* evbus_subscribe with options (o NULL = defaults) and the reason for a
 * failure: NULL with a one-line reason in errstr (may be NULL when
 * errstr_size is 0). Ownership and thread-safety as evbus_subscribe; o and
 * what it points to are copied. */
EVBUS_API evbus_sub_t *evbus_subscribe_opts(evbus_t *bus, const char *topic,
                                            const char *group,
                                            const evbus_sub_opts_t *o,
                                            evbus_handler_fn fn, void *opaque,
                                            char *errstr, size_t errstr_size);

/*
 * Ends a subscription: no handler of it runs after this returns (when called
 * from another thread than the poller it waits for a running handler).
 * Events it fetched but did not settle go back to the broker for the group.
 * Returns EVBUS_OK or EVBUS_EINVAL. From inside a handler of this bus it
 * returns at once and the subscription ends after that handler. Thread-safe; a thread polling the bus meanwhile carries
 * on undisturbed (it never sees EVBUS_EBUSY because of it).
 */
EVBUS_API int evbus_unsubscribe(evbus_sub_t *sub);

/*
 * Fetches ready events from the broker and runs their handlers, waiting up to
 * timeout_ms (0 = do not wait, -1 = until something arrives or evbus_stop)
 * when nothing is ready. Also runs due retries and pending delivery
 * callbacks. Returns how many handler calls it made (>= 0), or a negative
 * error (EVBUS_ECLOSED once the bus is closing).
 * After evbus_stop it returns once the running handler has returned; events
 * it fetched and had not handed to a handler go back to the broker.
 * One thread at a time per bus: a call while another thread polls returns
 * EVBUS_EBUSY. To consume in parallel, open one bus per thread with the
 * same group.
 */
EVBUS_API int evbus_poll(evbus_t *bus, int timeout_ms);

/* Polls until evbus_stop or evbus_close. Returns EVBUS_OK after a stop, or
 * the error that ended it. Same threading rule as evbus_poll. */
EVBUS_API int evbus_run(evbus_t *bus);

/*
 * Makes evbus_run return after the handler that is running now (a waiting
 * evbus_poll returns at once). Events fetched and not yet handed to a
 * handler go back to the broker; events waiting for a retry stay with the
 * bus until it closes. A stop asked for while nobody polls ends the next
 * evbus_run or evbus_poll at once.
 * Async-signal-safe: may be called from a signal handler. Any thread.
 */
EVBUS_API void evbus_stop(evbus_t *bus);

/* ---------------------------------------------------------------- metrics */

/* Handler time histogram bucket upper bounds in microseconds; the last
 * bucket counts everything slower. */
#define EVBUS_HIST_BUCKETS 12
EVBUS_API extern const uint64_t evbus_hist_bounds_us[EVBUS_HIST_BUCKETS - 1];

/* A subscription's counters. Initialise with evbus_sub_metrics_init (it
 * sets struct_size) before evbus_sub_metrics_get. */
typedef struct evbus_sub_metrics {
    size_t struct_size;
    uint64_t delivered;     /* handler invocations */
    uint64_t acked;
    uint64_t retried;       /* RETRY answers that were scheduled again */
    uint64_t dead_lettered; /* events written to the dead-letter topic */
    uint64_t undecodable;   /* of those, payloads that were not CloudEvents */
    uint64_t dlq_failed;    /* dead-letter writes that failed for good (the
                               event was parked: see evbus_dlq_failure_t) */
    uint64_t handler_us_sum;
    uint64_t handler_us_hist[EVBUS_HIST_BUCKETS];
} evbus_sub_metrics_t;

/* The bus's counters. Initialise with evbus_metrics_init before
 * evbus_metrics_get. */
typedef struct evbus_metrics {
    size_t struct_size;
    uint64_t published;      /* publishes the broker accepted */
    uint64_t publish_failed; /* publishes that failed (sync or async) */
    uint64_t faults_injected; /* faulty+ wrapper only */
    uint64_t publish_eagain; /* evbus_publish_async answers of EVBUS_EAGAIN
                                (back-pressure: max_pending reached) */
} evbus_metrics_t;

/* Zeroes out and sets its struct_size. Thread-safe. */
EVBUS_API void evbus_metrics_init_sized(
    evbus_metrics_t *out, size_t struct_size);
static inline void evbus_metrics_init(evbus_metrics_t *out)
{
    evbus_metrics_init_sized(out, sizeof *out);
}
EVBUS_API void evbus_sub_metrics_init_sized(
    evbus_sub_metrics_t *out, size_t struct_size);
static inline void evbus_sub_metrics_init(evbus_sub_metrics_t *out)
{
    evbus_sub_metrics_init_sized(out, sizeof *out);
}

/* Copies the bus counters into out (initialised by evbus_metrics_init).
 * EVBUS_OK, or EVBUS_EINVAL for a NULL or uninitialised argument. Any
 * thread. */
EVBUS_API int evbus_metrics_get(evbus_t *bus, evbus_metrics_t *out);

/* Copies a subscription's counters into out (initialised by
 * evbus_sub_metrics_init). EVBUS_OK or EVBUS_EINVAL. Any thread. */
EVBUS_API int evbus_sub_metrics_get(evbus_sub_t *sub,
                                    evbus_sub_metrics_t *out);

/*
 * All counters of the bus and its subscriptions in Prometheus text
 * exposition format (evbus_published_total, evbus_handler_seconds_bucket,
 * ... labelled by topic and group). Returns a malloc'd string the caller
 * frees with free(), or NULL when out of memory. Any thread.
 */
EVBUS_API char *evbus_metrics_prometheus(evbus_t *bus);

/* The subscription's topic and group. Strings owned by the subscription.
 * Any thread while the subscription lives. */
EVBUS_API const char *evbus_sub_topic(const evbus_sub_t *sub);
EVBUS_API const char *evbus_sub_group(const evbus_sub_t *sub);

/* ------------------------------------------------------------- delivery */

/*
 * Inside a handler: which attempt this is (1 for the first delivery) and the
 * topic it came from. Outside a handler: 0 and NULL. Thread-local; any
 * thread.
 */
EVBUS_API int evbus_delivery_attempt(void);
EVBUS_API const char *evbus_delivery_topic(void);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_EVBUS_H */
