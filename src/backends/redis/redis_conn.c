/*
 * Connecting to Redis (AUTH, SELECT), mapping failures to evbus errors, the
 * reconnect backoff, and small helpers (entry ids, an id set).
 */
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis_internal.h"

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* Whether c's I/O failure was a timeout. hiredis >= 1.0 says so in c->err;
 * older versions report REDIS_ERR_IO and leave errno as the failed read,
 * write or connect set it, so callers classify right after the call (the
 * helpers here keep errno intact). */
static bool timed_out(const redisContext *c)
{
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT)
        return true;
#endif
    return c->err == REDIS_ERR_IO &&
           (errno == EAGAIN || errno == EWOULDBLOCK || errno == ETIMEDOUT ||
            errno == EINPROGRESS);
}

int evbus__redis_error(const redisContext *c, const redisReply *r, char *errstr,
                       size_t n)
{
    if (!r || (c && c->err)) {
        const char *why = c && c->err ? c->errstr : "no reply";
        bool timeout = c && timed_out(c);
        snprintf(errstr, n, "redis connection failed: %s%s", why,
                 timeout ? " (command timeout)" : "");
        return timeout ? EVBUS_ETIMEDOUT : EVBUS_ECONN;
    }
    if (r->type != REDIS_REPLY_ERROR) {
        snprintf(errstr, n, "unexpected redis reply type %d", r->type);
        return EVBUS_EIO;
    }
    const char *m = r->str ? r->str : "";
    snprintf(errstr, n, "redis: %s", m);
    static const struct {
        const char *prefix;
        int err;
    } map[] = {
        {"NOAUTH", EVBUS_EAUTH},     {"WRONGPASS", EVBUS_EAUTH},
        {"NOPERM", EVBUS_EAUTH},     {"WRONGTYPE", EVBUS_EREJECTED},
        {"LOADING", EVBUS_EAGAIN},   {"BUSY ", EVBUS_EBUSY},
        {"TRYAGAIN", EVBUS_EAGAIN},  {"MASTERDOWN", EVBUS_EAGAIN},
        {"READONLY", EVBUS_EAGAIN},  {"OOM", EVBUS_EIO},
        {"MISCONF", EVBUS_EIO},      {"NOGROUP", EVBUS_ENOTFOUND},
        {"ERR invalid password", EVBUS_EAUTH},
        {"ERR unknown command", EVBUS_ENOTSUP},
        {"ERR syntax", EVBUS_EREJECTED},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strncmp(m, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].err;
    return EVBUS_EIO;
}

/* Runs one setup command; on an error reply or I/O failure fills errstr
 * with what + reason and returns the mapped error. */
static int setup_cmd(redisContext *c, int argc, const char **argv,
                     const char *what, char *errstr, size_t n)
{
    redisReply *r = evbus__redis_command(c, argc, argv, NULL);
    if (r && r->type != REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return EVBUS_OK;
    }
    char why[256];
    int rc = evbus__redis_error(c, r, why, sizeof why);
    snprintf(errstr, n, "%s: %s", what, why);
    freeReplyObject(r);
    return rc;
}

int evbus__redis_connect(const rds_opts_t *o, int sock_timeout_ms,
                         redisContext **out, char *errstr, size_t n)
{
    *out = NULL;
    redisContext *c =
        redisConnectWithTimeout(o->host, o->port, ms_tv(o->connect_timeout_ms));
    if (!c) {
        snprintf(errstr, n, "out of memory creating a redis connection");
        return EVBUS_ENOMEM;
    }
    if (c->err) {
        bool timeout = timed_out(c);
        snprintf(errstr, n, "cannot connect to redis at %s:%d: %s%s", o->host,
                 o->port, c->errstr,
                 timeout ? " (connect_timeout_ms elapsed)" : "");
        redisFree(c);
        return timeout ? EVBUS_ETIMEDOUT : EVBUS_ECONN;
    }
    redisSetTimeout(c, ms_tv(sock_timeout_ms));
    redisEnableKeepAlive(c);
    int rc = EVBUS_OK;
    if (o->password) {
        const char *argv[3] = {"AUTH", o->user ? o->user : o->password,
                               o->password};
        char what[160];
        if (o->user)
            snprintf(what, sizeof what, "redis AUTH as user '%s' failed",
                     o->user);
        else
            snprintf(what, sizeof what, "redis AUTH failed");
        rc = setup_cmd(c, o->user ? 3 : 2, argv, what, errstr, n);
        if (rc == EVBUS_EIO || rc == EVBUS_EREJECTED)
            rc = EVBUS_EAUTH; /* e.g. "ERR AUTH <password> called without any
                                 password configured" */
    }
    if (rc == EVBUS_OK && o->db) {
        char db[16], what[64];
        snprintf(db, sizeof db, "%d", o->db);
        snprintf(what, sizeof what, "redis SELECT %d failed", o->db);
        const char *argv[2] = {"SELECT", db};
        rc = setup_cmd(c, 2, argv, what, errstr, n);
        if (rc == EVBUS_EIO)
            rc = EVBUS_EOPTION; /* "ERR DB index is out of range" */
    }
    if (rc == EVBUS_OK) {
        const char *argv[1] = {"PING"};
        rc = setup_cmd(c, 1, argv,
                       o->password ? "redis PING failed"
                                   : "redis PING failed (does the server need "
                                     "a password? redis://[user:]password@host)",
                       errstr, n);
    }
    if (rc != EVBUS_OK) {
        redisFree(c);
        return rc;
    }
    *out = c;
    return EVBUS_OK;
}

void evbus__redis_backoff_failed(rds_backoff_t *b, int cap_ms)
{
    b->cur_ms = b->cur_ms ? b->cur_ms * 2 : RDS_BACKOFF_MIN_MS;
    if (b->cur_ms > cap_ms)
        b->cur_ms = cap_ms;
    b->next_ms = evbus__mono_ms() + (uint64_t)b->cur_ms;
}

void evbus__redis_backoff_ok(rds_backoff_t *b)
{
    b->cur_ms = 0;
    b->next_ms = 0;
}

/* ------------------------------------------------------------ SIGPIPE */

void evbus__redis_thread_block_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int evbus__redis_exchange(redisContext *c, int n, redisReply **out)
{
    /* hiredis writes with write(): with SIGPIPE blocked for the call, a
     * SIGPIPE it raises stays pending, and is taken here unless one was
     * pending before (then it is the application's). */
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int rc = REDIS_OK, saved_errno = 0;
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
        if (rc == REDIS_OK && redisGetReply(c, (void **)&out[i]) != REDIS_OK) {
            rc = REDIS_ERR;
            saved_errno = errno; /* for the timeout check in _error */
        }
    }
    if (!was_pending) {
        sigemptyset(&pending);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != REDIS_OK)
        errno = saved_errno;
    return rc;
}

redisReply *evbus__redis_command(redisContext *c, int argc, const char **argv,
                                 const size_t *argvlen)
{
    if (c->err || redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK)
        return NULL;
    redisReply *r;
    evbus__redis_exchange(c, 1, &r);
    return r;
}

/* ------------------------------------------------------------ entry ids */

bool evbus__redis_id_parse(const char *s, size_t len, rds_id_t *out)
{
    uint64_t v[2] = {0, 0};
    int part = 0;
    bool digit = false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            v[part] = v[part] * 10 + (uint64_t)(ch - '0');
            digit = true;
        } else if (ch == '-' && part == 0 && digit) {
            part = 1;
            digit = false;
        } else {
            return false;
        }
    }
    if (part != 1 || !digit)
        return false;
    out->ms = v[0];
    out->seq = v[1];
    return true;
}

static size_t id_hash(rds_id_t id, size_t cap)
{
    /* splitmix64's finalizer: ids of one stream differ in few low bits, so
     * they need a full mix or linear probing clusters. */
    uint64_t h = id.ms ^ (id.seq * 0x9E3779B97F4A7C15ull);
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
    return (size_t)h & (cap - 1);
}

static bool id_eq(rds_id_t a, rds_id_t b)
{
    return a.ms == b.ms && a.seq == b.seq;
}

bool evbus__redis_idset_has(const rds_idset_t *s, rds_id_t id)
{
    if (!s->len)
        return false;
    for (size_t i = id_hash(id, s->cap); s->used[i]; i = (i + 1) & (s->cap - 1))
        if (id_eq(s->slots[i], id))
            return true;
    return false;
}

static int idset_grow(rds_idset_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 64;
    rds_idset_t n = {calloc(cap, sizeof(rds_id_t)), calloc(cap, 1), cap, 0};
    if (!n.slots || !n.used) {
        free(n.slots);
        free(n.used);
        return EVBUS_ENOMEM;
    }
    for (size_t i = 0; i < s->cap; i++)
        if (s->used[i])
            evbus__redis_idset_add(&n, s->slots[i]);
    evbus__redis_idset_free(s);
    *s = n;
    return EVBUS_OK;
}

int evbus__redis_idset_add(rds_idset_t *s, rds_id_t id)
{
    if ((s->len + 1) * 2 > s->cap && idset_grow(s) != EVBUS_OK)
        return EVBUS_ENOMEM;
    size_t i = id_hash(id, s->cap);
    for (; s->used[i]; i = (i + 1) & (s->cap - 1))
        if (id_eq(s->slots[i], id))
            return EVBUS_OK;
    s->used[i] = 1;
    s->slots[i] = id;
    s->len++;
    return EVBUS_OK;
}

void evbus__redis_idset_del(rds_idset_t *s, rds_id_t id)
{
    if (!s->len)
        return;
    size_t mask = s->cap - 1, i = id_hash(id, s->cap);
    for (; s->used[i]; i = (i + 1) & mask)
        if (id_eq(s->slots[i], id))
            break;
    if (!s->used[i])
        return;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s->used[j])
            break;
        size_t home = id_hash(s->slots[j], s->cap);
        bool between = i <= j ? (i < home && home <= j)
                              : (i < home || home <= j);
        if (between)
            continue;
        s->slots[i] = s->slots[j];
        i = j;
    }
    s->used[i] = 0;
    s->len--;
}

void evbus__redis_idset_free(rds_idset_t *s)
{
    free(s->slots);
    free(s->used);
    s->slots = NULL;
    s->used = NULL;
    s->cap = s->len = 0;
}
