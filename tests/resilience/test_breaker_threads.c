/* Circuit breaker hammered by 8 threads under a fake clock:
 *  - once OPEN, no call is admitted until the clock moves;
 *  - each HALF_OPEN period admits exactly half_open_calls calls;
 *  - only legal transitions happen, and the counters add up.
 * The state-change callback runs under the breaker's lock, so reading the
 * counters there (evbus_breaker_stats, recursive lock) gives exact numbers
 * for what each state admitted. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <evbus/breaker.h>
#include <evbus/evbus.h>

#include "fake_clock.h"

#define THREADS 8
#define PROBES 4

static fake_clock_t clk;

/* ------------------------------------------------ transition auditor */

typedef struct {
    evbus_breaker_t *b;
    _Atomic int opened_flag;    /* set when the breaker goes OPEN */
    uint64_t calls_at_enter;    /* stats.calls when the current state began */
    int illegal;                /* transitions outside C->O, O->H, H->O, H->C */
    int admitted_in_open;       /* calls admitted during OPEN periods */
    int half_open_periods;
    int bad_half_open_periods;  /* HALF_OPEN periods admitting != PROBES */
    int transitions;
} audit_t;

static void on_state(evbus_breaker_state_t from, evbus_breaker_state_t to,
                      void *opaque)
{
    audit_t *a = opaque;
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(a->b, &st); /* same thread, lock held: recursive */
    uint64_t admitted = st.calls - a->calls_at_enter;
    a->transitions++;
    int legal = (from == EVBUS_BREAKER_CLOSED && to == EVBUS_BREAKER_OPEN) ||
                (from == EVBUS_BREAKER_OPEN && to == EVBUS_BREAKER_HALF_OPEN) ||
                (from == EVBUS_BREAKER_HALF_OPEN &&
                 (to == EVBUS_BREAKER_OPEN || to == EVBUS_BREAKER_CLOSED));
    if (!legal)
        a->illegal++;
    if (from == EVBUS_BREAKER_OPEN)
        a->admitted_in_open += (int)admitted;
    if (from == EVBUS_BREAKER_HALF_OPEN) {
        a->half_open_periods++;
        if (admitted != PROBES)
            a->bad_half_open_periods++;
    }
    if (to == EVBUS_BREAKER_OPEN)
        atomic_store(&a->opened_flag, 1);
    a->calls_at_enter = st.calls;
}

static evbus_breaker_t *make(audit_t *a)
{
    memset(a, 0, sizeof *a);
    atomic_store(&clk.now, 1000);
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    o.window_size = 50;
    o.minimum_calls = 20;
    o.failure_rate_pct = 50;
    o.consecutive_failures = 0;
    o.open_ms = 100;
    o.half_open_calls = PROBES;
    o.now_ms = fake_now;
    o.clock_opaque = &clk;
    a->b = evbus_breaker_new(&o, NULL, 0);
    ck_assert_ptr_nonnull(a->b);
    evbus_breaker_set_name(a->b, "hammer");
    evbus_breaker_on_state(a->b, on_state, a);
    return a->b;
}

/* A tiny per-thread generator for outcomes. */
static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* ------------------------------------- phase 1: frozen clock, failures */

typedef struct {
    audit_t *a;
    int iterations;
    int fail_pct;
    int advance_every;  /* 0 = never move the clock */
    uint32_t seed;
    uint64_t admitted, rejected, admitted_after_open, recorded;
} worker_t;

/* All workers start together so they really contend. */
static pthread_barrier_t start_line;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    pthread_barrier_wait(&start_line);
    for (int i = 0; i < w->iterations; i++) {
        int was_open = atomic_load(&w->a->opened_flag);
        if (evbus_breaker_allow(w->a->b)) {
            w->admitted++;
            if (was_open)
                w->admitted_after_open++;
            int ok = (int)(xorshift(&w->seed) % 100) >= w->fail_pct;
            evbus_breaker_record(w->a->b, ok);
            w->recorded++;
        } else {
            w->rejected++;
        }
        if (w->advance_every && i % w->advance_every == 0)
            fake_advance(&clk, 7);
    }
    return NULL;
}

static void run_workers(worker_t *w)
{
    pthread_t th[THREADS];
    pthread_barrier_init(&start_line, NULL, THREADS);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start_line);
}

/* Asks for permission many times without recording: counts admissions. */
typedef struct {
    evbus_breaker_t *b;
    _Atomic int *got;
} asker_t;

static void *ask_many(void *p)
{
    asker_t *k = p;
    pthread_barrier_wait(&start_line);
    for (int j = 0; j < 5000; j++)
        if (evbus_breaker_allow(k->b))
            atomic_fetch_add(k->got, 1);
    return NULL;
}

START_TEST(frozen_clock_nothing_admitted_once_open)
{
    audit_t a;
    evbus_breaker_t *b = make(&a);
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++)
        w[i] = (worker_t){.a = &a, .iterations = 20000, .fail_pct = 80,
                          .seed = 0x9e3779b9u * (uint32_t)(i + 1)};
    run_workers(w);
    uint64_t admitted = 0, rejected = 0, after_open = 0;
    for (int i = 0; i < THREADS; i++) {
        admitted += w[i].admitted;
        rejected += w[i].rejected;
        after_open += w[i].admitted_after_open;
    }
    ck_assert_int_eq(evbus_breaker_state(b), EVBUS_BREAKER_OPEN);
    ck_assert_uint_eq(after_open, 0);
    ck_assert_int_eq(a.transitions, 1); /* clock frozen: stays OPEN */
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_uint_eq(st.calls, admitted);
    ck_assert_uint_eq(st.rejected, rejected);
    ck_assert_uint_eq(st.calls + st.rejected, (uint64_t)THREADS * 20000);
    ck_assert_uint_eq(st.successes + st.failures, admitted);
    ck_assert_uint_eq(st.opened, 1);
    /* it opened early: at least 20 (minimum calls) but far from all */
    ck_assert_uint_ge(admitted, 20);
    ck_assert_uint_lt(admitted, 1000);

    /* ---- phase 2: exactly PROBES of many concurrent asks get through */
    for (int round = 0; round < 20; round++) {
        fake_advance(&clk, 100);
        _Atomic int got = 0;
        asker_t ask = {b, &got};
        pthread_t th[THREADS];
        pthread_barrier_init(&start_line, NULL, THREADS);
        for (int i = 0; i < THREADS; i++)
            ck_assert_int_eq(pthread_create(&th[i], NULL, ask_many, &ask), 0);
        for (int i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start_line);
        int admitted_probes = atomic_load(&got);
        ck_assert_int_eq(admitted_probes, PROBES);
        ck_assert_int_eq(evbus_breaker_state(b), EVBUS_BREAKER_HALF_OPEN);
        /* every round but the last fails half the probes (50% -> OPEN
         * again); the last passes them all and closes */
        int fail = round < 19 ? PROBES / 2 : 0;
        for (int p = 0; p < PROBES; p++)
            evbus_breaker_record(b, p >= fail);
        ck_assert_int_eq(evbus_breaker_state(b),
                         round < 19 ? EVBUS_BREAKER_OPEN : EVBUS_BREAKER_CLOSED);
    }
    ck_assert_int_eq(a.illegal, 0);
    ck_assert_int_eq(a.half_open_periods, 20);
    ck_assert_int_eq(a.bad_half_open_periods, 0);
    ck_assert_int_eq(a.admitted_in_open, 0);
    evbus_breaker_free(b);
}
END_TEST

/* ---------------------- phase 3: moving clock, mixed outcomes, invariants */

START_TEST(moving_clock_invariants)
{
    audit_t a;
    evbus_breaker_t *b = make(&a);
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++)
        w[i] = (worker_t){.a = &a, .iterations = 500000,
                          .fail_pct = i < 4 ? 70 : 20,
                          .advance_every = 97 + i,
                          .seed = 0x85ebca6bu * (uint32_t)(i + 3)};
    run_workers(w);
    uint64_t admitted = 0, rejected = 0, recorded = 0;
    for (int i = 0; i < THREADS; i++) {
        admitted += w[i].admitted;
        rejected += w[i].rejected;
        recorded += w[i].recorded;
    }
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_int_eq(a.illegal, 0);
    ck_assert_int_eq(a.admitted_in_open, 0);
    ck_assert_int_eq(a.bad_half_open_periods, 0);
    ck_assert_msg(a.half_open_periods > 5,
                  "only %d half-open periods: the hammer did not exercise "
                  "the state machine", a.half_open_periods);
    ck_assert_uint_eq(st.calls, admitted);
    ck_assert_uint_eq(st.rejected, rejected);
    ck_assert_uint_eq(st.calls + st.rejected, (uint64_t)THREADS * 500000);
    ck_assert_uint_eq(st.successes + st.failures, recorded);
    ck_assert_uint_eq(recorded, admitted);
    evbus_breaker_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("breaker-threads");
    TCase *tc = tcase_create("hammer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, frozen_clock_nothing_admitted_once_open);
    tcase_add_test(tc, moving_clock_invariants);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
