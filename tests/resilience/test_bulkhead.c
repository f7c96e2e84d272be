/*
 * Bulkhead: at most max_concurrent calls at once, EVBUS_EBUSY past that
 * (at once, or after the bounded wait), counters; and the log callbacks of
 * the bulkhead and the breaker run outside their locks. Verdicts from
 * counts and handshakes between threads, not from timing.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <string.h>

#include <evbus/breaker.h>
#include <evbus/bulkhead.h>

/* A call that holds its place until the test lets it go. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside;   /* calls that entered and wait */
    bool release; /* let them go */
} gate_t;

static gate_t gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                      false};

static int held_call(void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&gate.mu);
    gate.inside++;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.release)
        pthread_cond_wait(&gate.cv, &gate.mu);
    gate.inside--;
    pthread_mutex_unlock(&gate.mu);
    return 7;
}

static void *caller(void *arg)
{
    int rc = evbus_bulkhead_call(arg, held_call, NULL);
    return (void *)(intptr_t)rc;
}

static void wait_inside(int n)
{
    pthread_mutex_lock(&gate.mu);
    while (gate.inside < n)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

static void open_gate(bool open)
{
    pthread_mutex_lock(&gate.mu);
    gate.release = open;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static int never_called(void *opaque)
{
    (*(int *)opaque)++;
    return 0;
}

START_TEST(refuses_past_the_bound)
{
    evbus_bulkhead_opts_t o;
    evbus_bulkhead_opts_init(&o);
    o.max_concurrent = 3;
    char err[128];
    evbus_bulkhead_t *b = evbus_bulkhead_new(&o, err, sizeof err);
    ck_assert_msg(b != NULL, "%s", err);
    open_gate(false);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, caller, b);
    wait_inside(3);
    int calls = 0;
    ck_assert_int_eq(evbus_bulkhead_call(b, never_called, &calls),
                     EVBUS_EBUSY);
    ck_assert_int_eq(calls, 0);
    evbus_bulkhead_stats_t st;
    evbus_bulkhead_stats_init(&st);
    ck_assert_int_eq(evbus_bulkhead_stats(b, &st), EVBUS_OK);
    ck_assert_uint_eq(st.admitted, 3);
    ck_assert_uint_eq(st.rejected, 1);
    ck_assert_int_eq(st.in_use, 3);
    open_gate(true);
    for (int i = 0; i < 3; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        ck_assert_int_eq((int)(intptr_t)rc, 7);
    }
    ck_assert_int_eq(evbus_bulkhead_call(b, never_called, &calls), 0);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(evbus_bulkhead_stats(b, &st), EVBUS_OK);
    ck_assert_int_eq(st.in_use, 0);
    ck_assert_int_eq(st.max_in_use, 3);
    evbus_bulkhead_free(b);
}
END_TEST

START_TEST(waits_for_a_place_up_to_the_bound)
{
    evbus_bulkhead_opts_t o;
    evbus_bulkhead_opts_init(&o);
    o.max_concurrent = 1;
    o.max_wait_ms = 50;
    evbus_bulkhead_t *b = evbus_bulkhead_new(&o, NULL, 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(evbus_bulkhead_enter(b), EVBUS_OK);
    /* nobody leaves: refused after the wait */
    ck_assert_int_eq(evbus_bulkhead_enter(b), EVBUS_EBUSY);
    evbus_bulkhead_leave(b);
    /* a waiter gets the place the holder gives back */
    evbus_bulkhead_free(b);
    o.max_wait_ms = 600000; /* a hang guard only */
    b = evbus_bulkhead_new(&o, NULL, 0);
    open_gate(false);
    pthread_t holder, waiter;
    pthread_create(&holder, NULL, caller, b);
    wait_inside(1);
    pthread_create(&waiter, NULL, caller, b);
    open_gate(true);
    void *r1, *r2;
    pthread_join(holder, &r1);
    pthread_join(waiter, &r2);
    ck_assert_int_eq((int)(intptr_t)r1, 7);
    ck_assert_int_eq((int)(intptr_t)r2, 7);
    evbus_bulkhead_free(b);
}
END_TEST

START_TEST(bad_options_are_refused_with_a_reason)
{
    evbus_bulkhead_opts_t o;
    evbus_bulkhead_opts_init(&o);
    o.max_concurrent = 0;
    char err[128] = "";
    ck_assert_ptr_null(evbus_bulkhead_new(&o, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "max_concurrent"));
    evbus_bulkhead_opts_t raw;
    memset(&raw, 0, sizeof raw); /* no struct_size */
    raw.max_concurrent = 2;
    ck_assert_ptr_null(evbus_bulkhead_new(&raw, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "evbus_bulkhead_opts_init"));
    ck_assert_int_eq(evbus_bulkhead_enter(NULL), EVBUS_EINVAL);
}
END_TEST

/* ------------------------------------------------ logs outside locks */

/* The log callback asks another thread to use the object that logged and
 * waits for it: if the library still held the object's lock, that thread
 * would block until the callback returned, and the callback would wait
 * forever (a hang guard of 60 s ends it and fails the case). */
typedef struct {
    evbus_breaker_t *breaker;
    evbus_bulkhead_t *bulkhead;
    atomic_int lines, stuck;
} log_probe_t;

static log_probe_t probe;

static void *use_objects(void *arg)
{
    (void)arg;
    if (probe.breaker)
        evbus_breaker_state(probe.breaker);
    if (probe.bulkhead) {
        evbus_bulkhead_stats_t st;
        evbus_bulkhead_stats_init(&st);
        evbus_bulkhead_stats(probe.bulkhead, &st);
    }
    return NULL;
}

static void probing_log(int level, const char *component, const char *msg,
                        void *opaque)
{
    (void)level, (void)msg, (void)opaque;
    if (strcmp(component, "breaker") && strcmp(component, "bulkhead"))
        return;
    atomic_fetch_add(&probe.lines, 1);
    pthread_t th;
    pthread_create(&th, NULL, use_objects, NULL);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    if (pthread_timedjoin_np(th, NULL, &until) != 0) {
        atomic_fetch_add(&probe.stuck, 1);
        pthread_detach(th);
    }
}

START_TEST(log_callbacks_run_outside_locks)
{
    evbus_set_log(probing_log, EVBUS_LOG_DEBUG, NULL);
    evbus_breaker_opts_t bo;
    evbus_breaker_opts_init(&bo);
    bo.consecutive_failures = 1;
    probe.breaker = evbus_breaker_new(&bo, NULL, 0);
    ck_assert_ptr_nonnull(probe.breaker);
    ck_assert(evbus_breaker_allow(probe.breaker));
    evbus_breaker_record(probe.breaker, 0); /* opens: one log line */
    evbus_bulkhead_opts_t o;
    evbus_bulkhead_opts_init(&o);
    o.max_concurrent = 1;
    probe.bulkhead = evbus_bulkhead_new(&o, NULL, 0);
    ck_assert_int_eq(evbus_bulkhead_enter(probe.bulkhead), EVBUS_OK);
    ck_assert_int_eq(evbus_bulkhead_enter(probe.bulkhead), EVBUS_EBUSY);
    evbus_set_log(NULL, 0, NULL);
    ck_assert_int_ge(atomic_load(&probe.lines), 2);
    ck_assert_int_eq(atomic_load(&probe.stuck), 0);
    evbus_bulkhead_leave(probe.bulkhead);
    evbus_bulkhead_free(probe.bulkhead);
    evbus_breaker_free(probe.breaker);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bulkhead");
    TCase *tc = tcase_create("bulkhead");
    tcase_set_timeout(tc, 300); /* a hang guard */
    tcase_add_test(tc, refuses_past_the_bound);
    tcase_add_test(tc, waits_for_a_place_up_to_the_bound);
    tcase_add_test(tc, bad_options_are_refused_with_a_reason);
    tcase_add_test(tc, log_callbacks_run_outside_locks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
