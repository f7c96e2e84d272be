#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "support/buf.h"

bool evbus__buf_grow(evbus__buf_t *b, size_t more)
{
    if (b->failed)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void evbus__buf_append(evbus__buf_t *b, const void *p, size_t n)
{
    if (!evbus__buf_reserve(b, n))
        return;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void evbus__buf_puts(evbus__buf_t *b, const char *s)
{
    evbus__buf_append(b, s, strlen(s));
}

void evbus__buf_printf(evbus__buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !evbus__buf_reserve(b, (size_t)n)) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Is c a byte a JSON string holds as it is, with nothing to look at? */
static inline bool str_plain(unsigned char c, bool ascii)
{
    return c >= 0x20 && c != '"' && c != '\\' && (!ascii || c < 0x7f);
}

/* Are the 8 bytes at s all str_plain? */
static inline bool word_plain(const unsigned char *s, bool ascii)
{
    const uint64_t lo = UINT64_C(0x0101010101010101);
    const uint64_t hi = UINT64_C(0x8080808080808080);
    uint64_t v, q, b, d;
    memcpy(&v, s, 8);
    q = v ^ (lo * '"');
    b = v ^ (lo * '\\');
    uint64_t stop = ((v - lo * 0x20) & ~v) | ((q - lo) & ~q) | ((b - lo) & ~b);
    if (ascii) {
        d = v ^ (lo * 0x7f);
        stop |= v | ((d - lo) & ~d);
    }
    /* exact for "none" (a "maybe" may be wrong in the bytes after a hit) */
    return !(stop & hi);
}

#ifdef __SSE2__
/* Bit k set: byte k of the 16 at s is not str_plain. */
static inline unsigned sse_stops(const unsigned char *s, bool ascii)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
    const __m128i ctl_max = _mm_set1_epi8(0x1f);
    /* v <= 0x1f (unsigned) exactly when max(v, 0x1f) == 0x1f */
    __m128i m = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                     _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
        _mm_cmpeq_epi8(_mm_max_epu8(v, ctl_max), ctl_max));
    if (ascii) /* DEL, and bytes >= 0x80 (their top bit) */
        m = _mm_or_si128(_mm_or_si128(m, v),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

size_t evbus__json_str_run(const char *p, size_t n, bool ascii)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
#ifdef __SSE2__
    if (n >= 16) {
        for (; n - i > 16; i += 16) {
            unsigned m = sse_stops(s + i, ascii);
            if (m)
                return i + (size_t)__builtin_ctz(m);
        }
        /* the last 16 bytes, the first i - off of them checked already */
        size_t off = n - 16;
        unsigned m = sse_stops(s + off, ascii) & (~0u << (i - off));
        return m ? off + (size_t)__builtin_ctz(m) : n;
    }
#endif
    while (n - i >= 8 && word_plain(s + i, ascii))
        i += 8;
    /* short of a word: the last 8 bytes, overlapping */
    if (n - i < 8 && i < n && n >= 8 && word_plain(s + n - 8, ascii))
        return n;
    while (i < n && str_plain(s[i], ascii))
        i++;
    return i;
}

void evbus__buf_json_strn(evbus__buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!evbus__buf_reserve(b, n + 2))
        return;
    b->data[b->len++] = '"';
    size_t i = 0;
    for (;;) {
        size_t r = evbus__json_str_run(s + i, n - i, false);
        memcpy(b->data + b->len, s + i, r);
        b->len += r;
        i += r;
        if (i == n)
            break;
        /* an escape is at most 6 bytes where 1 was reserved */
        if (!evbus__buf_reserve(b, 6 + (n - i)))
            return;
        unsigned char c = (unsigned char)s[i++];
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
        memcpy(b->data + b->len, e, el);
        b->len += el;
    }
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

void evbus__buf_json_str(evbus__buf_t *b, const char *s)
{
    evbus__buf_json_strn(b, s, strlen(s));
}

char *evbus__buf_take(evbus__buf_t *b, size_t *len)
{
    char *p = NULL;
    if (!b->failed && evbus__buf_reserve(b, 0)) {
        p = b->data;
        if (len)
            *len = b->len;
        b->data = NULL;
    }
    evbus__buf_free(b);
    return p;
}

void evbus__buf_free(evbus__buf_t *b)
{
    free(b->data);
    *b = (evbus__buf_t){0};
}
