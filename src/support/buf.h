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

/* Makes room for `more` bytes beyond len. false (and failed set) when out
 * of memory. */
bool evbus__buf_reserve(evbus__buf_t *b, size_t more);
void evbus__buf_append(evbus__buf_t *b, const void *p, size_t n);
void evbus__buf_puts(evbus__buf_t *b, const char *s);
void evbus__buf_printf(evbus__buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal: quoted, with ", \ and control
 * characters escaped (s is UTF-8 and copied through as is). */
void evbus__buf_json_str(evbus__buf_t *b, const char *s);
/* Hands the bytes to the caller (free() them) and resets b; NULL when the
 * buffer failed (its memory is released). */
char *evbus__buf_take(evbus__buf_t *b, size_t *len);
void evbus__buf_free(evbus__buf_t *b);

#endif
