/*
 * Idempotent consumer: claims, rollback, retention, and the transaction
 * helper evbus_inbox_handle mapping outcomes to ACK / RETRY / DROP, also
 * end to end through a memory:// subscription with redelivery.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/evbus.h>
#include <evbus/inbox.h>
#include <evbus/outbox.h>

#include "tmpdir.h"

static char *dir, *db_path;
static sqlite3 *db;
static evbus_inbox_t *in;

static void setup(void)
{
    dir = tmp_dir();
    db_path = tmp_path(dir, "svc.db");
    db = app_db_open(db_path);
    char err[256] = "";
    in = evbus_inbox_open(db, "notify", err, sizeof err);
    ck_assert_msg(in != NULL, "%s", err);
}

static void teardown(void)
{
    evbus_inbox_close(in);
    sqlite3_close(db);
    tmp_rm(dir);
    free(db_path);
    free(dir);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static evbus_event_t *todo_event(const char *id)
{
    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    ck_assert_ptr_nonnull(ev);
    if (id)
        ck_assert_int_eq(evbus_event_set_id(ev, id), EVBUS_OK);
    return ev;
}

static int claim_in_txn(evbus_inbox_t *box, const evbus_event_t *ev,
                        int commit)
{
    sql(db, "BEGIN");
    int rc = evbus_inbox_claim(box, ev);
    sql(db, commit ? "COMMIT" : "ROLLBACK");
    return rc;
}

START_TEST(claim_once_then_duplicate)
{
    evbus_event_t *ev = todo_event("e-1");
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 1);
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 0);
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 0);
    /* the key is (consumer, source, id) */
    evbus_inbox_t *other = evbus_inbox_open(db, "analytics", NULL, 0);
    ck_assert_int_eq(claim_in_txn(other, ev, 1), 1);
    ck_assert_int_eq(claim_in_txn(other, ev, 1), 0);
    evbus_inbox_close(other);
    evbus_event_t *same_id = todo_event("e-1");
    ck_assert_int_eq(evbus_event_set_source(same_id, "/users/api"), EVBUS_OK);
    ck_assert_int_eq(claim_in_txn(in, same_id, 1), 1);
    /* a decoded copy of the event is the same event */
    char *json = evbus_event_to_json(ev, NULL);
    evbus_event_t *copy = evbus_event_from_json(json, strlen(json), NULL, 0);
    ck_assert_int_eq(claim_in_txn(in, copy, 1), 0);
    free(json);
    evbus_event_free(copy);
    evbus_event_free(same_id);
    evbus_event_free(ev);
    /* the table survives reopening */
    evbus_inbox_close(in);
    in = evbus_inbox_open(db, "notify", NULL, 0);
    ev = todo_event("e-1");
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 0);
    evbus_event_free(ev);
}
END_TEST

START_TEST(rollback_forgets_the_claim)
{
    evbus_event_t *ev = todo_event(NULL);
    ck_assert_int_eq(claim_in_txn(in, ev, 0), 1);
    ck_assert_int_eq(claim_in_txn(in, ev, 0), 1);
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 1);
    ck_assert_int_eq(claim_in_txn(in, ev, 1), 0);
    evbus_event_free(ev);
}
END_TEST

START_TEST(claims_expire_after_retention)
{
    evbus_inbox_opts_t o;
    evbus_inbox_opts_init(&o);
    ck_assert_int_gt(o.retention_ms, 0);
    o.retention_ms = 300; /* wide margins: the machine may be loaded */
    o.purge_interval_ms = 0;
    evbus_inbox_t *box = evbus_inbox_open_opts(db, "short", &o, NULL, 0);
    ck_assert_ptr_nonnull(box);
    evbus_event_t *ev = todo_event(NULL);
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 1);
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 0);
    sleep_ms(450);
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 1); /* expired: new again */
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 0);
    /* explicit purge deletes only expired claims of this consumer */
    evbus_event_t *old[3];
    for (int i = 0; i < 3; i++) {
        old[i] = todo_event(NULL);
        ck_assert_int_eq(claim_in_txn(box, old[i], 1), 1);
        ck_assert_int_eq(claim_in_txn(in, old[i], 1), 1);
    }
    sleep_ms(450);
    ck_assert_int_eq(evbus_inbox_purge(box), 4);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_inbox"
                                 " WHERE consumer = 'short'"), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_inbox"
                                 " WHERE consumer = 'notify'"), 3);
    evbus_inbox_close(box);
    /* automatic purge inside claim, at most every purge_interval_ms */
    o.purge_interval_ms = 1;
    box = evbus_inbox_open_opts(db, "auto", &o, NULL, 0);
    ck_assert_int_eq(claim_in_txn(box, old[0], 1), 1);
    sleep_ms(450);
    ck_assert_int_eq(claim_in_txn(box, old[1], 1), 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_inbox"
                                 " WHERE consumer = 'auto'"), 1);
    evbus_inbox_close(box);
    /* retention 0 keeps claims forever */
    o.retention_ms = 0;
    box = evbus_inbox_open_opts(db, "forever", &o, NULL, 0);
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 1);
    sleep_ms(20);
    ck_assert_int_eq(claim_in_txn(box, ev, 1), 0);
    ck_assert_int_eq(evbus_inbox_purge(box), 0);
    evbus_inbox_close(box);
    for (int i = 0; i < 3; i++)
        evbus_event_free(old[i]);
    evbus_event_free(ev);
}
END_TEST

START_TEST(bad_arguments)
{
    char err[256] = "";
    ck_assert_ptr_null(evbus_inbox_open(db, "", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "consumer"));
    ck_assert_ptr_null(evbus_inbox_open(db, NULL, err, sizeof err));
    ck_assert_ptr_null(evbus_inbox_open(NULL, "x", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "db is NULL"));
    evbus_inbox_opts_t o;
    evbus_inbox_opts_init(&o);
    o.retention_ms = -1;
    ck_assert_ptr_null(evbus_inbox_open_opts(db, "x", &o, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "retention_ms"));
    ck_assert_int_eq(evbus_inbox_claim(in, NULL), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_inbox_claim(NULL, NULL), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_inbox_handle(NULL, NULL, NULL, NULL, NULL),
                     EVBUS_RETRY);
    evbus_inbox_close(NULL);
}
END_TEST

/* ---- the transaction helper */

typedef struct {
    int calls;
    int answer; /* what work returns */
} work_ctx_t;

/* Applies the event: a todo row and a follow-up event. */
static evbus_result_t apply_todo(sqlite3 *conn, const evbus_event_t *ev,
                                 evbus_outbox_t *box, void *opaque)
{
    work_ctx_t *w = opaque;
    w->calls++;
    sqlite3_stmt *st;
    sqlite3_prepare_v2(conn, "INSERT INTO todos(title) VALUES(?1)", -1, &st,
                       NULL);
    sqlite3_bind_text(st, 1, evbus_event_id(ev), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return EVBUS_RETRY;
    if (box) {
        evbus_event_t *next = evbus_event_new("notify.mail.queued", "/notify");
        rc = evbus_outbox_add(box, "mail", next);
        evbus_event_free(next);
        if (rc != EVBUS_OK)
            return EVBUS_RETRY;
    }
    return w->answer;
}

static long long count(const char *table)
{
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM %s", table);
    return sql_int(db, q);
}

START_TEST(handle_commits_claim_work_and_followups_together)
{
    evbus_outbox_t *ob = evbus_outbox_open(db, NULL, 0);
    ck_assert_ptr_nonnull(ob);
    evbus_event_t *ev = todo_event(NULL);
    work_ctx_t w = {0, EVBUS_ACK};
    ck_assert_int_eq(evbus_inbox_handle(in, ob, ev, apply_todo, &w),
                     EVBUS_ACK);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(count("todos"), 1);
    ck_assert_int_eq(count("evbus_outbox"), 1);
    ck_assert_int_eq(count("evbus_inbox"), 1);
    ck_assert(sqlite3_get_autocommit(db)); /* transaction closed */
    /* the duplicate is acknowledged without running work */
    ck_assert_int_eq(evbus_inbox_handle(in, ob, ev, apply_todo, &w),
                     EVBUS_ACK);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(count("todos"), 1);
    ck_assert_int_eq(count("evbus_outbox"), 1);
    /* work NULL: claim only */
    evbus_event_t *ev2 = todo_event(NULL);
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev2, NULL, NULL),
                     EVBUS_ACK);
    ck_assert_int_eq(claim_in_txn(in, ev2, 1), 0);
    evbus_event_free(ev2);
    evbus_event_free(ev);
    evbus_outbox_close(ob);
}
END_TEST

START_TEST(handle_maps_failure_to_retry_and_rolls_back)
{
    evbus_outbox_t *ob = evbus_outbox_open(db, NULL, 0);
    evbus_event_t *ev = todo_event(NULL);
    int answers[] = {EVBUS_RETRY, EVBUS_EIO, EVBUS_ECONN, 42};
    work_ctx_t w = {0, 0};
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        w.answer = answers[i];
        ck_assert_int_eq(evbus_inbox_handle(in, ob, ev, apply_todo, &w),
                         EVBUS_RETRY);
        ck_assert_int_eq(w.calls, (int)i + 1); /* the claim was forgotten */
        ck_assert_int_eq(count("todos"), 0);
        ck_assert_int_eq(count("evbus_outbox"), 0);
        ck_assert_int_eq(count("evbus_inbox"), 0);
        ck_assert(sqlite3_get_autocommit(db));
    }
    w.answer = EVBUS_DROP;
    ck_assert_int_eq(evbus_inbox_handle(in, ob, ev, apply_todo, &w),
                     EVBUS_DROP);
    ck_assert_int_eq(count("todos") + count("evbus_inbox"), 0);
    /* succeeds at last: applied once */
    w.answer = EVBUS_ACK;
    ck_assert_int_eq(evbus_inbox_handle(in, ob, ev, apply_todo, &w),
                     EVBUS_ACK);
    ck_assert_int_eq(count("todos"), 1);
    ck_assert_int_eq(count("evbus_outbox"), 1);
    evbus_event_free(ev);
    evbus_outbox_close(ob);
}
END_TEST

START_TEST(handle_retries_when_database_is_busy)
{
    sqlite3 *other = app_db_open(db_path);
    sql(other, "BEGIN IMMEDIATE");
    sql(other, "INSERT INTO todos(title) VALUES('other writer')");
    sqlite3_busy_timeout(db, 30);
    evbus_event_t *ev = todo_event(NULL);
    work_ctx_t w = {0, EVBUS_ACK};
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev, apply_todo, &w),
                     EVBUS_RETRY);
    ck_assert_int_eq(w.calls, 0);
    sql(other, "COMMIT");
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev, apply_todo, &w),
                     EVBUS_ACK);
    ck_assert_int_eq(w.calls, 1);
    /* the outbox must be on the inbox's connection */
    evbus_outbox_t *foreign = evbus_outbox_open(other, NULL, 0);
    evbus_event_t *ev2 = todo_event(NULL);
    ck_assert_int_eq(evbus_inbox_handle(in, foreign, ev2, apply_todo, &w),
                     EVBUS_RETRY);
    ck_assert_int_eq(w.calls, 1);
    evbus_outbox_close(foreign);
    evbus_event_free(ev2);
    evbus_event_free(ev);
    sqlite3_close(other);
}
END_TEST

START_TEST(handle_nests_in_callers_transaction)
{
    evbus_event_t *ev = todo_event(NULL), *ev2 = todo_event(NULL);
    work_ctx_t ok = {0, EVBUS_ACK}, bad = {0, EVBUS_RETRY};
    sql(db, "BEGIN");
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev, apply_todo, &ok),
                     EVBUS_ACK);
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev2, apply_todo, &bad),
                     EVBUS_RETRY);
    ck_assert(!sqlite3_get_autocommit(db)); /* caller's txn still open */
    ck_assert_int_eq(count("todos"), 1);    /* only ev's work survived */
    sql(db, "ROLLBACK");                    /* caller changes its mind */
    ck_assert_int_eq(count("todos") + count("evbus_inbox"), 0);
    ck_assert_int_eq(evbus_inbox_handle(in, NULL, ev, apply_todo, &ok),
                     EVBUS_ACK);
    ck_assert_int_eq(ok.calls, 2);
    evbus_event_free(ev);
    evbus_event_free(ev2);
}
END_TEST

/* ---- end to end: a subscription whose handler is the helper */

typedef struct {
    evbus_inbox_t *in;
    work_ctx_t w;
    int fail_first; /* work fails this many times before succeeding */
} svc_t;

static evbus_result_t flaky_apply(sqlite3 *conn, const evbus_event_t *ev,
                                  evbus_outbox_t *box, void *opaque)
{
    svc_t *s = opaque;
    s->w.answer = s->w.calls < s->fail_first ? EVBUS_RETRY : EVBUS_ACK;
    return apply_todo(conn, ev, box, &s->w);
}

static evbus_result_t on_todo(const evbus_event_t *ev, void *opaque)
{
    svc_t *s = opaque;
    return evbus_inbox_handle(s->in, NULL, ev, flaky_apply, s);
}

START_TEST(subscription_with_helper_applies_each_event_once)
{
    char err[256];
    evbus_t *bus = evbus_open("memory://inbox-e2e", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    svc_t s = {in, {0, 0}, 2};
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 1;
    retry.max_ms = 5;
    so.retry = &retry;
    ck_assert_ptr_nonnull(evbus_subscribe_opts(bus, "todos", "notify", &so,
                                               on_todo, &s, NULL, 0));
    evbus_event_t *ev = todo_event(NULL);
    /* the same event three times, as a relay restart could cause */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(evbus_publish(bus, "todos", ev), EVBUS_OK);
    for (int i = 0; i < 100; i++)
        evbus_poll(bus, 5);
    ck_assert_int_eq(s.w.calls, 3); /* two RETRYs, then applied */
    ck_assert_int_eq(count("todos"), 1);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("inbox");
    TCase *tc = tcase_create("inbox");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, claim_once_then_duplicate);
    tcase_add_test(tc, rollback_forgets_the_claim);
    tcase_add_test(tc, claims_expire_after_retention);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, handle_commits_claim_work_and_followups_together);
    tcase_add_test(tc, handle_maps_failure_to_retry_and_rolls_back);
    tcase_add_test(tc, handle_retries_when_database_is_busy);
    tcase_add_test(tc, handle_nests_in_callers_transaction);
    tcase_add_test(tc, subscription_with_helper_applies_each_event_once);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
