/* The worked example of docs/breaker.md, run against a fake user service
 * under a fake clock: a retry inside a breaker with the "accepted, user
 * unverified" fallback. Checks the story the guide tells, step by step. */
#include <check.h>
#include <string.h>

#include <evbus/breaker.h>
#include <evbus/evbus.h>
#include <evbus/retry.h>

#include "fake_clock.h"

static fake_clock_t clk;

/* The user service: up or down; knows users "alice" and "bob". */
static struct {
    int down;
    int requests;
} users;

typedef struct {
    const char *user_id;
    int exists;
    int verified;
} user_check_t;

static int ask_user_service(void *opaque)
{
    user_check_t *c = opaque;
    users.requests++;
    if (users.down) {
        fake_advance(&clk, 300); /* the HTTP timeout */
        return EVBUS_ETIMEDOUT;
    }
    fake_advance(&clk, 2);
    c->exists = !strcmp(c->user_id, "alice") || !strcmp(c->user_id, "bob");
    return 0; /* 404 is an answer too */
}

static int check_user(void *opaque)
{
    user_check_t *c = opaque;
    evbus_retry_policy_t p;
    evbus_retry_policy_init(&p);
    p.initial_ms = 50;
    p.max_attempts = 2;
    p.max_elapsed_ms = 500;
    p.jitter = EVBUS_JITTER_NONE;
    p.now_ms = fake_now;
    p.sleep_ms = fake_sleep;
    p.clock_opaque = &clk;
    int rc = evbus_retry_call(&p, ask_user_service, c);
    c->verified = (rc == 0);
    return rc;
}

static int accept_unverified(void *opaque)
{
    user_check_t *c = opaque;
    c->exists = 1;
    c->verified = 0;
    return 0;
}

static evbus_breaker_t *users_breaker;

/* POST /todos, reduced to its status code. */
static int create_todo(const char *user_id)
{
    user_check_t c = {.user_id = user_id};
    evbus_breaker_call(users_breaker, check_user, accept_unverified, &c);
    if (!c.exists)
        return 422;
    return c.verified ? 201 : 202;
}

static int changes[16], nchanges;
static void on_users_state(evbus_breaker_state_t from, evbus_breaker_state_t to,
                      void *opaque)
{
    (void)opaque;
    (void)from;
    if (nchanges < 16)
        changes[nchanges] = to;
    nchanges++;
}

START_TEST(todo_service_degrades_and_recovers)
{
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    o.open_ms = 15000;
    o.now_ms = fake_now;
    o.clock_opaque = &clk;
    users_breaker = evbus_breaker_new(&o, NULL, 0);
    ck_assert_ptr_nonnull(users_breaker);
    evbus_breaker_set_name(users_breaker, "users");
    evbus_breaker_on_state(users_breaker, on_users_state, NULL);

    /* healthy: verified answers, 404s do not trip the breaker */
    ck_assert_int_eq(create_todo("alice"), 201);
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(create_todo("mallory"), 422);
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_CLOSED);

    /* 1. the user service goes down: each request pays two attempts and
     *    gets the degraded answer */
    users.down = 1;
    for (int i = 0; i < 4; i++) {
        int before = users.requests;
        uint64_t t0 = atomic_load(&clk.now);
        ck_assert_int_eq(create_todo("alice"), 202);
        ck_assert_int_eq(users.requests - before, 2);
        ck_assert_uint_eq(atomic_load(&clk.now) - t0, 300 + 50 + 300);
    }
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_CLOSED);
    /* 2. the fifth failure in a row opens it; then no network at all */
    ck_assert_int_eq(create_todo("bob"), 202);
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_OPEN);
    int before = users.requests;
    uint64_t t0 = atomic_load(&clk.now);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(create_todo("alice"), 202);
    ck_assert_int_eq(users.requests, before);
    ck_assert_uint_eq(atomic_load(&clk.now), t0); /* answered instantly */

    /* 3. 15 s later, still down: the 3 probes fail, open again */
    fake_advance(&clk, 15000);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(create_todo("alice"), 202);
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_OPEN);

    /* back up: after the next open period, 3 good probes close it */
    users.down = 0;
    ck_assert_int_eq(create_todo("alice"), 202); /* still open */
    fake_advance(&clk, 15000);
    ck_assert_int_eq(create_todo("alice"), 201);
    ck_assert_int_eq(create_todo("mallory"), 422);
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_HALF_OPEN);
    ck_assert_int_eq(create_todo("bob"), 201);
    ck_assert_int_eq(evbus_breaker_state(users_breaker), EVBUS_BREAKER_CLOSED);

    const int want[] = {EVBUS_BREAKER_OPEN, EVBUS_BREAKER_HALF_OPEN,
                        EVBUS_BREAKER_OPEN, EVBUS_BREAKER_HALF_OPEN,
                        EVBUS_BREAKER_CLOSED};
    ck_assert_int_eq(nchanges, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(changes[i], want[i]);
    evbus_breaker_free(users_breaker);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("todo-example");
    TCase *tc = tcase_create("degradation");
    tcase_add_test(tc, todo_service_degrades_and_recovers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
