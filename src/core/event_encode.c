/*
 * CloudEvents JSON format (application/cloudevents+json): the encoder.
 *
 * Encoding is hand-assembled into one growing buffer (attribute names are
 * fixed, values are escaped by evbus__buf_json_strn), which costs one
 * malloc per event and no cJSON tree. Every string in an event is valid UTF-8 (the setters and the
 * decoder refuse anything else) and JSON data is strict JSON text, so the
 * output is JSON any reader accepts. The decoder is in event_decode.c.
 */
#include <stdlib.h>
#include <string.h>

#include "event_internal.h"
#include "internal.h"
#include "support/buf.h"

/* ---- base64 (RFC 4648, standard alphabet, padding) */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

static void b64_encode(char *out, const unsigned char *in, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
                     in[i + 2];
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = b64_chars[(v >> 6) & 63];
        *out++ = b64_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = b64_chars[(v >> 6) & 63];
        *out++ = '=';
    }
}

/* ---- encoder */

/* The text grows in an evbus__buf_t (support/buf.h); the encoder reserves
 * room for a run of writes at once and then copies without checks. */

/* Appends n bytes; the caller reserved room. */
static void sb_raw(evbus__buf_t *s, const void *p, size_t n)
{
    memcpy(s->data + s->len, p, n);
    s->len += n;
}

#define SB_LIT(s, lit) sb_raw((s), (lit), sizeof(lit) - 1)

/* Appends ,"key":"value" for a set optional attribute of length n. */
static void sb_attr(evbus__buf_t *s, const char *key_lit, size_t key_len,
                    const char *v, size_t n)
{
    if (!v || !evbus__buf_reserve(s, key_len + 8))
        return;
    sb_raw(s, key_lit, key_len);
    evbus__buf_json_strn(s, v, n);
}

#define ATTR(s, lit, v, n) sb_attr((s), (lit), sizeof(lit) - 1, (v), (n))

static size_t opt_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/*
 * How the data goes on the wire. Normally as it was set or received, but a
 * later change of datacontenttype could make a decoder read the bytes
 * differently; then data_base64, which always gives back the same bytes:
 * text under a JSON type (or no type) would be read as JSON, and a JSON
 * string under a non-JSON type would lose its quotes. Bytes kept unparsed
 * (EVBUS__DATA_RAW) go as JSON only when they are exactly one JSON value.
 */
static int wire_kind(const evbus_event_t *ev)
{
    int kind = ev->data_kind;
    if (!ev->data || kind == EVBUS__DATA_BINARY)
        return kind;
    bool json_type = !ev->datacontenttype || ev->ct_json;
    if (kind == EVBUS__DATA_RAW) /* parsed only now that JSON is written */
        return json_type && evbus__data_is_json_exact(ev->data, ev->data_len)
                   ? EVBUS__DATA_JSON
                   : EVBUS__DATA_BINARY;
    if (kind == EVBUS__DATA_TEXT && json_type)
        return EVBUS__DATA_BINARY;
    if (kind == EVBUS__DATA_JSON && !json_type && ev->data[0] == '"')
        return EVBUS__DATA_BINARY;
    return kind;
}

/* Encodes ev into s (which may already own a buffer to reuse). Returns the
 * text, or NULL when out of memory; s keeps its buffer either way. */
static char *encode_into(const evbus_event_t *ev, evbus__buf_t *s_,
                         size_t *len)
{
    evbus__buf_t s = *s_;
    s.len = 0;
    s.failed = false;
    /* each length once; a first guess that fits an event without escapes */
    const char *v[7] = {ev->id,         ev->source,  ev->type,
                        ev->datacontenttype, ev->dataschema, ev->subject,
                        ev->time};
    size_t n[7], guess = 160;
    for (int i = 0; i < 7; i++)
        guess += n[i] = opt_len(v[i]);
    for (size_t i = 0; i < ev->ext_count; i++)
        guess += 8 + strlen(ev->ext[i].name) + strlen(ev->ext[i].value);
    int kind = wire_kind(ev);
    if (ev->data)
        guess += kind == EVBUS__DATA_BINARY
                     ? b64_encoded_len(ev->data_len)
                     : ev->data_len + ev->data_len / 8;
    if (!evbus__buf_reserve(&s, guess))
        goto oom;
    SB_LIT(&s, "{\"specversion\":\"1.0\",\"id\":");
    evbus__buf_json_strn(&s, v[0], n[0]);
    ATTR(&s, ",\"source\":", v[1], n[1]);
    ATTR(&s, ",\"type\":", v[2], n[2]);
    ATTR(&s, ",\"datacontenttype\":", v[3], n[3]);
    ATTR(&s, ",\"dataschema\":", v[4], n[4]);
    ATTR(&s, ",\"subject\":", v[5], n[5]);
    ATTR(&s, ",\"time\":", v[6], n[6]);
    if (s.failed)
        goto oom;
    for (size_t i = 0; i < ev->ext_count; i++) {
        const evbus__ext_t *x = &ev->ext[i];
        size_t nl = strlen(x->name), vl = strlen(x->value);
        if (!evbus__buf_reserve(&s, nl + vl + 8))
            goto oom;
        SB_LIT(&s, ",\"");
        sb_raw(&s, x->name, nl); /* a-z0-9: nothing to escape */
        SB_LIT(&s, "\":");
        if (x->kind == EVBUS__EXT_STRING) {
            evbus__buf_json_strn(&s, x->value, vl);
            if (s.failed)
                goto oom;
        } else {
            sb_raw(&s, x->value, vl); /* digits, true or false */
        }
    }
    if (ev->data) {
        switch (kind) {
        case EVBUS__DATA_BINARY: {
            size_t bl = b64_encoded_len(ev->data_len);
            if (!evbus__buf_reserve(&s, bl + 20))
                goto oom;
            SB_LIT(&s, ",\"data_base64\":\"");
            b64_encode(s.data + s.len, ev->data, ev->data_len);
            s.len += bl;
            s.data[s.len++] = '"';
            break;
        }
        case EVBUS__DATA_TEXT:
            if (!evbus__buf_reserve(&s, 10))
                goto oom;
            SB_LIT(&s, ",\"data\":");
            evbus__buf_json_strn(&s, (const char *)ev->data, ev->data_len);
            if (s.failed)
                goto oom;
            break;
        default: /* JSON text, checked when it was set */
            if (!evbus__buf_reserve(&s, ev->data_len + 10))
                goto oom;
            SB_LIT(&s, ",\"data\":");
            sb_raw(&s, ev->data, ev->data_len);
        }
    }
    if (!evbus__buf_reserve(&s, 1))
        goto oom;
    s.data[s.len++] = '}';
    s.data[s.len] = '\0';
    if (len)
        *len = s.len;
    *s_ = s;
    return s.data;
oom:
    *s_ = s;
    return NULL;
}

char *evbus_event_to_json(const evbus_event_t *ev, size_t *len)
{
    if (!ev || !ev->id || !ev->source || !ev->type)
        return NULL;
    evbus__buf_t s = {0};
    char *out = encode_into(ev, &s, len);
    if (!out)
        evbus__buf_free(&s);
    return out;
}

char *evbus__event_encode_reuse(const evbus_event_t *ev, char **buf,
                                size_t *cap, size_t *len)
{
    if (!ev || !ev->id || !ev->source || !ev->type)
        return NULL;
    evbus__buf_t s = {*buf, 0, *cap, false};
    char *out = encode_into(ev, &s, len);
    *buf = s.data;
    *cap = s.cap;
    return out;
}
