/* Backoff policy: delay sequences per jitter kind under a scripted random
 * source, jitter bounds over many samples of the default generator, the
 * give-up rule, and evbus_retry_call under a fake clock. */
#include <check.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>
#include <evbus/retry.h>

#include "fake_clock.h"

/* ------------------------------------------------- scripted random source */

/* Returns a fixed value every time: delays become exact. The library maps a
 * draw r to lo + floor(r * (hi - lo + 1) / 2^64), so 0 gives the low end,
 * UINT64_MAX the high end and 2^63 the middle (rounded down). */
static uint64_t fixed_rand(void *opaque) { return *(uint64_t *)opaque; }

#define R_LOW 0ull
#define R_HIGH UINT64_MAX
#define R_MID (1ull << 63)

static evbus_retry_policy_t policy(evbus_jitter_t j, uint64_t *r)
{
    evbus_retry_policy_t p;
    evbus_retry_policy_init(&p);
    p.jitter = j;
    if (r) {
        p.rand_u64 = fixed_rand;
        p.rand_opaque = r;
    }
    return p;
}

START_TEST(defaults)
{
    evbus_retry_policy_t p;
    memset(&p, 0x5a, sizeof p);
    evbus_retry_policy_init(&p);
    ck_assert_int_eq(p.initial_ms, 100);
    ck_assert_int_eq(p.max_ms, 30000);
    ck_assert(p.multiplier == 2.0);
    ck_assert_int_eq(p.jitter, EVBUS_JITTER_FULL);
    ck_assert_int_eq(p.max_attempts, 5);
    ck_assert_int_eq(p.max_elapsed_ms, 0);
    ck_assert_ptr_null(p.rand_u64);
    ck_assert_ptr_null(p.now_ms);
    ck_assert_ptr_null(p.sleep_ms);
    evbus_retry_policy_init(NULL); /* no crash */
}
END_TEST

START_TEST(none_sequence_and_cap)
{
    evbus_retry_policy_t p = policy(EVBUS_JITTER_NONE, NULL);
    p.max_ms = 1000;
    const int want[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (int a = 1; a <= 7; a++)
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), want[a - 1]);
    p.multiplier = 1.5;
    p.max_ms = 30000;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 1, 0), 100);
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 2, 0), 150);
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 3, 0), 225);
    /* attempt 0 or negative is treated as the first */
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 0, 0), 100);
    ck_assert_int_eq(evbus_retry_delay_ms(&p, -7, 0), 100);
}
END_TEST

START_TEST(overflow_safe)
{
    uint64_t r = R_HIGH;
    for (int j = EVBUS_JITTER_NONE; j <= EVBUS_JITTER_DECORRELATED; j++) {
        evbus_retry_policy_t p = policy((evbus_jitter_t)j, &r);
        const int attempts[] = {31, 32, 33, 64, 1000, 1 << 20, INT_MAX};
        for (size_t i = 0; i < sizeof attempts / sizeof *attempts; i++) {
            int d = evbus_retry_delay_ms(&p, attempts[i], INT_MAX);
            ck_assert_int_ge(d, 0);
            ck_assert_int_le(d, 30000);
            if (j != EVBUS_JITTER_DECORRELATED)
                ck_assert_int_eq(d, 30000); /* high draw reaches the cap */
        }
        p.max_ms = INT_MAX;
        p.initial_ms = INT_MAX;
        p.multiplier = 1e300;
        int d = evbus_retry_delay_ms(&p, INT_MAX, INT_MAX);
        ck_assert_int_ge(d, 0);
        ck_assert_int_le(d, INT_MAX);
        p.multiplier = NAN;
        d = evbus_retry_delay_ms(&p, 5, 0);
        ck_assert_int_ge(d, 0);
    }
}
END_TEST

START_TEST(bad_values_never_negative_or_above_max)
{
    uint64_t r = R_HIGH;
    evbus_retry_policy_t p = policy(EVBUS_JITTER_NONE, &r);
    p.initial_ms = 5000;
    p.max_ms = 300; /* initial above max: max wins */
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 1, 0), 300);
    p.jitter = EVBUS_JITTER_DECORRELATED;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 1, 0), 300);
    p.initial_ms = -10;
    p.max_ms = -5;
    for (int j = 0; j <= 3; j++) {
        p.jitter = (evbus_jitter_t)j;
        ck_assert_int_eq(evbus_retry_delay_ms(&p, 3, 7), 0);
    }
    p.initial_ms = 100;
    p.max_ms = 1000;
    p.multiplier = -3.0; /* nonsense: constant delay */
    p.jitter = EVBUS_JITTER_NONE;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 4, 0), 100);
    p.jitter = (evbus_jitter_t)42; /* unknown kind: full jitter */
    p.multiplier = 2.0;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 2, 0), 200);
    ck_assert_int_eq(evbus_retry_delay_ms(NULL, 2, 0), 0);
}
END_TEST

START_TEST(full_sequence)
{
    uint64_t r = R_MID;
    evbus_retry_policy_t p = policy(EVBUS_JITTER_FULL, &r);
    /* uniform in [0, d]: middle draw = floor((d + 1) / 2) */
    const int mid[] = {50, 100, 200, 400, 800};
    for (int a = 1; a <= 5; a++)
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), mid[a - 1]);
    r = R_LOW;
    for (int a = 1; a <= 5; a++)
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), 0);
    r = R_HIGH;
    const int high[] = {100, 200, 400, 800, 1600};
    for (int a = 1; a <= 5; a++)
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), high[a - 1]);
}
END_TEST

START_TEST(equal_sequence)
{
    uint64_t r = R_LOW;
    evbus_retry_policy_t p = policy(EVBUS_JITTER_EQUAL, &r);
    /* d/2 + uniform in [0, d - d/2] */
    const int low[] = {50, 100, 200, 400};
    const int high[] = {100, 200, 400, 800};
    const int mid[] = {75, 150, 300, 600}; /* d/2 + floor((d/2 + 1) / 2) */
    for (int a = 1; a <= 4; a++) {
        r = R_LOW;
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), low[a - 1]);
        r = R_HIGH;
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), high[a - 1]);
        r = R_MID;
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 0), mid[a - 1]);
    }
    /* odd delay: the halves still add up to at most d */
    p.initial_ms = 101;
    p.multiplier = 1.0;
    r = R_HIGH;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 1, 0), 101);
    r = R_LOW;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 1, 0), 50);
}
END_TEST

START_TEST(decorrelated_sequence)
{
    uint64_t r = R_HIGH;
    evbus_retry_policy_t p = policy(EVBUS_JITTER_DECORRELATED, &r);
    p.max_ms = 5000;
    /* high draws: prev*3 each time (first prev = initial), capped */
    int prev = 0;
    const int high[] = {300, 900, 2700, 5000, 5000};
    for (int a = 1; a <= 5; a++) {
        int d = evbus_retry_delay_ms(&p, a, prev);
        ck_assert_int_eq(d, high[a - 1]);
        prev = d;
    }
    /* low draws: always initial */
    r = R_LOW;
    for (int a = 1; a <= 5; a++)
        ck_assert_int_eq(evbus_retry_delay_ms(&p, a, 2000), 100);
    /* middle draw over [100, 600] (prev 200): 100 + floor(501 / 2) */
    r = R_MID;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 2, 200), 350);
    /* prev below initial: range collapses to initial */
    r = R_HIGH;
    ck_assert_int_eq(evbus_retry_delay_ms(&p, 2, 10), 100);
}
END_TEST

/* Draws n delays with the default generator and checks every one is inside
 * the kind's bounds; also checks the spread reaches near both ends and the
 * mean is near the middle (a stuck or biased generator fails). */
static void check_bounds(evbus_jitter_t j, int attempt, int prev, int lo,
                         int hi)
{
    evbus_retry_policy_t p = policy(j, NULL);
    const int n = 20000;
    int mn = INT_MAX, mx = INT_MIN, outside = 0, first_bad = 0;
    double sum = 0;
    /* one assertion after the loop: an assertion per sample costs Check a
     * message each, which ran past the case timeout under ASan */
    for (int i = 0; i < n; i++) {
        int d = evbus_retry_delay_ms(&p, attempt, prev);
        if ((d < lo || d > hi) && !outside++)
            first_bad = d;
        if (d < mn) mn = d;
        if (d > mx) mx = d;
        sum += d;
    }
    ck_assert_msg(outside == 0,
                  "jitter %d attempt %d: %d of %d draws not in [%d, %d], "
                  "the first %d",
                  j, attempt, outside, n, lo, hi, first_bad);
    double span = hi - lo;
    ck_assert_msg(mn <= lo + span * 0.01 && mx >= hi - span * 0.01,
                  "jitter %d: samples [%d, %d] do not cover [%d, %d]", j, mn,
                  mx, lo, hi);
    double mean = sum / n, want = (lo + hi) / 2.0;
    ck_assert_msg(fabs(mean - want) <= span * 0.03,
                  "jitter %d: mean %.1f, expected about %.1f", j, mean, want);
}

START_TEST(jitter_bounds)
{
    for (int a = 1; a <= 9; a++) {
        int d = 100 << (a - 1); /* below the 30 s cap up to attempt 9 */
        check_bounds(EVBUS_JITTER_FULL, a, 0, 0, d);
        check_bounds(EVBUS_JITTER_EQUAL, a, 0, d / 2, d);
    }
    check_bounds(EVBUS_JITTER_FULL, 20, 0, 0, 30000); /* capped */
    check_bounds(EVBUS_JITTER_DECORRELATED, 1, 0, 100, 300);
    check_bounds(EVBUS_JITTER_DECORRELATED, 3, 1000, 100, 3000);
    check_bounds(EVBUS_JITTER_DECORRELATED, 9, 9000, 100, 27000);
    /* above the cap: never more than max_ms (min(max, uniform)) */
    evbus_retry_policy_t p = policy(EVBUS_JITTER_DECORRELATED, NULL);
    int at_cap = 0, outside = 0;
    for (int i = 0; i < 20000; i++) {
        int d = evbus_retry_delay_ms(&p, 9, 20000); /* [100, 60000] */
        outside += d < 100 || d > 30000;
        at_cap += d == 30000;
    }
    ck_assert_int_eq(outside, 0);
    /* about half the draws land above 30000 and are capped */
    ck_assert_msg(at_cap > 8000 && at_cap < 12000, "%d of 20000 at the cap",
                  at_cap);
}
END_TEST

/* Threads using the default generator at once get different sequences. */
static void *draw_seq(void *arg)
{
    evbus_retry_policy_t p = policy(EVBUS_JITTER_FULL, NULL);
    p.max_ms = INT_MAX;
    p.initial_ms = INT_MAX;
    int *out = arg;
    for (int i = 0; i < 16; i++)
        out[i] = evbus_retry_delay_ms(&p, 1, 0);
    return NULL;
}

START_TEST(default_rng_per_thread)
{
    enum { T = 4 };
    int seq[T][16];
    pthread_t th[T];
    for (int i = 0; i < T; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, draw_seq, seq[i]), 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        for (int k = i + 1; k < T; k++)
            ck_assert_msg(memcmp(seq[i], seq[k], sizeof seq[i]) != 0,
                          "threads %d and %d drew the same sequence", i, k);
}
END_TEST

/* A fork child must not replay its parent's jitter sequence. */
START_TEST(default_rng_reseeds_after_fork)
{
    evbus_retry_policy_t p = policy(EVBUS_JITTER_FULL, NULL);
    p.max_ms = INT_MAX;
    p.initial_ms = INT_MAX;
    (void)evbus_retry_delay_ms(&p, 1, 0); /* seed this thread first */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    int seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = evbus_retry_delay_ms(&p, 1, 0);
    if (pid == 0) {
        ssize_t n = write(fds[1], seq, sizeof seq);
        _exit(n == (ssize_t)sizeof seq ? 0 : 1);
    }
    int child[8];
    ck_assert_int_eq(read(fds[0], child, sizeof child), (ssize_t)sizeof child);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    close(fds[1]);
    ck_assert_msg(memcmp(seq, child, sizeof seq) != 0,
                  "parent and fork child drew the same jitter sequence");
}
END_TEST

START_TEST(should_retry_rule)
{
    evbus_retry_policy_t p = policy(EVBUS_JITTER_NONE, NULL);
    ck_assert_int_eq(evbus_retry_should_retry(&p, 1, 0, 100), 1);
    ck_assert_int_eq(evbus_retry_should_retry(&p, 4, 0, 100), 1);
    ck_assert_int_eq(evbus_retry_should_retry(&p, 5, 0, 100), 0);
    ck_assert_int_eq(evbus_retry_should_retry(&p, 6, 0, 100), 0);
    p.max_attempts = 0; /* unlimited attempts */
    ck_assert_int_eq(evbus_retry_should_retry(&p, 1000000, UINT64_MAX / 2, 100), 1);
    p.max_elapsed_ms = 1000;
    ck_assert_int_eq(evbus_retry_should_retry(&p, 3, 900, 100), 1);  /* starts at 1000 */
    ck_assert_int_eq(evbus_retry_should_retry(&p, 3, 901, 100), 0);  /* would start at 1001 */
    ck_assert_int_eq(evbus_retry_should_retry(&p, 3, 2000, 0), 0);
    p.max_attempts = 2;
    ck_assert_int_eq(evbus_retry_should_retry(&p, 2, 0, 0), 0);
    ck_assert_int_eq(evbus_retry_should_retry(NULL, 1, 0, 0), 0);
}
END_TEST

/* ------------------------------------------------------ evbus_retry_call */

typedef struct {
    fake_clock_t *clock;
    int calls;
    int fail_times;   /* return err this many times, then 0 */
    int err;
    int cost_ms;      /* each call takes this long on the fake clock */
    uint64_t started[16];
} flaky_t;

static int flaky(void *opaque)
{
    flaky_t *f = opaque;
    if (f->calls < 16)
        f->started[f->calls] = atomic_load(&f->clock->now);
    f->calls++;
    fake_advance(f->clock, (uint64_t)f->cost_ms);
    return f->calls <= f->fail_times ? f->err : 0;
}

static evbus_retry_policy_t fake_policy(fake_clock_t *c)
{
    evbus_retry_policy_t p = policy(EVBUS_JITTER_NONE, NULL);
    p.now_ms = fake_now;
    p.sleep_ms = fake_sleep;
    p.clock_opaque = c;
    return p;
}

START_TEST(call_succeeds_after_retries)
{
    fake_clock_t c = {.now = 5000};
    evbus_retry_policy_t p = fake_policy(&c);
    flaky_t f = {.clock = &c, .fail_times = 3, .err = EVBUS_ECONN};
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), 0);
    ck_assert_int_eq(f.calls, 4);
    ck_assert_int_eq(c.nsleeps, 3);
    ck_assert_int_eq(c.sleeps[0], 100);
    ck_assert_int_eq(c.sleeps[1], 200);
    ck_assert_int_eq(c.sleeps[2], 400);
    ck_assert_uint_eq(atomic_load(&c.now), 5000 + 700);
    ck_assert_uint_eq(f.started[3] - f.started[0], 700);
}
END_TEST

START_TEST(call_stops_on_non_retriable)
{
    fake_clock_t c = {.now = 0};
    evbus_retry_policy_t p = fake_policy(&c);
    flaky_t f = {.clock = &c, .fail_times = 100, .err = EVBUS_EAUTH};
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), EVBUS_EAUTH);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(c.nsleeps, 0);
    /* a retriable error is retried, up to max_attempts */
    f = (flaky_t){.clock = &c, .fail_times = 100, .err = EVBUS_ETIMEDOUT};
    p.max_attempts = 3;
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), EVBUS_ETIMEDOUT);
    ck_assert_int_eq(f.calls, 3);
}
END_TEST

START_TEST(call_stops_at_max_attempts)
{
    fake_clock_t c = {.now = 0};
    evbus_retry_policy_t p = fake_policy(&c);
    flaky_t f = {.clock = &c, .fail_times = 100, .err = EVBUS_EAGAIN};
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), EVBUS_EAGAIN);
    ck_assert_int_eq(f.calls, 5);
    ck_assert_int_eq(c.nsleeps, 4);
    ck_assert_uint_eq(atomic_load(&c.now), 100 + 200 + 400 + 800);
}
END_TEST

START_TEST(call_stops_at_max_elapsed)
{
    fake_clock_t c = {.now = 0};
    evbus_retry_policy_t p = fake_policy(&c);
    p.max_attempts = 0;
    p.max_elapsed_ms = 1000;
    flaky_t f = {.clock = &c, .fail_times = 100, .err = EVBUS_ECONN};
    /* attempts start at 0, 100, 300, 700; the next would start at 1500 */
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), EVBUS_ECONN);
    ck_assert_int_eq(f.calls, 4);
    ck_assert_uint_eq(f.started[3], 700);
    ck_assert_uint_eq(atomic_load(&c.now), 700);

    /* time spent inside the calls counts too: each costs 150 ms, so
     * starts are 0, 250, 600; after the third (ends 750) + 400 > 1000 */
    c = (fake_clock_t){.now = 0};
    f = (flaky_t){.clock = &c, .fail_times = 100, .err = EVBUS_ECONN,
                  .cost_ms = 150};
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), EVBUS_ECONN);
    ck_assert_int_eq(f.calls, 3);
    ck_assert_uint_eq(f.started[1], 250);
    ck_assert_uint_eq(f.started[2], 600);
    ck_assert_uint_eq(atomic_load(&c.now), 750);
}
END_TEST

START_TEST(call_with_jitter_is_replayable)
{
    fake_clock_t c = {.now = 0};
    uint64_t r = R_MID;
    evbus_retry_policy_t p = fake_policy(&c);
    p.jitter = EVBUS_JITTER_DECORRELATED;
    p.rand_u64 = fixed_rand;
    p.rand_opaque = &r;
    flaky_t f = {.clock = &c, .fail_times = 3, .err = EVBUS_ECONN};
    ck_assert_int_eq(evbus_retry_call(&p, flaky, &f), 0);
    /* [100,300] -> 200; [100,600] -> 350; [100,1050] -> 575 */
    ck_assert_int_eq(c.nsleeps, 3);
    ck_assert_int_eq(c.sleeps[0], 200);
    ck_assert_int_eq(c.sleeps[1], 350);
    ck_assert_int_eq(c.sleeps[2], 575);
    ck_assert_uint_eq(atomic_load(&c.now), 1125);
}
END_TEST

static int always_ok(void *opaque) { (*(int *)opaque)++; return 0; }

static int busy_then_ok(void *opaque)
{
    return ++*(int *)opaque < 3 ? EVBUS_EBUSY : 0;
}

START_TEST(call_real_clock_and_bad_args)
{
    int n = 0;
    ck_assert_int_eq(evbus_retry_call(NULL, always_ok, &n), 0); /* defaults */
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(evbus_retry_call(NULL, NULL, NULL), EVBUS_EINVAL);

    /* real nanosleep: 5 ms then 10 ms */
    evbus_retry_policy_t p = policy(EVBUS_JITTER_NONE, NULL);
    p.initial_ms = 5;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = 0;
    ck_assert_int_eq(evbus_retry_call(&p, busy_then_ok, &n), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    ck_assert_int_eq(n, 3);
    ck_assert_msg(ms >= 15.0, "slept only %.2f ms", ms);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("retry");
    TCase *tc = tcase_create("delays");
    tcase_set_timeout(tc, 60); /* a hang guard: Check's default is 4 s */
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, none_sequence_and_cap);
    tcase_add_test(tc, overflow_safe);
    tcase_add_test(tc, bad_values_never_negative_or_above_max);
    tcase_add_test(tc, full_sequence);
    tcase_add_test(tc, equal_sequence);
    tcase_add_test(tc, decorrelated_sequence);
    tcase_add_test(tc, jitter_bounds);
    tcase_add_test(tc, default_rng_per_thread);
    tcase_add_test(tc, default_rng_reseeds_after_fork);
    tcase_add_test(tc, should_retry_rule);
    suite_add_tcase(s, tc);
    tc = tcase_create("call");
    tcase_add_test(tc, call_succeeds_after_retries);
    tcase_add_test(tc, call_stops_on_non_retriable);
    tcase_add_test(tc, call_stops_at_max_attempts);
    tcase_add_test(tc, call_stops_at_max_elapsed);
    tcase_add_test(tc, call_with_jitter_is_replayable);
    tcase_add_test(tc, call_real_clock_and_bad_args);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
