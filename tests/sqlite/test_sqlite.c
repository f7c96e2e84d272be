/*
 * sqlite:// backend unit tests: URL/open errors, history and reopen, lease
 * expiry after a member crashed, delayed retry that survives a reopen,
 * retention, and lock contention between threads and processes.
 * Every test works in its own fresh temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "evbus/evbus.h"
#include "tmpdb.h"

static void setup(void) { tmpdb_setup("evbus-sqlite-test"); }

static void teardown(void) { tmpdb_teardown(); }

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static evbus_t *open_q(const char *query)
{
    char url[512], err[512] = "";
    snprintf(url, sizeof url, "sqlite://%s%s%s", dbpath, query ? "?" : "",
             query ? query : "");
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", url, err);
    return bus;
}

static evbus_event_t *numbered(int n)
{
    evbus_event_t *ev = evbus_event_new("test.sqlite.numbered", "/test");
    ck_assert_ptr_nonnull(ev);
    char buf[32];
    snprintf(buf, sizeof buf, "%d", n);
    ck_assert_int_eq(evbus_event_set_ext(ev, "n", buf), EVBUS_OK);
    return ev;
}

static void publish_n(evbus_t *bus, const char *topic, int from, int count)
{
    for (int i = from; i < from + count; i++) {
        evbus_event_t *ev = numbered(i);
        ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
        evbus_event_free(ev);
    }
}

/* Records handler calls: the "n" extension and the attempt number. */
typedef struct rec {
    int n[1024];
    int attempt[1024];
    uint64_t at[1024];
    int count;
    evbus_result_t answer_first; /* for attempt 1 */
} rec_t;

static evbus_result_t rec_handler(const evbus_event_t *ev, void *opaque)
{
    rec_t *r = opaque;
    const char *n = evbus_event_ext(ev, "n");
    int i = r->count < 1024 ? r->count++ : 1023;
    r->n[i] = n ? atoi(n) : -1;
    r->attempt[i] = evbus_delivery_attempt();
    r->at[i] = now_ms();
    if (evbus_delivery_attempt() == 1)
        return r->answer_first;
    return EVBUS_ACK;
}

static void poll_until_count(evbus_t *bus, rec_t *r, int want, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (r->count < want && now_ms() < end)
        evbus_poll(bus, 50);
}

static long count_rows(const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ------------------------------------------------------------ open errors */

static void expect_open_fails(const char *url, const char *needle)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus == NULL, "evbus_open(%s) should fail", url);
    ck_assert_msg(strstr(err, needle) != NULL,
                  "evbus_open(%s): error '%s' lacks '%s'", url, err, needle);
}

START_TEST(open_errors_are_clear)
{
    char url[512];
    snprintf(url, sizeof url, "sqlite://%s/no/such/dir/bus.db", tmpdir);
    expect_open_fails(url, "does not exist");

    char junk[300];
    snprintf(junk, sizeof junk, "%s/junk.db", tmpdir);
    FILE *f = fopen(junk, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database at all, just text\n", f);
    fclose(f);
    snprintf(url, sizeof url, "sqlite://%s", junk);
    expect_open_fails(url, "not a SQLite database");

    snprintf(url, sizeof url, "sqlite://%s", tmpdir);
    expect_open_fails(url, "is a directory");

    expect_open_fails("sqlite://", "no database file");
    expect_open_fails("sqlite:///", "no database file");

    snprintf(url, sizeof url, "sqlite://%s?visibility_timeout_ms=soon",
             dbpath);
    expect_open_fails(url, "visibility_timeout_ms");
    snprintf(url, sizeof url, "sqlite://%s?synchronous=maybe", dbpath);
    expect_open_fails(url, "synchronous");
    snprintf(url, sizeof url, "sqlite://%s?no_such_option=1", dbpath);
    expect_open_fails(url, "no_such_option");

    if (geteuid() != 0) { /* root ignores file permissions */
        char ro[300];
        snprintf(ro, sizeof ro, "%s/ro.db", tmpdir);
        snprintf(url, sizeof url, "sqlite://%s", ro);
        evbus_t *bus = evbus_open(url, NULL, 0);
        ck_assert_ptr_nonnull(bus);
        evbus_close(bus);
        ck_assert_int_eq(chmod(ro, 0444), 0);
        expect_open_fails(url, "read-only");
    }
}
END_TEST

START_TEST(open_creates_the_file)
{
    struct stat st;
    ck_assert_int_ne(stat(dbpath, &st), 0);
    evbus_t *bus = open_q(NULL);
    ck_assert_str_eq(evbus_scheme(bus), "sqlite");
    ck_assert_int_eq(stat(dbpath, &st), 0);
    char err[256];
    ck_assert_int_eq(evbus_health(bus, err, sizeof err), EVBUS_OK);
    evbus_close(bus);
    /* and opens again */
    bus = open_q(NULL);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------ history, reopen */

START_TEST(groups_read_history_and_resume_after_reopen)
{
    evbus_t *bus = open_q(NULL);
    publish_n(bus, "t.hist", 0, 5);
    evbus_close(bus);

    /* A new group starts at the beginning of the log, in order. */
    rec_t a = {.answer_first = EVBUS_ACK};
    bus = open_q(NULL);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.hist", "a", rec_handler, &a));
    poll_until_count(bus, &a, 5, 30000); /* hang guard */
    ck_assert_int_eq(a.count, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(a.n[i], i);
    evbus_close(bus);

    bus = open_q(NULL);
    publish_n(bus, "t.hist", 5, 3);
    evbus_close(bus);

    /* Group a continues where it stopped; group b gets everything. */
    rec_t a2 = {.answer_first = EVBUS_ACK}, b = {.answer_first = EVBUS_ACK};
    bus = open_q(NULL);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, "t.hist", "a", rec_handler, &a2));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.hist", "b", rec_handler, &b));
    poll_until_count(bus, &b, 8, 30000);  /* hang guard */
    poll_until_count(bus, &a2, 3, 30000); /* hang guard */
    evbus_poll(bus, 200);
    ck_assert_int_eq(a2.count, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(a2.n[i], 5 + i);
        ck_assert_int_eq(a2.attempt[i], 1);
    }
    ck_assert_int_eq(b.count, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(b.n[i], i);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------------ leases */

static evbus_result_t crash_handler(const evbus_event_t *ev, void *opaque)
{
    _exit(0); /* dies holding the lease of this and the rest of its batch */
}

START_TEST(lease_expires_after_member_crash)
{
    const char *q = "visibility_timeout_ms=1500";
    evbus_t *bus = open_q(q);
    publish_n(bus, "t.lease", 0, 3);
    evbus_close(bus);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        evbus_t *b2 = open_q(q);
        evbus_subscribe(b2, "t.lease", "g", crash_handler, NULL);
        for (;;)
            evbus_poll(b2, 1000);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    uint64_t died = now_ms();

    rec_t r = {.answer_first = EVBUS_ACK};
    bus = open_q(q);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.lease", "g", rec_handler, &r));
    /* Still leased by the dead member: nothing for a while. */
    while (now_ms() - died < 400)
        evbus_poll(bus, 20);
    ck_assert_int_eq(r.count, 0);
    /* Then redelivered, in order, counting the handler call that crashed
     * and not the hand-outs of the events that never reached one. */
    poll_until_count(bus, &r, 3, 30000); /* hang guard */
    ck_assert_int_eq(r.count, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r.n[i], i);
        ck_assert_int_eq(r.attempt[i], i == 0 ? 2 : 1);
    }
    evbus_poll(bus, 200);
    ck_assert_int_eq(r.count, 3);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------- delayed retry */

START_TEST(delayed_retry_survives_reopen)
{
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 800;
    retry.max_ms = 800;
    retry.jitter = EVBUS_JITTER_NONE;
    retry.max_attempts = 5;
    o.retry = &retry;

    evbus_t *bus = open_q(NULL);
    publish_n(bus, "t.retry", 0, 1);
    rec_t r = {.answer_first = EVBUS_RETRY};
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "t.retry", "g", &o, rec_handler, &r, NULL, 0));
    poll_until_count(bus, &r, 1, 30000); /* hang guard */
    ck_assert_int_eq(r.count, 1);
    ck_assert_int_eq(r.attempt[0], 1);
    uint64_t first = r.at[0];
    evbus_close(bus); /* the retry is stored, not lost */

    rec_t r2 = {.answer_first = EVBUS_ACK};
    bus = open_q(NULL);
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "t.retry", "g", &o, rec_handler, &r2, NULL, 0));
    poll_until_count(bus, &r2, 1, 30000); /* hang guard */
    ck_assert_int_eq(r2.count, 1);
    ck_assert_int_eq(r2.attempt[0], 2); /* the count survived the reopen */
    ck_assert_uint_ge(r2.at[0] - first, 700);
    evbus_poll(bus, 300);
    ck_assert_int_eq(r2.count, 1); /* acked: gone */
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------------ retention */

static long events_of(const char *topic)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM evbus_events e JOIN evbus_topics t ON "
             "t.id=e.topic_id WHERE t.name='%s'", topic);
    return count_rows(sql);
}

START_TEST(retention_keeps_what_a_group_still_needs)
{
    /* Group h exists but has read nothing. */
    evbus_t *bus = open_q("retention_ms=0&retention_interval_ms=50");
    rec_t h = {.answer_first = EVBUS_ACK}, g = {.answer_first = EVBUS_ACK};
    evbus_sub_t *sh = evbus_subscribe(bus, "t.ret", "h", rec_handler, &h);
    ck_assert_ptr_nonnull(sh);
    ck_assert_int_eq(evbus_unsubscribe(sh), EVBUS_OK);
    publish_n(bus, "t.ret", 0, 50);
    publish_n(bus, "t.other", 0, 1); /* newest row of the table */
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.ret", "g", rec_handler, &g));
    poll_until_count(bus, &g, 50, 30000); /* hang guard */
    ck_assert_int_eq(g.count, 50);
    evbus_poll(bus, 400);
    ck_assert_int_eq(events_of("t.ret"), 50); /* h still needs them */

    /* Once h has acknowledged them too, they go. */
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.ret", "h", rec_handler, &h));
    poll_until_count(bus, &h, 50, 30000); /* hang guard */
    ck_assert_int_eq(h.count, 50);
    uint64_t end = now_ms() + 3000;
    while (events_of("t.ret") > 0 && now_ms() < end)
        evbus_poll(bus, 50);
    ck_assert_int_eq(events_of("t.ret"), 0);
    evbus_close(bus);

    /* With a long retention nothing is deleted. */
    bus = open_q("retention_ms=3600000&retention_interval_ms=50");
    publish_n(bus, "t.keep", 0, 20);
    rec_t k = {.answer_first = EVBUS_ACK};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.keep", "g", rec_handler, &k));
    poll_until_count(bus, &k, 20, 30000); /* hang guard */
    evbus_poll(bus, 400);
    ck_assert_int_eq(events_of("t.keep"), 20);
    evbus_close(bus);
}
END_TEST

/* ---------------------------------------------------------- contention */

enum { CONT_THREADS = 4, CONT_PROCS = 2, CONT_EACH = 1000 };

static int failed_async;

static void count_failures(const evbus_event_t *ev, int err, void *opaque)
{
    if (err != EVBUS_OK)
        __atomic_add_fetch(&failed_async, 1, __ATOMIC_RELAXED);
}

/* Publishes CONT_EACH events one by one and CONT_EACH asynchronously on
 * its own bus; returns the number of failures. */
static int contend(void)
{
    char url[512], err[512];
    snprintf(url, sizeof url, "sqlite://%s", dbpath);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        return CONT_EACH * 2;
    int failures = 0;
    for (int i = 0; i < CONT_EACH; i++) {
        evbus_event_t *ev = numbered(i);
        if (evbus_publish(bus, "t.contend", ev) != EVBUS_OK)
            failures++;
        if (evbus_publish_async(bus, "t.contend", ev, count_failures, NULL) !=
            EVBUS_OK)
            failures++;
        evbus_event_free(ev);
    }
    if (evbus_flush(bus, 60000) != EVBUS_OK)
        failures++;
    evbus_close(bus);
    return failures + __atomic_load_n(&failed_async, __ATOMIC_RELAXED);
}

static void *contend_thread(void *arg)
{
    *(int *)arg = contend();
    return NULL;
}

START_TEST(lock_contention_returns_no_errors)
{
    evbus_t *bus = open_q(NULL); /* create the schema first */
    evbus_close(bus);
    pid_t pids[CONT_PROCS];
    for (int i = 0; i < CONT_PROCS; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0)
            _exit(contend() == 0 ? 0 : 1);
    }
    pthread_t th[CONT_THREADS];
    int fails[CONT_THREADS];
    for (int i = 0; i < CONT_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, contend_thread, &fails[i]),
                         0);
    for (int i = 0; i < CONT_THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(fails[i], 0);
    }
    for (int i = 0; i < CONT_PROCS; i++) {
        int status;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0);
    }
    ck_assert_int_eq(events_of("t.contend"),
                     (CONT_THREADS + CONT_PROCS) * CONT_EACH * 2);
}
END_TEST

/* A subscriber in another process is woken by inotify, not by the core's
 * idle recheck: the events arrive although the poll timeout is long. */
START_TEST(idle_subscriber_wakes_for_other_process)
{
    /* Fork before any bus exists: a child must not inherit SQLite state
     * that another thread may hold locked. */
    int go[2], fds[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        usleep(200000);
        char url[512];
        snprintf(url, sizeof url, "sqlite://%s", dbpath);
        evbus_t *b2 = evbus_open(url, NULL, 0);
        evbus_event_t *ev = numbered(7);
        uint64_t t = now_ms();
        int rc = b2 ? evbus_publish(b2, "t.wake", ev) : -1;
        ssize_t w = write(fds[1], &t, sizeof t);
        (void)w;
        evbus_event_free(ev);
        evbus_close(b2);
        _exit(rc == EVBUS_OK ? 0 : 1);
    }
    evbus_t *bus = open_q(NULL);
    rec_t r = {.answer_first = EVBUS_ACK};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.wake", "g", rec_handler, &r));
    evbus_poll(bus, 100);
    ck_assert_int_eq(write(go[1], "x", 1), 1);
    uint64_t end = now_ms() + 5000;
    while (r.count == 0 && now_ms() < end)
        evbus_poll(bus, 5000);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(r.count, 1);
    ck_assert_int_eq(r.n[0], 7);
    uint64_t published = 0;
    ck_assert_int_eq(read(fds[0], &published, sizeof published),
                     (ssize_t)sizeof published);
    printf("idle wake-up latency across processes: %llu ms\n",
           (unsigned long long)(r.at[0] - published));
    close(fds[0]);
    close(fds[1]);
    close(go[0]);
    close(go[1]);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------- a held write lock */

typedef struct {
    int hold_ms;       /* < 0: until release is set */
    atomic_int locked; /* 1 while held, 2 after */
    atomic_int release;
} holder_t;

/* Holds SQLite's write lock on the file for hold_ms, like another program
 * with a long transaction. */
static void *hold_lock(void *arg)
{
    holder_t *h = arg;
    sqlite3 *db;
    if (sqlite3_open(dbpath, &db) != SQLITE_OK)
        return NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO evbus_meta "
                         "VALUES('lock-test', 'x')", NULL, NULL,
                     NULL) == SQLITE_OK) {
        atomic_store(&h->locked, 1);
        if (h->hold_ms >= 0)
            usleep((useconds_t)h->hold_ms * 1000);
        else
            for (int i = 0; i < 60000 && !atomic_load(&h->release); i++)
                usleep(1000); /* hang guard */
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    atomic_store(&h->locked, 2);
    sqlite3_close(db);
    return NULL;
}

static void start_holder(holder_t *h, int hold_ms, pthread_t *th)
{
    h->hold_ms = hold_ms;
    atomic_init(&h->locked, 0);
    atomic_init(&h->release, 0);
    ck_assert_int_eq(pthread_create(th, NULL, hold_lock, h), 0);
    while (!atomic_load(&h->locked))
        usleep(1000);
    ck_assert_int_eq(atomic_load(&h->locked), 1);
}

START_TEST(held_lock_waits_then_reports_ebusy)
{
    evbus_t *bus = open_q(NULL);
    publish_n(bus, "t.lock", 0, 1); /* topic known: only the insert waits */

    /* Held shorter than busy_timeout_ms (10 s): the publish waits and
     * succeeds. */
    holder_t h;
    pthread_t th;
    start_holder(&h, 300, &th);
    evbus_event_t *ev = numbered(1);
    ck_assert_int_eq(evbus_publish(bus, "t.lock", ev), EVBUS_OK);
    pthread_join(th, NULL);
    evbus_close(bus);

    /* Held until we let go: a clear, retriable EVBUS_EBUSY after
     * busy_timeout_ms, while the lock is still held. */
    bus = open_q("busy_timeout_ms=200");
    publish_n(bus, "t.lock", 2, 1);
    start_holder(&h, -1, &th);
    int rc = evbus_publish(bus, "t.lock", ev);
    ck_assert_int_eq(rc, EVBUS_EBUSY);
    ck_assert(evbus_err_retriable(rc));
    ck_assert_int_eq(atomic_load(&h.locked), 1);
    atomic_store(&h.release, 1);
    pthread_join(th, NULL);
    ck_assert_int_eq(evbus_publish(bus, "t.lock", ev), EVBUS_OK);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------ a poison event */

/* An event that kills every consumer that touches it still ends in the
 * dead-letter topic: the delivery count is stored, so crashes add up. */
START_TEST(poison_event_that_crashes_consumers_is_dead_lettered)
{
    const char *q = "visibility_timeout_ms=300";
    evbus_t *bus = open_q(q);
    publish_n(bus, "t.poison", 0, 1);
    evbus_close(bus);
    for (int i = 0; i < 3; i++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            evbus_t *b2 = open_q(q);
            evbus_subscribe(b2, "t.poison", "g", crash_handler, NULL);
            for (int j = 0; j < 100; j++)
                evbus_poll(b2, 100);
            _exit(3); /* never got it */
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0); /* died in the handler */
    }
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.max_attempts = 3;
    o.retry = &retry;
    rec_t r = {.answer_first = EVBUS_ACK}, dlq = {.answer_first = EVBUS_ACK};
    bus = open_q(q);
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(bus, "t.poison", "g", &o, rec_handler, &r, NULL, 0));
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, "t.poison.dlq", "ops", rec_handler, &dlq));
    poll_until_count(bus, &dlq, 1, 30000); /* hang guard */
    ck_assert_int_eq(dlq.count, 1);
    ck_assert_int_eq(dlq.n[0], 0);
    ck_assert_int_eq(r.count, 0); /* the handler was not risked again */
    evbus_close(bus);
}
END_TEST

int main(void)
{
    TCase *tc = tcase_create("sqlite");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, open_errors_are_clear);
    tcase_add_test(tc, open_creates_the_file);
    tcase_add_test(tc, groups_read_history_and_resume_after_reopen);
    tcase_add_test(tc, lease_expires_after_member_crash);
    tcase_add_test(tc, delayed_retry_survives_reopen);
    tcase_add_test(tc, retention_keeps_what_a_group_still_needs);
    tcase_add_test(tc, lock_contention_returns_no_errors);
    tcase_add_test(tc, idle_subscriber_wakes_for_other_process);
    tcase_add_test(tc, held_lock_waits_then_reports_ebusy);
    tcase_add_test(tc, poison_event_that_crashes_consumers_is_dead_lettered);
    if (geteuid() == 0)
        printf("note: running as root, so the read-only file case of "
               "open_errors_are_clear cannot be exercised\n");
    return tmpdb_run("sqlite", tc);
}
