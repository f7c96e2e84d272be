/*
 * What the core offers the patterns (src/patterns/) beyond the public API:
 * the library's log channel and a publish path for bytes that are already
 * an encoded event. Patterns include this header and the public ones, never
 * internal.h.
 */
#ifndef EVBUS_CORE_PATTERNS_H
#define EVBUS_CORE_PATTERNS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "evbus/evbus.h"

/* Logs through the application's log callback (component: "outbox", ...).
 * Any thread. */
void evbus__log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void evbus__vlog(int level, const char *component, const char *fmt,
                 va_list ap);
bool evbus__log_enabled(int level);

/* A publish started by the library itself (the outbox relay) that wants
 * its outcome at once and per event, without evbus_publish_async's event
 * copy and callback queue. The caller owns the ticket and keeps it alive
 * until done runs; the core fills in bus and len. */
typedef struct evbus__ticket {
    evbus_t *bus;
    size_t len;
    /* Called exactly once, on any thread (a broker client's included),
     * with EVBUS_OK or the error. Must be short and must not call back
     * into the bus. */
    void (*done)(struct evbus__ticket *t, int err);
} evbus__ticket_t;

/* Publishes json, which must be ev's encoding as evbus_event_to_json made
 * it (so already validated): no validation, no re-encoding. ev is what
 * backends read attributes from (partition key, binary modes); it may be
 * NULL on a bus with EVBUS_FEAT_BYTES_ONLY. Counts against the bus's
 * back-pressure bound like evbus_publish_async (EVBUS_EAGAIN when full).
 * Returns EVBUS_OK when started (t->done will run), or an error and it
 * will not. Any thread. */
int evbus__publish_encoded_async(evbus_t *bus, const char *topic,
                                 const evbus_event_t *ev, const void *json,
                                 size_t len, evbus__ticket_t *t);

/* Copies a caller's retry policy (NULL = defaults) into a full one.
 * EVBUS_OK, or EVBUS_EINVAL when its struct_size was not set by
 * evbus_retry_policy_init. */
int evbus__retry_policy_copy(evbus_retry_policy_t *dst,
                             const evbus_retry_policy_t *src);

/* Asks the backend to send whatever its client holds back (linger) without
 * waiting for any outcome. Any thread. */
void evbus__nudge(evbus_t *bus);

#endif
