/*
 * The CloudEvents 1.0 event object: construction, attributes, data, clone,
 * equality; extensions are in event_ext.c. The JSON codec is in
 * event_encode.c and event_decode.c, value rules in event_validate.c and
 * text_check.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include <cjson/cJSON.h>

#include "event_internal.h"
#include "internal.h"

#define TIME_BUF 32 /* "2024-01-15T10:30:00.123456Z" + NUL */

/* ---- refusals: one reason per thread, read by evbus_event_error_message */

static _Thread_local char tl_reason[256];

const char *evbus_event_error_message(void)
{
    return tl_reason;
}

char *evbus__event_reason_buf(size_t *n)
{
    *n = sizeof tl_reason;
    return tl_reason;
}

int evbus__event_refuse(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_reason, sizeof tl_reason, fmt, ap);
    va_end(ap);
    return EVBUS_EINVAL;
}

/* A string attribute's value: non-empty, UTF-8, no control characters.
 * EVBUS_OK or EVBUS_EINVAL with the reason recorded. */
static int check_plain(const char *attr, const char *v)
{
    if (!v)
        return evbus__event_refuse("attribute '%s' is required (NULL given)",
                                   attr);
    if (!*v)
        return evbus__event_refuse("attribute '%s' is empty", attr);
    size_t n;
    char *buf = evbus__event_reason_buf(&n);
    return evbus__text_value_ok("attribute", attr, v, strlen(v), buf, n)
               ? EVBUS_OK
               : EVBUS_EINVAL;
}

/* ---- memory */

evbus_event_t *evbus__event_alloc(size_t n_ext, size_t bytes, char **cursor)
{
    size_t head = sizeof(evbus_event_t) + n_ext * sizeof(evbus__ext_t);
    evbus_event_t *ev = malloc(head + bytes);
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    ev->ext = n_ext ? (evbus__ext_t *)(ev + 1) : NULL;
    ev->ext_cap = n_ext;
    ev->blk = (char *)ev + sizeof(evbus_event_t);
    ev->blk_end = (char *)ev + head + bytes;
    *cursor = (char *)ev + head;
    return ev;
}

char *evbus__blk_put(char **cursor, const void *src, size_t n)
{
    char *d = *cursor;
    if (n)
        memcpy(d, src, n);
    d[n] = '\0';
    *cursor = d + n + 1;
    return d;
}

void evbus__event_release(evbus_event_t *ev, void *p)
{
    uintptr_t u = (uintptr_t)p;
    if (p && !(u >= (uintptr_t)ev->blk && u < (uintptr_t)ev->blk_end))
        free(p);
}

size_t evbus__fmt_int64(char *buf, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/* Civil date of a day count since 1970-01-01 (H. Hinnant's algorithm);
 * gmtime_r would take glibc's time zone lock on every event. */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* Now as "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (27 characters). */
static void time_now(char *buf)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t days = (int64_t)ts.tv_sec / 86400;
    int64_t sod = (int64_t)ts.tv_sec % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    put2(buf, y / 100 % 100);
    put2(buf + 2, y % 100);
    buf[4] = '-';
    put2(buf + 5, mo);
    buf[7] = '-';
    put2(buf + 8, d);
    buf[10] = 'T';
    put2(buf + 11, (int)(sod / 3600));
    buf[13] = ':';
    put2(buf + 14, (int)(sod / 60 % 60));
    buf[16] = ':';
    put2(buf + 17, (int)(sod % 60));
    buf[19] = '.';
    long us = ts.tv_nsec / 1000;
    for (int i = 25; i >= 20; i--) {
        buf[i] = (char)('0' + us % 10);
        us /= 10;
    }
    buf[26] = 'Z';
    buf[27] = '\0';
}

/* UUIDv4 ids come from libuuid (uuid_generate_random: kernel randomness,
 * about 2 us per id here). Deliberately not a faster pool of our own: ids
 * are the dedup key of every inbox, and generating them is libuuid's job. */
/* ---- construction */

evbus_event_t *evbus_event_new(const char *type, const char *source)
{
    if (check_plain("type", type) != EVBUS_OK ||
        check_plain("source", source) != EVBUS_OK)
        return NULL;
    size_t tl = strlen(type), sl = strlen(source);
    char *cur;
    evbus_event_t *ev = evbus__event_alloc(0, 37 + TIME_BUF + tl + sl + 2,
                                           &cur);
    if (!ev)
        return NULL;
    uuid_t u;
    uuid_generate_random(u);
    ev->id = cur;
    uuid_unparse_lower(u, ev->id);
    cur += 37;
    ev->time = cur;
    time_now(ev->time);
    cur += TIME_BUF;
    ev->type = evbus__blk_put(&cur, type, tl);
    ev->source = evbus__blk_put(&cur, source, sl);
    return ev;
}

evbus_event_t *evbus__event_new_with_id(const char *type, const char *source,
                                        const char *id, size_t n_ext)
{
    if (check_plain("id", id) != EVBUS_OK ||
        check_plain("type", type) != EVBUS_OK ||
        check_plain("source", source) != EVBUS_OK)
        return NULL;
    size_t il = strlen(id), tl = strlen(type), sl = strlen(source);
    char *cur;
    evbus_event_t *ev = evbus__event_alloc(n_ext, il + tl + sl + 3, &cur);
    if (!ev)
        return NULL;
    ev->id = evbus__blk_put(&cur, id, il);
    ev->type = evbus__blk_put(&cur, type, tl);
    ev->source = evbus__blk_put(&cur, source, sl);
    return ev;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static char *put_opt(char **cur, const char *s)
{
    return s ? evbus__blk_put(cur, s, strlen(s)) : NULL;
}

evbus_event_t *evbus_event_clone(const evbus_event_t *ev)
{
    if (!ev)
        return NULL;
    size_t bytes = slen(ev->id) + slen(ev->source) + slen(ev->type) +
                   slen(ev->datacontenttype) + slen(ev->dataschema) +
                   slen(ev->subject) + slen(ev->time);
    if (ev->data)
        bytes += ev->data_len + 1;
    for (size_t i = 0; i < ev->ext_count; i++)
        bytes += slen(ev->ext[i].name) + slen(ev->ext[i].value);
    char *cur;
    evbus_event_t *c = evbus__event_alloc(ev->ext_count, bytes, &cur);
    if (!c)
        return NULL;
    c->id = put_opt(&cur, ev->id);
    c->source = put_opt(&cur, ev->source);
    c->type = put_opt(&cur, ev->type);
    c->datacontenttype = put_opt(&cur, ev->datacontenttype);
    c->ct_json = ev->ct_json;
    c->dataschema = put_opt(&cur, ev->dataschema);
    c->subject = put_opt(&cur, ev->subject);
    c->time = put_opt(&cur, ev->time);
    for (size_t i = 0; i < ev->ext_count; i++) {
        c->ext[i].name = put_opt(&cur, ev->ext[i].name);
        c->ext[i].value = put_opt(&cur, ev->ext[i].value);
        c->ext[i].kind = ev->ext[i].kind;
    }
    c->ext_count = ev->ext_count;
    if (ev->data) {
        c->data = (unsigned char *)evbus__blk_put(&cur, ev->data,
                                                  ev->data_len);
        c->data_len = ev->data_len;
        c->data_kind = ev->data_kind;
    }
    return c;
}

void evbus_event_free(evbus_event_t *ev)
{
    if (!ev)
        return;
    evbus__event_release(ev, ev->id);
    evbus__event_release(ev, ev->source);
    evbus__event_release(ev, ev->type);
    evbus__event_release(ev, ev->datacontenttype);
    evbus__event_release(ev, ev->dataschema);
    evbus__event_release(ev, ev->subject);
    evbus__event_release(ev, ev->time);
    evbus__event_release(ev, ev->data);
    for (size_t i = 0; i < ev->ext_count; i++)
        evbus__event_release(ev, ev->ext[i].name);
    evbus__event_release(ev, ev->ext);
    free(ev);
}

/* ---- getters */

const char *evbus_event_id(const evbus_event_t *ev)
{
    return ev ? ev->id : NULL;
}
const char *evbus_event_source(const evbus_event_t *ev)
{
    return ev ? ev->source : NULL;
}
const char *evbus_event_specversion(const evbus_event_t *ev)
{
    return ev ? "1.0" : NULL;
}
const char *evbus_event_type(const evbus_event_t *ev)
{
    return ev ? ev->type : NULL;
}
const char *evbus_event_datacontenttype(const evbus_event_t *ev)
{
    return ev ? ev->datacontenttype : NULL;
}
const char *evbus_event_dataschema(const evbus_event_t *ev)
{
    return ev ? ev->dataschema : NULL;
}
const char *evbus_event_subject(const evbus_event_t *ev)
{
    return ev ? ev->subject : NULL;
}
const char *evbus_event_time(const evbus_event_t *ev)
{
    return ev ? ev->time : NULL;
}

/* ---- setters */

/* Replaces *slot with a copy of v (NULL unsets). */
static int replace(evbus_event_t *ev, char **slot, const char *v)
{
    char *copy = NULL;
    if (v) {
        size_t n = strlen(v);
        if (!(copy = malloc(n + 1)))
            return EVBUS_ENOMEM;
        memcpy(copy, v, n + 1);
    }
    evbus__event_release(ev, *slot);
    *slot = copy;
    return EVBUS_OK;
}

#define NO_EVENT() evbus__event_refuse("no event (NULL)")

int evbus__attr_check(int attr, const char *v)
{
    static const char *const names[] = {"id",      "source", "type",
                                        "subject", "time",   "dataschema",
                                        "datacontenttype"};
    int rc = check_plain(names[attr], v);
    if (rc)
        return rc;
    if (attr == EVBUS__ATTR_TIME && !evbus__time_parse(v, NULL))
        return evbus__event_refuse(
            "time '%.64s' is not an RFC 3339 timestamp "
            "(YYYY-MM-DDTHH:MM:SS[.frac] and Z or +hh:mm)",
            v);
    if (attr == EVBUS__ATTR_DATASCHEMA && !evbus__uri_absolute(v))
        return evbus__event_refuse("dataschema '%.64s' is not an absolute "
                                   "URI",
                                   v);
    if (attr == EVBUS__ATTR_DATACONTENTTYPE && !evbus__media_type_ok(v))
        return evbus__event_refuse("datacontenttype '%.64s' is not a media "
                                   "type (type/subtype)",
                                   v);
    return EVBUS_OK;
}

/* A required attribute (any value checked) or an optional one (NULL
 * unsets) set to a copy of v. */
static int set_attr(evbus_event_t *ev, int attr, char **slot, const char *v,
                    bool required)
{
    if (!ev)
        return NO_EVENT();
    int rc = v || required ? evbus__attr_check(attr, v) : EVBUS_OK;
    return rc ? rc : replace(ev, slot, v);
}

int evbus_event_set_id(evbus_event_t *ev, const char *id)
{
    return set_attr(ev, EVBUS__ATTR_ID, ev ? &ev->id : NULL, id, true);
}

int evbus_event_set_source(evbus_event_t *ev, const char *source)
{
    return set_attr(ev, EVBUS__ATTR_SOURCE, ev ? &ev->source : NULL, source,
                    true);
}

int evbus_event_set_type(evbus_event_t *ev, const char *type)
{
    return set_attr(ev, EVBUS__ATTR_TYPE, ev ? &ev->type : NULL, type, true);
}

/* Sets datacontenttype (already validated) and the cached JSON flag. */
static int set_ct(evbus_event_t *ev, const char *ct)
{
    if (ct && ev->datacontenttype && strcmp(ev->datacontenttype, ct) == 0)
        return EVBUS_OK;
    int rc = replace(ev, &ev->datacontenttype, ct);
    if (rc == EVBUS_OK)
        ev->ct_json = ct && evbus__media_type_is_json(ct);
    return rc;
}

int evbus_event_set_datacontenttype(evbus_event_t *ev,
                                    const char *content_type)
{
    if (!ev)
        return NO_EVENT();
    if (content_type) {
        int rc = evbus__attr_check(EVBUS__ATTR_DATACONTENTTYPE, content_type);
        if (rc)
            return rc;
    }
    return set_ct(ev, content_type);
}

int evbus_event_set_dataschema(evbus_event_t *ev, const char *uri)
{
    return set_attr(ev, EVBUS__ATTR_DATASCHEMA, ev ? &ev->dataschema : NULL,
                    uri, false);
}

int evbus_event_set_subject(evbus_event_t *ev, const char *subject)
{
    return set_attr(ev, EVBUS__ATTR_SUBJECT, ev ? &ev->subject : NULL,
                    subject, false);
}

int evbus_event_set_time(evbus_event_t *ev, const char *rfc3339)
{
    return set_attr(ev, EVBUS__ATTR_TIME, ev ? &ev->time : NULL, rfc3339,
                    false);
}

/* ---- data */

/* Is [s, s+n) exactly one strict JSON value (surrounding whitespace
 * allowed)? Sets *vs and *ve to the value without the surrounding
 * whitespace. Otherwise records why and returns false. */
/* evbus__event_refuse only when rec: a caller that tries JSON first must
 * not overwrite the last reason. */
#define REFUSE_IF(rec, ...) ((rec) ? (void)evbus__event_refuse(__VA_ARGS__) \
                                   : (void)0)

static bool json_value_span(const char *s, size_t n, const char **vs,
                            const char **ve, bool record)
{
    size_t bad;
    const char *why;
    if (n == 0) {
        REFUSE_IF(record, "data is not JSON: empty");
        return false;
    }
    if (!evbus__utf8_check((const unsigned char *)s, n, &bad, &why)) {
        REFUSE_IF(record, "data is not valid UTF-8 at byte offset %zu: %s",
                            bad, why);
        return false;
    }
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!v) {
        size_t off = end && end >= s ? (size_t)(end - s) : 0;
        REFUSE_IF(record, "data is not JSON: syntax error at byte offset "
                            "%zu",
                            off > n ? n : off);
        return false;
    }
    cJSON_Delete(v);
    const char *e = s + n;
    while (e > end && (unsigned char)e[-1] <= 32)
        e--;
    if (e != end) {
        REFUSE_IF(record, "data is not JSON: text after the value at byte "
                            "offset %zu",
                            (size_t)(end - s));
        return false;
    }
    if (!evbus__json_text_check(s, n, &bad, &why)) {
        REFUSE_IF(record, "data is not JSON: %s at byte offset %zu", why,
                            bad);
        return false;
    }
    const char *b = s;
    while (b < end && (unsigned char)*b <= 32)
        b++;
    *vs = b;
    *ve = end;
    return true;
}

static void data_clear(evbus_event_t *ev);

/* Replaces data with a copy of n bytes at p; kind as given. JSON null is
 * no data: the JSON format cannot tell the two apart. */
static int data_replace(evbus_event_t *ev, const void *p, size_t n, int kind)
{
    if (kind == EVBUS__DATA_JSON && n == 4 && memcmp(p, "null", 4) == 0) {
        data_clear(ev);
        return EVBUS_OK;
    }
    unsigned char *copy = malloc(n + 1);
    if (!copy)
        return EVBUS_ENOMEM;
    if (n)
        memcpy(copy, p, n);
    copy[n] = '\0';
    evbus__event_release(ev, ev->data);
    ev->data = copy;
    ev->data_len = n;
    ev->data_kind = kind;
    return EVBUS_OK;
}

static void data_clear(evbus_event_t *ev)
{
    evbus__event_release(ev, ev->data);
    ev->data = NULL;
    ev->data_len = 0;
    ev->data_kind = EVBUS__DATA_NONE;
}

int evbus_event_set_data_json(evbus_event_t *ev, const char *json)
{
    const char *vs, *ve;
    if (!ev)
        return NO_EVENT();
    if (!json)
        return evbus__event_refuse("data is not JSON: NULL given");
    if (!json_value_span(json, strlen(json), &vs, &ve, true))
        return EVBUS_EINVAL;
    /* the content type first: if it fails nothing has changed */
    int rc = set_ct(ev, "application/json");
    if (rc != EVBUS_OK)
        return rc;
    return data_replace(ev, vs, (size_t)(ve - vs), EVBUS__DATA_JSON);
}

bool evbus__data_is_json_exact(const void *data, size_t n)
{
    const char *vs, *ve, *p = data;
    return json_value_span(p, n, &vs, &ve, false) && vs == p &&
           ve == p + n && !(n == 4 && !memcmp(p, "null", 4));
}

int evbus__data_kind(const void *data, size_t len, const char *ct,
                     bool exact, const char **p, size_t *n)
{
    int kind;
    const char *vs, *ve;
    *p = data;
    *n = len;
    if (!ct) {
        /* untyped bytes: JSON if they are exactly one JSON value (not
         * null, which the JSON format cannot carry), else bytes */
        kind = evbus__data_is_json_exact(data, len) ? EVBUS__DATA_JSON
                                                    : EVBUS__DATA_BINARY;
    } else if (evbus__media_type_is_json(ct)) {
        if (!json_value_span(data, len, &vs, &ve, true))
            return -1;
        /* whitespace around JSON data has no place in the JSON format and
         * would not survive it: dropped, also in exact mode */
        *p = vs;
        *n = (size_t)(ve - vs);
        kind = EVBUS__DATA_JSON;
    } else if (evbus__media_type_is_text(ct) && evbus__utf8_ok(data, len)) {
        kind = EVBUS__DATA_TEXT;
    } else {
        kind = EVBUS__DATA_BINARY;
    }
    if (exact && kind == EVBUS__DATA_JSON && *n == 4 &&
        !memcmp(*p, "null", 4))
        kind = EVBUS__DATA_BINARY; /* keep the bytes: JSON null is no data */
    return kind;
}

/* evbus_event_set_data (exact = false) and evbus_event_set_data_bytes
 * (exact = true: no default content type, untyped bytes never trimmed). */
static int set_data_common(evbus_event_t *ev, const void *data, size_t len,
                           const char *content_type, bool exact)
{
    if (!ev)
        return NO_EVENT();
    if (!data && len)
        return evbus__event_refuse("data is NULL but its length is %zu", len);
    if (!data && !exact) {
        data_clear(ev);
        return EVBUS_OK;
    }
    if (!content_type && !exact)
        content_type = "application/octet-stream";
    if (content_type) {
        int crc = evbus__attr_check(EVBUS__ATTR_DATACONTENTTYPE, content_type);
        if (crc)
            return crc;
    }
    if (!data) { /* exact: no data, the content type as given */
        int rc = set_ct(ev, content_type);
        if (rc == EVBUS_OK)
            data_clear(ev);
        return rc;
    }
    const char *p;
    size_t n;
    int kind = evbus__data_kind(data, len, content_type, exact, &p, &n);
    if (kind < 0)
        return EVBUS_EINVAL;
    int rc = set_ct(ev, content_type);
    if (rc != EVBUS_OK)
        return rc;
    return data_replace(ev, p, n, kind);
}

int evbus_event_set_data(evbus_event_t *ev, const void *data, size_t len,
                         const char *content_type)
{
    return set_data_common(ev, data, len, content_type, false);
}

int evbus_event_set_data_bytes(evbus_event_t *ev, const void *data,
                               size_t len, const char *content_type)
{
    return set_data_common(ev, data, len, content_type, true);
}

const void *evbus_event_data(const evbus_event_t *ev)
{
    return ev ? ev->data : NULL;
}

size_t evbus_event_data_len(const evbus_event_t *ev)
{
    return ev ? ev->data_len : 0;
}

/* ---- equality */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int evbus_event_equal(const evbus_event_t *a, const evbus_event_t *b)
{
    if (a == b)
        return 1;
    if (!a || !b)
        return 0;
    if (!str_eq(a->id, b->id) || !str_eq(a->source, b->source) ||
        !str_eq(a->type, b->type) ||
        !str_eq(a->datacontenttype, b->datacontenttype) ||
        !str_eq(a->dataschema, b->dataschema) ||
        !str_eq(a->subject, b->subject))
        return 0;
    if (!a->time != !b->time)
        return 0;
    if (a->time && !str_eq(a->time, b->time) &&
        !evbus__time_same(a->time, b->time))
        return 0;
    if (a->data_len != b->data_len || !a->data != !b->data ||
        (a->data_len && memcmp(a->data, b->data, a->data_len) != 0))
        return 0;
    if (a->ext_count != b->ext_count)
        return 0;
    for (size_t i = 0; i < a->ext_count; i++) {
        const evbus__ext_t *y = evbus__ext_find(b, a->ext[i].name);
        if (!y || strcmp(a->ext[i].value, y->value) != 0)
            return 0;
    }
    return 1;
}
