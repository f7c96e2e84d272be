/*
 * CloudEvents 1.0 value rules: attribute names, control characters, RFC 3339
 * times, media types, absolute URIs; evbus_event_validate and the project's
 * <domain>.<entity>.<action> type convention.
 */
#include <string.h>

#include "event_internal.h"
#include "internal.h"
#include "support/buf.h"

bool evbus__name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

bool evbus__has_ctl_n(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    const uint64_t lo = UINT64_C(0x0101010101010101);
    const uint64_t hi = UINT64_C(0x8080808080808080);
    while (i < n) {
        /* fast path: 8 bytes of printable ASCII (0x20-0x7e) at a time */
        if (n - i >= 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            uint64_t below = (v - lo * 0x20) & ~v & hi; /* a byte < 0x20 */
            uint64_t above = ((v + lo) | v) & hi;       /* a byte >= 0x7f */
            if (!(below | above)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        /* U+0080-009F are C2 80 .. C2 9F in UTF-8 */
        if (c == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
            return true;
        i++;
    }
    return false;
}

bool evbus__has_ctl(const char *s)
{
    return evbus__has_ctl_n(s, strlen(s));
}

/* Offset of the first control character in s[0..n) (valid UTF-8), or n. */
static size_t ctl_offset(const char *s, size_t n)
{
    if (!evbus__has_ctl_n(s, n))
        return n;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f ||
            (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f))
            return i;
    return n;
}

bool evbus__text_value_ok(const char *what, const char *name, const char *v,
                          size_t n, char *err, size_t errn)
{
    /* printable ASCII (most values): UTF-8 without a control character */
    if (evbus__json_str_run(v, n, true) == n)
        return true;
    size_t off;
    const char *why;
    if (!evbus__utf8_check((const unsigned char *)v, n, &off, &why)) {
        evbus__seterr(err, errn,
                      "%s '%.64s' is not valid UTF-8 at byte offset %zu: %s",
                      what, name, off, why);
        return false;
    }
    if ((off = ctl_offset(v, n)) < n) {
        evbus__seterr(err, errn,
                      "%s '%.64s' contains a control character at byte "
                      "offset %zu",
                      what, name, off);
        return false;
    }
    return true;
}

/* RFC 2045 token character. */
static bool token_char(unsigned char c)
{
    if (c <= 0x20 || c >= 0x7f)
        return false;
    switch (c) { /* tspecials */
    case '(': case ')': case '<': case '>': case '@': case ',': case ';':
    case ':': case '\\': case '"': case '/': case '[': case ']': case '?':
    case '=':
        return false;
    default:
        return true;
    }
}

/* Splits "type/subtype[;params]": lengths of type and subtype, or false. */
static bool media_split(const char *s, size_t *tlen, const char **sub,
                        size_t *slen)
{
    size_t i = 0;
    while (s[i] && token_char((unsigned char)s[i]))
        i++;
    if (i == 0 || s[i] != '/')
        return false;
    *tlen = i;
    *sub = s + i + 1;
    size_t j = 0;
    while ((*sub)[j] && token_char((unsigned char)(*sub)[j]))
        j++;
    if (j == 0)
        return false;
    *slen = j;
    return true;
}

bool evbus__media_type_ok(const char *s)
{
    size_t tlen, slen;
    const char *sub;
    if (!s || !media_split(s, &tlen, &sub, &slen))
        return false;
    const char *p = sub + slen;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return true;
    /* parameters: anything after ';' without control characters */
    return *p == ';' && !evbus__has_ctl(p);
}

static bool ieq(const char *a, size_t n, const char *b)
{
    return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

static bool iends(const char *a, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(a + n - k, suffix, k) == 0;
}

bool evbus__media_type_is_json(const char *s)
{
    size_t tlen, slen;
    const char *sub;
    if (!s || !media_split(s, &tlen, &sub, &slen))
        return false;
    return ieq(sub, slen, "json") || iends(sub, slen, "+json");
}

bool evbus__media_type_is_text(const char *s)
{
    size_t tlen, slen;
    const char *sub;
    if (!s || !media_split(s, &tlen, &sub, &slen))
        return false;
    return ieq(s, tlen, "text") || ieq(sub, slen, "xml") ||
           iends(sub, slen, "+xml");
}

bool evbus__uri_absolute(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return false;
    const char *p = s + 1;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
           (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (*p != ':')
        return false;
    for (p++; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return !evbus__has_ctl(s);
}

/* ---- RFC 3339 */

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool evbus__time_parse(const char *s, evbus__instant_t *out)
{
    if (!s)
        return false;
    /* YYYY-MM-DDTHH:MM:SS; num() stops at the NUL of a short string */
    int Y = num(s, 4);
    if (Y < 0 || s[4] != '-')
        return false;
    int M = num(s + 5, 2);
    if (M < 0 || s[7] != '-')
        return false;
    int D = num(s + 8, 2);
    if (D < 0 || (s[10] != 'T' && s[10] != 't'))
        return false;
    int h = num(s + 11, 2);
    if (h < 0 || s[13] != ':')
        return false;
    int mi = num(s + 14, 2);
    if (mi < 0 || s[16] != ':')
        return false;
    int sec = num(s + 17, 2);
    if (sec < 0)
        return false;
    if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 ||
        mi > 59 || sec > 60)
        return false;
    const char *p = s + 19;
    const char *frac = p;
    size_t frac_len = 0;
    if (*p == '.') {
        frac = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        frac_len = (size_t)(p - frac);
        if (frac_len == 0)
            return false;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh = num(p + 1, 2);
        if (oh < 0 || p[3] != ':')
            return false;
        int om = num(p + 4, 2);
        if (om < 0 || oh > 23 || om > 59)
            return false;
        off = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    if (out) {
        while (frac_len > 0 && frac[frac_len - 1] == '0')
            frac_len--;
        out->sec = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 +
                   sec - off;
        out->frac = frac;
        out->frac_len = frac_len;
    }
    return true;
}

bool evbus__time_same(const char *a, const char *b)
{
    evbus__instant_t x, y;
    if (!evbus__time_parse(a, &x) || !evbus__time_parse(b, &y))
        return false;
    return x.sec == y.sec && x.frac_len == y.frac_len &&
           memcmp(x.frac, y.frac, x.frac_len) == 0;
}

/* ---- whole events and type names */

int evbus_event_validate(const evbus_event_t *ev, char *errstr,
                         size_t errstr_size)
{
    if (!ev) {
        evbus__seterr(errstr, errstr_size, "no event (NULL)");
        return EVBUS_EINVAL;
    }
    static const char *const names[] = {"id", "source", "type"};
    const char *vals[] = {ev->id, ev->source, ev->type};
    for (size_t i = 0; i < 3; i++) {
        if (!vals[i]) {
            evbus__seterr(errstr, errstr_size,
                          "missing required attribute '%s'", names[i]);
            return EVBUS_EINVAL;
        }
        if (!*vals[i]) {
            evbus__seterr(errstr, errstr_size,
                          "required attribute '%s' is empty", names[i]);
            return EVBUS_EINVAL;
        }
    }
    /* every string as text: the setters checked them, this keeps an event
     * that reached the library another way from being written out */
    static const char *const opt[] = {"id",         "source",  "type",
                                      "datacontenttype", "dataschema",
                                      "subject",    "time"};
    const char *ov[] = {ev->id,         ev->source,     ev->type,
                        ev->datacontenttype, ev->dataschema, ev->subject,
                        ev->time};
    for (size_t i = 0; i < sizeof ov / sizeof ov[0]; i++)
        if (ov[i] && !evbus__text_value_ok("attribute", opt[i], ov[i],
                                           strlen(ov[i]), errstr,
                                           errstr_size))
            return EVBUS_EINVAL;
    for (size_t i = 0; i < ev->ext_count; i++) {
        const evbus__ext_t *x = &ev->ext[i];
        if (!evbus__text_value_ok("extension", x->name, x->value,
                                  strlen(x->value), errstr, errstr_size))
            return EVBUS_EINVAL;
    }
    return EVBUS_OK;
}

int evbus_event_type_check(const char *type, char *errstr,
                           size_t errstr_size)
{
    if (!type || !*type) {
        evbus__seterr(errstr, errstr_size, "event type is empty");
        return EVBUS_EINVAL;
    }
    int segments = 0;
    const char *seg = type;
    for (const char *p = type;; p++) {
        if (*p == '.' || *p == '\0') {
            if (p == seg) {
                evbus__seterr(errstr, errstr_size,
                              "event type '%s' has an empty segment", type);
                return EVBUS_EINVAL;
            }
            segments++;
            if (*p == '\0')
                break;
            seg = p + 1;
            continue;
        }
        if (p == seg && !(*p >= 'a' && *p <= 'z')) {
            evbus__seterr(errstr, errstr_size,
                          "event type '%s': segment %d must start with a "
                          "lowercase letter",
                          type, segments + 1);
            return EVBUS_EINVAL;
        }
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_')) {
            evbus__seterr(errstr, errstr_size,
                          "event type '%s': character '%c' not allowed "
                          "(lowercase a-z, 0-9, '-', '_')",
                          type, *p);
            return EVBUS_EINVAL;
        }
    }
    if (segments < 3) {
        evbus__seterr(errstr, errstr_size,
                      "event type '%s' has %d segment%s, needs "
                      "<domain>.<entity>.<action>",
                      type, segments, segments == 1 ? "" : "s");
        return EVBUS_EINVAL;
    }
    return EVBUS_OK;
}
