/*
 * Dead letters keep the event's id, source, type, data and extensions and
 * gain dlqreason, dlqattempts and dlqtopic. Bytes that were not an event at
 * all are wrapped in an evbus.deadletter.undecodable event whose data are
 * the raw bytes (data_base64 on the wire), so nothing is silently skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UNDECODABLE_TYPE "evbus.deadletter.undecodable"

/* CloudEvents strings must not hold control characters. */
static void sanitize(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    dst[i] = '\0';
}

static evbus_event_t *wrap_undecodable(const evbus_sub_t *sub,
                                       const evbus_msg_t *msg)
{
    char source[300];
    snprintf(source, sizeof source, "/evbus/%s/%s", sub->bus->scheme,
             sub->topic);
    evbus_event_t *ev = evbus_event_new(UNDECODABLE_TYPE, source);
    if (ev && msg->len &&
        evbus_event_set_data(ev, msg->payload, msg->len,
                             "application/octet-stream") != EVBUS_OK) {
        evbus_event_free(ev);
        return NULL;
    }
    return ev;
}

int evbus__deadletter(evbus_sub_t *sub, const evbus_event_t *ev,
                      const evbus_msg_t *msg, const char *reason,
                      int attempts)
{
    evbus_event_t *dl = ev ? evbus_event_clone(ev) : wrap_undecodable(sub, msg);
    if (!dl)
        return EVBUS_ENOMEM;
    char clean[1024], count[16];
    sanitize(clean, sizeof clean, reason && *reason ? reason : "unknown");
    snprintf(count, sizeof count, "%d", attempts > 0 ? attempts : 1);
    int rc = evbus_event_set_ext(dl, "dlqreason", clean);
    if (rc == EVBUS_OK)
        rc = evbus_event_set_ext(dl, "dlqattempts", count);
    if (rc == EVBUS_OK)
        rc = evbus_event_set_ext(dl, "dlqtopic", sub->topic);
    size_t len = 0;
    char *json = rc == EVBUS_OK ? evbus_event_to_json(dl, &len) : NULL;
    if (json) {
        /* No max_event_bytes check: a dead letter of an oversized payload
         * must still be kept; the broker is the judge of what fits. */
        rc = evbus__publish_encoded(sub->bus, sub->dlq_topic, dl, json, len);
        free(json);
    } else if (rc == EVBUS_OK) {
        rc = EVBUS_ENOMEM;
    }
    evbus_event_free(dl);
    return rc;
}
