/*
 * The CloudEvents Kafka protocol binding (cloudevents/spec kafka-protocol-
 * binding, v1.0.2):
 *   structured mode: content-type header application/cloudevents+json, the
 *                    value is the JSON event;
 *   binary mode:     the value is the data, content-type = datacontenttype,
 *                    every other attribute and extension a ce_<name> header
 *                    (UTF-8 string);
 *   the record key is the partitionkey extension in both modes.
 * A record with neither (what Dapr's Kafka component writes) holds a bare
 * JSON event in its value.
 *
 * content-type and datacontenttype map onto each other directly: a binary
 * record without the header has no datacontenttype, and its value comes
 * through byte for byte (never re-labelled application/octet-stream), as
 * does a value under a JSON content type: it is not parsed (see
 * EVBUS__DATA_RAW). Header values are checked as UTF-8 by the event
 * setters' rules.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/event_internal.h"
#include "kafka_internal.h"

static void add_attr(rd_kafka_headers_t *h, const char *name, const char *v)
{
    if (v)
        rd_kafka_header_add(h, name, -1, v, (ssize_t)strlen(v));
}

rd_kafka_headers_t *evbus__kafka_wire_binary_headers(const evbus_event_t *ev)
{
    size_t next = evbus_event_ext_count(ev);
    rd_kafka_headers_t *h = rd_kafka_headers_new(8 + next);
    if (!h)
        return NULL;
    add_attr(h, "content-type", evbus_event_datacontenttype(ev));
    add_attr(h, "ce_specversion", evbus_event_specversion(ev));
    add_attr(h, "ce_id", evbus_event_id(ev));
    add_attr(h, "ce_source", evbus_event_source(ev));
    add_attr(h, "ce_type", evbus_event_type(ev));
    add_attr(h, "ce_subject", evbus_event_subject(ev));
    add_attr(h, "ce_time", evbus_event_time(ev));
    add_attr(h, "ce_dataschema", evbus_event_dataschema(ev));
    for (size_t i = 0; i < next; i++) {
        const char *name, *value;
        if (evbus_event_ext_at(ev, i, &name, &value) != EVBUS_OK)
            continue;
        /* names from the wire may be longer than 20 characters */
        size_t hn = strlen(name) + 4;
        char *hname = malloc(hn);
        if (!hname) {
            rd_kafka_headers_destroy(h);
            return NULL;
        }
        snprintf(hname, hn, "ce_%s", name);
        add_attr(h, hname, value);
        free(hname);
    }
    return h;
}

static char *dup_reason(const char *fmt, const char *a, const char *b)
{
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a ? a : "", b ? b : "");
    return strdup(buf);
}

/* A header value borrowed from librdkafka's list (alive as long as the
 * headers are): v is NULL when the header is absent. */
typedef struct {
    const char *v;
    size_t n;
} hval_t;

/* A ce_ header that is no attribute: its name after the prefix. */
typedef struct {
    const char *name;
    hval_t val;
} hext_t;

/* The attributes a ce_ header names, in the order they are checked. */
enum {
    H_ID = EVBUS__ATTR_ID,
    H_SOURCE = EVBUS__ATTR_SOURCE,
    H_TYPE = EVBUS__ATTR_TYPE,
    H_SUBJECT = EVBUS__ATTR_SUBJECT,
    H_TIME = EVBUS__ATTR_TIME,
    H_DATASCHEMA = EVBUS__ATTR_DATASCHEMA,
    H_DCT = EVBUS__ATTR_DATACONTENTTYPE,
    H_SPEC,
    H_COUNT
};

static const char *const attr_names[H_COUNT] = {
    [H_ID] = "id",           [H_SOURCE] = "source",
    [H_TYPE] = "type",       [H_SUBJECT] = "subject",
    [H_TIME] = "time",       [H_DATASCHEMA] = "dataschema",
    [H_DCT] = "datacontenttype", [H_SPEC] = "specversion"};

static int header_attr(const char *a)
{
    static const size_t len[H_COUNT] = {
        [H_ID] = 2,      [H_SOURCE] = 6,      [H_TYPE] = 4,
        [H_SUBJECT] = 7, [H_TIME] = 4,        [H_DATASCHEMA] = 10,
        [H_DCT] = 15,    [H_SPEC] = 11};
    size_t n = strlen(a);
    for (int i = 0; i < H_COUNT; i++)
        if (len[i] == n && strcasecmp(a, attr_names[i]) == 0)
            return i;
    return -1;
}

/* The header that gave attribute a: ce_<name>, or content-type. */
static void header_name(char *buf, size_t n, int a, bool from_ct)
{
    if (a == H_DCT && from_ct)
        snprintf(buf, n, "content-type");
    else
        snprintf(buf, n, "ce_%s", attr_names[a]);
}

/* What the ce_ headers of one record say, every value borrowed. */
typedef struct {
    hval_t attr[H_COUNT];
    hext_t local[16], *ext; /* local, or a malloc'd array when larger */
    size_t next, cap;
} hset_t;

/* Sorts the ce_ headers into attributes and extensions, the last value of
 * a name winning (extensions keep the place of their first header).
 * EVBUS_ENOMEM or EVBUS_OK. */
static int collect(rd_kafka_headers_t *h, hset_t *hs)
{
    const char *name;
    const void *val;
    size_t size;
    memset(hs->attr, 0, sizeof hs->attr);
    hs->ext = hs->local;
    hs->next = 0;
    hs->cap = sizeof hs->local / sizeof hs->local[0];
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &size) == 0;
         i++) {
        if ((name[0] | 0x20) != 'c' || (name[1] | 0x20) != 'e' ||
            name[2] != '_') /* "ce_", any case; stops at a NUL */
            continue;
        hval_t hv = {val ? val : "", val ? size : 0};
        int a = header_attr(name + 3);
        if (a >= 0) {
            hs->attr[a] = hv;
            continue;
        }
        size_t k = 0;
        while (k < hs->next && strcasecmp(hs->ext[k].name, name + 3) != 0)
            k++;
        if (k == hs->cap) {
            hext_t *g = malloc(2 * hs->cap * sizeof *g);
            if (!g)
                return EVBUS_ENOMEM;
            memcpy(g, hs->ext, hs->next * sizeof *g);
            if (hs->ext != hs->local)
                free(hs->ext);
            hs->ext = g;
            hs->cap *= 2;
        }
        hs->ext[k].name = name + 3;
        hs->ext[k].val = hv;
        hs->next += k == hs->next;
    }
    return EVBUS_OK;
}

/* Copies a borrowed value into the block (NULL stays NULL). */
static char *put(char **cur, hval_t v)
{
    return v.v ? evbus__blk_put(cur, v.v, v.n) : NULL;
}

/* The setter's reason for refusing header hdr, which names the attribute
 * and the byte offset (the header value itself may not be text). */
static char *refused(const char *hdr)
{
    return dup_reason("binary-mode record has an invalid %s header: %s", hdr,
                      evbus_event_error_message());
}

/* Builds the event of a binary-mode record in one allocation: the header
 * values are read where librdkafka keeps them and copied once, into the
 * event's block, where they are checked as the setters check them. */
static int decode_binary(const void *value, size_t len, rd_kafka_headers_t *h,
                         hval_t ct, evbus_event_t **out, char **why)
{
    hset_t hs;
    if (collect(h, &hs) != EVBUS_OK)
        return EVBUS_ENOMEM;
    evbus_event_t *ev = NULL;
    int rc = EVBUS_EDECODE;
    hval_t spec = hs.attr[H_SPEC];
    if (spec.n != 3 || memcmp(spec.v, "1.0", 3) != 0) {
        char sv[40];
        snprintf(sv, sizeof sv, "%.*s", (int)(spec.n < 32 ? spec.n : 32),
                 spec.v ? spec.v : "");
        *why = dup_reason("binary-mode record with ce_specversion '%s' "
                          "(only 1.0 is known)%s",
                          evbus__utf8_ok((const unsigned char *)sv,
                                         strlen(sv)) && !evbus__has_ctl(sv)
                              ? sv
                              : "(not text)",
                          NULL);
        goto out;
    }
    for (int a = H_ID; a <= H_TYPE; a++)
        if (!hs.attr[a].n) {
            *why = dup_reason("binary-mode record lacks a required attribute "
                              "header (ce_id, ce_source, ce_type)%s%s",
                              NULL, NULL);
            goto out;
        }
    /* the content-type header is the datacontenttype (the ce_ header is
     * not looked at then) */
    if (ct.v)
        hs.attr[H_DCT] = ct;
    size_t bytes = value && len ? len + 1 : 0;
    for (int a = 0; a < H_SPEC; a++) {
        hval_t v = hs.attr[a];
        if (v.v && memchr(v.v, '\0', v.n)) {
            char hdr[40];
            header_name(hdr, sizeof hdr, a, ct.v);
            *why = dup_reason("binary-mode record: header %.64s holds a NUL "
                              "byte%s",
                              hdr, NULL);
            goto out;
        }
        bytes += v.v ? v.n + 1 : 0;
    }
    for (size_t i = 0; i < hs.next; i++) {
        if (memchr(hs.ext[i].val.v, '\0', hs.ext[i].val.n)) {
            *why = dup_reason("binary-mode record: header ce_%.64s holds a "
                              "NUL byte%s",
                              hs.ext[i].name, NULL);
            goto out;
        }
        bytes += strlen(hs.ext[i].name) + hs.ext[i].val.n + 2;
    }
    char *cur;
    ev = evbus__event_alloc(hs.next, bytes, &cur);
    if (!ev) {
        rc = EVBUS_ENOMEM;
        goto out;
    }
    char **slot[H_SPEC] = {
        [H_ID] = &ev->id,           [H_SOURCE] = &ev->source,
        [H_TYPE] = &ev->type,       [H_SUBJECT] = &ev->subject,
        [H_TIME] = &ev->time,       [H_DATASCHEMA] = &ev->dataschema,
        [H_DCT] = &ev->datacontenttype};
    for (int a = 0; a < H_SPEC; a++)
        *slot[a] = put(&cur, hs.attr[a]);
    for (int a = H_ID; a <= H_TYPE; a++)
        if (evbus__attr_check(a, *slot[a]) != EVBUS_OK) {
            *why = dup_reason("binary-mode record has an invalid ce_id, "
                              "ce_type or ce_source header: %s%s",
                              evbus_event_error_message(), NULL);
            goto out;
        }
    for (int a = H_SUBJECT; a <= H_DCT; a++)
        if (*slot[a] && evbus__attr_check(a, *slot[a]) != EVBUS_OK) {
            char hdr[40];
            header_name(hdr, sizeof hdr, a, ct.v);
            *why = refused(hdr);
            goto out;
        }
    for (size_t i = 0; i < hs.next; i++) {
        evbus__ext_t *x = &ev->ext[i];
        char *nm = put(&cur, (hval_t){hs.ext[i].name, strlen(hs.ext[i].name)});
        for (char *p = nm; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        x->name = nm;
        x->value = put(&cur, hs.ext[i].val);
        x->kind = EVBUS__EXT_STRING;
        ev->ext_count = i + 1;
        size_t n;
        char *buf = evbus__event_reason_buf(&n);
        if (!evbus__ext_name_check(nm) ||
            !evbus__text_value_ok("extension", nm, x->value, hs.ext[i].val.n,
                                  buf, n)) {
            char hdr[80];
            snprintf(hdr, sizeof hdr, "ce_%.64s", nm);
            *why = refused(hdr);
            goto out;
        }
    }
    ev->ct_json = ev->datacontenttype &&
                  evbus__media_type_is_json(ev->datacontenttype);
    if (value && len) {
        const char *p = value;
        size_t n = len;
        /* The value is the data as it is (binding: "placed into the
         * value as-is"): under a JSON type, or none, not parsed here; the
         * JSON format checks it if the event is ever written that way.
         * Text types still get their cheap UTF-8 look. */
        int kind = !ev->datacontenttype || ev->ct_json
                       ? EVBUS__DATA_RAW
                       : evbus__data_kind(value, len, ev->datacontenttype,
                                          true, &p, &n); /* not JSON:
                                                            never fails */
        ev->data = (unsigned char *)evbus__blk_put(&cur, p, n);
        ev->data_len = n;
        ev->data_kind = kind;
    }
    *out = ev;
    ev = NULL;
    rc = EVBUS_OK;
out:
    evbus_event_free(ev);
    if (hs.ext != hs.local)
        free(hs.ext);
    return rc;
}

/* 1 when the header value v (size bytes, not NUL-terminated) starts with
 * prefix, ignoring case. */
static int value_starts(const void *v, size_t size, const char *prefix)
{
    size_t n = strlen(prefix);
    return v && size >= n && strncasecmp(v, prefix, n) == 0;
}

/* The content-type header's value, when there is one. */
static bool content_type(rd_kafka_headers_t *h, const void **v, size_t *n)
{
    *v = NULL;
    *n = 0;
    return h && rd_kafka_header_get_last(h, "content-type", v, n) == 0;
}

static bool is_structured(const void *ct, size_t n)
{
    return value_starts(ct, n, "application/cloudevents") &&
           !value_starts(ct, n, "application/cloudevents-batch");
}

bool evbus__kafka_wire_structured(rd_kafka_headers_t *h)
{
    const void *ct;
    size_t n;
    return content_type(h, &ct, &n) && is_structured(ct, n);
}

int evbus__kafka_wire_classify(const rd_kafka_message_t *rkm,
                               evbus_event_t **event, char **why)
{
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        h = NULL;
    return evbus__kafka_wire_decode(rkm->payload, rkm->len, h, event, why);
}

int evbus__kafka_wire_decode(const void *value, size_t len,
                             rd_kafka_headers_t *h, evbus_event_t **event,
                             char **why)
{
    *event = NULL;
    *why = NULL;
    if (!h)
        return EVBUS_OK; /* no headers: a bare JSON event (Dapr) */
    const void *ctv;
    size_t ctsize;
    bool has_ct = content_type(h, &ctv, &ctsize);
    if (has_ct && value_starts(ctv, ctsize, "application/cloudevents")) {
        if (is_structured(ctv, ctsize))
            return EVBUS_OK; /* structured: the core decodes the value */
        char *ct = strndup(ctv, ctsize);
        *why = dup_reason("structured-mode batch records (%s) are not "
                          "supported%s",
                          ct, NULL);
        free(ct);
        return EVBUS_EDECODE;
    }
    const void *v;
    size_t size;
    if (rd_kafka_header_get_last(h, "ce_specversion", &v, &size) != 0)
        return EVBUS_OK; /* no binary-mode headers: a bare JSON event */
    hval_t ct = {NULL, 0};
    if (has_ct)
        ct = (hval_t){ctv ? ctv : "", ctv ? ctsize : 0};
    return decode_binary(value, len, h, ct, event, why);
}
