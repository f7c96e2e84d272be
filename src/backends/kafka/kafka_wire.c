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
 * through byte for byte (never re-labelled application/octet-stream).
 * Header values are checked as UTF-8 by the event setters.
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

/* A header value as a NUL-terminated copy (NULL when absent; "" when the
 * header has a null value). */
static char *header_str(rd_kafka_headers_t *h, const char *name)
{
    const void *v;
    size_t size;
    if (!h || rd_kafka_header_get_last(h, name, &v, &size))
        return NULL;
    return v ? strndup(v, size) : strdup("");
}

static char *dup_reason(const char *fmt, const char *a, const char *b)
{
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a ? a : "", b ? b : "");
    return strdup(buf);
}

/* Builds the event of a binary-mode record. */
static int decode_binary(const void *value, size_t len, rd_kafka_headers_t *h,
                         const char *content_type, evbus_event_t **out,
                         char **why)
{
    char *spec = header_str(h, "ce_specversion");
    char *id = header_str(h, "ce_id");
    char *source = header_str(h, "ce_source");
    char *type = header_str(h, "ce_type");
    evbus_event_t *ev = NULL;
    int rc = EVBUS_EDECODE;
    if (!spec) {
        rc = EVBUS_ENOMEM;
        goto out;
    }
    if (strcmp(spec, "1.0") != 0) {
        *why = dup_reason("binary-mode record with ce_specversion '%s' "
                          "(only 1.0 is known)%s",
                          spec, NULL);
        goto out;
    }
    if (!id || !*id || !source || !*source || !type || !*type) {
        *why = dup_reason("binary-mode record lacks a required attribute "
                          "header (ce_id, ce_source, ce_type)%s%s",
                          NULL, NULL);
        goto out;
    }
    /* Built from the headers as they are: no id generated (a UUID per
     * record cost most of the consume rate), no time invented. */
    size_t next = 0;
    const char *hn;
    const void *hv;
    size_t hs;
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &hn, &hv, &hs) == 0; i++)
        next += strncasecmp(hn, "ce_", 3) == 0;
    ev = evbus__event_new_with_id(type, source, id, next);
    if (!ev) {
        *why = dup_reason("binary-mode record has an invalid ce_id, ce_type "
                          "or ce_source header: %s%s",
                          evbus_event_error_message(), NULL);
        goto out;
    }
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &size) == 0;
         i++) {
        if (strncasecmp(name, "ce_", 3) != 0)
            continue;
        char *attr = strdup(name + 3);
        char *v = val ? strndup(val, size) : strdup("");
        if (!attr || !v) {
            free(attr);
            free(v);
            rc = EVBUS_ENOMEM;
            goto out;
        }
        for (char *p = attr; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!strcmp(attr, "specversion") || !strcmp(attr, "id") ||
            !strcmp(attr, "source") || !strcmp(attr, "type")) {
            free(attr);
            free(v);
            continue;
        }
        if (strlen(v) != size && val) {
            *why = dup_reason("binary-mode record: header %.64s holds a NUL "
                              "byte%s",
                              name, NULL);
            free(attr);
            free(v);
            goto out;
        }
        int r;
        if (!strcmp(attr, "subject"))
            r = evbus_event_set_subject(ev, v);
        else if (!strcmp(attr, "time"))
            r = evbus_event_set_time(ev, v);
        else if (!strcmp(attr, "dataschema"))
            r = evbus_event_set_dataschema(ev, v);
        else if (!strcmp(attr, "datacontenttype"))
            r = content_type ? EVBUS_OK
                             : evbus_event_set_datacontenttype(ev, v);
        else
            r = evbus_event_set_ext(ev, attr, v);
        free(v);
        if (r != EVBUS_OK) {
            /* the setter's reason names the attribute and the byte offset;
             * the header value itself may not be text */
            char hdr[80];
            snprintf(hdr, sizeof hdr, "ce_%.64s", attr);
            *why = dup_reason("binary-mode record has an invalid %s header: "
                              "%s",
                              hdr, evbus_event_error_message());
            free(attr);
            goto out;
        }
        free(attr);
    }
    if (content_type &&
        evbus_event_set_datacontenttype(ev, content_type) != EVBUS_OK) {
        *why = dup_reason("binary-mode record has an invalid content-type "
                          "header: %s%s",
                          evbus_event_error_message(), NULL);
        goto out;
    }
    const char *ct = evbus_event_datacontenttype(ev);
    if (value && len &&
        evbus_event_set_data_bytes(ev, value, len, ct) != EVBUS_OK) {
        *why = dup_reason("binary-mode record: the value does not match its "
                          "content type '%s': %s",
                          ct, evbus_event_error_message());
        goto out;
    }
    *out = ev;
    ev = NULL;
    rc = EVBUS_OK;
out:
    evbus_event_free(ev);
    free(spec);
    free(id);
    free(source);
    free(type);
    return rc;
}

/* 1 when the header value v (size bytes, not NUL-terminated) starts with
 * prefix, ignoring case. */
static int value_starts(const void *v, size_t size, const char *prefix)
{
    size_t n = strlen(prefix);
    return v && size >= n && strncasecmp(v, prefix, n) == 0;
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
    const void *ctv = NULL;
    size_t ctsize = 0;
    bool has_ct = rd_kafka_header_get_last(h, "content-type", &ctv,
                                           &ctsize) == 0;
    if (has_ct && value_starts(ctv, ctsize, "application/cloudevents")) {
        if (!value_starts(ctv, ctsize, "application/cloudevents-batch"))
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
    char *ct = has_ct ? (ctv ? strndup(ctv, ctsize) : strdup("")) : NULL;
    if (has_ct && !ct)
        return EVBUS_ENOMEM;
    int rc = decode_binary(value, len, h, ct, event, why);
    free(ct);
    return rc;
}
