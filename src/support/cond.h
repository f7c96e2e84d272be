/*
 * Condition variables that wait on the monotonic clock, so a wall-clock
 * step (NTP, an operator) neither cuts a wait short nor stretches it.
 * Every condition variable the library waits on with a timeout is made
 * with evbus__cond_init.
 */
#ifndef EVBUS_SUPPORT_COND_H
#define EVBUS_SUPPORT_COND_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* pthread_cond_init with CLOCK_MONOTONIC. Returns 0 or an errno value. */
int evbus__cond_init(pthread_cond_t *cv);

/* The absolute monotonic moment ms milliseconds from now (ms < 0: far
 * future), for evbus__cond_wait_until. */
struct timespec evbus__deadline_in(int64_t ms);

/* Waits on cv (made by evbus__cond_init) until signalled or the deadline.
 * Returns 0, or ETIMEDOUT once the deadline has passed. */
int evbus__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                           const struct timespec *deadline);

/* Waits at most ms milliseconds (ms < 0: no limit). 0 or ETIMEDOUT. */
int evbus__cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);

#endif
