/*
 * Test helper: runs a private redis-server on 127.0.0.1 and an unused port,
 * with its data (append-only file) in a fresh temporary directory, so a
 * SIGKILL'd server can be restarted with its data. The binary is taken from
 * $REDIS_SERVER (set by meson) or "redis-server" on PATH.
 */
#ifndef EVBUS_TEST_REDIS_SERVER_H
#define EVBUS_TEST_REDIS_SERVER_H

#include <sys/types.h>

typedef struct {
    pid_t pid;
    int port;
    char dir[256];
    char url[128];        /* redis://127.0.0.1:PORT */
    const char *extra[8]; /* extra "--name value" arguments, NULL-ended */
} test_redis_t;

/* Starts a server (extra: NULL-terminated list of extra arguments, may be
 * NULL) and waits until it answers PING. Returns 0, or -1 with a message
 * on stderr. */
int test_redis_start(test_redis_t *r, const char *const *extra);
/* Kills it with SIGKILL (no shutdown, no save) and reaps it. */
void test_redis_kill(test_redis_t *r);
/* Starts it again on the same port and directory. 0 or -1. */
int test_redis_restart(test_redis_t *r);
/* Stops it (SIGTERM), reaps it and removes its directory. */
void test_redis_stop(test_redis_t *r);

#endif
