/*
 * A growing byte buffer. After an allocation failure it stays failed:
 * appends become no-ops and the owner checks `failed` once at the end.
 */
#ifndef EVBUS_SUPPORT_BUF_H
#define EVBUS_SUPPORT_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct evbus__buf {
    char *data;  /* NUL-terminated when len > 0 or after any append */
    size_t len, cap;
    bool failed;
} evbus__buf_t;

/* The slow path of evbus__buf_reserve: reallocates. */
bool evbus__buf_grow(evbus__buf_t *b, size_t more);

/* Makes room for `more` bytes beyond len (and a NUL after them). false
 * (and failed set) when out of memory or already failed. Inline: the
 * event encoder calls it for every attribute. */
static inline bool evbus__buf_reserve(evbus__buf_t *b, size_t more)
{
    if (!b->failed && b->len + more + 1 <= b->cap)
        return true;
    return evbus__buf_grow(b, more);
}
void evbus__buf_append(evbus__buf_t *b, const void *p, size_t n);
void evbus__buf_puts(evbus__buf_t *b, const char *s);
void evbus__buf_printf(evbus__buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Length of the prefix of p[0..n) a JSON string holds as it is: no quote,
 * backslash or byte below 0x20 (what needs an escape), and with ascii no
 * byte above 0x7e either (what a text check looks at closer). Thread-safe,
 * reads p only. */
size_t evbus__json_str_run(const char *p, size_t n, bool ascii);

/* Appends the n bytes at s as a JSON string literal: quoted, with ", \
 * and control characters escaped (\n \r \t \b \f, others \u00XX); s is
 * UTF-8 and copied through as is. Runs of plain bytes are copied at once,
 * so this is also the event encoder's string writer. */
void evbus__buf_json_strn(evbus__buf_t *b, const char *s, size_t n);
/* The same for a NUL-terminated s. */
void evbus__buf_json_str(evbus__buf_t *b, const char *s);
/* Hands the bytes to the caller (free() them) and resets b; NULL when the
 * buffer failed (its memory is released). */
char *evbus__buf_take(evbus__buf_t *b, size_t *len);
void evbus__buf_free(evbus__buf_t *b);

#endif
