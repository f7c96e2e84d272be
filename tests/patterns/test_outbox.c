/*
 * Transactional outbox and relay: rollback publishes nothing, commit
 * publishes once, commit order, broker outages, exclusion between relays,
 * parking, retention. Uses the recording backend obrec:// (rec_backend.c)
 * and memory:// for an end-to-end run.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <evbus/evbus.h>
#include <evbus/outbox.h>

#include "rec_backend.h"
#include "tmpdir.h"

static char *dir, *db_path;
static sqlite3 *db;
static evbus_outbox_t *ob;
static evbus_t *bus;

static void setup(void)
{
    rec_register();
    rec_reset();
    dir = tmp_dir();
    db_path = tmp_path(dir, "app.db");
    db = app_db_open(db_path);
    char err[256] = "";
    ob = evbus_outbox_open(db, err, sizeof err);
    ck_assert_msg(ob != NULL, "%s", err);
    bus = evbus_open("obrec://test", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
}

static void teardown(void)
{
    evbus_outbox_close(ob);
    sqlite3_close(db);
    evbus_close(bus);
    tmp_rm(dir);
    free(db_path);
    free(dir);
    rec_reset();
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Adds one todo and its event in one transaction; returns the event id
 * (malloc'd). commit=0 rolls the transaction back. */
static char *create_todo(sqlite3 *conn, evbus_outbox_t *box, const char *title,
                         int commit)
{
    sql(conn, "BEGIN");
    char q[256];
    snprintf(q, sizeof q, "INSERT INTO todos(title) VALUES('%s')", title);
    sql(conn, q);
    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    ck_assert_ptr_nonnull(ev);
    char data[256];
    snprintf(data, sizeof data, "{\"todoId\":%lld,\"title\":\"%s\"}",
             (long long)sqlite3_last_insert_rowid(conn), title);
    ck_assert_int_eq(evbus_event_set_data_json(ev, data), EVBUS_OK);
    ck_assert_int_eq(evbus_outbox_add(box, "todos", ev), EVBUS_OK);
    char *id = strdup(evbus_event_id(ev));
    evbus_event_free(ev);
    sql(conn, commit ? "COMMIT" : "ROLLBACK");
    return id;
}

static evbus_relay_t *relay_with(int batch, int64_t retention)
{
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.batch_size = batch;
    o.retention_ms = retention;
    o.poll_interval_ms = 5;
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 5;
    retry.max_ms = 40;
    o.retry = &retry;
    char err[256] = "";
    evbus_relay_t *r = evbus_relay_open_opts(db_path, bus, &o, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    return r;
}

START_TEST(rollback_publishes_nothing)
{
    char *id = create_todo(db, ob, "rolled back", 0);
    evbus_relay_t *r = evbus_relay_open(db_path, bus, NULL, 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 0);
    ck_assert_int_eq(evbus_relay_run_once(r, 100), 0);
    ck_assert_uint_eq(rec_count(), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM todos"), 0);
    evbus_relay_close(r);
    free(id);
}
END_TEST

START_TEST(commit_publishes_exactly_once)
{
    char *gone = create_todo(db, ob, "rolled back", 0);
    char *id = create_todo(db, ob, "buy milk", 1);
    evbus_relay_t *r = evbus_relay_open(db_path, bus, NULL, 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 0);
    evbus_relay_close(r);
    /* a new relay (restart) does not publish it again either */
    r = evbus_relay_open(db_path, bus, NULL, 0);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 0);
    ck_assert_uint_eq(rec_count(), 1);
    ck_assert_str_eq(rec_id(0), id);
    ck_assert_str_eq(rec_topic(0), "todos");
    ck_assert_uint_eq(rec_times(gone), 0);
    /* the relay's mark covers the committed row */
    ck_assert_int_eq(sql_int(db, "SELECT delivered_seq FROM evbus_outbox_relay"),
                     sql_int(db, "SELECT max(seq) FROM evbus_outbox"));
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.published, 0);
    evbus_relay_close(r);
    free(gone);
    free(id);
}
END_TEST

START_TEST(run_once_zero_publishes_everything_pending)
{
    sql(db, "BEGIN");
    for (int i = 0; i < 1300; i++) { /* more than two default batches */
        evbus_event_t *ev = evbus_event_new("todos.task.created", "/t");
        ck_assert_int_eq(evbus_outbox_add(ob, "todos", ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    sql(db, "COMMIT");
    evbus_relay_t *r = evbus_relay_open(db_path, bus, NULL, 0);
    ck_assert_int_eq(evbus_relay_run_once(r, 100), 100);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1200);
    ck_assert_int_eq(evbus_relay_run_once(r, -1), 0);
    ck_assert_uint_eq(rec_count(), 1300);
    evbus_relay_close(r);
}
END_TEST

START_TEST(outbox_add_outside_transaction_commits_alone)
{
    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    ck_assert_int_eq(evbus_outbox_add(ob, "todos", ev), EVBUS_OK);
    evbus_relay_t *r = evbus_relay_open(db_path, bus, NULL, 0);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1);
    ck_assert_str_eq(rec_id(0), evbus_event_id(ev));
    evbus_relay_close(r);
    evbus_event_free(ev);
}
END_TEST

START_TEST(relay_publishes_in_commit_order)
{
    /* Two connections take turns; transactions of 1..5 events; some roll
     * back. The broker must see the committed events in commit order. */
    sqlite3 *db2 = app_db_open(db_path);
    evbus_outbox_t *ob2 = evbus_outbox_open(db2, NULL, 0);
    ck_assert_ptr_nonnull(ob2);
    enum { TXNS = 200 };
    char **expect = calloc(TXNS * 5, sizeof *expect);
    size_t nexp = 0;
    srand(7);
    for (int t = 0; t < TXNS; t++) {
        sqlite3 *c = t % 2 ? db2 : db;
        evbus_outbox_t *o = t % 2 ? ob2 : ob;
        int commit = rand() % 5 != 0;
        int k = 1 + rand() % 5;
        sql(c, "BEGIN");
        char *ids[5];
        for (int i = 0; i < k; i++) {
            evbus_event_t *ev = evbus_event_new("todos.task.created", "/t");
            ck_assert_int_eq(evbus_outbox_add(o, "todos", ev), EVBUS_OK);
            ids[i] = strdup(evbus_event_id(ev));
            evbus_event_free(ev);
        }
        sql(c, commit ? "COMMIT" : "ROLLBACK");
        for (int i = 0; i < k; i++) {
            if (commit)
                expect[nexp++] = ids[i];
            else
                free(ids[i]);
        }
    }
    evbus_relay_t *r = relay_with(7, 3600000);
    int total = 0, got;
    while ((got = evbus_relay_run_once(r, 20)) > 0)
        total += got;
    ck_assert_int_eq(got, 0);
    ck_assert_int_eq(total, (int)nexp);
    ck_assert_uint_eq(rec_count(), nexp);
    for (size_t i = 0; i < nexp; i++) {
        ck_assert_str_eq(rec_id(i), expect[i]);
        free(expect[i]);
    }
    free(expect);
    evbus_relay_close(r);
    evbus_outbox_close(ob2);
    sqlite3_close(db2);
}
END_TEST

START_TEST(broker_down_keeps_rows_until_accepted)
{
    char *ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = create_todo(db, ob, "t", 1);
    evbus_relay_t *r = relay_with(4, 3600000);
    rec_fail_with(EVBUS_ECONN);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), EVBUS_ECONN);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), EVBUS_ECONN);
    ck_assert_uint_eq(rec_count(), 0);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox WHERE seq >"
                                 " (SELECT delivered_seq FROM evbus_outbox_relay)"),
                     10);
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    ck_assert_uint_gt(st.failed, 0);
    rec_fail_with(0);
    ck_assert_int_eq(evbus_relay_run_once(r, 100), 10);
    ck_assert_uint_eq(rec_count(), 10);
    for (int i = 0; i < 10; i++) {
        ck_assert_str_eq(rec_id((size_t)i), ids[i]);
        free(ids[i]);
    }
    evbus_relay_close(r);
}
END_TEST

START_TEST(background_thread_retries_with_backoff)
{
    rec_fail_with(EVBUS_ETIMEDOUT);
    evbus_relay_t *r = relay_with(16, 3600000);
    ck_assert_int_eq(evbus_relay_start(r), EVBUS_OK);
    ck_assert_int_eq(evbus_relay_start(r), EVBUS_ESTATE);
    char *ids[20];
    for (int i = 0; i < 20; i++)
        ids[i] = create_todo(db, ob, "t", 1);
    evbus_relay_notify(r);
    sleep_ms(400);
    size_t tries = rec_attempts();
    ck_assert_uint_gt(tries, 1);
    /* each round tries the batch (20 events); backoff 5 ms doubling to
     * 40 ms allows ~15 rounds in 400 ms - a busy loop would do thousands */
    ck_assert_msg(tries < 20 * 30, "%zu attempts in 400 ms: no backoff",
                  tries);
    ck_assert_uint_eq(rec_count(), 0);
    rec_fail_with(0);
    for (int i = 0; i < 500 && rec_count() < 20; i++)
        sleep_ms(10);
    ck_assert_uint_eq(rec_count(), 20);
    for (int i = 0; i < 20; i++) {
        ck_assert_uint_eq(rec_times(ids[i]), 1);
        free(ids[i]);
    }
    ck_assert_int_eq(evbus_relay_stop(r), EVBUS_OK);
    ck_assert_int_eq(evbus_relay_stop(r), EVBUS_OK);
    evbus_relay_close(r);
}
END_TEST

START_TEST(two_relays_never_both_publish_a_row)
{
    evbus_relay_t *r1 = relay_with(32, 3600000);
    evbus_relay_t *r2 = relay_with(32, 3600000);
    ck_assert_int_eq(evbus_relay_start(r1), EVBUS_OK);
    ck_assert_int_eq(evbus_relay_start(r2), EVBUS_OK);
    enum { N = 3000 };
    char **ids = calloc(N + 200, sizeof *ids);
    for (int t = 0; t < N / 10; t++) {
        sql(db, "BEGIN");
        for (int i = 0; i < 10; i++) {
            evbus_event_t *ev = evbus_event_new("todos.task.created", "/t");
            ck_assert_int_eq(evbus_outbox_add(ob, "todos", ev), EVBUS_OK);
            ids[t * 10 + i] = strdup(evbus_event_id(ev));
            evbus_event_free(ev);
        }
        sql(db, "COMMIT");
        evbus_relay_notify(r1);
        evbus_relay_notify(r2);
    }
    for (int i = 0; i < 1000 && rec_count() < N; i++)
        sleep_ms(10);
    ck_assert_uint_eq(rec_count(), N);
    ck_assert_int_eq(evbus_relay_is_active(r1) + evbus_relay_is_active(r2),
                     1);
    /* The active one goes away: the standby takes over the rest. */
    evbus_relay_t *active = evbus_relay_is_active(r1) ? r1 : r2;
    evbus_relay_t *standby = active == r1 ? r2 : r1;
    evbus_relay_close(active);
    for (int i = 0; i < 200; i++)
        ids[N + i] = create_todo(db, ob, "later", 1);
    for (int i = 0; i < 1000 && rec_count() < N + 200; i++)
        sleep_ms(10);
    ck_assert_uint_eq(rec_count(), N + 200);
    ck_assert(evbus_relay_is_active(standby));
    for (int i = 0; i < N + 200; i++) {
        ck_assert_msg(rec_times(ids[i]) == 1, "event %d published %zu times",
                      i, rec_times(ids[i]));
        ck_assert_str_eq(rec_id((size_t)i), ids[i]);
        free(ids[i]);
    }
    free(ids);
    evbus_relay_close(standby);
}
END_TEST

START_TEST(relay_in_another_process_excludes_this_one)
{
    char *ids[20];
    for (int i = 0; i < 20; i++)
        ids[i] = create_todo(db, ob, "t", 1);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* holds the lock, publishes to its own broker, never exits */
        evbus_t *mem = evbus_open("memory://other-process", NULL, 0);
        evbus_relay_t *r = mem ? evbus_relay_open(db_path, mem, NULL, 0) : NULL;
        char ok = r && evbus_relay_run_once(r, 1) == 1 &&
                  evbus_relay_is_active(r) ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    ck_assert_int_eq(ok, 'y');
    evbus_relay_t *r = relay_with(8, 3600000);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(evbus_relay_run_once(r, 0), 0); /* standby */
    ck_assert_int_eq(evbus_relay_is_active(r), 0);
    ck_assert_uint_eq(rec_count(), 0);
    kill(child, SIGKILL); /* the kernel drops its lock */
    waitpid(child, NULL, 0);
    int total = 0, got;
    while ((got = evbus_relay_run_once(r, 0)) > 0)
        total += got;
    ck_assert_int_eq(evbus_relay_is_active(r), 1);
    ck_assert_int_eq(total, 19); /* the child published the first one */
    for (int i = 1; i < 20; i++) {
        ck_assert_str_eq(rec_id((size_t)i - 1), ids[i]);
        free(ids[i]);
    }
    free(ids[0]);
    evbus_relay_close(r);
}
END_TEST

START_TEST(same_process_handoff_never_publishes_a_rolled_back_event)
{
    evbus_relay_t *r = relay_with(16, 3600000);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 0); /* active, listening */
    char *gone = create_todo(db, ob, "rolled back", 0); /* seq 1, undone */
    char *b = create_todo(db, ob, "kept", 1);           /* seq 1 again */
    char *c = create_todo(db, ob, "c", 1);
    char *d = create_todo(db, ob, "d", 1);
    ck_assert_int_eq(sql_int(db, "SELECT min(seq) FROM evbus_outbox"), 1);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 3);
    ck_assert_uint_eq(rec_count(), 3);
    ck_assert_str_eq(rec_id(0), b);
    ck_assert_str_eq(rec_id(1), c);
    ck_assert_str_eq(rec_id(2), d);
    ck_assert_uint_eq(rec_times(gone), 0);
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.handed_off, 3); /* none decoded */
    /* a row changed behind the producer's back is decoded, not handed off */
    char *e = create_todo(db, ob, "e", 1);
    sql(db, "UPDATE evbus_outbox SET event = replace(event, 'todos.task.created',"
            " 'todos.task.changed') WHERE seq = (SELECT max(seq) FROM evbus_outbox)");
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.handed_off, 3);
    ck_assert_str_eq(rec_id(3), e);
    evbus_relay_close(r);
    /* without an active relay nothing is kept for later */
    free(create_todo(db, ob, "f", 1));
    r = relay_with(16, 3600000);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.handed_off, 0);
    evbus_relay_close(r);
    free(gone);
    free(b);
    free(c);
    free(d);
    free(e);
}
END_TEST

/* Adds (committed) an event of about 1.2 kB: too big for a bus opened with
 * max_event_bytes=400. */
static void add_oversized_event(void)
{
    evbus_event_t *big = evbus_event_new("todos.task.created", "/t");
    char data[1200];
    memset(data, 'x', sizeof data);
    data[0] = '"';
    data[sizeof data - 2] = '"';
    data[sizeof data - 1] = 0;
    ck_assert_int_eq(evbus_event_set_data_json(big, data), EVBUS_OK);
    ck_assert_int_eq(evbus_outbox_add(ob, "todos", big), EVBUS_OK);
    evbus_event_free(big);
}

/* A bytes-only broker gets each row's JSON exactly as stored, undecoded:
 * even a row damaged behind the outbox's back is forwarded (consumers
 * dead-letter it), while a row too big for the bus is still parked. */
START_TEST(bytes_only_backend_gets_the_stored_json)
{
    evbus_close(bus);
    char err[256];
    bus = evbus_open("obrecb://b?max_event_bytes=400", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    char *a = create_todo(db, ob, "first", 1);
    sql(db, "INSERT INTO evbus_outbox(topic, event, created_at)"
            " VALUES('todos', '{not json', 0)");
    add_oversized_event();
    char *c = create_todo(db, ob, "last", 1);
    evbus_relay_t *r = relay_with(10, 3600000);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 3);
    ck_assert_uint_eq(rec_count(), 3);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT event FROM evbus_outbox"
                                            " WHERE failed IS NULL"
                                            " ORDER BY seq", -1, &st, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_str_eq(rec_payload(i),
                         (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    ck_assert_str_eq(rec_payload(1), "{not json");
    ck_assert_ptr_nonnull(strstr(rec_payload(0), a));
    ck_assert_ptr_nonnull(strstr(rec_payload(2), c));
    evbus_relay_stats_t s;
    evbus_relay_stats_init(&s);
    evbus_relay_stats(r, &s);
    ck_assert_uint_eq(s.parked, 1);
    ck_assert_uint_eq(s.published, 3);
    evbus_relay_close(r);
    free(a);
    free(c);
}
END_TEST

START_TEST(unpublishable_rows_are_parked_not_lost)
{
    evbus_close(bus);
    char err[256];
    bus = evbus_open("obrec://small?max_event_bytes=400", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    char *a = create_todo(db, ob, "small", 1);
    /* too big for this bus */
    add_oversized_event();
    /* not an event at all (written behind the outbox's back) */
    sql(db, "INSERT INTO evbus_outbox(topic, event, created_at)"
            " VALUES('todos', '{not json', 0)");
    char *b = create_todo(db, ob, "after", 1);
    evbus_relay_t *r = relay_with(10, 3600000);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 2);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 0);
    ck_assert_uint_eq(rec_count(), 2);
    ck_assert_str_eq(rec_id(0), a);
    ck_assert_str_eq(rec_id(1), b);
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.parked, 2);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox WHERE"
                                 " failed LIKE '%too big%' OR failed LIKE"
                                 " '%exceeds%'"), 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox WHERE"
                                 " failed LIKE 'undecodable%'"), 1);
    evbus_relay_close(r);
    free(a);
    free(b);
}
END_TEST

START_TEST(retention_purges_delivered_rows)
{
    for (int i = 0; i < 5; i++)
        free(create_todo(db, ob, "t", 1));
    evbus_relay_t *r0 = relay_with(10, 0); /* delete at once */
    ck_assert_int_eq(evbus_relay_run_once(r0, 0), 5);
    /* all gone but the newest, which keeps seq values from being reused */
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 1);
    ck_assert_int_eq(sql_int(db, "SELECT min(seq) FROM evbus_outbox"), 5);
    free(create_todo(db, ob, "t", 1));
    ck_assert_int_eq(sql_int(db, "SELECT max(seq) FROM evbus_outbox"), 6);
    ck_assert_int_eq(evbus_relay_run_once(r0, 0), 1);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 1);
    evbus_relay_close(r0);

    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.retention_ms = 500; /* wide margins: the machine may be loaded */
    o.purge_interval_ms = 1;
    evbus_relay_t *r = evbus_relay_open_opts(db_path, bus, &o, NULL, 0);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < 7; i++)
        free(create_todo(db, ob, "t", 1)); /* seq 7..13 */
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 7);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 8);
    free(create_todo(db, ob, "pending", 1)); /* seq 14, not delivered */
    sleep_ms(700);
    /* not delivered yet: old, but never purged before delivery */
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM evbus_outbox WHERE seq = 14",
                       -1, &st, NULL);
    ck_assert_int_eq(evbus_relay_run_once(r, 1), 1); /* delivers 14, purges */
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 1); /* newest row is kept */
    sqlite3_finalize(st);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 1);
    evbus_relay_stats_t stats;
    evbus_relay_stats_init(&stats);
    evbus_relay_stats(r, &stats);
    ck_assert_uint_eq(stats.purged, 8); /* seq 6..13 */
    ck_assert_uint_eq(rec_count(), 14);
    free(create_todo(db, ob, "t", 1));
    ck_assert_int_eq(sql_int(db, "SELECT max(seq) FROM evbus_outbox"), 15);
    ck_assert_int_eq(evbus_relay_run_once(r, 0), 1);
    ck_assert_uint_eq(rec_count(), 15);
    evbus_relay_close(r);
}
END_TEST

START_TEST(bad_arguments_get_clear_errors)
{
    char err[256] = "";
    ck_assert_ptr_null(evbus_outbox_open(NULL, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "db is NULL"));
    evbus_event_t *ev = evbus_event_new("todos.task.created", "/t");
    ck_assert_int_eq(evbus_outbox_add(ob, "", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_outbox_add(ob, "has space", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_outbox_add(ob, NULL, ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_outbox_add(ob, "todos", NULL), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_outbox_add(NULL, "todos", ev), EVBUS_EINVAL);
    evbus_event_free(ev);
    ck_assert_ptr_null(evbus_relay_open(db_path, NULL, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "bus"));
    ck_assert_ptr_null(evbus_relay_open(":memory:", bus, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "no file name"));
    ck_assert_ptr_null(evbus_relay_open("/nonexistent/dir/x.db", bus, err,
                                       sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.batch_size = 0;
    ck_assert_ptr_null(evbus_relay_open_opts(db_path, bus, &o, err,
                                            sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "batch_size"));
    ck_assert_int_eq(evbus_relay_run_once(NULL, 0), EVBUS_EINVAL);
    evbus_relay_close(NULL);
    evbus_outbox_close(NULL);
    ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM evbus_outbox"), 0);
}
END_TEST

/* ---- end to end on memory:// */

typedef struct {
    char ids[64][64];
    int n;
} seen_t;

static evbus_result_t remember(const evbus_event_t *ev, void *opaque)
{
    seen_t *s = opaque;
    if (s->n < 64)
        snprintf(s->ids[s->n++], 64, "%s", evbus_event_id(ev));
    return EVBUS_ACK;
}

START_TEST(end_to_end_on_memory_bus)
{
    char err[256];
    evbus_t *mem = evbus_open("memory://outbox-e2e", err, sizeof err);
    ck_assert_msg(mem != NULL, "%s", err);
    seen_t seen = {.n = 0};
    ck_assert_ptr_nonnull(evbus_subscribe(mem, "todos", "notify", remember,
                                          &seen));
    char *ids[30];
    for (int i = 0; i < 30; i++)
        ids[i] = create_todo(db, ob, "t", 1);
    evbus_relay_t *r = evbus_relay_open(db_path, mem, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    ck_assert_int_eq(evbus_relay_start(r), EVBUS_OK);
    for (int i = 0; i < 200 && seen.n < 30; i++)
        evbus_poll(mem, 10);
    ck_assert_int_eq(seen.n, 30);
    for (int i = 0; i < 30; i++) {
        ck_assert_str_eq(seen.ids[i], ids[i]);
        free(ids[i]);
    }
    evbus_relay_close(r);
    evbus_close(mem);
}
END_TEST

/* ---- a bus shared with a thread that polls it (a service consuming and
 * relaying on one bus): delivery callbacks of the relay's publishes may run
 * on that thread; the relay must still see every outcome. */

typedef struct {
    evbus_t *bus;
    atomic_int stop;
    atomic_int received;
} poller_t;

static evbus_result_t count_event(const evbus_event_t *ev, void *opaque)
{
    atomic_fetch_add(&((poller_t *)opaque)->received, 1);
    return EVBUS_ACK;
}

static void *poll_loop(void *arg)
{
    poller_t *p = arg;
    while (!atomic_load(&p->stop))
        evbus_poll(p->bus, 1);
    return NULL;
}

START_TEST(relay_on_a_bus_polled_by_another_thread)
{
    char err[256];
    poller_t p = {evbus_open("memory://shared-poll", err, sizeof err), 0, 0};
    ck_assert_msg(p.bus != NULL, "%s", err);
    ck_assert_ptr_nonnull(evbus_subscribe(p.bus, "todos", "notify",
                                          count_event, &p));
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, poll_loop, &p), 0);
    enum { N = 3000 };
    sql(db, "BEGIN");
    for (int i = 0; i < N; i++) {
        evbus_event_t *ev = evbus_event_new("todos.task.created", "/t");
        ck_assert_int_eq(evbus_outbox_add(ob, "todos", ev), EVBUS_OK);
        evbus_event_free(ev);
    }
    sql(db, "COMMIT");
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.batch_size = 50;
    evbus_relay_t *r = evbus_relay_open_opts(db_path, p.bus, &o, err,
                                            sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    int total = 0, got;
    while ((got = evbus_relay_run_once(r, 0)) > 0)
        total += got;
    ck_assert_int_eq(got, 0);
    ck_assert_int_eq(total, N);
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    ck_assert_uint_eq(st.failed, 0); /* no outcome was missed */
    for (int i = 0; i < 500 && atomic_load(&p.received) < N; i++)
        sleep_ms(10);
    ck_assert_int_eq(atomic_load(&p.received), N); /* each exactly once */
    atomic_store(&p.stop, 1);
    pthread_join(th, NULL);
    evbus_relay_close(r);
    evbus_close(p.bus);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("outbox");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rollback_publishes_nothing);
    tcase_add_test(tc, commit_publishes_exactly_once);
    tcase_add_test(tc, run_once_zero_publishes_everything_pending);
    tcase_add_test(tc, outbox_add_outside_transaction_commits_alone);
    tcase_add_test(tc, relay_publishes_in_commit_order);
    tcase_add_test(tc, broker_down_keeps_rows_until_accepted);
    tcase_add_test(tc, background_thread_retries_with_backoff);
    tcase_add_test(tc, two_relays_never_both_publish_a_row);
    tcase_add_test(tc, relay_in_another_process_excludes_this_one);
    tcase_add_test(tc, same_process_handoff_never_publishes_a_rolled_back_event);
    tcase_add_test(tc, unpublishable_rows_are_parked_not_lost);
    tcase_add_test(tc, bytes_only_backend_gets_the_stored_json);
    tcase_add_test(tc, retention_purges_delivered_rows);
    tcase_add_test(tc, bad_arguments_get_clear_errors);
    tcase_add_test(tc, end_to_end_on_memory_bus);
    tcase_add_test(tc, relay_on_a_bus_polled_by_another_thread);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
