/* Circuit breaker state machine under a fake clock: every transition, the
 * sliding-window math, minimum calls, consecutive failures, the exact
 * half-open probe count, callback order, the fallback call and counters. */
#include <check.h>
#include <string.h>

#include <evbus/breaker.h>
#include <evbus/evbus.h>

#include "fake_clock.h"

#define C EVBUS_BREAKER_CLOSED
#define O EVBUS_BREAKER_OPEN
#define H EVBUS_BREAKER_HALF_OPEN

/* Records every state change for order checks. */
typedef struct {
    int from[64], to[64];
    int n;
    evbus_breaker_t *b; /* when set, the callback also reads the state */
    int state_seen[64];
} changes_t;

static void on_change(evbus_breaker_state_t from, evbus_breaker_state_t to,
                      void *opaque)
{
    changes_t *c = opaque;
    if (c->n < 64) {
        c->from[c->n] = from;
        c->to[c->n] = to;
        c->state_seen[c->n] = c->b ? (int)evbus_breaker_state(c->b) : -1;
    }
    c->n++;
}

static fake_clock_t clk;
static changes_t chg;

static evbus_breaker_t *make(int window, int min_calls, int pct, int consec,
                             int open_ms, int probes)
{
    atomic_store(&clk.now, 1000000);
    memset(&chg, 0, sizeof chg);
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    o.window_size = window;
    o.minimum_calls = min_calls;
    o.failure_rate_pct = pct;
    o.consecutive_failures = consec;
    o.open_ms = open_ms;
    o.half_open_calls = probes;
    o.now_ms = fake_now;
    o.clock_opaque = &clk;
    evbus_breaker_t *b = evbus_breaker_new(&o, NULL, 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(evbus_breaker_set_name(b, "user-service"), EVBUS_OK);
    evbus_breaker_on_state(b, on_change, &chg);
    return b;
}

/* One call through allow/record; asserts it was admitted. */
static void call(evbus_breaker_t *b, int ok)
{
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    evbus_breaker_record(b, ok);
}

static void calls(evbus_breaker_t *b, const char *pattern) /* "SFFS" */
{
    for (const char *p = pattern; *p; p++)
        call(b, *p == 'S');
}

START_TEST(defaults_and_validation)
{
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    ck_assert_int_eq(o.window_size, 20);
    ck_assert_int_eq(o.minimum_calls, 10);
    ck_assert_int_eq(o.failure_rate_pct, 50);
    ck_assert_int_eq(o.consecutive_failures, 5);
    ck_assert_int_eq(o.open_ms, 10000);
    ck_assert_int_eq(o.half_open_calls, 3);
    ck_assert_ptr_null(o.now_ms);
    ck_assert_ptr_null(o.clock_opaque);

    evbus_breaker_t *b = evbus_breaker_new(NULL, NULL, 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(evbus_breaker_state(b), C);
    ck_assert_str_eq(evbus_breaker_name(b), "breaker");
    evbus_breaker_free(b);

    evbus_breaker_opts_t bad = o;
    bad.window_size = 0;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));
    bad = o;
    bad.failure_rate_pct = 101;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));
    bad = o;
    bad.failure_rate_pct = -1;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));
    bad = o;
    bad.half_open_calls = 0;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));
    bad = o;
    bad.open_ms = -1;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));
    bad = o;
    bad.consecutive_failures = -2;
    ck_assert_ptr_null(evbus_breaker_new(&bad, NULL, 0));

    /* name is copied */
    char name[16] = "users";
    b = evbus_breaker_new(&o, NULL, 0);
    ck_assert_int_eq(evbus_breaker_set_name(b, name), EVBUS_OK);
    strcpy(name, "xxxxx");
    ck_assert_str_eq(evbus_breaker_name(b), "users");
    ck_assert_int_eq(evbus_breaker_set_name(b, NULL), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_breaker_set_name(NULL, "x"), EVBUS_EINVAL);
    evbus_breaker_free(b);

    /* the size and the eight fields, positionally */
    evbus_breaker_opts_t pos = {sizeof pos, 10, 5, 50, 0, 1000, 2, NULL, NULL};
    b = evbus_breaker_new(&pos, NULL, 0);
    ck_assert_ptr_nonnull(b);
    evbus_breaker_free(b);

    ck_assert_str_eq(evbus_breaker_state_name(C), "CLOSED");
    ck_assert_str_eq(evbus_breaker_state_name(O), "OPEN");
    ck_assert_str_eq(evbus_breaker_state_name(H), "HALF_OPEN");
    ck_assert_str_eq(evbus_breaker_state_name(9), "UNKNOWN");

    /* NULL breaker: harmless answers */
    ck_assert_int_eq(evbus_breaker_allow(NULL), 0);
    evbus_breaker_record(NULL, 1);
    ck_assert_int_eq(evbus_breaker_state(NULL), C);
    evbus_breaker_free(NULL);
}
END_TEST

START_TEST(minimum_calls_before_judging)
{
    evbus_breaker_t *b = make(10, 5, 50, 0, 1000, 2);
    calls(b, "FFFF"); /* 100% but only 4 calls */
    ck_assert_int_eq(evbus_breaker_state(b), C);
    call(b, 0); /* 5th: judged */
    ck_assert_int_eq(evbus_breaker_state(b), O);
    ck_assert_int_eq(chg.n, 1);
    evbus_breaker_free(b);

    /* minimum above the window: clamped to the window */
    b = make(3, 10, 50, 0, 1000, 2);
    calls(b, "FF");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    call(b, 0);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(threshold_is_at_or_above)
{
    evbus_breaker_t *b = make(4, 4, 50, 0, 1000, 2);
    calls(b, "SSF"); /* 3 calls, not judged */
    call(b, 1);      /* 1/4 = 25% */
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_int_eq(st.window_calls, 4);
    ck_assert_int_eq(st.window_failures, 1);
    call(b, 0); /* the oldest S drops out: S F S F = 50% */
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(window_slides)
{
    /* 75% threshold over 4: S F F S = 50%, then F -> window F F S F = 75%.
     * A cumulative count (3 of 5 = 60%) would not open. */
    evbus_breaker_t *b = make(4, 4, 75, 0, 1000, 2);
    calls(b, "SFFS");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    call(b, 0);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);

    /* old failures leave the window: F F S S S S S S keeps it closed and
     * the window then holds no failure */
    b = make(4, 4, 50, 0, 1000, 2);
    calls(b, "FSSSSSSS");
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_int_eq(st.window_calls, 4);
    ck_assert_int_eq(st.window_failures, 0);
    calls(b, "F");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    calls(b, "F");
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(consecutive_failures)
{
    evbus_breaker_t *b = make(100, 100, 50, 3, 1000, 2);
    calls(b, "FFSFFSFF");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    call(b, 0); /* third in a row */
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);

    /* rate rule off, only the run counts */
    b = make(4, 1, 0, 2, 1000, 2);
    calls(b, "FSFSFSFS");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    calls(b, "FF");
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(open_rejects_for_open_ms)
{
    evbus_breaker_t *b = make(2, 2, 50, 0, 5000, 2);
    calls(b, "FF");
    ck_assert_int_eq(evbus_breaker_state(b), O);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(evbus_breaker_allow(b), 0);
    fake_advance(&clk, 4999);
    ck_assert_int_eq(evbus_breaker_allow(b), 0);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    /* a late outcome of a call admitted before opening changes nothing */
    evbus_breaker_record(b, 1);
    evbus_breaker_record(b, 0);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    fake_advance(&clk, 1);
    ck_assert_int_eq(evbus_breaker_state(b), H); /* state() moves it */
    ck_assert_int_eq(chg.n, 2);
    ck_assert_int_eq(chg.from[1], O);
    ck_assert_int_eq(chg.to[1], H);
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_uint_eq(st.rejected, 101);
    ck_assert_uint_eq(st.calls, 2);
    ck_assert_uint_eq(st.successes, 1);
    ck_assert_uint_eq(st.failures, 3);
    ck_assert_uint_eq(st.opened, 1);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(allow_moves_open_to_half_open)
{
    evbus_breaker_t *b = make(1, 1, 100, 0, 300, 1);
    call(b, 0);
    fake_advance(&clk, 300);
    ck_assert_int_eq(evbus_breaker_allow(b), 1); /* first probe */
    ck_assert_int_eq(chg.n, 2);
    ck_assert_int_eq(chg.to[1], H);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(half_open_admits_exactly_n)
{
    evbus_breaker_t *b = make(2, 2, 50, 0, 100, 3);
    calls(b, "FF");
    fake_advance(&clk, 100);
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(evbus_breaker_allow(b), 0);
    evbus_breaker_record(b, 1);
    evbus_breaker_record(b, 1);
    ck_assert_int_eq(evbus_breaker_state(b), H);
    ck_assert_int_eq(evbus_breaker_allow(b), 0); /* slots stay taken */
    evbus_breaker_record(b, 0);                  /* 1 of 3 failed: 33% */
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_int_eq(st.window_calls, 0); /* a fresh window */
    ck_assert_uint_eq(st.rejected, 51);
    /* closed again: judged from scratch */
    call(b, 0);
    ck_assert_int_eq(evbus_breaker_state(b), C);
    call(b, 0);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(half_open_reopens_and_waits_again)
{
    evbus_breaker_t *b = make(2, 2, 50, 0, 100, 2);
    calls(b, "FF");
    uint64_t t_open = atomic_load(&clk.now);
    fake_advance(&clk, 250); /* late: half-open starts on the next look */
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    evbus_breaker_record(b, 0);
    /* resilience4j: the verdict waits for every probe */
    ck_assert_int_eq(evbus_breaker_state(b), H);
    evbus_breaker_record(b, 1); /* 1 of 2 = 50% >= 50% */
    ck_assert_int_eq(evbus_breaker_state(b), O);
    /* the new open period counts from the re-open, not the first open */
    ck_assert_uint_eq(atomic_load(&clk.now), t_open + 250);
    fake_advance(&clk, 99);
    ck_assert_int_eq(evbus_breaker_allow(b), 0);
    fake_advance(&clk, 1);
    ck_assert_int_eq(evbus_breaker_state(b), H);
    /* stray records beyond the admitted probes are ignored */
    evbus_breaker_record(b, 1);
    evbus_breaker_record(b, 1);
    ck_assert_int_eq(evbus_breaker_state(b), H);
    call(b, 1);
    call(b, 1);
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_uint_eq(st.opened, 2);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(rate_off_any_probe_failure_reopens)
{
    evbus_breaker_t *b = make(10, 1, 0, 2, 10, 4);
    calls(b, "FF");
    fake_advance(&clk, 10);
    calls(b, "SSSF");
    ck_assert_int_eq(evbus_breaker_state(b), O);
    fake_advance(&clk, 10);
    calls(b, "SSSS");
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(open_ms_zero)
{
    evbus_breaker_t *b = make(1, 1, 100, 0, 0, 1);
    call(b, 0);
    /* opens and is at once ready for a probe */
    ck_assert_int_eq(chg.n, 1);
    ck_assert_int_eq(evbus_breaker_allow(b), 1);
    ck_assert_int_eq(evbus_breaker_allow(b), 0);
    evbus_breaker_record(b, 1);
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(callback_order)
{
    evbus_breaker_t *b = make(2, 2, 50, 0, 100, 1);
    chg.b = b; /* the callback reads the state back (recursive lock) */
    calls(b, "FF");              /* C -> O */
    fake_advance(&clk, 100);
    call(b, 0);                  /* O -> H, H -> O */
    fake_advance(&clk, 100);
    call(b, 1);                  /* O -> H, H -> C */
    calls(b, "SF");              /* window S F = 50%: C -> O */
    evbus_breaker_reset(b);      /* O -> C */
    const int want_from[] = {C, O, H, O, H, C, O};
    const int want_to[] = {O, H, O, H, C, O, C};
    ck_assert_int_eq(chg.n, 7);
    for (int i = 0; i < 7; i++) {
        ck_assert_msg(chg.from[i] == want_from[i] && chg.to[i] == want_to[i],
                      "change %d: %d->%d, want %d->%d", i, chg.from[i],
                      chg.to[i], want_from[i], want_to[i]);
        ck_assert_int_eq(chg.state_seen[i], want_to[i]);
    }
    /* replace and clear the callback */
    changes_t other = {0};
    evbus_breaker_on_state(b, on_change, &other);
    calls(b, "FF");
    ck_assert_int_eq(other.n, 1);
    evbus_breaker_on_state(b, NULL, NULL);
    evbus_breaker_reset(b);
    ck_assert_int_eq(other.n, 1);
    ck_assert_int_eq(chg.n, 7);
    evbus_breaker_free(b);
}
END_TEST

START_TEST(reset_clears_window_keeps_counters)
{
    evbus_breaker_t *b = make(4, 4, 50, 3, 100, 1);
    calls(b, "FFS");
    evbus_breaker_reset(b);
    ck_assert_int_eq(chg.n, 0); /* was closed: no change reported */
    evbus_breaker_stats_t st;
    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_int_eq(st.window_calls, 0);
    ck_assert_uint_eq(st.calls, 3);
    calls(b, "FF"); /* the run restarted too */
    ck_assert_int_eq(evbus_breaker_state(b), C);
    evbus_breaker_free(b);
}
END_TEST

/* ------------------------------------------------- evbus_breaker_call */

typedef struct {
    int fn_rc;
    int fn_runs, fb_runs;
    int fb_err;
} call_ctx_t;

static int user_exists(void *opaque)
{
    call_ctx_t *c = opaque;
    c->fn_runs++;
    return c->fn_rc;
}

static int accept_unverified(void *opaque)
{
    call_ctx_t *c = opaque;
    c->fb_runs++;
    return 42;
}

static int fallback_ex(void *opaque, int err)
{
    call_ctx_t *c = opaque;
    c->fb_runs++;
    c->fb_err = err;
    return 7;
}

START_TEST(call_with_fallback)
{
    evbus_breaker_t *b = make(2, 2, 100, 0, 100, 1);
    call_ctx_t c = {.fn_rc = 0};
    ck_assert_int_eq(evbus_breaker_call(b, user_exists, accept_unverified, &c), 0);
    ck_assert_int_eq(c.fn_runs, 1);
    ck_assert_int_eq(c.fb_runs, 0);
    c.fn_rc = EVBUS_ETIMEDOUT; /* fails: fallback answers */
    ck_assert_int_eq(evbus_breaker_call(b, user_exists, accept_unverified, &c), 42);
    ck_assert_int_eq(c.fb_runs, 1);
    ck_assert_int_eq(evbus_breaker_call(b, user_exists, NULL, &c), EVBUS_ETIMEDOUT);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    /* open: fn is not run, the fallback is */
    int runs = c.fn_runs;
    ck_assert_int_eq(evbus_breaker_call(b, user_exists, accept_unverified, &c), 42);
    ck_assert_int_eq(c.fn_runs, runs);
    ck_assert_int_eq(c.fb_runs, 2);
    ck_assert_int_eq(evbus_breaker_call(b, user_exists, NULL, &c), EVBUS_EBREAKER);
    ck_assert_int_eq(evbus_breaker_call_ex(b, user_exists, fallback_ex, &c), 7);
    ck_assert_int_eq(c.fb_err, EVBUS_EBREAKER);
    ck_assert_int_eq(c.fn_runs, runs);
    /* half-open probe through call_ex fails: fallback sees fn's error */
    fake_advance(&clk, 100);
    ck_assert_int_eq(evbus_breaker_call_ex(b, user_exists, fallback_ex, &c), 7);
    ck_assert_int_eq(c.fb_err, EVBUS_ETIMEDOUT);
    ck_assert_int_eq(evbus_breaker_state(b), O);
    fake_advance(&clk, 100);
    c.fn_rc = 0;
    ck_assert_int_eq(evbus_breaker_call_ex(b, user_exists, fallback_ex, &c), 0);
    ck_assert_int_eq(evbus_breaker_state(b), C);

    ck_assert_int_eq(evbus_breaker_call(b, NULL, NULL, &c), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_breaker_call(NULL, user_exists, NULL, &c), EVBUS_EINVAL);

    evbus_breaker_stats_t st;

    evbus_breaker_stats_init(&st);
    evbus_breaker_stats(b, &st);
    ck_assert_uint_eq(st.calls, 5);
    ck_assert_uint_eq(st.rejected, 3);
    ck_assert_uint_eq(st.successes, 2);
    ck_assert_uint_eq(st.failures, 3);
    ck_assert_int_eq(st.state, C);
    evbus_breaker_free(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("breaker");
    TCase *tc = tcase_create("state machine");
    tcase_add_test(tc, defaults_and_validation);
    tcase_add_test(tc, minimum_calls_before_judging);
    tcase_add_test(tc, threshold_is_at_or_above);
    tcase_add_test(tc, window_slides);
    tcase_add_test(tc, consecutive_failures);
    tcase_add_test(tc, open_rejects_for_open_ms);
    tcase_add_test(tc, allow_moves_open_to_half_open);
    tcase_add_test(tc, half_open_admits_exactly_n);
    tcase_add_test(tc, half_open_reopens_and_waits_again);
    tcase_add_test(tc, rate_off_any_probe_failure_reopens);
    tcase_add_test(tc, open_ms_zero);
    tcase_add_test(tc, callback_order);
    tcase_add_test(tc, reset_clears_window_keeps_counters);
    tcase_add_test(tc, call_with_fallback);
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
