/*
 * sqlite:// backend - settling: ACK/RETRY/RELEASE buffered and written in
 * the next transaction of the polling thread (fetch or record_attempts) or
 * by the watcher within OPS_FLUSH_MS; recording attempts before handler
 * calls; renewing the leases of what is held. See sqlite_consume.c for the
 * model.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_internal.h"

/* Buffered settles are written by this long after the first one. */
#define OPS_FLUSH_MS 100
/* ... or at once when this many are buffered. */
#define OPS_FLUSH_COUNT 1024

/* Writes s's buffered settles inside the caller's transaction. */
static int apply_ops(sq_conn_t *c, sq_sub_t *s)
{
    for (size_t i = 0; i < s->nops; i++) {
        sq_op_t *op = &s->ops[i];
        int err;
        switch (op->how) {
        case EVBUS_SETTLE_ACK:
            err = evbus__sqlite_exec_gid_seq(c, SQ_PEND_DEL, s->gid, op->seq, 0,
                                             0, 0);
            break;
        case EVBUS_SETTLE_RETRY: {
            const int64_t v[] = {s->gid,         op->seq,
                                 op->visible_at, (int64_t)s->owner,
                                 op->deliveries, op->delay_ms};
            err = evbus__sqlite_exec_vals(c, SQ_RETRY_UPD, v, 6);
            break;
        }
        default:
            err = evbus__sqlite_exec_gid_seq(c, SQ_RELEASE_UPD, s->gid, op->seq,
                                             op->visible_at, (int64_t)s->owner,
                                             op->deliveries);
            break;
        }
        if (err != EVBUS_OK)
            return err;
    }
    return EVBUS_OK;
}

/* Writes the buffered settles of every subscription of b inside the
 * caller's transaction on b->sub (they share the connection). */
int evbus__sqlite_apply_ops(sq_bus_t *b)
{
    int err = EVBUS_OK;
    for (sq_sub_t *s = b->subs; s && err == EVBUS_OK; s = s->next)
        err = apply_ops(&b->sub, s);
    return err;
}

size_t evbus__sqlite_ops_buffered(const sq_bus_t *b)
{
    size_t n = 0;
    for (const sq_sub_t *s = b->subs; s; s = s->next)
        n += s->nops;
    return n;
}

/* After the transaction that applied them committed. The watcher's flush
 * deadline stays: it wakes once, finds nothing and clears it, while the
 * next settles see a deadline set and need not poke it (one wakeup per
 * OPS_FLUSH_MS, not one per settle, when every settle is followed by a
 * record_attempts that writes it). */
void evbus__sqlite_ops_written(sq_bus_t *b)
{
    for (sq_sub_t *s = b->subs; s; s = s->next)
        s->nops = 0;
    b->sub_gen++;
}

void evbus__sqlite_sub_unlock(sq_bus_t *b)
{
    char msg[sizeof b->sub_msg];
    int level = b->sub_msg_level;
    if (level)
        memcpy(msg, b->sub_msg, sizeof msg);
    b->sub_msg_level = 0;
    pthread_mutex_unlock(&b->sub_mu);
    if (level)
        evbus_host_log(b->host, level, "%s", msg);
}

void evbus__sqlite_sub_log(sq_bus_t *b, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->sub_msg, sizeof b->sub_msg, fmt, ap);
    va_end(ap);
    b->sub_msg_level = level;
}

void evbus__sqlite_flush_ops_locked(sq_bus_t *b)
{
    if (evbus__sqlite_ops_buffered(b) == 0) {
        atomic_store(&b->ops_due_ms, INT64_MAX);
        return;
    }
    int err = evbus__sqlite_begin(&b->sub);
    if (err == EVBUS_OK)
        err = evbus__sqlite_apply_ops(b);
    if (err == EVBUS_OK)
        err = evbus__sqlite_commit(&b->sub);
    else
        evbus__sqlite_rollback(&b->sub);
    uint64_t repeats;
    if (err != EVBUS_OK) {
        /* Retried every OPS_FLUSH_MS; logged once, then with a count. */
        if (evbus__lograte_fail(&b->ops_log, err, &repeats)) {
            char why[600];
            evbus__sqlite_why(b, &b->sub, err, why, sizeof why);
            evbus__sqlite_sub_log(
                b, EVBUS_LOG_WARN,
                "writing acknowledgements failed: %s; will retry%s", why,
                repeats ? " (failed again since the last report)" : "");
        }
        atomic_store(&b->ops_due_ms, (int64_t)evbus__mono_ms() + OPS_FLUSH_MS);
        return;
    }
    if ((repeats = evbus__lograte_ok(&b->ops_log)) > 0)
        evbus__sqlite_sub_log(
            b, EVBUS_LOG_INFO,
            "writing acknowledgements works again after %llu failures",
            (unsigned long long)repeats);
    evbus__sqlite_ops_written(b);
    atomic_store(&b->ops_due_ms, INT64_MAX);
}

int evbus__sqlite_record_attempts(void *priv, void *bsub,
                                  evbus_msg_t *const *msgs, int n)
{
    sq_bus_t *b = priv;
    sq_sub_t *s = bsub;
    /* attempts=memory: the core counts in memory (backend.h), trading
     * crash-loop protection for one commit less per handler call. */
    if (b->o.attempts_in_memory)
        return EVBUS_ENOTSUP;
    atomic_store(&b->progress_ms, (int64_t)evbus__mono_ms());
    if (evbus__sqlite_file_ok(b) != EVBUS_OK)
        return EVBUS_EIO; /* the core gives the events back */
    pthread_mutex_lock(&b->sub_mu);
    int err = evbus__sqlite_begin(&b->sub);
    /* The buffered settles go first, in the same commit: an event whose
     * handler answered ACK must not be handled (and charged) again when
     * the process dies in the next handler. Without them a crash-looping
     * poison event dead-letters the events handled before it too. */
    if (err == EVBUS_OK)
        err = evbus__sqlite_apply_ops(b);
    for (int i = 0; i < n && err == EVBUS_OK; i++) {
        const evbus_msg_t *m = msgs[i];
        const sq_lease_t *l = m->cookie;
        if (!l) {
            err = EVBUS_EINVAL;
            break;
        }
        /* A lease this member lost changes nothing: its new holder
         * records its own attempt. */
        const int64_t v[] = {s->gid,
                             l->seq,
                             m->attempts,
                             m->prev_delay_ms,
                             m->first_attempt_ms,
                             (int64_t)s->owner,
                             l->deliveries};
        err = evbus__sqlite_exec_vals(&b->sub, SQ_ATTEMPT_UPD, v, 7);
    }
    if (err == EVBUS_OK)
        err = evbus__sqlite_commit(&b->sub);
    else
        evbus__sqlite_rollback(&b->sub);
    if (err == EVBUS_OK)
        evbus__sqlite_ops_written(b);
    pthread_mutex_unlock(&b->sub_mu);
    return err;
}

void evbus__sqlite_extend_leases_locked(sq_bus_t *b)
{
    bool any = false;
    for (sq_sub_t *s = b->subs; s && !any; s = s->next)
        any = s->held != NULL;
    if (!any)
        return;
    int64_t until = evbus__wall_ms() + b->o.visibility_timeout_ms;
    int err = evbus__sqlite_begin(&b->sub);
    for (sq_sub_t *s = b->subs; s && err == EVBUS_OK; s = s->next)
        for (sq_lease_t *l = s->held; l && err == EVBUS_OK; l = l->next)
            err = evbus__sqlite_exec_gid_seq(&b->sub, SQ_EXTEND_UPD, s->gid,
                                             l->seq, until, (int64_t)s->owner,
                                             l->deliveries);
    if (err == EVBUS_OK)
        err = evbus__sqlite_commit(&b->sub);
    else
        evbus__sqlite_rollback(&b->sub);
    if (err != EVBUS_OK)
        evbus__sqlite_sub_log(
            b, EVBUS_LOG_WARN,
            "renewing leases failed: %s; events may be delivered to "
            "another member",
            evbus_strerror(err));
}

int evbus__sqlite_settle(void *priv, void *bsub, evbus_msg_t *msg,
                         evbus_settle_t how, int delay_ms)
{
    sq_bus_t *b = priv;
    sq_sub_t *s = bsub;
    sq_lease_t *l = msg->cookie;
    if (!l)
        return EVBUS_EINVAL;
    int64_t now = evbus__wall_ms();
    atomic_store(&b->progress_ms, (int64_t)evbus__mono_ms());
    sq_op_t op = {l->seq, l->deliveries, how, now, 0};
    if (how == EVBUS_SETTLE_RETRY && delay_ms > 0) {
        op.visible_at = now + delay_ms;
        op.delay_ms = delay_ms;
    }
    pthread_mutex_lock(&b->sub_mu);
    if (s->nops == s->cap_ops) {
        size_t cap = s->cap_ops ? s->cap_ops * 2 : 64;
        sq_op_t *ops = realloc(s->ops, cap * sizeof *ops);
        if (!ops) {
            pthread_mutex_unlock(&b->sub_mu);
            return EVBUS_ENOMEM; /* the core tries again later */
        }
        s->ops = ops;
        s->cap_ops = cap;
    }
    s->ops[s->nops++] = op;
    if (l->prev)
        l->prev->next = l->next;
    else
        s->held = l->next;
    if (l->next)
        l->next->prev = l->prev;
    /* Unless a fetch or record_attempts writes them first, the watcher
     * does by this deadline (set under sub_mu: while settles are
     * buffered, ops_due_ms is never later than the first one's). */
    bool poke = false;
    if (s->nops == 1) {
        int64_t due = (int64_t)evbus__mono_ms() + OPS_FLUSH_MS;
        if (due < atomic_load(&b->ops_due_ms)) {
            atomic_store(&b->ops_due_ms, due);
            poke = true;
        }
    }
    if (s->nops >= OPS_FLUSH_COUNT)
        evbus__sqlite_flush_ops_locked(b);
    evbus__sqlite_sub_unlock(b);
    free(l);
    msg->cookie = NULL;
    msg->payload = NULL;
    if (poke)
        evbus__sqlite_watcher_poke(b);
    return EVBUS_OK;
}
