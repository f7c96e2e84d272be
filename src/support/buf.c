#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/buf.h"

bool evbus__buf_reserve(evbus__buf_t *b, size_t more)
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

void evbus__buf_json_str(evbus__buf_t *b, const char *s)
{
    evbus__buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            evbus__buf_append(b, esc, 2);
        } else if (c < 0x20) {
            evbus__buf_printf(b, "\\u%04x", c);
        } else {
            evbus__buf_append(b, s, 1);
        }
    }
    evbus__buf_append(b, "\"", 1);
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
