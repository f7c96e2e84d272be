/*
 * Writes an orchestrator database with one saga in each kind of state, for
 * the CLI test: done-1 COMPLETED, comp-1 COMPENSATED (shipping refused),
 * failed-1 FAILED (its refund refused three times), run-1 RUNNING.
 *   saga-fixture DB
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evbus/saga.h>

static uint64_t fake_ms = 1700000000000ULL; /* 2023-11-14 22:13:20 UTC */
static uint64_t fake_now(void *opaque) { return fake_ms; }

static sqlite3 *db;
static evbus_saga_orch_t *o;
static long long cursor;

static void die(const char *what)
{
    fprintf(stderr, "saga-fixture: %s (%s)\n", what, sqlite3_errmsg(db));
    exit(1);
}

/* Answers the next command in the outbox. */
static void answer(int outcome, const char *data, const char *reason)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT seq, event FROM evbus_outbox WHERE seq > ?1"
                           " ORDER BY seq LIMIT 1", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, cursor);
    if (sqlite3_step(st) != SQLITE_ROW)
        die("no command to answer");
    cursor = sqlite3_column_int64(st, 0);
    const char *json = (const char *)sqlite3_column_text(st, 1);
    evbus_event_t *cmd = evbus_event_from_json(json, strlen(json), NULL, 0);
    sqlite3_finalize(st);
    evbus_event_t *r = evbus_saga_reply_new(cmd, outcome, data, reason,
                                            "/fixture");
    if (!r || evbus_saga_on_reply(o, r) != EVBUS_ACK)
        die("reply not taken");
    evbus_event_free(r);
    evbus_event_free(cmd);
    fake_ms += 250;
}

int main(int argc, char **argv)
{
    if (argc != 2 || sqlite3_open(argv[1], &db) != SQLITE_OK)
        die("usage: saga-fixture DB");
    evbus_saga_opts_t opts;
    evbus_saga_opts_init(&opts);
    opts.subscribe = 0;
    opts.run_relay = 0;
    opts.now_ms = fake_now;
    evbus_retry_policy_t rp;
    evbus_retry_policy_init(&rp);
    rp.initial_ms = 1000;
    rp.jitter = EVBUS_JITTER_NONE;
    rp.max_attempts = 3;
    opts.compensation_retry = &rp;
    char err[256];
    if (!(o = evbus_saga_orch_open(db, NULL, "orders", &opts, err, sizeof err)))
        die(err);
    evbus_saga_def_t *d = evbus_saga_def_new("order", err, sizeof err);
    const char *names[] = {"pay", "ship"}, *topics[] = {"payment.charge",
                                                         "shipping.ship"};
    for (int i = 0; i < 2; i++) {
        evbus_saga_step_t s;
        evbus_saga_step_init(&s);
        s.name = names[i];
        s.topic = topics[i];
        s.comp_topic = i == 0 ? "payment.refund" : NULL;
        if (evbus_saga_def_add_step(d, &s, err, sizeof err))
            die(err);
    }
    if (evbus_saga_orch_register(o, d, err, sizeof err))
        die(err);
    evbus_saga_def_free(d);

    if (evbus_saga_start(o, "order", "done-1", "{\"total\":30}") != 1)
        die("start");
    answer(EVBUS_SAGA_SUCCESS, "{\"paymentId\":\"p-1\"}", NULL);
    answer(EVBUS_SAGA_SUCCESS, NULL, NULL);

    if (evbus_saga_start(o, "order", "comp-1", "{\"total\":12}") != 1)
        die("start");
    answer(EVBUS_SAGA_SUCCESS, NULL, NULL);
    answer(EVBUS_SAGA_FAILURE, NULL, "no courier");
    answer(EVBUS_SAGA_SUCCESS, NULL, NULL); /* the refund */

    if (evbus_saga_start(o, "order", "failed-1", "{\"total\":99}") != 1)
        die("start");
    answer(EVBUS_SAGA_SUCCESS, NULL, NULL);
    answer(EVBUS_SAGA_FAILURE, NULL, "no courier");
    for (int i = 0; i < 3; i++) {
        answer(EVBUS_SAGA_FAILURE, NULL, "bank offline");
        fake_ms += 60000;
        evbus_saga_run_due(o);
    }

    if (evbus_saga_start(o, "order", "run-1", "{\"total\":5}") != 1)
        die("start");
    evbus_saga_orch_close(o);
    sqlite3_close(db);
    return 0;
}
