/*
 * What turns one HTTP request from the sidecar (or any CloudEvents HTTP
 * sender) into deliveries, without a socket: the server passes the
 * headers and body in, the fuzz target does the same with made-up bytes.
 *
 * The CloudEvents HTTP binding (v1.0.2) and Dapr's envelopes:
 *   Content-Type application/cloudevents-batch+json  a batch: a JSON array
 *                                    of events, each one entry
 *   Content-Type application/cloudevents[+json]      structured: the body
 *                                    is the event
 *   otherwise, with a ce-specversion header           binary: the body is
 *                                    the data, Content-Type the
 *                                    datacontenttype (absent: none), every
 *                                    other attribute a ce-<name> header,
 *                                    percent-decoded, UTF-8
 *   otherwise                        Dapr's bulk envelope
 *                                    ({"type":"com.dapr.event.sent.bulk",
 *                                    "entries":[...]}, sent as
 *                                    application/cloudevents+json) or a
 *                                    bare JSON event
 *
 * Every event is checked like any other (the event setters and decoder);
 * an entry that is not an event keeps the reason instead.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "dapr_internal.h"

/* ------------------------------------------------------------ entries */

/* Dapr adds routing and tracing fields to every event it passes on; drop
 * the ones that carry nothing the publisher set, so the handler sees the
 * event as published. A non-empty traceparent/tracestate is kept. */
static void strip_dapr_fields(evbus_event_t *ev)
{
    evbus_event_set_ext(ev, "topic", NULL);
    evbus_event_set_ext(ev, "pubsubname", NULL);
    evbus_event_set_ext(ev, "traceid", NULL);
    static const char *const maybe_empty[] = {"traceparent", "tracestate"};
    for (int i = 0; i < 2; i++) {
        const char *v = evbus_event_ext(ev, maybe_empty[i]);
        if (v && !*v)
            evbus_event_set_ext(ev, maybe_empty[i], NULL);
    }
}

static uint64_t fnv(uint64_t h, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211u;
    return (h ^ 0xff) * 1099511628211u; /* field separator */
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s ? s : "", s ? strlen(s) : 0);
}

/* What identifies one published event beyond its id, for counting its
 * deliveries: everything the publisher set, but none of the fields a
 * sidecar may write per delivery (tracing, routing). A producer that
 * reuses ids is then counted per event, while a redelivery counts up. */
static uint64_t fingerprint(const evbus_event_t *ev)
{
    uint64_t h = 1469598103934665603u;
    h = fnv_str(h, evbus_event_source(ev));
    h = fnv_str(h, evbus_event_type(ev));
    h = fnv_str(h, evbus_event_subject(ev));
    h = fnv_str(h, evbus_event_time(ev));
    h = fnv(h, evbus_event_data(ev) ? evbus_event_data(ev) : "",
            evbus_event_data_len(ev));
    size_t n = evbus_event_ext_count(ev);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        if (evbus_event_ext_at(ev, i, &name, &value) != EVBUS_OK ||
            strcmp(name, "traceparent") == 0 ||
            strcmp(name, "tracestate") == 0)
            continue;
        h = fnv_str(fnv_str(h, name), value);
    }
    return h;
}

/* Takes ev (may be NULL with why set) into entry e: strips Dapr's fields,
 * computes the fingerprint. Returns false when out of memory. */
static bool entry_set(dapr_entry_t *e, evbus_event_t *ev, const char *why)
{
    if (!ev) {
        e->why = strdup(why && *why ? why : "not a CloudEvent");
        return e->why != NULL;
    }
    strip_dapr_fields(ev);
    e->hash = fingerprint(ev);
    e->id = strdup(evbus_event_id(ev));
    if (!e->id) {
        evbus_event_free(ev);
        return false;
    }
    e->event = ev;
    return true;
}

/* The structured-mode event in e->json. */
static bool entry_decode_json(dapr_entry_t *e, size_t max_bytes)
{
    char why[256] = "";
    evbus_event_t *ev = evbus_event_from_json_limit(e->json, e->len,
                                                    max_bytes, why, sizeof why);
    return entry_set(e, ev, why);
}

static char *dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        if (n)
            memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

/* ------------------------------------------------------------ headers */

/* The last value of header name (case-insensitive), or NULL. */
static const char *header(const dapr_http_req_t *in, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < in->n_headers; i++)
        if (strcasecmp(in->names[i], name) == 0)
            v = in->values[i];
    return v;
}

static bool ct_starts(const char *ct, const char *prefix)
{
    return ct && strncasecmp(ct, prefix, strlen(prefix)) == 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes a ce- header value (the HTTP binding encodes what is not
 * printable ASCII); a '%' without two hex digits stays as it is. A %00
 * would cut the C string short, so it is refused: NULL with *nul_at its
 * offset in the decoded value (SIZE_MAX when out of memory). */
static char *pct_decode(const char *s, size_t *nul_at)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    *nul_at = SIZE_MAX;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int a, b;
        if (s[i] == '%' && i + 2 < n &&
            (a = hexval((unsigned char)s[i + 1])) >= 0 &&
            (b = hexval((unsigned char)s[i + 2])) >= 0) {
            if (!(a | b)) {
                *nul_at = (size_t)(o - out);
                free(out);
                return NULL;
            }
            *o++ = (char)(a << 4 | b);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* why for a value pct_decode refused. */
static void pct_refused(char *why, size_t n, const char *header,
                        size_t nul_at)
{
    if (nul_at == SIZE_MAX)
        snprintf(why, n, "out of memory");
    else
        snprintf(why, n, "binary-mode event has an invalid %.44s header: a "
                         "NUL byte (%%00) at byte offset %zu",
                 header, nul_at);
}

/* Only a-z, 0-9 and '-': safe to print in a message. */
static bool name_is_plain(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '-'))
            return false;
    return true;
}

/* Sets attribute or extension attr (lowercase) of ev from a header value;
 * returns the setter's result. */
static int set_attr(evbus_event_t *ev, const char *attr, const char *v)
{
    if (!strcmp(attr, "id"))
        return evbus_event_set_id(ev, v);
    if (!strcmp(attr, "subject"))
        return evbus_event_set_subject(ev, v);
    if (!strcmp(attr, "time"))
        return evbus_event_set_time(ev, v);
    if (!strcmp(attr, "dataschema"))
        return evbus_event_set_dataschema(ev, v);
    if (!strcmp(attr, "datacontenttype"))
        return evbus_event_set_datacontenttype(ev, v);
    return evbus_event_set_ext(ev, attr, v);
}

/* A binary-mode event from the ce- headers and the body; NULL with the
 * reason in why. */
static evbus_event_t *decode_binary(const dapr_http_req_t *in, char *why,
                                    size_t n)
{
    if (in->max_bytes && in->len > in->max_bytes) {
        snprintf(why, n, "binary-mode event too large: %zu data bytes, over "
                         "max_event_bytes (%zu)",
                 in->len, in->max_bytes);
        return NULL;
    }
    char *vals[4] = {NULL, NULL, NULL, NULL};
    static const char *const req[4] = {"ce-specversion", "ce-id", "ce-source",
                                       "ce-type"};
    evbus_event_t *ev = NULL;
    for (int i = 0; i < 4; i++) {
        const char *v = header(in, req[i]);
        size_t nul_at;
        if (v && !(vals[i] = pct_decode(v, &nul_at))) {
            pct_refused(why, n, req[i], nul_at);
            goto out;
        }
        if (!vals[i] || !*vals[i]) {
            snprintf(why, n, "binary-mode event lacks the %s header "
                             "(ce-specversion, ce-id, ce-source and ce-type "
                             "are required)",
                     req[i]);
            goto out;
        }
    }
    if (strcmp(vals[0], "1.0") != 0) {
        snprintf(why, n, "binary-mode event with ce-specversion other than "
                         "1.0");
        goto out;
    }
    ev = evbus_event_new(vals[3], vals[2]);
    if (!ev || evbus_event_set_id(ev, vals[1]) != EVBUS_OK ||
        evbus_event_set_time(ev, NULL) != EVBUS_OK) {
        snprintf(why, n, "binary-mode event: %s",
                 evbus_event_error_message());
        goto fail;
    }
    for (size_t i = 0; i < in->n_headers; i++) {
        const char *name = in->names[i];
        if (strncasecmp(name, "ce-", 3) != 0)
            continue;
        char *attr = strdup(name + 3);
        size_t nul_at = SIZE_MAX;
        char *v = attr ? pct_decode(in->values[i], &nul_at) : NULL;
        if (attr)
            for (char *p = attr; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        if (!attr || !v) {
            char h[48];
            snprintf(h, sizeof h, "ce-%.40s",
                     attr && name_is_plain(attr) ? attr : "(unprintable)");
            pct_refused(why, n, h, attr ? nul_at : SIZE_MAX);
            free(attr);
            free(v);
            goto fail;
        }
        int rc = EVBUS_OK;
        if (strcmp(attr, "specversion") && strcmp(attr, "source") &&
            strcmp(attr, "type"))
            rc = set_attr(ev, attr, v);
        free(v);
        if (rc != EVBUS_OK) {
            /* the setter's reason names the attribute and byte offset */
            snprintf(why, n, "binary-mode event has an invalid ce-%.40s "
                             "header: %s",
                     name_is_plain(attr) ? attr : "(unprintable)",
                     evbus_event_error_message());
            free(attr);
            goto fail;
        }
        free(attr);
    }
    const char *ct = in->content_type ? in->content_type
                                      : evbus_event_datacontenttype(ev);
    if (evbus_event_set_data_bytes(ev, in->len ? in->body : NULL, in->len,
                                   ct) != EVBUS_OK) {
        snprintf(why, n, "binary-mode event: the body does not match its "
                         "Content-Type: %s",
                 evbus_event_error_message());
        goto fail;
    }
    goto out;
fail:
    evbus_event_free(ev);
    ev = NULL;
out:
    for (int i = 0; i < 4; i++)
        free(vals[i]);
    return ev;
}

/* ------------------------------------------------------------ bodies */

/* ---- finding a member's exact text in JSON that cJSON already accepted */

static const char *json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Where the JSON value at p ends, or NULL. */
static const char *json_value_end(const char *p, const char *end)
{
    const char *vend = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &vend, 0);
    cJSON_Delete(v);
    return v && vend > p ? vend : NULL;
}

/* The exact text of member key (compared as written) of the object at p,
 * with *vlen its length; NULL when absent or not found that way. */
static const char *json_member(const char *p, const char *end,
                               const char *key, size_t *vlen)
{
    p = json_ws(p, end);
    if (p >= end || *p++ != '{')
        return NULL;
    for (;;) {
        p = json_ws(p, end);
        if (p >= end || *p != '"')
            return NULL;
        const char *k = ++p;
        while (p < end && *p != '"')
            p += *p == '\\' && p + 1 < end ? 2 : 1;
        if (p >= end)
            return NULL;
        size_t klen = (size_t)(p - k);
        p = json_ws(p + 1, end);
        if (p >= end || *p != ':')
            return NULL;
        const char *v = json_ws(p + 1, end), *vend = json_value_end(v, end);
        if (!vend)
            return NULL;
        if (klen == strlen(key) && memcmp(k, key, klen) == 0) {
            *vlen = (size_t)(vend - v);
            return v;
        }
        p = json_ws(vend, end);
        if (p >= end || *p++ != ',')
            return NULL;
    }
}

/* Fills out with the entries of Dapr's bulk envelope j, parsed from body.
 * An entry's event object is decoded from its exact text, like a batch
 * entry (cJSON would reprint numbers and cut strings at a \u0000); only
 * if that text cannot be found is the object reprinted. */
static int parse_bulk(cJSON *entries, const char *body, size_t len,
                      dapr_delivery_t *out, size_t max)
{
    int n = cJSON_GetArraySize(entries);
    out->kind = DAPR_BODY_BULK;
    out->e = calloc(n ? (size_t)n : 1, sizeof *out->e);
    if (!out->e)
        return EVBUS_ENOMEM;
    out->n = n;
    const char *end = body + len;
    size_t alen = 0;
    const char *raw = json_member(body, end, "entries", &alen);
    raw = raw && *raw == '[' ? raw + 1 : NULL;
    int i = 0;
    cJSON *en;
    cJSON_ArrayForEach(en, entries) {
        dapr_entry_t *e = &out->e[i++];
        const char *ev_raw = NULL;
        size_t ev_len = 0;
        if (raw) { /* walk the array beside cJSON */
            raw = json_ws(raw, end);
            const char *en_end = json_value_end(raw, end);
            ev_raw = en_end ? json_member(raw, en_end, "event", &ev_len)
                            : NULL;
            raw = en_end ? json_ws(en_end, end) : NULL;
            if (raw && raw < end && *raw == ',')
                raw++;
        }
        cJSON *eid = cJSON_GetObjectItemCaseSensitive(en, "entryId");
        cJSON *ev = cJSON_GetObjectItemCaseSensitive(en, "event");
        e->entry_id = strdup(cJSON_IsString(eid) ? eid->valuestring : "");
        if (cJSON_IsString(ev))
            e->json = strdup(ev->valuestring);
        else if (cJSON_IsObject(ev) && ev_raw && *ev_raw == '{')
            e->json = dup_bytes(ev_raw, ev_len);
        else if (cJSON_IsObject(ev))
            e->json = cJSON_PrintUnformatted(ev);
        else
            e->json = strdup(""); /* no event: decoding says so */
        if (!e->entry_id || !e->json)
            return EVBUS_ENOMEM;
        e->len = cJSON_IsObject(ev) && ev_raw && *ev_raw == '{'
                     ? ev_len
                     : strlen(e->json);
        if (!entry_decode_json(e, max))
            return EVBUS_ENOMEM;
    }
    return EVBUS_OK;
}

/* A batch: the raw text of each array element (cJSON finds where each one
 * ends, so data keeps its exact bytes) decoded as one event. */
static int parse_batch(const dapr_http_req_t *in, dapr_delivery_t *out)
{
    out->kind = DAPR_BODY_BATCH;
    cJSON *j = cJSON_ParseWithLength(in->body, in->len);
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        out->refuse_status = 400;
        snprintf(out->refuse_why, sizeof out->refuse_why,
                 "a %s body must be a JSON array of events",
                 "application/cloudevents-batch+json");
        return EVBUS_OK;
    }
    int n = cJSON_GetArraySize(j);
    cJSON_Delete(j);
    out->e = calloc(n ? (size_t)n : 1, sizeof *out->e);
    if (!out->e)
        return EVBUS_ENOMEM;
    const char *p = in->body, *end = in->body + in->len;
    while (p < end && *p != '[')
        p++;
    p++;
    for (int i = 0; i < n; i++) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' ||
                           *p == '\n' || *p == ','))
            p++;
        const char *vend = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &vend, 0);
        cJSON_Delete(v);
        if (!v || !vend || vend <= p)
            break; /* cannot happen: the whole array parsed above */
        dapr_entry_t *e = &out->e[out->n++];
        if (!(e->json = dup_bytes(p, (size_t)(vend - p))))
            return EVBUS_ENOMEM;
        e->len = (size_t)(vend - p);
        if (!entry_decode_json(e, in->max_bytes))
            return EVBUS_ENOMEM;
        p = vend;
    }
    return EVBUS_OK;
}

int evbus__dapr_parse_delivery(const dapr_http_req_t *in, dapr_delivery_t *out)
{
    memset(out, 0, sizeof *out);
    const char *ct = in->content_type;
    const char *body = in->body ? in->body : "";
    if (ct_starts(ct, "application/cloudevents-batch"))
        return parse_batch(in, out);
    if (!ct_starts(ct, "application/cloudevents") &&
        header(in, "ce-specversion")) {
        out->kind = DAPR_BODY_BINARY;
        out->e = calloc(1, sizeof *out->e);
        if (!out->e)
            return EVBUS_ENOMEM;
        out->n = 1;
        dapr_entry_t *e = &out->e[0];
        if (!(e->json = dup_bytes(body, in->len)))
            return EVBUS_ENOMEM;
        e->len = in->len;
        char why[384] = "";
        evbus_event_t *ev = decode_binary(in, why, sizeof why);
        return entry_set(e, ev, why) ? EVBUS_OK : EVBUS_ENOMEM;
    }
    {
        /* Dapr's bulk envelope comes with application/cloudevents+json */
        cJSON *j = cJSON_ParseWithLength(body, in->len);
        cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
        cJSON *entries = cJSON_GetObjectItemCaseSensitive(j, "entries");
        if (cJSON_IsArray(entries) && cJSON_IsString(type) &&
            strcmp(type->valuestring, "com.dapr.event.sent.bulk") == 0) {
            int rc = parse_bulk(entries, body, in->len, out, in->max_bytes);
            cJSON_Delete(j);
            return rc;
        }
        cJSON_Delete(j);
    }
    out->kind = DAPR_BODY_SINGLE;
    out->e = calloc(1, sizeof *out->e);
    if (!out->e)
        return EVBUS_ENOMEM;
    out->n = 1;
    if (!(out->e[0].json = dup_bytes(body, in->len)))
        return EVBUS_ENOMEM;
    out->e[0].len = in->len;
    return entry_decode_json(&out->e[0], in->max_bytes) ? EVBUS_OK
                                                        : EVBUS_ENOMEM;
}

void evbus__dapr_delivery_free(dapr_delivery_t *d)
{
    for (int i = 0; i < d->n; i++) {
        free(d->e[i].entry_id);
        free(d->e[i].json);
        free(d->e[i].id);
        free(d->e[i].why);
        evbus_event_free(d->e[i].event);
    }
    free(d->e);
    d->e = NULL;
    d->n = 0;
}
