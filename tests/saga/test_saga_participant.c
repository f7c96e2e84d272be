/*
 * The participant helper (each command's effect once, the reply in the
 * same transaction, compensations that overtake their action) and a whole
 * saga over a memory:// bus: orchestrator, relays and two participants.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <evbus/saga.h>

#include "tmpdir.h"

#define SUCCESS EVBUS_SAGA_SUCCESS
#define FAILURE EVBUS_SAGA_FAILURE

static char *dir;
static sqlite3 *db;
static evbus_saga_participant_t *part;

typedef struct {
    int actions, compensations, fail_once, comp_refuse;
} effects_t;
static effects_t fx;

static void setup(void)
{
    dir = tmp_dir();
    char *path = tmp_path(dir, "payment.db");
    db = app_db_open(path);
    free(path);
    sql(db, "CREATE TABLE charges(saga TEXT, n INTEGER)");
    char err[256] = "";
    part = evbus_saga_participant_open(db, "payment", NULL, NULL, err,
                                       sizeof err);
    ck_assert_msg(part != NULL, "%s", err);
    memset(&fx, 0, sizeof fx);
}

static void teardown(void)
{
    evbus_saga_participant_close(part);
    sqlite3_close(db);
    tmp_rm(dir);
    free(dir);
}

static evbus_event_t *cmd(const char *id, const char *saga, int step,
                          const char *kind, int attempt, const char *data)
{
    evbus_event_t *ev = evbus_event_new("order.pay", "/orders");
    evbus_event_set_id(ev, id);
    evbus_event_set_ext(ev, "sagaid", saga);
    evbus_event_set_ext_int(ev, "sagastep", step);
    evbus_event_set_ext(ev, "sagakind", kind);
    evbus_event_set_ext_int(ev, "sagaattempt", attempt);
    evbus_event_set_ext(ev, "sagareplyto", "orders.replies");
    evbus_event_set_data_json(ev, data ? data : "{}");
    return ev;
}

static int charge(sqlite3 *d, const evbus_event_t *c, evbus_saga_answer_t *a,
                  void *opaque)
{
    effects_t *e = opaque;
    e->actions++;
    sql(d, "INSERT INTO charges VALUES('x', 1)");
    if (e->fail_once) {
        e->fail_once = 0;
        return EVBUS_EBUSY;
    }
    if (strstr(evbus_event_data(c), "decline")) {
        evbus_saga_answer_set_reason(a, "card declined");
        return FAILURE;
    }
    evbus_saga_answer_set_data(a, "{\"paymentId\":\"p1\"}");
    return SUCCESS;
}

static int refund(sqlite3 *d, const evbus_event_t *c, evbus_saga_answer_t *a,
                  void *opaque)
{
    effects_t *e = opaque;
    if (e->comp_refuse) {
        e->comp_refuse = 0;
        evbus_saga_answer_set_reason(a, "bank offline");
        return FAILURE;
    }
    e->compensations++;
    sql(d, "DELETE FROM charges");
    return SUCCESS;
}

static evbus_result_t handle(evbus_event_t *c)
{
    evbus_result_t r = evbus_saga_participant_handle(part, c, charge, refund,
                                                     &fx);
    evbus_event_free(c);
    return r;
}

/* The n-th reply in the participant's outbox (1-based), or NULL. */
static evbus_event_t *reply(int n)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db,
                       "SELECT topic, event FROM evbus_outbox ORDER BY seq"
                       " LIMIT 1 OFFSET ?1",
                       -1, &st, NULL);
    sqlite3_bind_int(st, 1, n - 1);
    evbus_event_t *ev = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        ck_assert_str_eq((const char *)sqlite3_column_text(st, 0),
                         "orders.replies");
        const char *j = (const char *)sqlite3_column_text(st, 1);
        ev = evbus_event_from_json(j, strlen(j), NULL, 0);
    }
    sqlite3_finalize(st);
    return ev;
}

static void expect_reply(int n, const char *kind, const char *outcome,
                         const char *reason)
{
    evbus_event_t *r = reply(n);
    ck_assert_msg(r != NULL, "no reply %d", n);
    ck_assert_str_eq(evbus_event_ext(r, "sagakind"), kind);
    ck_assert_str_eq(evbus_event_ext(r, "sagaoutcome"), outcome);
    if (reason)
        ck_assert_str_eq(evbus_event_ext(r, "sagareason"), reason);
    evbus_event_free(r);
}

START_TEST(action_runs_once_and_replies)
{
    evbus_event_t *c = cmd("c1", "s1", 1, "action", 1, NULL);
    evbus_event_t *again = evbus_event_clone(c);
    ck_assert_int_eq(handle(c), EVBUS_ACK);
    ck_assert_int_eq(handle(again), EVBUS_ACK); /* redelivered */
    ck_assert_int_eq(fx.actions, 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 1);
    evbus_event_t *r = reply(1);
    ck_assert_str_eq(evbus_event_id(r), "c1.reply");
    ck_assert_str_eq(evbus_event_type(r), "order.pay.reply");
    ck_assert_str_eq(evbus_event_source(r), "/payment");
    ck_assert_str_eq(evbus_event_ext(r, "sagaid"), "s1");
    ck_assert_str_eq(evbus_event_ext(r, "sagastep"), "1");
    ck_assert_str_eq(evbus_event_ext(r, "sagaoutcome"), "success");
    ck_assert_str_eq(evbus_event_data(r), "{\"paymentId\":\"p1\"}");
    evbus_event_free(r);
}
END_TEST

START_TEST(refusal_rolls_back_the_work)
{
    ck_assert_int_eq(handle(cmd("c1", "s1", 1, "action", 1,
                                "{\"decline\":1}")),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.actions, 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 0);
    expect_reply(1, "action", "failure", "card declined");
    /* nothing to undo for a refused action */
    ck_assert_int_eq(handle(cmd("c2", "s1", 1, "compensation", 1, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.compensations, 0);
    expect_reply(2, "compensation", "success", NULL);
}
END_TEST

START_TEST(errors_roll_back_and_retry)
{
    fx.fail_once = 1;
    evbus_event_t *c = cmd("c1", "s1", 0, "action", 1, NULL);
    ck_assert_int_eq(evbus_saga_participant_handle(part, c, charge, refund,
                                                   &fx),
                     EVBUS_RETRY);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_saga_part"), 0);
    ck_assert_int_eq(handle(c), EVBUS_ACK); /* the redelivery works */
    ck_assert_int_eq(fx.actions, 2);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 1);
    expect_reply(1, "action", "success", NULL);
}
END_TEST

START_TEST(compensation_that_overtakes_its_action)
{
    /* the orchestrator timed out and compensated before the charge came */
    ck_assert_int_eq(handle(cmd("k1", "s1", 1, "compensation", 1, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.compensations, 0);
    expect_reply(1, "compensation", "success", NULL);
    ck_assert_int_eq(handle(cmd("c1", "s1", 1, "action", 1, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.actions, 0); /* refused: never charged */
    expect_reply(2, "action", "failure",
                 "cancelled: its compensation came first");
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 0);
    /* another instance's step is independent */
    ck_assert_int_eq(handle(cmd("c2", "s2", 1, "action", 1, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.actions, 1);
}
END_TEST

START_TEST(compensation_runs_once_over_attempts)
{
    ck_assert_int_eq(handle(cmd("c1", "s1", 1, "action", 1, NULL)),
                     EVBUS_ACK);
    fx.comp_refuse = 1;
    ck_assert_int_eq(handle(cmd("k1", "s1", 1, "compensation", 1, NULL)),
                     EVBUS_ACK);
    expect_reply(2, "compensation", "failure", "bank offline");
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 1);
    ck_assert_int_eq(handle(cmd("k2", "s1", 1, "compensation", 2, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(handle(cmd("k3", "s1", 1, "compensation", 3, NULL)),
                     EVBUS_ACK);
    ck_assert_int_eq(fx.compensations, 1);
    expect_reply(3, "compensation", "success", NULL);
    expect_reply(4, "compensation", "success", NULL);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM charges"), 0);
}
END_TEST

static int set_rc;

static int bad_data(sqlite3 *d, const evbus_event_t *c, evbus_saga_answer_t *a,
                    void *opaque)
{
    set_rc = evbus_saga_answer_set_data(a, "{\"x\":\"\xc3\"}");
    return SUCCESS;
}

START_TEST(answer_data_must_be_utf8)
{
    evbus_event_t *c = cmd("c1", "s1", 0, "action", 1, NULL);
    ck_assert_int_eq(evbus_saga_participant_handle(part, c, bad_data, NULL,
                                                   NULL),
                     EVBUS_ACK);
    evbus_event_free(c);
    ck_assert_int_eq(set_rc, EVBUS_EINVAL);
    evbus_event_t *r = reply(1);
    ck_assert_str_eq(evbus_event_ext(r, "sagaoutcome"), "success");
    ck_assert_uint_eq(evbus_event_data_len(r), 0);
    evbus_event_free(r);
}
END_TEST

START_TEST(not_saga_commands_are_dropped)
{
    evbus_event_t *ev = evbus_event_new("order.pay", "/orders");
    ck_assert_int_eq(handle(ev), EVBUS_DROP);
    ev = cmd("c1", "s1", 0, "action", 1, NULL);
    evbus_event_set_ext(ev, "sagareplyto", NULL);
    ck_assert_int_eq(handle(ev), EVBUS_DROP);
    ev = cmd("c2", "s1", 0, "undo", 1, NULL);
    ck_assert_int_eq(handle(ev), EVBUS_DROP);
    ck_assert_int_eq(fx.actions, 0);
    /* a compensation for a participant that has none: answered failure */
    ck_assert_int_eq(handle(cmd("c3", "s1", 0, "action", 1, NULL)),
                     EVBUS_ACK);
    ev = cmd("k3", "s1", 0, "compensation", 1, NULL);
    ck_assert_int_eq(evbus_saga_participant_handle(part, ev, charge, NULL,
                                                   &fx),
                     EVBUS_ACK);
    evbus_event_free(ev);
    expect_reply(2, "compensation", "failure",
                 "this participant has no compensation");
}
END_TEST

/* ---------------------------------------------------- over a real bus */

typedef struct {
    sqlite3 *db;
    evbus_saga_participant_t *p;
    const char *refuse_when; /* data substring that makes it refuse */
    int effects;
} svc_t;

static int svc_work(sqlite3 *d, const evbus_event_t *c,
                    evbus_saga_answer_t *a, void *opaque)
{
    svc_t *s = opaque;
    if (strstr(evbus_event_data(c), s->refuse_when)) {
        evbus_saga_answer_set_reason(a, "refused");
        return FAILURE;
    }
    s->effects++;
    return SUCCESS;
}

static int svc_undo(sqlite3 *d, const evbus_event_t *c,
                    evbus_saga_answer_t *a, void *opaque)
{
    ((svc_t *)opaque)->effects--;
    return SUCCESS;
}

static evbus_result_t svc_handler(const evbus_event_t *ev, void *opaque)
{
    svc_t *s = opaque;
    return evbus_saga_participant_handle(s->p, ev, svc_work, svc_undo, s);
}

static void svc_open(svc_t *s, evbus_t *bus, const char *name,
                     const char *refuse_when)
{
    char *path = tmp_path(dir, name);
    s->db = app_db_open(path);
    free(path);
    char err[256] = "";
    s->p = evbus_saga_participant_open(s->db, name, bus, NULL, err,
                                       sizeof err);
    ck_assert_msg(s->p != NULL, "%s", err);
    s->refuse_when = refuse_when;
    s->effects = 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

START_TEST(whole_sagas_over_memory_bus)
{
    char err[256] = "";
    evbus_t *bus = evbus_open("memory://saga-e2e", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    svc_t pay, ship;
    svc_open(&pay, bus, "payment", "\"decline\"");
    svc_open(&ship, bus, "shipping", "\"noship\"");
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "payment.charge", "payment",
                                          svc_handler, &pay));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "payment.refund", "payment",
                                          svc_handler, &pay));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "shipping.ship", "shipping",
                                          svc_handler, &ship));
    evbus_saga_orch_t *o = evbus_saga_orch_open(db, bus, "orders", NULL, err,
                                                sizeof err);
    ck_assert_msg(o != NULL, "%s", err);
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "pay";
    s.topic = "payment.charge";
    s.comp_topic = "payment.refund";
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err), 0);
    evbus_saga_step_init(&s);
    s.name = "ship";
    s.topic = "shipping.ship";
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err), 0);
    ck_assert_int_eq(evbus_saga_orch_register(o, d, err, sizeof err), 0);
    evbus_saga_def_free(d);

    ck_assert_int_eq(evbus_saga_start(o, "order", "ok", "{}"), 1);
    ck_assert_int_eq(evbus_saga_start(o, "order", "declined",
                                      "{\"decline\":1}"),
                     1);
    ck_assert_int_eq(evbus_saga_start(o, "order", "unshippable",
                                      "{\"noship\":1}"),
                     1);
    /* counts decide; the limit only catches a hang */
    int64_t limit = mono_ms() + 120000;
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    do {
        ck_assert_int_ge(evbus_saga_poll(o, 20), 0);
        ck_assert_int_eq(evbus_saga_metrics_get(o, &m), EVBUS_OK);
    } while (m.active > 0 && mono_ms() < limit);
    ck_assert_uint_eq(m.active, 0);
    ck_assert_int_eq(evbus_saga_state_of(db, "ok"), EVBUS_SAGA_COMPLETED);
    ck_assert_int_eq(evbus_saga_state_of(db, "declined"),
                     EVBUS_SAGA_COMPENSATED);
    ck_assert_int_eq(evbus_saga_state_of(db, "unshippable"),
                     EVBUS_SAGA_COMPENSATED);
    ck_assert_int_eq(pay.effects, 1);  /* ok: charged; the others undone */
    ck_assert_int_eq(ship.effects, 1); /* ok only */
    ck_assert_uint_eq(m.replies, 6);   /* 2 + 1 + (2 + 1 refund) */
    evbus_saga_orch_close(o);
    evbus_saga_participant_close(pay.p);
    evbus_saga_participant_close(ship.p);
    evbus_close(bus);
    sqlite3_close(pay.db);
    sqlite3_close(ship.db);
}
END_TEST

Suite *participant_suite(void);
Suite *participant_suite(void)
{
    Suite *s = suite_create("saga-participant");
    TCase *t = tcase_create("participant");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, action_runs_once_and_replies);
    tcase_add_test(t, refusal_rolls_back_the_work);
    tcase_add_test(t, errors_roll_back_and_retry);
    tcase_add_test(t, compensation_that_overtakes_its_action);
    tcase_add_test(t, compensation_runs_once_over_attempts);
    tcase_add_test(t, answer_data_must_be_utf8);
    tcase_add_test(t, not_saga_commands_are_dropped);
    tcase_add_test(t, whole_sagas_over_memory_bus);
    suite_add_tcase(s, t);
    return s;
}
