/*
 * The poll loop and the poll role: who may fetch, run handlers and settle.
 *
 * The role is held by at most one thread at a time, under bus->mu:
 *   POLLER   a thread inside evbus_poll / evbus_run;
 *   CONTROL  a short step by another thread: evbus_unsubscribe reaping a
 *            subscription while nobody polls, evbus_close taking the bus
 *            apart.
 * A poller that meets a CONTROL step waits for it (role_cv) instead of
 * failing; only a second poller is refused with EVBUS_EBUSY.
 *
 * evbus_stop is a flag checked after every handler call: the loop returns
 * after the handler that is running, and what it fetched but had not
 * handed out goes back to the broker (dispatch.c).
 */
#include <poll.h>
#include <unistd.h>

#include "internal.h"

_Thread_local struct evbus *evbus__polling_bus;

void evbus__role_take_control(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    bus->role_waiters++;
    while (bus->role != EVBUS_ROLE_FREE)
        pthread_cond_wait(&bus->role_cv, &bus->mu);
    bus->role_waiters--;
    bus->role = EVBUS_ROLE_CONTROL;
    pthread_mutex_unlock(&bus->mu);
}

void evbus__role_release(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    bus->role = EVBUS_ROLE_FREE;
    pthread_cond_broadcast(&bus->role_cv);
    pthread_mutex_unlock(&bus->mu);
}

static int enter_poll(evbus_t *bus)
{
    int rc = EVBUS_OK;
    pthread_mutex_lock(&bus->mu);
    bus->role_waiters++;
    while (bus->role == EVBUS_ROLE_CONTROL && !atomic_load(&bus->closing))
        pthread_cond_wait(&bus->role_cv, &bus->mu);
    bus->role_waiters--;
    if (atomic_load(&bus->closing))
        rc = EVBUS_ECLOSED;
    else if (bus->role != EVBUS_ROLE_FREE)
        rc = EVBUS_EBUSY;
    else
        bus->role = EVBUS_ROLE_POLLER;
    if (rc != EVBUS_OK)
        pthread_cond_broadcast(&bus->role_cv); /* a closer may wait for us */
    pthread_mutex_unlock(&bus->mu);
    if (rc == EVBUS_OK) {
        evbus__polling_bus = bus;
        pthread_mutex_lock(&bus->work_mu); /* see struct evbus */
    }
    return rc;
}

static void leave_poll(evbus_t *bus)
{
    evbus__polling_bus = NULL;
    pthread_mutex_unlock(&bus->work_mu);
    /* Last touch of bus: evbus_close may free it once we unlock. */
    evbus__role_release(bus);
}

/* Sleeps until a backend notifies (gen moves past gen0), evbus_stop, or
 * ms pass. The sleeping flag and gen are both seq_cst, so either the
 * notifier sees sleeping and writes the eventfd, or we see the new gen.
 * Meanwhile workers may act on their answers (struct evbus, work_mu). */
static void idle_wait(evbus_t *bus, uint64_t gen0, int ms)
{
    bus->lend = true;
    pthread_mutex_unlock(&bus->work_mu);
    atomic_store(&bus->sleeping, true);
    if (atomic_load(&bus->gen) == gen0 && !atomic_load(&bus->stop) &&
        !atomic_load(&bus->closing)) {
        struct pollfd pfd = {bus->wake_fd, POLLIN, 0};
        poll(&pfd, 1, ms);
    }
    atomic_store(&bus->sleeping, false);
    uint64_t drain;
    ssize_t r = read(bus->wake_fd, &drain, sizeof drain);
    (void)r;
    pthread_mutex_lock(&bus->work_mu);
    bus->lend = false;
}

/* evbus_stop with workers: the handlers they run finish and are settled;
 * jobs that had not started go back to the broker. */
static void drain_workers(evbus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    evbus_sub_t *s = bus->subs;
    pthread_mutex_unlock(&bus->mu);
    for (; s; s = s->next)
        evbus__workers_drain(bus, s);
}

/* The body of evbus_poll; the caller holds the poll role. *stopped tells
 * whether evbus_stop ended it (the stop is then consumed). */
static int poll_once(evbus_t *bus, int timeout_ms, bool *stopped)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : evbus__mono_ms() + (uint64_t)timeout_ms;
    *stopped = false;
    for (;;) {
        if (atomic_load(&bus->closing))
            return EVBUS_ECLOSED;
        if (atomic_exchange(&bus->stop, false)) {
            drain_workers(bus);
            *stopped = true;
            return 0;
        }
        evbus__reap(bus);
        uint64_t gen0 = atomic_load(&bus->gen);
        int calls = evbus__run_due(bus);
        if (!atomic_load(&bus->stop))
            calls += evbus__fetch_round(bus);
        int callbacks = evbus__run_completions(bus);
        if (atomic_exchange(&bus->stop, false)) {
            drain_workers(bus);
            *stopped = true;
            return calls;
        }
        if (calls > 0 || callbacks > 0)
            return calls;
        uint64_t now = evbus__mono_ms();
        if (now >= deadline)
            return 0;
        uint64_t wait = deadline - now;
        evbus_pending_t *next = evbus__heap_peek(&bus->heap);
        if (next) {
            uint64_t until = next->due_ms > now ? next->due_ms - now : 0;
            if (until < wait)
                wait = until;
        }
        if (wait > EVBUS_IDLE_RECHECK_MS)
            wait = EVBUS_IDLE_RECHECK_MS;
        idle_wait(bus, gen0, (int)wait);
        /* Handler calls whose answers workers acted on while we slept. */
        int lent = atomic_exchange(&bus->lent_calls, 0);
        if (lent > 0 && !atomic_load(&bus->stop))
            return lent;
    }
}

int evbus_poll(evbus_t *bus, int timeout_ms)
{
    if (!bus)
        return EVBUS_EINVAL;
    int rc = enter_poll(bus);
    if (rc != EVBUS_OK)
        return rc;
    bool stopped;
    rc = poll_once(bus, timeout_ms, &stopped);
    leave_poll(bus);
    return rc;
}

int evbus_run(evbus_t *bus)
{
    if (!bus)
        return EVBUS_EINVAL;
    int rc = enter_poll(bus);
    if (rc != EVBUS_OK)
        return rc;
    bool stopped = false;
    while (!stopped) {
        rc = poll_once(bus, -1, &stopped);
        if (rc < 0)
            break;
    }
    rc = rc == EVBUS_ECLOSED || rc >= 0 ? EVBUS_OK : rc;
    leave_poll(bus);
    return rc;
}
