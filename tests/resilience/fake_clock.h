/* A fake millisecond clock shared by the resilience tests: sleeping advances
 * it, so retry timings and breaker wait times are exact and instant. */
#ifndef RESILIENCE_FAKE_CLOCK_H
#define RESILIENCE_FAKE_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>

#define FAKE_MAX_SLEEPS 64

typedef struct {
    _Atomic uint64_t now;
    int sleeps[FAKE_MAX_SLEEPS]; /* what sleep_ms was asked, in order */
    int nsleeps;
} fake_clock_t;

static inline uint64_t fake_now(void *opaque)
{
    return atomic_load(&((fake_clock_t *)opaque)->now);
}

static inline void fake_sleep(void *opaque, int ms)
{
    fake_clock_t *c = opaque;
    if (c->nsleeps < FAKE_MAX_SLEEPS)
        c->sleeps[c->nsleeps] = ms;
    c->nsleeps++;
    atomic_fetch_add(&c->now, (uint64_t)ms);
}

static inline void fake_advance(fake_clock_t *c, uint64_t ms)
{
    atomic_fetch_add(&c->now, ms);
}

#endif
