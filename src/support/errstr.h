/* One-line error messages for the errstr/errstr_size convention. */
#ifndef EVBUS_SUPPORT_ERRSTR_H
#define EVBUS_SUPPORT_ERRSTR_H

#include <stddef.h>

/* Formats into errstr (n bytes, always NUL-terminated); errstr may be NULL
 * or n 0, then nothing is written. */
void evbus__seterr(char *errstr, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
