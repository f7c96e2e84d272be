/*
 * Dead letters keep the event's id, source, type, data and extensions and
 * gain dlqreason, dlqattempts and dlqtopic. Bytes that were not an event at
 * all are wrapped in an evbus.deadletter.undecodable event whose data are
 * the raw bytes (data_base64 on the wire), so nothing is silently skipped.
 *
 * A dead letter always fits the bus's max_event_bytes: when it would not
 * (an oversized payload, base64 making raw bytes a third larger), its data
 * is cut to the head that fits and kept as application/octet-stream, with
 * dlqtruncated = the original data length and dlqdatacontenttype = the
 * original content type. A dead letter that cannot be written is the one
 * failure a consumer cannot route around, so it must never be too big.
 */
#include <stdbool.h>
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

/* Replaces dl's data by its first keep bytes as octet-stream and marks the
 * cut. orig/orig_len/orig_type: the full data as the event had it. A mark
 * already there (an earlier cut) is kept: it names the original. */
static int cut_data(evbus_event_t *dl, const void *orig, size_t orig_len,
                    const char *orig_type, size_t keep)
{
    char n[24];
    snprintf(n, sizeof n, "%zu", orig_len);
    bool first = evbus_event_ext(dl, "dlqtruncated") == NULL;
    int rc = evbus_event_set_data(dl, keep ? orig : NULL, keep,
                                  keep ? "application/octet-stream" : NULL);
    if (rc == EVBUS_OK && first)
        rc = evbus_event_set_ext(dl, "dlqtruncated", n);
    if (rc == EVBUS_OK && first && orig_type && *orig_type)
        rc = evbus_event_set_ext(dl, "dlqdatacontenttype", orig_type);
    return rc;
}

/* Wraps bytes that are not an event. Bytes a dead letter of limit bytes
 * cannot carry whole (base64 makes 3 bytes 4) are copied only as far as it
 * can, and marked as cut: an oversized payload costs memory bounded by the
 * limit here, not by its size (encode_fitting trims what is still over). */
static evbus_event_t *wrap_undecodable(const evbus_sub_t *sub,
                                       const evbus_msg_t *msg, size_t limit)
{
    char source[300];
    snprintf(source, sizeof source, "/evbus/%s/%s", sub->bus->scheme,
             sub->topic);
    evbus_event_t *ev = evbus_event_new(UNDECODABLE_TYPE, source);
    if (!ev || !msg->len)
        return ev;
    size_t head = limit / 4 * 3;
    int rc = msg->len > head
                 ? cut_data(ev, msg->payload, msg->len,
                            "application/octet-stream", head)
                 : evbus_event_set_data(ev, msg->payload, msg->len,
                                        "application/octet-stream");
    if (rc != EVBUS_OK) {
        evbus_event_free(ev);
        return NULL;
    }
    return ev;
}

/* Encodes dl, cutting its data until it fits limit bytes. Returns the JSON
 * (caller frees) or NULL with *rc set. */
static char *encode_fitting(evbus_event_t *dl, size_t limit, size_t *len,
                            int *rc)
{
    char *json = evbus_event_to_json(dl, len);
    if (!json) {
        *rc = EVBUS_ENOMEM;
        return NULL;
    }
    if (*len <= limit)
        return json;
    free(json);
    /* Keep a private copy of the data: cutting replaces the event's. */
    size_t orig_len = evbus_event_data_len(dl);
    const char *type = evbus_event_datacontenttype(dl);
    char *orig = orig_len ? malloc(orig_len) : NULL;
    char *orig_type = type ? strdup(type) : NULL;
    if ((orig_len && !orig) || (type && !orig_type)) {
        free(orig);
        free(orig_type);
        *rc = EVBUS_ENOMEM;
        return NULL;
    }
    if (orig_len)
        memcpy(orig, evbus_event_data(dl), orig_len);
    /* base64 makes 3 bytes 4; start from what the rest of the event leaves
     * and shrink by the overshoot until it fits (two rounds, normally). */
    size_t keep = orig_len;
    json = NULL;
    for (int round = 0; round < 8; round++) {
        size_t over = *len > limit ? *len - limit : 0;
        size_t cut = over / 4 * 3 + 64;
        keep = keep > cut ? keep - cut : 0;
        if ((*rc = cut_data(dl, orig, orig_len, orig_type, keep)) != EVBUS_OK)
            break;
        if (!(json = evbus_event_to_json(dl, len))) {
            *rc = EVBUS_ENOMEM;
            break;
        }
        if (*len <= limit || keep == 0)
            break;
        free(json);
        json = NULL;
    }
    free(orig);
    free(orig_type);
    if (json && *len > limit) { /* attributes alone are over the limit */
        free(json);
        json = NULL;
        *rc = EVBUS_ETOOBIG;
    }
    return json;
}

int evbus__deadletter(evbus_sub_t *sub, const evbus_event_t *ev,
                      const evbus_msg_t *msg, const char *reason,
                      int attempts)
{
    evbus_event_t *dl = ev ? evbus_event_clone(ev)
                           : wrap_undecodable(sub, msg,
                                              sub->bus->max_event_bytes);
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
    /* A broker may carry less than max_event_bytes (Kafka's
     * message.max.bytes is 1,000,000 by default, below the default 1 MiB):
     * a dead letter it refuses as too big is cut by a tenth more, a few
     * times, rather than failing for good. */
    size_t limit = sub->bus->max_event_bytes;
    for (int round = 0; rc == EVBUS_OK; round++) {
        size_t len = 0;
        char *json = encode_fitting(dl, limit, &len, &rc);
        if (!json)
            break;
        rc = evbus__publish_encoded(sub->bus, sub->dlq_topic, dl, json, len);
        free(json);
        if (rc != EVBUS_ETOOBIG || round == 4 || len < 4096)
            break;
        evbus__log(EVBUS_LOG_INFO, "core",
                   "dead letter of %zu bytes refused as too big by %s; "
                   "cutting it to %zu", len, sub->dlq_topic, len / 10 * 9);
        limit = len / 10 * 9;
        rc = EVBUS_OK;
    }
    evbus_event_free(dl);
    return rc;
}
