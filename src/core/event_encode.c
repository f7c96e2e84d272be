/*
 * CloudEvents JSON format (application/cloudevents+json): the encoder.
 *
 * Encoding is hand-assembled into one growing buffer (attribute names are
 * fixed, values are escaped here), which costs one malloc per event and no
 * cJSON tree. Every string in an event is valid UTF-8 (the setters and the
 * decoder refuse anything else) and JSON data is strict JSON text, so the
 * output is JSON any reader accepts. The decoder is in event_decode.c.
 */
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "event_internal.h"
#include "internal.h"

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

typedef struct {
    char *b;
    size_t len, cap;
} sbuf_t;

static bool sb_reserve(sbuf_t *s, size_t more)
{
    if (s->len + more <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + more)
        cap *= 2;
    char *b = realloc(s->b, cap);
    if (!b)
        return false;
    s->b = b;
    s->cap = cap;
    return true;
}

/* Appends n bytes; the caller reserved room. */
static void sb_raw(sbuf_t *s, const void *p, size_t n)
{
    memcpy(s->b + s->len, p, n);
    s->len += n;
}

#define SB_LIT(s, lit) sb_raw((s), (lit), sizeof(lit) - 1)

static inline bool must_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* Length of the prefix of p[0..n) that needs no escaping. */
static size_t plain_run(const char *p, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i ctl_max = _mm_set1_epi8(0x1f);
    for (; n - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        /* v <= 0x1f (unsigned) exactly when max(v, 0x1f) == 0x1f */
        __m128i m = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
            _mm_cmpeq_epi8(_mm_max_epu8(v, ctl_max), ctl_max));
        int mask = _mm_movemask_epi8(m);
        if (mask)
            return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#else
    const uint64_t lo = UINT64_C(0x0101010101010101);
    const uint64_t hi = UINT64_C(0x8080808080808080);
    for (; n - i >= 8; i += 8) {
        uint64_t v, q, b;
        memcpy(&v, p + i, 8);
        q = v ^ (lo * '"');
        b = v ^ (lo * '\\');
        /* exact for "none"; on "maybe" the bytes are looked at below */
        if ((((v - lo * 0x20) & ~v) | ((q - lo) & ~q) | ((b - lo) & ~b)) & hi)
            break;
    }
#endif
    while (i < n && !must_escape((unsigned char)p[i]))
        i++;
    return i;
}

/* Appends p[0..n) as a JSON string. */
static bool sb_str(sbuf_t *s, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!sb_reserve(s, n + 2))
        return false;
    s->b[s->len++] = '"';
    size_t i = 0;
    for (;;) {
        size_t r = plain_run(p + i, n - i);
        sb_raw(s, p + i, r);
        i += r;
        if (i == n)
            break;
        /* an escape is at most 6 bytes where 1 was reserved */
        if (!sb_reserve(s, 6 + (n - i)))
            return false;
        unsigned char c = (unsigned char)p[i++];
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        }
        sb_raw(s, e, el);
    }
    s->b[s->len++] = '"';
    return true;
}

/* Appends ,"key":"value" for a set optional attribute of length n. */
static bool sb_attr(sbuf_t *s, const char *key_lit, size_t key_len,
                    const char *v, size_t n)
{
    if (!v)
        return true;
    if (!sb_reserve(s, key_len + 8))
        return false;
    sb_raw(s, key_lit, key_len);
    return sb_str(s, v, n);
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
static char *encode_into(const evbus_event_t *ev, sbuf_t *s_, size_t *len)
{
    sbuf_t s = *s_;
    s.len = 0;
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
    if (!sb_reserve(&s, guess))
        goto oom;
    SB_LIT(&s, "{\"specversion\":\"1.0\",\"id\":");
    if (!sb_str(&s, v[0], n[0]) ||
        !ATTR(&s, ",\"source\":", v[1], n[1]) ||
        !ATTR(&s, ",\"type\":", v[2], n[2]) ||
        !ATTR(&s, ",\"datacontenttype\":", v[3], n[3]) ||
        !ATTR(&s, ",\"dataschema\":", v[4], n[4]) ||
        !ATTR(&s, ",\"subject\":", v[5], n[5]) ||
        !ATTR(&s, ",\"time\":", v[6], n[6]))
        goto oom;
    for (size_t i = 0; i < ev->ext_count; i++) {
        const evbus__ext_t *x = &ev->ext[i];
        size_t nl = strlen(x->name), vl = strlen(x->value);
        if (!sb_reserve(&s, nl + vl + 8))
            goto oom;
        SB_LIT(&s, ",\"");
        sb_raw(&s, x->name, nl); /* a-z0-9: nothing to escape */
        SB_LIT(&s, "\":");
        if (x->kind == EVBUS__EXT_STRING) {
            if (!sb_str(&s, x->value, vl))
                goto oom;
        } else {
            sb_raw(&s, x->value, vl); /* digits, true or false */
        }
    }
    if (ev->data) {
        switch (kind) {
        case EVBUS__DATA_BINARY: {
            size_t bl = b64_encoded_len(ev->data_len);
            if (!sb_reserve(&s, bl + 20))
                goto oom;
            SB_LIT(&s, ",\"data_base64\":\"");
            b64_encode(s.b + s.len, ev->data, ev->data_len);
            s.len += bl;
            s.b[s.len++] = '"';
            break;
        }
        case EVBUS__DATA_TEXT:
            if (!sb_reserve(&s, 10))
                goto oom;
            SB_LIT(&s, ",\"data\":");
            if (!sb_str(&s, (const char *)ev->data, ev->data_len))
                goto oom;
            break;
        default: /* JSON text, checked when it was set */
            if (!sb_reserve(&s, ev->data_len + 10))
                goto oom;
            SB_LIT(&s, ",\"data\":");
            sb_raw(&s, ev->data, ev->data_len);
        }
    }
    if (!sb_reserve(&s, 2))
        goto oom;
    s.b[s.len++] = '}';
    s.b[s.len] = '\0';
    if (len)
        *len = s.len;
    *s_ = s;
    return s.b;
oom:
    *s_ = s;
    return NULL;
}

char *evbus_event_to_json(const evbus_event_t *ev, size_t *len)
{
    if (!ev || !ev->id || !ev->source || !ev->type)
        return NULL;
    sbuf_t s = {NULL, 0, 0};
    char *out = encode_into(ev, &s, len);
    if (!out)
        free(s.b);
    return out;
}

char *evbus__event_encode_reuse(const evbus_event_t *ev, char **buf,
                                size_t *cap, size_t *len)
{
    if (!ev || !ev->id || !ev->source || !ev->type)
        return NULL;
    sbuf_t s = {*buf, 0, *cap};
    char *out = encode_into(ev, &s, len);
    *buf = s.b;
    *cap = s.cap;
    return out;
}
