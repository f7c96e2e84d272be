/*
 * Saga metrics: instances per state counted in the database (so they are
 * right across restarts and several orchestrator processes), and counters
 * of what this orchestrator did since it was opened.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_internal.h"
#include "support/buf.h"

#define METRICS_SIZE_V1 EVBUS__SIZE_THROUGH(evbus_saga_metrics_t, parked)

void evbus_saga_metrics_init_sized(evbus_saga_metrics_t *out, size_t size)
{
    evbus__struct_init(out, size);
}

/* Calls fn for every (saga, state, count) row. Caller holds the lock. */
static int each_count(evbus_saga_orch_t *o,
                      void (*fn)(const char *saga, int state, uint64_t n,
                                 void *arg),
                      void *arg)
{
    sqlite3_stmt *s = o->st.count_states;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *saga = (const char *)sqlite3_column_text(s, 0);
        const char *state = (const char *)sqlite3_column_text(s, 1);
        int st = -1;
        for (int i = EVBUS_SAGA_RUNNING; i <= EVBUS_SAGA_FAILED; i++)
            if (state && strcmp(state, evbus_saga_state_name(i)) == 0)
                st = i;
        if (saga && st >= 0)
            fn(saga, st, (uint64_t)sqlite3_column_int64(s, 2), arg);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? EVBUS_OK : evbus__sqlite_err(rc);
}

static void add_count(const char *saga, int state, uint64_t n, void *arg)
{
    uint64_t *by_state = arg;
    by_state[state] += n;
}

int evbus_saga_metrics_get(evbus_saga_orch_t *o, evbus_saga_metrics_t *out)
{
    if (!o || !out || out->struct_size < METRICS_SIZE_V1)
        return EVBUS_EINVAL;
    uint64_t by_state[EVBUS_SAGA_FAILED + 1] = {0};
    evbus__saga_lock(o);
    int rc = each_count(o, add_count, by_state);
    evbus__saga_unlock(o);
    if (rc != EVBUS_OK)
        return rc;
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    m.running = by_state[EVBUS_SAGA_RUNNING];
    m.compensating = by_state[EVBUS_SAGA_COMPENSATING];
    m.completed = by_state[EVBUS_SAGA_COMPLETED];
    m.compensated = by_state[EVBUS_SAGA_COMPENSATED];
    m.failed = by_state[EVBUS_SAGA_FAILED];
    m.active = m.running + m.compensating;
    m.started = atomic_load(&o->started);
    m.commands_sent = atomic_load(&o->commands_sent);
    m.replies = atomic_load(&o->replies);
    m.replies_ignored = atomic_load(&o->replies_ignored);
    m.timeouts = atomic_load(&o->timeouts);
    m.compensations_retried = atomic_load(&o->comp_retried);
    m.parked = atomic_load(&o->parked);
    return evbus__struct_out(out, &m, sizeof m, METRICS_SIZE_V1);
}

static void put_instances(const char *saga, int state, uint64_t n, void *arg)
{
    char lower[16];
    const char *name = evbus_saga_state_name(state);
    size_t i = 0;
    for (; name[i] && i < sizeof lower - 1; i++)
        lower[i] = (char)(name[i] | 0x20);
    lower[i] = 0;
    /* saga names are [A-Za-z0-9._-]: nothing to escape in the label */
    evbus__buf_printf(arg,
                      "evbus_saga_instances{saga=\"%s\",state=\"%s\"} %llu\n",
                      saga, lower, (unsigned long long)n);
}

char *evbus_saga_metrics_prometheus(evbus_saga_orch_t *o)
{
    if (!o)
        return NULL;
    evbus__buf_t b = {0};
    evbus__buf_puts(&b, "# HELP evbus_saga_instances Saga instances in the "
                        "database by state.\n# TYPE evbus_saga_instances "
                        "gauge\n");
    evbus__saga_lock(o);
    int rc = each_count(o, put_instances, &b);
    evbus__saga_unlock(o);
    struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"started", "Sagas started by this orchestrator.",
         atomic_load(&o->started)},
        {"commands_sent", "Commands (actions and compensations) written.",
         atomic_load(&o->commands_sent)},
        {"replies", "Replies applied.", atomic_load(&o->replies)},
        {"replies_ignored", "Late or unexpected replies ignored.",
         atomic_load(&o->replies_ignored)},
        {"timeouts", "Steps whose deadline passed.", atomic_load(&o->timeouts)},
        {"compensations_retried", "Compensation attempts after the first.",
         atomic_load(&o->comp_retried)},
        {"parked", "Instances parked FAILED by this orchestrator.",
         atomic_load(&o->parked)},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        evbus__buf_printf(&b,
                          "# HELP evbus_saga_%s_total %s\n# TYPE "
                          "evbus_saga_%s_total counter\nevbus_saga_%s_total"
                          "{orchestrator=\"%s\"} %llu\n",
                          c[i].name, c[i].help, c[i].name, c[i].name, o->name,
                          (unsigned long long)c[i].v);
    if (rc != EVBUS_OK) {
        evbus__buf_free(&b);
        return NULL;
    }
    return evbus__buf_take(&b, NULL);
}
