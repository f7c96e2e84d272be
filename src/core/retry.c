/*
 * Backoff policy (include/evbus/retry.h): delay computation, the give-up
 * rule, and evbus_retry_call. One implementation shared by the delivery
 * pipeline (dispatch.c) and synchronous callers.
 *
 * Everything is computed in double and clamped before converting back to
 * int, so huge attempt numbers or multipliers saturate at max_ms instead of
 * overflowing (pow() returns +inf, which fails the "< max" test).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

#include "evbus/retry.h"

void evbus_retry_policy_init_sized(evbus_retry_policy_t *out, size_t size)
{
    evbus_retry_policy_t defaults, *p = &defaults;
    *p = (evbus_retry_policy_t){
        .struct_size = sizeof *p,
        .initial_ms = 100,
        .max_ms = 30000,
        .multiplier = 2.0,
        .jitter = EVBUS_JITTER_FULL,
        .max_attempts = 5,
        .max_elapsed_ms = 0,
    };
    evbus__struct_defaults(out, size, p, sizeof *p);
}

/* The policy as of the first release that carried struct_size. */
#define POLICY_MIN_SIZE EVBUS__SIZE_THROUGH(evbus_retry_policy_t, clock_opaque)

int evbus__retry_policy_copy(evbus_retry_policy_t *dst,
                             const evbus_retry_policy_t *src)
{
    evbus_retry_policy_init(dst);
    if (!src)
        return EVBUS_OK;
    return evbus__struct_in(dst, sizeof *dst, src, POLICY_MIN_SIZE);
}

/* A policy whose struct_size the library does not trust is treated as
 * absent by the functions that return no error. */
#define FULL_POLICY(p, local)                                                  \
    do {                                                                       \
        if (!(p) || (p)->struct_size != sizeof(evbus_retry_policy_t)) {       \
            if (!(p) || evbus__retry_policy_copy(&(local), (p)) != EVBUS_OK)  \
                return 0;                                                      \
            (p) = &(local);                                                    \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------- randomness */

/* Per-thread splitmix64: no locking, no shared state, good enough spread for
 * jitter (not for anything secret). Seeded per thread from getrandom(),
 * falling back to the clock and the state's address. A fork() child would
 * inherit its parent's sequence, and pre-forked workers retrying in step is
 * what jitter exists to prevent, so an atfork handler bumps a generation
 * that makes every thread reseed. */
static _Thread_local uint64_t tl_rng_state;
static _Thread_local unsigned tl_rng_generation; /* 0 = never seeded */
static atomic_uint rng_generation = 1;
static pthread_once_t rng_atfork_once = PTHREAD_ONCE_INIT;

static void rng_after_fork_child(void)
{
    atomic_fetch_add_explicit(&rng_generation, 1, memory_order_relaxed);
}

static void rng_register_atfork(void)
{
    pthread_atfork(NULL, NULL, rng_after_fork_child);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t default_rand_u64(void)
{
    unsigned gen = atomic_load_explicit(&rng_generation, memory_order_relaxed);
    if (tl_rng_generation != gen) {
        pthread_once(&rng_atfork_once, rng_register_atfork);
        gen = atomic_load_explicit(&rng_generation, memory_order_relaxed);
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                   (uint64_t)(uintptr_t)&tl_rng_state;
        }
        tl_rng_state ^= seed; /* keeps some of the old state if the
                                 fallback seed repeats */
        tl_rng_generation = gen;
    }
    return splitmix64(&tl_rng_state);
}

static uint64_t policy_rand(const evbus_retry_policy_t *p)
{
    return p->rand_u64 ? p->rand_u64(p->rand_opaque) : default_rand_u64();
}

/* Uniform integer in [lo, hi] (inclusive) from one 64-bit draw, by
 * multiply-high (no modulo bias worth speaking of at these ranges):
 * lo + floor(r * (hi - lo + 1) / 2^64). Documented in docs/api/retry.md so
 * tests can replay it. */
static int64_t uniform_between(const evbus_retry_policy_t *p, int64_t lo,
                               int64_t hi)
{
    if (hi <= lo)
        return lo;
    uint64_t span = (uint64_t)(hi - lo) + 1u;
    uint64_t r = policy_rand(p);
    return lo + (int64_t)(((unsigned __int128)r * span) >> 64);
}

/* -------------------------------------------------------------- delays */

static int64_t clamp_nonneg(int v) { return v < 0 ? 0 : v; }

/* initial * mult^(attempt-1), capped at max; never negative, never NaN. */
static int64_t exp_delay(const evbus_retry_policy_t *p, int attempt)
{
    int64_t initial = clamp_nonneg(p->initial_ms);
    int64_t cap = clamp_nonneg(p->max_ms);
    double mult = p->multiplier;
    if (!(mult > 0.0) || !isfinite(mult))
        mult = 1.0; /* nonsense multiplier: constant delay */
    if (attempt < 1)
        attempt = 1;
    double d = (double)initial * pow(mult, (double)(attempt - 1));
    if (!(d < (double)cap)) /* also catches +inf and NaN */
        return cap;
    if (d < 0.0)
        return 0;
    return (int64_t)d;
}

int evbus_retry_delay_ms(const evbus_retry_policy_t *p, int attempt,
                         int prev_delay_ms)
{
    evbus_retry_policy_t full;
    FULL_POLICY(p, full);
    int64_t cap = clamp_nonneg(p->max_ms);
    int64_t d;
    switch (p->jitter) {
    case EVBUS_JITTER_NONE:
        d = exp_delay(p, attempt);
        break;
    case EVBUS_JITTER_EQUAL: {
        int64_t e = exp_delay(p, attempt);
        int64_t half = e / 2;
        d = half + uniform_between(p, 0, e - half);
        break;
    }
    case EVBUS_JITTER_DECORRELATED: {
        /* AWS "decorrelated jitter": sleep = min(cap, rand(base, prev*3)),
         * with prev = base before the first retry. */
        int64_t base = clamp_nonneg(p->initial_ms);
        int64_t prev = prev_delay_ms > 0 ? prev_delay_ms : base;
        int64_t hi = prev * 3; /* prev <= INT_MAX, so no int64 overflow */
        if (hi < base)
            hi = base;
        d = uniform_between(p, base, hi); /* capped below */
        break;
    }
    case EVBUS_JITTER_FULL:
    default: /* an unknown kind gets the default */
        d = uniform_between(p, 0, exp_delay(p, attempt));
        break;
    }
    if (d > cap)
        d = cap;
    if (d < 0)
        d = 0;
    return (int)d;
}

int evbus_retry_should_retry(const evbus_retry_policy_t *p, int attempt,
                             uint64_t elapsed_ms, int next_delay_ms)
{
    evbus_retry_policy_t full;
    FULL_POLICY(p, full);
    if (p->max_attempts > 0 && attempt >= p->max_attempts)
        return 0;
    if (p->max_elapsed_ms > 0) {
        uint64_t next_start = elapsed_ms + (uint64_t)clamp_nonneg(next_delay_ms);
        if (next_start > (uint64_t)p->max_elapsed_ms)
            return 0;
    }
    return 1;
}

/* --------------------------------------------------------- retry_call */

static uint64_t policy_now(const evbus_retry_policy_t *p)
{
    return p->now_ms ? p->now_ms(p->clock_opaque) : evbus__mono_ms();
}

static void policy_sleep(const evbus_retry_policy_t *p, int ms)
{
    if (p->sleep_ms) {
        p->sleep_ms(p->clock_opaque, ms);
        return;
    }
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ; /* a signal cut the sleep short: sleep the rest */
}

int evbus_retry_call(const evbus_retry_policy_t *p, evbus_retry_fn fn,
                     void *opaque)
{
    evbus_retry_policy_t full;
    if (!fn || evbus__retry_policy_copy(&full, p) != EVBUS_OK)
        return EVBUS_EINVAL;
    p = &full;
    uint64_t start = policy_now(p);
    int prev_delay = 0;
    for (int attempt = 1;; attempt++) {
        int rc = fn(opaque);
        if (rc == EVBUS_OK)
            return EVBUS_OK;
        if (!evbus_err_retriable(rc))
            return rc;
        int delay = evbus_retry_delay_ms(p, attempt, prev_delay);
        uint64_t now = policy_now(p);
        uint64_t elapsed = now >= start ? now - start : 0;
        if (!evbus_retry_should_retry(p, attempt, elapsed, delay))
            return rc;
        if (delay > 0)
            policy_sleep(p, delay);
        prev_delay = delay;
        if (attempt == INT32_MAX - 1)
            return rc; /* unlimited policy that never ends: stop before
                          the counter overflows */
    }
}
