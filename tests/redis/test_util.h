/* Small helpers shared by the redis test programs. */
#ifndef EVBUS_TEST_REDIS_UTIL_H
#define EVBUS_TEST_REDIS_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "evbus/evbus.h"
#include "redis_server.h"

static inline long long tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A raw hiredis connection to the test server (optionally authenticated). */
static inline redisContext *tu_raw(const test_redis_t *r, const char *auth)
{
    redisContext *c = redisConnect("127.0.0.1", r->port);
    if (!c || c->err)
        return NULL;
    if (auth) {
        redisReply *rep = redisCommand(c, "AUTH %s", auth);
        freeReplyObject(rep);
    }
    return c;
}

static inline long long tu_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* "redis://127.0.0.1:PORT<suffix>" into buf. */
static inline const char *tu_url(char *buf, size_t n, const test_redis_t *r,
                                 const char *suffix)
{
    snprintf(buf, n, "%s%s", r->url, suffix ? suffix : "");
    return buf;
}

static inline void tu_topic(char *buf, size_t n, const char *name)
{
    static int counter;
    snprintf(buf, n, "t.%s.%d.%d", name, (int)getpid(), ++counter);
}

/* Polls bus until *flag (an int written by handlers on this thread) reaches
 * want or ms pass. Returns the final value. */
static inline int tu_poll_until(evbus_t *bus, volatile int *flag, int want,
                                int ms)
{
    long long end = tu_now_ms() + ms;
    while (*flag < want && tu_now_ms() < end)
        evbus_poll(bus, 50);
    return *flag;
}

#endif
