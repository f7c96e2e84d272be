/*
 * The one place that decides whether bytes are text: UTF-8 as RFC 3629
 * defines it, and JSON text as RFC 8259 defines it. Setters, the event
 * validator, the JSON decoder and the binary-mode header paths of the Kafka
 * and Dapr backends all call these, so every edge refuses the same bytes
 * with the same reason.
 *
 * cJSON parses leniently (raw control characters in strings, any byte
 * <= 0x20 as whitespace, numbers such as "01" or "1.", no UTF-8 check);
 * evbus__json_text_check refuses what it lets through, so JSON text that
 * libevbus keeps and writes back out is JSON every other reader accepts.
 */
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "event_internal.h"
#include "support/buf.h"

/* 8 bytes of ASCII without a NUL? */
static bool ascii8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    const uint64_t hi = UINT64_C(0x8080808080808080);
    const uint64_t lo = UINT64_C(0x0101010101010101);
    return ((v | ((v - lo) & ~v)) & hi) == 0;
}

/* Length of the well-formed sequence at s[0..n) (s[0] >= 0x80), or 0 with
 * *why set. */
static size_t utf8_seq(const unsigned char *s, size_t n, const char **why)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
    if (c < 0xc0) {
        *why = "continuation byte without a lead byte";
        return 0;
    }
    if (c < 0xc2) {
        *why = "overlong encoding";
        return 0;
    }
    if (c <= 0xdf) {
        need = 1;
    } else if (c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0; /* below: overlong */
        else if (c == 0xed)
            hi = 0x9f; /* above: UTF-16 surrogates U+D800-DFFF */
    } else if (c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90; /* below: overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above: beyond U+10FFFF */
    } else {
        *why = "byte 0xF5-0xFF (never in UTF-8; above U+10FFFF)";
        return 0;
    }
    if (n <= need) {
        /* a truncated sequence, unless a byte already breaks it */
        for (size_t k = 1; k < n; k++)
            if ((s[k] & 0xc0) != 0x80) {
                *why = "truncated sequence";
                return 0;
            }
        *why = "truncated sequence";
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        if ((s[1] & 0xc0) != 0x80)
            *why = "truncated sequence";
        else if (c == 0xed)
            *why = "UTF-16 surrogate (U+D800-DFFF)";
        else if (c == 0xf4)
            *why = "code point above U+10FFFF";
        else
            *why = "overlong encoding";
        return 0;
    }
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xc0) != 0x80) {
            *why = "truncated sequence";
            return 0;
        }
    return need + 1;
}

bool evbus__utf8_check(const unsigned char *s, size_t n, size_t *bad,
                       const char **why)
{
    const char *w = NULL;
    size_t i = 0;
    while (i < n) {
#ifdef __SSE2__
        if (n - i >= 16) { /* 16 bytes of ASCII without a NUL */
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            if (!(_mm_movemask_epi8(v) |
                  _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())))) {
                i += 16;
                continue;
            }
        }
#endif
        if (n - i >= 8 && ascii8(s + i)) {
            i += 8;
            continue;
        }
        if (s[i] == 0) {
            w = "NUL byte";
            break;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, n - i, &w);
        if (!k)
            break;
        i += k;
    }
    if (i >= n)
        return true;
    if (bad)
        *bad = i;
    if (why)
        *why = w;
    return false;
}

bool evbus__utf8_ok(const unsigned char *s, size_t n)
{
    return evbus__utf8_check(s, n, NULL, NULL);
}

/* ---- strict JSON text */

/* One JSON number at p (RFC 8259 grammar); returns its end or NULL. */
static const char *json_number(const char *p, const char *e)
{
    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        const char *d = ++p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    return p;
}

bool evbus__json_text_scan(const char *text, size_t n, size_t *bad,
                           const char **why, unsigned *seen)
{
    const unsigned char *s = (const unsigned char *)text;
    const char *w = NULL;
    size_t i = 0;
    unsigned got = 0;
    bool in_str = false;
    while (i < n) {
        unsigned char c;
        if (in_str) {
            i += evbus__json_str_run(text + i, n - i, true);
            if (i >= n)
                break;
            c = s[i];
            if (c == '"') {
                in_str = false;
                i++;
            } else if (c == '\\') {
                got |= EVBUS__TEXT_ESCAPES;
                i += 2; /* cJSON checked the escape itself */
            } else if (c < 0x20) {
                w = "control character inside a string (must be escaped)";
                break;
            } else if (c < 0x80) { /* 0x7f */
                got |= EVBUS__TEXT_UNPRINTABLE;
                i++;
            } else {
                got |= EVBUS__TEXT_UNPRINTABLE;
                size_t k = utf8_seq(s + i, n - i, &w);
                if (!k)
                    break;
                i += k;
            }
            continue;
        }
        c = s[i];
        if (c == '"') {
            in_str = true;
            i++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
                   c == '{' || c == '}' || c == '[' || c == ']' ||
                   c == ',' || c == ':') {
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const char *end = json_number(text + i, text + n);
            if (!end) {
                w = "malformed number";
                break;
            }
            i = (size_t)(end - text);
            /* "01": a number may not run on into a digit */
            if (i < n && s[i] >= '0' && s[i] <= '9') {
                w = "number with a leading zero";
                break;
            }
        } else if (c >= 'a' && c <= 'z') {
            i++; /* true, false, null: cJSON matched the words */
        } else {
            w = c >= 0x80 ? "byte outside a string"
                          : "character that is not JSON whitespace";
            break;
        }
    }
    if (seen)
        *seen = got;
    if (i >= n && !in_str)
        return true;
    if (!w)
        w = "truncated string";
    if (bad)
        *bad = i < n ? i : n;
    if (why)
        *why = w;
    return false;
}

bool evbus__json_text_check(const char *text, size_t n, size_t *bad,
                            const char **why)
{
    return evbus__json_text_scan(text, n, bad, why, NULL);
}
