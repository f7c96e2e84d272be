#include <errno.h>

#include "support/cond.h"

int evbus__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

struct timespec evbus__deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0)
        ms = (int64_t)365 * 24 * 3600 * 1000; /* a year is "no limit" */
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int evbus__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                           const struct timespec *deadline)
{
    int rc = pthread_cond_timedwait(cv, mu, deadline);
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

int evbus__cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    if (ms < 0) {
        pthread_cond_wait(cv, mu);
        return 0;
    }
    struct timespec d = evbus__deadline_in(ms);
    return evbus__cond_wait_until(cv, mu, &d);
}
