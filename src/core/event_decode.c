/*
 * CloudEvents JSON format (application/cloudevents+json): the decoder.
 *
 * Decoding parses with cJSON, checks that the input is strict JSON text
 * (UTF-8 included: text_check.c), validates every member, then copies
 * everything into one allocation (see event_internal.h). JSON `data` is
 * kept as the exact text of the input (located by a small scanner over the
 * already-validated input), so numbers and escapes survive a round trip
 * byte for byte. The encoder is in event_encode.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "event_internal.h"
#include "internal.h"

/* ---- base64 (RFC 4648, standard alphabet, padding) */

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Checks s (n chars); on success *out_len = decoded size. Padding is
 * optional but, when present, must complete the last group. On failure
 * *bad = position of the offending character. */
static bool b64_check(const char *s, size_t n, size_t *out_len, size_t *bad)
{
    size_t m = n;
    while (m > 0 && n - m < 2 && s[m - 1] == '=')
        m--;
    for (size_t i = 0; i < m; i++) {
        if (b64_val((unsigned char)s[i]) < 0) {
            *bad = i;
            return false;
        }
    }
    if (m % 4 == 1 || (m != n && n % 4 != 0)) {
        *bad = n;
        return false;
    }
    *out_len = m / 4 * 3 + (m % 4 ? m % 4 - 1 : 0);
    return true;
}

/* Decodes a string b64_check accepted. */
static void b64_decode(unsigned char *out, const char *s, size_t n)
{
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        acc = acc << 6 | (uint32_t)b64_val((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *out++ = (unsigned char)(acc >> bits);
        }
    }
}

/* ---- raw value scanner (input already validated by cJSON) */

static const char *scan_ws(const char *p, const char *e)
{
    /* cJSON treats every byte <= 32 as whitespace; so do we */
    while (p < e && (unsigned char)*p <= 32)
        p++;
    return p;
}

/* p at the opening quote; returns past the closing quote or NULL. */
static const char *scan_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

static const char *scan_value(const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return scan_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char c = *p;
            if (c == '"') {
                if (!(p = scan_string(p, e)))
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ']' &&
           (unsigned char)*p > 32)
        p++;
    return p;
}

/* Finds the raw text of the top-level member whose unescaped key is key. */
static bool scan_member(const char *p, const char *e, const char *key,
                        const char **vs, const char **ve)
{
    size_t klen = strlen(key);
    p = scan_ws(p, e);
    if (p >= e || *p != '{')
        return false;
    p++;
    for (;;) {
        p = scan_ws(p, e);
        if (p >= e || *p != '"')
            return false;
        const char *ks = p + 1;
        if (!(p = scan_string(p, e)))
            return false;
        size_t kl = (size_t)(p - 1 - ks);
        p = scan_ws(p, e);
        if (p >= e || *p != ':')
            return false;
        p = scan_ws(p + 1, e);
        const char *v = p;
        if (!(p = scan_value(p, e)))
            return false;
        if (kl == klen && memcmp(ks, key, klen) == 0) {
            *vs = v;
            *ve = p;
            return true;
        }
        p = scan_ws(p, e);
        if (p >= e || *p != ',')
            return false;
        p++;
    }
}

/*
 * cJSON turns a \u0000 escape into a NUL inside a C string, which would
 * silently cut an attribute, extension or text data short. Returns the
 * first such escape outside [keep_s, keep_e) (JSON data kept as text, where
 * it is harmless), or NULL. Nearly free when the input has no "u0000".
 */
static const char *find_nul_escape(const char *p, const char *e,
                                   const char *keep_s, const char *keep_e)
{
    /* memchr is the cheapest look: most events hold no backslash at all */
    const char *bs = memchr(p, '\\', (size_t)(e - p));
    if (!bs || !memmem(bs, (size_t)(e - bs), "\\u0000", 6))
        return NULL;
    bool in_str = false;
    for (; p < e; p++) {
        if (!in_str) {
            in_str = *p == '"';
        } else if (*p == '"') {
            in_str = false;
        } else if (*p == '\\') {
            if (e - p >= 6 && memcmp(p + 1, "u0000", 5) == 0 &&
                !(p >= keep_s && p < keep_e))
                return p;
            p++;
        }
    }
    return NULL;
}

static int attr_index(const char *k);

/* Names the top-level member of the (parsed) object text [p, e) whose key
 * or value holds byte off, into buf: "attribute 'subject'", "extension
 * 'x'", "'data'", or "a member name" when off is inside a key. */
static void member_at(const char *p, const char *e, size_t off, char *buf,
                      size_t n)
{
    const char *base = p;
    snprintf(buf, n, "the event");
    p = scan_ws(p, e);
    if (p >= e || *p != '{')
        return;
    p++;
    for (;;) {
        p = scan_ws(p, e);
        if (p >= e || *p != '"')
            return;
        const char *ks = p + 1;
        if (!(p = scan_string(p, e)))
            return;
        size_t kl = (size_t)(p - 1 - ks);
        if (off < (size_t)(p - base)) {
            snprintf(buf, n, "a member name");
            return;
        }
        p = scan_ws(p, e);
        if (p >= e || *p != ':')
            return;
        p = scan_ws(p + 1, e);
        if (!(p = scan_value(p, e)))
            return;
        if (off < (size_t)(p - base)) {
            char key[72];
            snprintf(key, sizeof key, "%.*s", (int)(kl < 64 ? kl : 64), ks);
            if (!evbus__utf8_ok((const unsigned char *)key, strlen(key)))
                snprintf(buf, n, "a member");
            else if (!strcmp(key, "data") || !strcmp(key, "data_base64"))
                snprintf(buf, n, "'%s'", key);
            else if (attr_index(key) >= 0)
                snprintf(buf, n, "attribute '%s'", key);
            else
                snprintf(buf, n, "extension '%s'", key);
            return;
        }
        p = scan_ws(p, e);
        if (p >= e || *p != ',')
            return;
        p++;
    }
}

/* ---- decoder */

static const char *json_type_name(const cJSON *c)
{
    if (cJSON_IsString(c))
        return "a string";
    if (cJSON_IsNumber(c))
        return "a number";
    if (cJSON_IsBool(c))
        return "a boolean";
    if (cJSON_IsObject(c))
        return "an object";
    if (cJSON_IsArray(c))
        return "an array";
    return "null";
}

enum {
    A_SPECVERSION,
    A_ID,
    A_SOURCE,
    A_TYPE,
    A_DATACONTENTTYPE,
    A_DATASCHEMA,
    A_SUBJECT,
    A_TIME,
    A_DATA,
    A_DATA_BASE64,
    A_COUNT
};

static const char *const attr_names[A_COUNT] = {
    "specversion", "id",      "source", "type", "datacontenttype",
    "dataschema",  "subject", "time",   "data", "data_base64"};

static int attr_index(const char *k)
{
    /* dispatch on the first letter, then one strcmp */
    int i;
    switch (k[0]) {
    case 's':
        i = k[1] == 'p' ? A_SPECVERSION : k[1] == 'o' ? A_SOURCE : A_SUBJECT;
        break;
    case 'i': i = A_ID; break;
    case 't': i = k[1] == 'y' ? A_TYPE : A_TIME; break;
    case 'd':
        if (k[1] != 'a' || k[2] != 't' || k[3] != 'a') /* stops at NUL */
            return -1;
        switch (k[4]) {
        case '\0': return A_DATA;
        case '_': i = A_DATA_BASE64; break;
        case 'c': i = A_DATACONTENTTYPE; break;
        case 's': i = A_DATASCHEMA; break;
        default: return -1;
        }
        break;
    default: return -1;
    }
    return strcmp(k, attr_names[i]) == 0 ? i : -1;
}

/* An integral JSON number that a double holds exactly? */
static bool json_int(const cJSON *c, int64_t *out)
{
    double d = c->valuedouble;
    if (!(d >= -(double)EVBUS__EXT_INT_MAX && d <= (double)EVBUS__EXT_INT_MAX))
        return false;
    int64_t v = (int64_t)d;
    if ((double)v != d)
        return false;
    *out = v;
    return true;
}

/* What the decoding steps learn about one input. */
typedef struct {
    const char *json;
    size_t len;
    char *errstr;
    size_t errstr_size;
    cJSON *root;
    const cJSON *attr[A_COUNT]; /* members that are set (not null) */
    size_t alen[A_DATA];        /* string lengths of the attributes */
    size_t n_ext;
    size_t bytes;               /* room needed after the struct */
    const char *ct;             /* datacontenttype or NULL */
    bool ct_json;
    int kind;                   /* EVBUS__DATA_* */
    const char *dsrc;           /* data bytes to copy (not for BINARY) */
    size_t dlen;
    char *printed;              /* JSON data printed by cJSON (rare) */
    unsigned seen;              /* what the strings hold: EVBUS__TEXT_* */
} decoder_t;

/* Writes the reason and evaluates to false. */
#define REFUSE(d, ...)                                                        \
    (evbus__seterr((d)->errstr, (d)->errstr_size, __VA_ARGS__), false)

/* Size limit, NULs, cJSON parse, nothing after the object. */
static bool dec_parse(decoder_t *d, size_t max_bytes)
{
    if (!d->json)
        return REFUSE(d, "not JSON: no input (NULL)");
    /* a terminating NUL counted in len is not part of the text */
    while (d->len > 0 && d->json[d->len - 1] == '\0')
        d->len--;
    if (max_bytes && d->len > max_bytes)
        return REFUSE(d, "event too large: %zu bytes, over the size limit of "
                         "%zu bytes",
                      d->len, max_bytes);
    if (d->len == 0)
        return REFUSE(d, "not JSON: empty input at byte offset 0");
    const char *nul = memchr(d->json, '\0', d->len);
    if (nul)
        return REFUSE(d, "not JSON: NUL byte at byte offset %zu",
                      (size_t)(nul - d->json));
    const char *end = NULL;
    d->root = cJSON_ParseWithLengthOpts(d->json, d->len, &end, 0);
    if (!d->root) {
        size_t off = end && end >= d->json ? (size_t)(end - d->json) : 0;
        return REFUSE(d, "not JSON: syntax error at byte offset %zu",
                      off > d->len ? d->len : off);
    }
    const char *tail = scan_ws(end, d->json + d->len);
    if (tail < d->json + d->len)
        return REFUSE(d, "not JSON: unexpected text after the event at byte "
                         "offset %zu",
                      (size_t)(tail - d->json));
    if (!cJSON_IsObject(d->root))
        return REFUSE(d, "not a JSON object: an event is a JSON object, got %s",
                      json_type_name(d->root));
    /* what cJSON lets through: invalid UTF-8, raw control characters,
     * other whitespace, numbers such as 01 */
    size_t bad;
    const char *why;
    if (!evbus__json_text_scan(d->json, d->len, &bad, &why, &d->seen)) {
        char where[96];
        member_at(d->json, d->json + d->len, bad, where, sizeof where);
        size_t ubad;
        if (!evbus__utf8_check((const unsigned char *)d->json, d->len, &ubad,
                               NULL) &&
            ubad == bad)
            return REFUSE(d, "%s is not valid UTF-8 at byte offset %zu: %s",
                          where, bad, why);
        return REFUSE(d, "not JSON: %s at byte offset %zu (in %s)", why, bad,
                      where);
    }
    return true;
}

/* Does a string cJSON made hold a control character? Never when the text
 * had only printable ASCII in its strings, unescaped (dec_parse). */
static bool has_ctl(const decoder_t *d, const char *s, size_t n)
{
    return d->seen && evbus__has_ctl_n(s, n);
}

/* Sorts the members into attributes and extensions; checks extension names
 * and values; counts the room they need. */
static bool dec_members(decoder_t *d)
{
    unsigned seen = 0;
    for (const cJSON *c = d->root->child; c; c = c->next) {
        const char *k = c->string;
        int i = attr_index(k);
        if (i >= 0) {
            if (seen & (1u << i))
                return REFUSE(d, "duplicate attribute '%s'", k);
            seen |= 1u << i;
            if (!cJSON_IsNull(c)) /* null means unset */
                d->attr[i] = c;
            continue;
        }
        if (cJSON_IsNull(c))
            continue;
        if (!evbus__name_ok(k))
            return REFUSE(d, "invalid attribute name '%.64s': names use only "
                             "lowercase a-z and 0-9",
                          k);
        int64_t iv;
        if (cJSON_IsString(c)) {
            size_t vl = strlen(c->valuestring);
            if (has_ctl(d, c->valuestring, vl))
                return REFUSE(d, "extension '%.64s' contains a control "
                                 "character",
                              k);
            d->bytes += vl + 1;
        } else if (cJSON_IsNumber(c)) {
            if (!json_int(c, &iv))
                return REFUSE(d, "extension '%.64s' must be an integer, not %g",
                              k, c->valuedouble);
            d->bytes += 24;
        } else if (cJSON_IsBool(c)) {
            d->bytes += 6;
        } else {
            return REFUSE(d, "extension '%.64s' must be a string, integer or "
                             "boolean, not %s",
                          k, json_type_name(c));
        }
        d->bytes += strlen(k) + 1;
        d->n_ext++;
    }
    return true;
}

/* Required attributes, types, empty values, control characters,
 * specversion, media type, URI, time. */
static bool dec_attributes(decoder_t *d)
{
    for (int i = A_SPECVERSION; i < A_DATA; i++) {
        const cJSON *c = d->attr[i];
        bool required = i <= A_TYPE;
        if (!c) {
            if (required)
                return REFUSE(d, "missing required attribute '%s'",
                              attr_names[i]);
            continue;
        }
        if (!cJSON_IsString(c))
            return REFUSE(d, "attribute '%s' must be a JSON string, not %s",
                          attr_names[i], json_type_name(c));
        const char *v = c->valuestring;
        if (!*v)
            return REFUSE(d, "%s attribute '%s' is empty",
                          required ? "required" : "optional", attr_names[i]);
        d->alen[i] = strlen(v);
        if (has_ctl(d, v, d->alen[i]))
            return REFUSE(d, "attribute '%s' contains a control character",
                          attr_names[i]);
        if (i != A_SPECVERSION)
            d->bytes += d->alen[i] + 1;
    }
    const char *sv = d->attr[A_SPECVERSION]->valuestring;
    if (strcmp(sv, "1.0") != 0)
        return REFUSE(d, "unsupported specversion '%.32s' (only \"1.0\")", sv);
    const cJSON *ct = d->attr[A_DATACONTENTTYPE];
    d->ct = ct ? ct->valuestring : NULL;
    if (d->ct && !evbus__media_type_ok(d->ct))
        return REFUSE(d, "datacontenttype '%.64s' is not a media type "
                         "(type/subtype)",
                      d->ct);
    d->ct_json = d->ct && evbus__media_type_is_json(d->ct);
    const cJSON *ds = d->attr[A_DATASCHEMA];
    if (ds && !evbus__uri_absolute(ds->valuestring))
        return REFUSE(d, "dataschema '%.64s' is not an absolute URI",
                      ds->valuestring);
    const cJSON *t = d->attr[A_TIME];
    if (t && !evbus__time_parse(t->valuestring, NULL))
        return REFUSE(d, "time '%.64s' is not an RFC 3339 timestamp "
                         "(YYYY-MM-DDTHH:MM:SS[.frac] and Z or +hh:mm)",
                      t->valuestring);
    return true;
}

/* data / data_base64: which one, how it is kept, how many bytes. */
static bool dec_data(decoder_t *d)
{
    const cJSON *data = d->attr[A_DATA], *b64 = d->attr[A_DATA_BASE64];
    if (data && b64)
        return REFUSE(d, "data and data_base64 both present (only one is "
                         "allowed)");
    if (b64) {
        if (!cJSON_IsString(b64))
            return REFUSE(d, "attribute 'data_base64' must be a JSON string, "
                             "not %s",
                          json_type_name(b64));
        size_t bad;
        if (!b64_check(b64->valuestring, strlen(b64->valuestring), &d->dlen,
                       &bad))
            return REFUSE(d, "data_base64 is not valid base64 (at character "
                             "%zu)",
                          bad);
        d->kind = EVBUS__DATA_BINARY;
    } else if (data && cJSON_IsString(data) && d->ct && !d->ct_json) {
        d->kind = EVBUS__DATA_TEXT; /* the string's characters */
        d->dsrc = data->valuestring;
        d->dlen = strlen(d->dsrc);
    } else if (data) {
        /* a JSON value: keep its exact text from the input */
        const char *vs, *ve;
        d->kind = EVBUS__DATA_JSON;
        if (scan_member(d->json, d->json + d->len, "data", &vs, &ve)) {
            d->dsrc = vs;
            d->dlen = (size_t)(ve - vs);
        } else {
            /* the key was written with escapes: print the value */
            if (!(d->printed = cJSON_PrintUnformatted(data)))
                return REFUSE(d, "out of memory");
            d->dsrc = d->printed;
            d->dlen = strlen(d->printed);
        }
    }
    const char *keep = d->kind == EVBUS__DATA_JSON ? d->dsrc : NULL;
    const char *nulesc =
        d->seen & EVBUS__TEXT_ESCAPES
            ? find_nul_escape(d->json, d->json + d->len, keep,
                              keep ? keep + d->dlen : NULL)
            : NULL;
    if (nulesc)
        return REFUSE(d, "a string holds a NUL character (\\u0000) at byte "
                         "offset %zu",
                      (size_t)(nulesc - d->json));
    if (d->kind != EVBUS__DATA_NONE)
        d->bytes += d->dlen + 1;
    return true;
}

/* Copies everything into one allocation. NULL when out of memory or an
 * extension appears twice. */
static evbus_event_t *dec_build(decoder_t *d)
{
    char *cur;
    evbus_event_t *ev = evbus__event_alloc(d->n_ext, d->bytes, &cur);
    if (!ev) {
        evbus__seterr(d->errstr, d->errstr_size, "out of memory");
        return NULL;
    }
    if (d->kind == EVBUS__DATA_BINARY) {
        const char *b64 = d->attr[A_DATA_BASE64]->valuestring;
        ev->data = (unsigned char *)cur;
        b64_decode(ev->data, b64, strlen(b64));
        ev->data[d->dlen] = '\0';
        cur += d->dlen + 1;
    } else if (d->kind != EVBUS__DATA_NONE) {
        ev->data = (unsigned char *)evbus__blk_put(&cur, d->dsrc, d->dlen);
    }
    ev->data_len = d->dlen;
    ev->data_kind = d->kind;
    ev->ct_json = d->ct_json;

    char **slot[A_DATA] = {NULL,           &ev->id,         &ev->source,
                           &ev->type,      &ev->datacontenttype,
                           &ev->dataschema, &ev->subject,   &ev->time};
    for (int i = A_ID; i < A_DATA; i++)
        if (d->attr[i])
            *slot[i] = evbus__blk_put(&cur, d->attr[i]->valuestring,
                                      d->alen[i]);
    /* the extensions (members dec_members counted), none most often */
    for (const cJSON *c = d->n_ext ? d->root->child : NULL; c; c = c->next) {
        if (attr_index(c->string) >= 0 || cJSON_IsNull(c))
            continue;
        for (size_t k = 0; k < ev->ext_count; k++) {
            if (strcmp(ev->ext[k].name, c->string) == 0) {
                evbus__seterr(d->errstr, d->errstr_size,
                              "duplicate attribute '%.64s'", c->string);
                evbus_event_free(ev);
                return NULL;
            }
        }
        evbus__ext_t *x = &ev->ext[ev->ext_count++];
        x->name = evbus__blk_put(&cur, c->string, strlen(c->string));
        if (cJSON_IsString(c)) {
            x->kind = EVBUS__EXT_STRING;
            x->value = evbus__blk_put(&cur, c->valuestring,
                                      strlen(c->valuestring));
        } else if (cJSON_IsNumber(c)) {
            int64_t iv = 0;
            json_int(c, &iv);
            x->kind = EVBUS__EXT_INT;
            x->value = cur;
            cur += evbus__fmt_int64(cur, iv) + 1;
        } else {
            bool t = cJSON_IsTrue(c);
            x->kind = EVBUS__EXT_BOOL;
            x->value = evbus__blk_put(&cur, t ? "true" : "false", t ? 4 : 5);
        }
    }
    return ev;
}

evbus_event_t *evbus_event_from_json(const char *json, size_t len,
                                     char *errstr, size_t errstr_size)
{
    return evbus_event_from_json_limit(json, len,
                                       EVBUS_EVENT_MAX_BYTES_DEFAULT, errstr,
                                       errstr_size);
}

evbus_event_t *evbus_event_from_json_limit(const char *json, size_t len,
                                           size_t max_bytes, char *errstr,
                                           size_t errstr_size)
{
    decoder_t d;
    memset(&d, 0, sizeof d);
    d.json = json;
    d.len = len;
    d.errstr = errstr;
    d.errstr_size = errstr_size;
    evbus_event_t *ev = NULL;
    if (dec_parse(&d, max_bytes) && dec_members(&d) && dec_attributes(&d) &&
        dec_data(&d))
        ev = dec_build(&d);
    cJSON_free(d.printed);
    cJSON_Delete(d.root);
    return ev;
}
