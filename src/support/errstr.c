#include <stdarg.h>
#include <stdio.h>

#include "support/errstr.h"

void evbus__seterr(char *errstr, size_t n, const char *fmt, ...)
{
    if (!errstr || !n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, n, fmt, ap);
    va_end(ap);
}
