/*
 * The saga state machine under a fake clock, one input at a time: every
 * transition, the reverse order of compensations, retries with backoff,
 * parking as FAILED, duplicate and late replies, idempotent start, starts
 * that join the caller's transaction, deadlines, and a restart in the
 * middle of a saga.
 */
#include <check.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "tmpdir.h"

#define SUCCESS EVBUS_SAGA_SUCCESS
#define FAILURE EVBUS_SAGA_FAILURE

static harness_t h;

/* The statuses of an instance's steps, in step order, comma-separated. */
#define STEP_STATUSES                                                          \
    "SELECT group_concat(json_extract(j.value, '$.status'))"                   \
    " FROM evbus_saga s, json_each(s.steps) j WHERE s.id = ?1"

/* reserve -> pay -> ship; reserve and pay can be undone, ship cannot. */
static evbus_saga_def_t *order_def(int64_t ship_deadline_ms)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    ck_assert_ptr_nonnull(d);
    h_cmd_step(d, "reserve", "inventory.reserve", "inventory.release", 60000);
    h_cmd_step(d, "pay", "payment.charge", "payment.refund", 60000);
    h_cmd_step(d, "ship", "shipping.ship", NULL, ship_deadline_ms);
    return d;
}

static void setup(void)
{
    h_open(&h, NULL);
    h_register(&h, order_def(60000));
}

static void teardown(void)
{
    h_close(&h);
}

/* Drives o1 through reserve and pay to the ship command; returns it. */
static evbus_event_t *to_ship(const char *id)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", id,
                                      "{\"orderId\":\"o1\",\"total\":30}"),
                     1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    ck_assert_str_eq(evbus_event_ext(c, "sagaid"), id);
    ck_assert_str_eq(evbus_event_ext(c, "sagareplyto"), "orders.replies");
    ck_assert_str_eq(evbus_event_ext(c, "partitionkey"), id);
    ck_assert_str_eq(evbus_event_type(c), "order.reserve");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, "{\"reserved\":true}", NULL),
                     EVBUS_ACK);
    c = h_expect_cmd(&h, "payment.charge", 1, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, "{\"payment\":{\"id\":\"p9\"}}",
                             NULL),
                     EVBUS_ACK);
    return h_expect_cmd(&h, "shipping.ship", 2, "action");
}

START_TEST(completes_and_merges_data)
{
    evbus_event_t *c = to_ship("o1");
    /* the command carries the saga's data as merged so far */
    cJSON *data = cJSON_Parse(evbus_event_data(c));
    ck_assert_int_eq(cJSON_GetObjectItem(data, "total")->valueint, 30);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(data, "reserved")));
    cJSON_Delete(data);
    ck_assert_int_eq(h_state(&h, "o1"), EVBUS_SAGA_RUNNING);
    ck_assert_int_eq(h_reply(&h, c, SUCCESS,
                             "{\"payment\":{\"status\":\"ok\"},"
                             "\"reserved\":null}",
                             NULL),
                     EVBUS_ACK);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_state(&h, "o1"), EVBUS_SAGA_COMPLETED);
    /* RFC 7386: nested objects merge, null removes */
    data = cJSON_Parse(h_col(&h, "SELECT data FROM evbus_saga WHERE id=?1",
                             "o1"));
    ck_assert_ptr_null(cJSON_GetObjectItem(data, "reserved"));
    cJSON *pay = cJSON_GetObjectItem(data, "payment");
    ck_assert_str_eq(cJSON_GetObjectItem(pay, "id")->valuestring, "p9");
    ck_assert_str_eq(cJSON_GetObjectItem(pay, "status")->valuestring, "ok");
    cJSON_Delete(data);
    ck_assert_str_eq(h_history(&h, "o1"),
                     "started,command sent,step done,command sent,step done,"
                     "command sent,step done,completed");
    ck_assert_str_eq(h_col(&h, STEP_STATUSES, "o1"),
                     "done,done,done");
    ck_assert_str_ne(h_col(&h, "SELECT ended_at FROM evbus_saga WHERE id=?1",
                           "o1"),
                     "(null)");
    ck_assert_int_eq(evbus_saga_next_due_ms(h.orch), -1);
}
END_TEST

START_TEST(failure_compensates_in_reverse_order)
{
    evbus_event_t *c = to_ship("o2");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "no courier"), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o2"), EVBUS_SAGA_COMPENSATING);
    /* ship failed (nothing to undo, and it has no compensation); pay is
     * undone first, then reserve */
    c = h_expect_cmd(&h, "payment.refund", 1, "compensation");
    ck_assert_str_eq(evbus_event_type(c), "order.pay.compensate");
    ck_assert_str_eq(evbus_event_ext(c, "sagaattempt"), "1");
    h_expect_no_cmd(&h); /* one at a time */
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "inventory.release", 0, "compensation");
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_state(&h, "o2"), EVBUS_SAGA_COMPENSATED);
    ck_assert_str_eq(h_col(&h, "SELECT reason FROM evbus_saga WHERE id=?1",
                           "o2"),
                     "step ship failed: no courier");
    ck_assert_str_eq(h_col(&h, STEP_STATUSES, "o2"),
                     "compensated,compensated,failed");
    ck_assert_str_eq(h_history(&h, "o2"),
                     "started,command sent,step done,command sent,step done,"
                     "command sent,step failed,compensating,compensation "
                     "sent,compensated,compensation sent,compensated,"
                     "compensated");
}
END_TEST

START_TEST(first_step_failure_ends_compensated_without_commands)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o3", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "out of stock"),
                     EVBUS_ACK);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_state(&h, "o3"), EVBUS_SAGA_COMPENSATED);
}
END_TEST

START_TEST(deadline_compensates_the_timed_out_step_too)
{
    evbus_saga_def_t *d = evbus_saga_def_new("quick", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", "payment.refund", 60000);
    h_cmd_step(d, "ship", "shipping.ship", "shipping.cancel", 5000);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "quick", "q1", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    evbus_event_t *ship = h_expect_cmd(&h, "shipping.ship", 1, "action");
    ck_assert_int_eq(evbus_saga_next_due_ms(h.orch), 5000);
    h_advance(&h, 4999);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 0);
    ck_assert_int_eq(h_state(&h, "q1"), EVBUS_SAGA_RUNNING);
    h_advance(&h, 1);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
    ck_assert_int_eq(h_state(&h, "q1"), EVBUS_SAGA_COMPENSATING);
    /* the shipment may have happened: cancel it first, then refund */
    c = h_expect_cmd(&h, "shipping.cancel", 1, "compensation");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "payment.refund", 0, "compensation");
    /* the late reply to the shipment is ignored and written down */
    ck_assert_int_eq(h_reply(&h, ship, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "q1"), EVBUS_SAGA_COMPENSATING);
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "q1"), EVBUS_SAGA_COMPENSATED);
    ck_assert_str_eq(h_col(&h, "SELECT reason FROM evbus_saga WHERE id=?1",
                           "q1"),
                     "step ship timed out: no reply within 5000 ms");
    ck_assert(strstr(h_history(&h, "q1"),
                     "step timed out,compensating,compensation sent,"
                     "compensated,compensation sent,reply ignored,"
                     "compensated,compensated") != NULL);
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    ck_assert_int_eq(evbus_saga_metrics_get(h.orch, &m), EVBUS_OK);
    ck_assert_uint_eq(m.timeouts, 1);
    ck_assert_uint_eq(m.replies_ignored, 1);
    ck_assert_uint_eq(m.compensated, 1);
}
END_TEST

START_TEST(compensation_retries_with_backoff_then_parks)
{
    evbus_event_t *c = to_ship("o4");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "no courier"), EVBUS_ACK);
    c = h_expect_cmd(&h, "payment.refund", 1, "compensation");
    /* attempt 1 answers failure: retry after 1000 ms (no jitter) */
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "bank offline"),
                     EVBUS_ACK);
    ck_assert_int_eq(evbus_saga_next_due_ms(h.orch), 1000);
    h_advance(&h, 999);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 0);
    h_expect_no_cmd(&h);
    h_advance(&h, 1);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
    c = h_expect_cmd(&h, "payment.refund", 1, "compensation");
    ck_assert_str_eq(evbus_event_ext(c, "sagaattempt"), "2");
    /* attempt 2 gets no reply within comp_timeout_ms (30 s): a failure */
    evbus_event_free(c);
    h_advance(&h, 30000);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
    ck_assert_int_eq(evbus_saga_next_due_ms(h.orch), 2000);
    h_advance(&h, 2000);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
    c = h_expect_cmd(&h, "payment.refund", 1, "compensation");
    ck_assert_str_eq(evbus_event_ext(c, "sagaattempt"), "3");
    /* a failure of an older attempt is ignored; of the current one parks
     * (max_attempts 3) */
    evbus_event_t *stale = evbus_event_clone(c);
    evbus_event_set_ext_int(stale, "sagaattempt", 2);
    evbus_event_set_id(stale, "stale-attempt");
    ck_assert_int_eq(h_reply(&h, stale, FAILURE, NULL, "old"), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o4"), EVBUS_SAGA_COMPENSATING);
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "bank offline"),
                     EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o4"), EVBUS_SAGA_FAILED);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(evbus_saga_next_due_ms(h.orch), -1);
    ck_assert_str_eq(h_col(&h, "SELECT reason FROM evbus_saga WHERE id=?1",
                           "o4"),
                     "compensation of step pay failed after 3 attempts: "
                     "bank offline");
    /* the reserve step was not compensated: a person must look */
    ck_assert_str_eq(h_col(&h, "SELECT json_extract(steps, '$[0].status')"
                               " FROM evbus_saga WHERE id=?1",
                           "o4"),
                     "done");
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    ck_assert_int_eq(evbus_saga_metrics_get(h.orch, &m), EVBUS_OK);
    ck_assert_uint_eq(m.failed, 1);
    ck_assert_uint_eq(m.parked, 1);
    ck_assert_uint_eq(m.compensations_retried, 2);
    char *prom = evbus_saga_metrics_prometheus(h.orch);
    ck_assert_ptr_nonnull(prom);
    ck_assert_msg(strstr(prom, "evbus_saga_instances{saga=\"order\","
                               "state=\"failed\"} 1\n") != NULL,
                  "%s", prom);
    ck_assert(strstr(prom, "evbus_saga_parked_total{orchestrator=\"orders\"}"
                           " 1\n") != NULL);
    free(prom);

    /* resumed by a person: a fresh series of attempts, due at once */
    char err[256] = "";
    ck_assert_int_eq(evbus_saga_resume(h.db, "o4", err, sizeof err),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_saga_resume(h.db, "o4", err, sizeof err),
                     EVBUS_ESTATE);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
    c = h_expect_cmd(&h, "payment.refund", 1, "compensation");
    ck_assert_str_eq(evbus_event_ext(c, "sagaattempt"), "1");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "inventory.release", 0, "compensation");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o4"), EVBUS_SAGA_COMPENSATED);
}
END_TEST

START_TEST(late_success_after_parking_resumes)
{
    evbus_event_t *c = to_ship("o5");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "x"), EVBUS_ACK);
    evbus_event_t *first = h_expect_cmd(&h, "payment.refund", 1,
                                        "compensation");
    for (int i = 0; i < 3; i++) { /* three silent attempts */
        if (i > 0)
            evbus_event_free(h_expect_cmd(&h, "payment.refund", 1,
                                          "compensation"));
        h_advance(&h, 30000);
        ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
        if (i < 2) {
            h_advance(&h, 10000);
            ck_assert_int_eq(evbus_saga_run_due(h.orch), 1);
        }
    }
    ck_assert_int_eq(h_state(&h, "o5"), EVBUS_SAGA_FAILED);
    /* the first attempt's success arrives after all: it was undone */
    ck_assert_int_eq(h_reply(&h, first, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o5"), EVBUS_SAGA_COMPENSATING);
    c = h_expect_cmd(&h, "inventory.release", 0, "compensation");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o5"), EVBUS_SAGA_COMPENSATED);
}
END_TEST

START_TEST(duplicate_replies_change_nothing)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o6", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    evbus_event_t *r = evbus_saga_reply_new(c, SUCCESS, "{\"n\":1}", NULL,
                                            "/inventory");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK);
    const char *after_first = h_history(&h, "o6");
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", after_first);
    /* the same reply again (redelivered): absorbed by the inbox */
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK);
    ck_assert_str_eq(h_history(&h, "o6"), copy);
    evbus_event_free(h_expect_cmd(&h, "payment.charge", 1, "action"));
    h_expect_no_cmd(&h);
    /* the same answer under another id (a participant without an inbox):
     * a late reply, ignored and written down */
    evbus_event_set_id(r, "another-id");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK);
    ck_assert(strstr(h_history(&h, "o6"), "reply ignored") != NULL);
    h_expect_no_cmd(&h);
    ck_assert_str_eq(h_col(&h, "SELECT step FROM evbus_saga WHERE id=?1",
                           "o6"),
                     "1");
    evbus_event_free(r);
    evbus_event_free(c);
}
END_TEST

START_TEST(start_is_idempotent)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o7",
                                      "{\"v\":1}"), 1);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o7",
                                      "{\"v\":2}"), 0);
    evbus_saga_def_t *d = evbus_saga_def_new("other", NULL, 0);
    h_cmd_step(d, "a", "x.a", NULL, 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "other", "o7", NULL), 0);
    ck_assert_str_eq(h_col(&h, "SELECT count(*) || data FROM evbus_saga"
                               " WHERE id=?1",
                           "o7"),
                     "1{\"v\":1}");
    evbus_event_free(h_expect_cmd(&h, "inventory.reserve", 0, "action"));
    h_expect_no_cmd(&h);
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    evbus_saga_metrics_get(h.orch, &m);
    ck_assert_uint_eq(m.started, 1);
    ck_assert_uint_eq(m.active, 1);
}
END_TEST

START_TEST(start_joins_the_callers_transaction)
{
    sql(h.db, "BEGIN IMMEDIATE");
    sql(h.db, "INSERT INTO todos(title) VALUES('order o8')");
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o8", NULL), 1);
    sql(h.db, "ROLLBACK");
    ck_assert_int_eq(h_state(&h, "o8"), EVBUS_ENOTFOUND);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM todos"), 0);

    sql(h.db, "BEGIN IMMEDIATE");
    sql(h.db, "INSERT INTO todos(title) VALUES('order o8')");
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o8", NULL), 1);
    sql(h.db, "COMMIT");
    ck_assert_int_eq(h_state(&h, "o8"), EVBUS_SAGA_RUNNING);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM todos"), 1);
    evbus_event_free(h_expect_cmd(&h, "inventory.reserve", 0, "action"));
}
END_TEST

START_TEST(restart_continues_replies_and_timers)
{
    evbus_saga_def_t *d = evbus_saga_def_new("quick", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", "payment.refund", 60000);
    h_cmd_step(d, "ship", "shipping.ship", NULL, 5000);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "quick", "r1", NULL), 1);
    ck_assert_int_eq(evbus_saga_start(h.orch, "quick", "r2", NULL), 1);
    evbus_event_t *c1 = h_expect_cmd(&h, "payment.charge", 0, "action");
    evbus_event_t *c2 = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_int_eq(h_reply(&h, c2, SUCCESS, NULL, NULL), EVBUS_ACK);
    evbus_event_free(h_expect_cmd(&h, "shipping.ship", 1, "action"));

    /* "crash": a new orchestrator on the same database, definitions
     * registered again */
    h_reopen(&h, NULL);
    h_register(&h, order_def(60000));
    d = evbus_saga_def_new("quick", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", "payment.refund", 60000);
    h_cmd_step(d, "ship", "shipping.ship", NULL, 5000);
    h_register(&h, d);
    ck_assert_int_eq(h_reply(&h, c1, SUCCESS, NULL, NULL), EVBUS_ACK);
    evbus_event_free(h_expect_cmd(&h, "shipping.ship", 1, "action"));
    h_advance(&h, 5000);
    ck_assert_int_eq(evbus_saga_run_due(h.orch), 2); /* both time out */
    for (int i = 0; i < 2; i++) {
        evbus_event_t *c = h_expect_cmd(&h, "payment.refund", 0,
                                        "compensation");
        ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    }
    ck_assert_int_eq(h_state(&h, "r1"), EVBUS_SAGA_COMPENSATED);
    ck_assert_int_eq(h_state(&h, "r2"), EVBUS_SAGA_COMPENSATED);
}
END_TEST

START_TEST(reply_for_unregistered_saga_is_retried)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o9", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    h_reopen(&h, NULL); /* nothing registered */
    evbus_event_t *r = evbus_saga_reply_new(c, SUCCESS, NULL, NULL, "/inv");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_RETRY);
    h_register(&h, order_def(60000));
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK);
    evbus_event_free(h_expect_cmd(&h, "payment.charge", 1, "action"));
    evbus_event_free(r);
    evbus_event_free(c);
}
END_TEST

START_TEST(malformed_replies)
{
    evbus_event_t *r = evbus_event_new("x.reply", "/p");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_DROP);
    evbus_event_set_ext(r, "sagaid", "nobody");
    evbus_event_set_ext_int(r, "sagastep", 0);
    evbus_event_set_ext(r, "sagakind", "action");
    evbus_event_set_ext_int(r, "sagaattempt", 1);
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_DROP); /* outcome */
    evbus_event_set_ext(r, "sagaoutcome", "maybe");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_DROP);
    evbus_event_set_ext(r, "sagaoutcome", "success");
    evbus_event_set_ext_int(r, "sagastep", 64);
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_DROP);
    evbus_event_set_ext_int(r, "sagastep", 0);
    /* well-formed, for an instance that does not exist: ignored */
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK);
    evbus_saga_metrics_t m;
    evbus_saga_metrics_init(&m);
    evbus_saga_metrics_get(h.orch, &m);
    ck_assert_uint_eq(m.replies_ignored, 1);
    ck_assert_uint_eq(m.replies, 0);
    evbus_event_free(r);
}
END_TEST

START_TEST(two_orchestrators_share_a_database)
{
    /* a second process's orchestrator: its own connection, the same name */
    sqlite3 *db2 = app_db_open(h.db_path);
    evbus_saga_opts_t o;
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    o.now_ms = fake_now;
    o.clock_opaque = &h.clock;
    char err[256] = "";
    evbus_saga_orch_t *o2 = evbus_saga_orch_open(db2, NULL, "orders", &o,
                                                 err, sizeof err);
    ck_assert_msg(o2 != NULL, "%s", err);
    evbus_saga_def_t *d = order_def(5000);
    ck_assert_int_eq(evbus_saga_orch_register(o2, d, err, sizeof err), 0);
    evbus_saga_def_free(d);

    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "t1", NULL), 1);
    ck_assert_int_eq(evbus_saga_start(o2, "order", "t1", NULL), 0);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    evbus_event_t *r = evbus_saga_reply_new(c, SUCCESS, NULL, NULL, "/inv");
    ck_assert_int_eq(evbus_saga_on_reply(o2, r), EVBUS_ACK); /* B applies */
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, r), EVBUS_ACK); /* A: dup */
    evbus_event_free(r);
    evbus_event_free(c);
    c = h_expect_cmd(&h, "payment.charge", 1, "action");
    r = evbus_saga_reply_new(c, SUCCESS, NULL, NULL, "/pay");
    ck_assert_int_eq(evbus_saga_on_reply(o2, r), EVBUS_ACK); /* B: its
                                                    definition's deadline */
    evbus_event_free(r);
    evbus_event_free(c);
    evbus_event_free(h_expect_cmd(&h, "shipping.ship", 2, "action"));
    h_expect_no_cmd(&h);
    /* both see the ship deadline due; only one moves the instance */
    h_advance(&h, 5000);
    ck_assert_int_eq(evbus_saga_run_due(o2) + evbus_saga_run_due(h.orch), 1);
    evbus_event_free(h_expect_cmd(&h, "payment.refund", 1, "compensation"));
    h_expect_no_cmd(&h);
    evbus_saga_orch_close(o2);
    sqlite3_close(db2);
}
END_TEST

/* The log callback must never run under the orchestrator's lock: another
 * thread has to be able to use the orchestrator while it runs. */
static int log_free, log_blocked;

static void *use_orch(void *arg)
{
    evbus_saga_next_due_ms(arg); /* takes the lock */
    return NULL;
}

static void check_unlocked(int level, const char *component, const char *msg,
                           void *opaque)
{
    if (strcmp(component, "saga") != 0)
        return;
    pthread_t t;
    pthread_create(&t, NULL, use_orch, opaque);
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 30; /* only catches the lock being held */
    if (pthread_timedjoin_np(t, NULL, &limit) == 0) {
        log_free++;
    } else {
        log_blocked++;
        pthread_join(t, NULL); /* finishes once we return */
    }
}

START_TEST(log_callback_runs_without_the_lock)
{
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "g1", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    evbus_event_t *late = evbus_saga_reply_new(c, SUCCESS, NULL, NULL, "/x");
    evbus_event_set_id(late, "late-one");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    evbus_set_log(check_unlocked, EVBUS_LOG_DEBUG, h.orch);
    /* an ignored reply and an unknown saga are logged from inside */
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, late), EVBUS_ACK);
    ck_assert_int_eq(evbus_saga_start(h.orch, "nope", "g2", NULL),
                     EVBUS_EINVAL);
    evbus_set_log(NULL, 0, NULL);
    evbus_event_free(late);
    ck_assert_int_ge(log_free, 2);
    ck_assert_int_eq(log_blocked, 0);
}
END_TEST

/* A reply that comes after the end is written to the history but does not
 * move the end time: purge and "ended" go by when the instance ended. */
START_TEST(late_reply_after_the_end_keeps_the_end_time)
{
    evbus_event_t *c = to_ship("o12");
    evbus_event_t *dup = evbus_event_clone(c);
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o12"), EVBUS_SAGA_COMPLETED);
    char ended[64];
    snprintf(ended, sizeof ended, "%s",
             h_col(&h, "SELECT ended_at FROM evbus_saga WHERE id=?1", "o12"));
    ck_assert_str_ne(ended, "(null)");
    h_advance(&h, 60000);
    evbus_event_t *late = evbus_saga_reply_new(dup, FAILURE, NULL, "late",
                                               "/shipping");
    evbus_event_set_id(late, "late-after-the-end");
    ck_assert_int_eq(evbus_saga_on_reply(h.orch, late), EVBUS_ACK);
    ck_assert(strstr(h_history(&h, "o12"), "completed,reply ignored") !=
              NULL);
    ck_assert_int_eq(h_state(&h, "o12"), EVBUS_SAGA_COMPLETED);
    ck_assert_str_eq(h_col(&h, "SELECT ended_at FROM evbus_saga WHERE id=?1",
                           "o12"),
                     ended);
    evbus_event_free(late);
    evbus_event_free(dup);
}
END_TEST

/* The per-step results are written by the module's own printer (not
 * cJSON's, whose number check was most of a transition's cost): what a
 * reply carries comes back as the same JSON, times as integers, and the
 * state index agrees with the rows after transitions that kept the state
 * (those skip rewriting it). */
START_TEST(step_results_keep_their_json)
{
    static const char result[] =
        "{\"s\":\"q\\\"b\\\\n\\n\\t\\u0001\u00e9\",\"f\":0.1,\"e\":1e+300,"
        "\"big\":9007199254740992,\"neg\":-42,\"a\":[1,[2,{}],[]],"
        "\"t\":true,\"n\":null,\"o\":{\"x\":{\"y\":\"z\"}}}";
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o13", "{}"), 1);
    evbus_event_t *c = h_expect_cmd(&h, "inventory.reserve", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, result, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "payment.charge", 1, "action");
    ck_assert_str_eq(
        h_col(&h,
              "SELECT json_extract(steps, '$[0].result') = json(?1)"
              " FROM evbus_saga WHERE id = 'o13'",
              result),
        "1");
    char updated[32];
    snprintf(updated, sizeof updated, "%s",
             h_col(&h, "SELECT updated_at FROM evbus_saga WHERE id = ?1",
                   "o13"));
    ck_assert_str_eq(h_col(&h,
                           "SELECT json_type(steps, '$[0].startedAt') || ','"
                           " || json_type(steps, '$[0].endedAt') || ','"
                           " || json_type(steps, '$[1].deadlineAt') || ','"
                           " || (json_extract(steps, '$[0].endedAt')"
                           "     = CAST(?1 AS INTEGER))"
                           " FROM evbus_saga WHERE id = 'o13'",
                           updated),
                     "integer,integer,integer,1");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "shipping.ship", 2, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o13"), EVBUS_SAGA_COMPLETED);
    ck_assert_str_eq(h_col(&h,
                           "SELECT count(*) FROM evbus_saga INDEXED BY"
                           " evbus_saga_by_state WHERE state = 'COMPLETED'"
                           " AND id = ?1",
                           "o13"),
                     "1");
    ck_assert_str_eq(h_col(&h, "PRAGMA integrity_check", "x"), "ok");
}
END_TEST

Suite *machine_suite(void);
Suite *machine_suite(void)
{
    Suite *s = suite_create("saga-machine");
    TCase *t = tcase_create("transitions");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60); /* only catches a hang */
    tcase_add_test(t, completes_and_merges_data);
    tcase_add_test(t, failure_compensates_in_reverse_order);
    tcase_add_test(t, first_step_failure_ends_compensated_without_commands);
    tcase_add_test(t, deadline_compensates_the_timed_out_step_too);
    tcase_add_test(t, compensation_retries_with_backoff_then_parks);
    tcase_add_test(t, late_success_after_parking_resumes);
    tcase_add_test(t, duplicate_replies_change_nothing);
    tcase_add_test(t, start_is_idempotent);
    tcase_add_test(t, start_joins_the_callers_transaction);
    tcase_add_test(t, restart_continues_replies_and_timers);
    tcase_add_test(t, reply_for_unregistered_saga_is_retried);
    tcase_add_test(t, malformed_replies);
    tcase_add_test(t, two_orchestrators_share_a_database);
    tcase_add_test(t, log_callback_runs_without_the_lock);
    tcase_add_test(t, late_reply_after_the_end_keeps_the_end_time);
    tcase_add_test(t, step_results_keep_their_json);
    suite_add_tcase(s, t);
    return s;
}
