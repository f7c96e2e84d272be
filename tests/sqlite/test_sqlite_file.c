/*
 * sqlite:// when the database file fails (issue 15.10): deleted or replaced
 * while a bus has it open -> publish and fetch answer EVBUS_EIO and one
 * ERROR names the path; disk full (max_db_bytes) -> EVBUS_EIO with "disk
 * full" and the path in the log; repeated failures are logged with a rate
 * limit, not once per call, and a failing fetch's cause once, not by the
 * backend and the core alike. Verdicts are counts; waits are hang guards.
 */
#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evbus/evbus.h"
#include "tmpdb.h"

/* ---- log capture */

#define MAX_LINES 4096
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct line {
    int level;
    char component[16];
    char msg[600];
} lines[MAX_LINES];
static int nlines;

static void capture(int level, const char *component, const char *msg,
                    void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&log_mu);
    if (nlines < MAX_LINES) {
        lines[nlines].level = level;
        snprintf(lines[nlines].component, sizeof lines[nlines].component, "%s",
                 component);
        snprintf(lines[nlines].msg, sizeof lines[nlines].msg, "%s", msg);
        nlines++;
    }
    pthread_mutex_unlock(&log_mu);
}

/* Lines of component at level (0 = any) containing every needle given. */
static int count_lines(const char *component, int level, const char *n1,
                       const char *n2)
{
    int c = 0;
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < nlines; i++)
        if (strcmp(lines[i].component, component) == 0 &&
            (!level || lines[i].level == level) &&
            (!n1 || strstr(lines[i].msg, n1)) &&
            (!n2 || strstr(lines[i].msg, n2)))
            c++;
    pthread_mutex_unlock(&log_mu);
    return c;
}

static void dump_lines(void)
{
    pthread_mutex_lock(&log_mu);
    for (int i = 0; i < nlines; i++)
        fprintf(stderr, "  [%d %s] %s\n", lines[i].level, lines[i].component,
                lines[i].msg);
    pthread_mutex_unlock(&log_mu);
}

static void setup(void)
{
    tmpdb_setup("sqlite-file");
    nlines = 0;
    evbus_set_log(capture, EVBUS_LOG_INFO, NULL);
}

static void teardown(void)
{
    if (getenv("EVBUS_TEST_DUMP_LOG")) /* to read the messages */
        dump_lines();
    evbus_set_log(NULL, 0, NULL);
    tmpdb_teardown();
}

static evbus_t *open_at(const char *path, const char *query)
{
    char url[600], err[512] = "";
    snprintf(url, sizeof url, "sqlite://%s%s", path, query ? query : "");
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", url, err);
    return bus;
}

static void remove_db(const char *path)
{
    char p[PATH_MAX + 32];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int handled;
static evbus_result_t count_handler(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (void)opaque;
    handled++;
    return EVBUS_ACK;
}

static evbus_event_t *event(void)
{
    evbus_event_t *ev = evbus_event_new("test.sqlite.file", "/test");
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(evbus_event_set_data_json(ev, "{}"), EVBUS_OK);
    return ev;
}

/* Publishes until a publish fails (the watcher found out); hang guard. */
static int publish_until_failure(evbus_t *bus)
{
    evbus_event_t *ev = event();
    int rc = EVBUS_OK;
    for (int i = 0; i < 3000 && rc == EVBUS_OK; i++) {
        rc = evbus_publish(bus, "t", ev);
        if (rc == EVBUS_OK)
            usleep(5000);
    }
    evbus_event_free(ev);
    return rc;
}

START_TEST(deleted_file_fails_publish_and_fetch)
{
    evbus_t *bus = open_at(dbpath, "?poll_interval_ms=20");
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", count_handler, NULL));
    evbus_event_t *ev = event();
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    for (int i = 0; i < 2000 && handled < 1; i++)
        evbus_poll(bus, 10);
    ck_assert_int_eq(handled, 1);

    remove_db(dbpath);
    ck_assert_int_eq(publish_until_failure(bus), EVBUS_EIO);
    int errors = count_lines("sqlite", EVBUS_LOG_ERROR, dbpath, "deleted");
    if (errors != 1)
        dump_lines();
    ck_assert_int_eq(errors, 1);
    char why[600] = "";
    ck_assert_int_eq(evbus_health(bus, why, sizeof why), EVBUS_EIO);
    ck_assert_msg(strstr(why, "deleted") && strstr(why, dbpath), "%s", why);

    /* Keeps failing, without a line per call; nothing is consumed from
     * the orphan; the cause is not logged again. */
    int before = handled;
    for (int i = 0; i < 200; i++) {
        ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_EIO);
        evbus_poll(bus, 1);
    }
    ck_assert_int_eq(handled, before);
    ck_assert_int_eq(count_lines("sqlite", EVBUS_LOG_ERROR, NULL, NULL), 1);
    int pub_lines = count_lines("sqlite", EVBUS_LOG_WARN, "publish", NULL);
    int fetch_lines = count_lines("core", 0, "fetch", NULL) +
                      count_lines("sqlite", 0, "fetch", NULL);
    if (pub_lines > 5 || fetch_lines > 5)
        dump_lines();
    ck_assert_int_le(pub_lines, 5);
    ck_assert_int_le(fetch_lines, 5);

    /* Another process creating the path gets a file of its own. */
    evbus_t *fresh = open_at(dbpath, NULL);
    ck_assert_int_eq(evbus_publish(fresh, "t", ev), EVBUS_OK);
    evbus_close(fresh);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

START_TEST(replaced_file_is_detected)
{
    char other[400];
    snprintf(other, sizeof other, "%s/other.db", tmpdir);
    evbus_t *bus = open_at(dbpath, "?poll_interval_ms=20");
    evbus_t *b2 = open_at(other, NULL);
    evbus_close(b2);
    remove_db(dbpath); /* the -wal/-shm would not match the new file */
    ck_assert_int_eq(rename(other, dbpath), 0);
    ck_assert_int_eq(publish_until_failure(bus), EVBUS_EIO);
    int errors = count_lines("sqlite", EVBUS_LOG_ERROR, dbpath, "replaced");
    if (errors != 1)
        dump_lines();
    ck_assert_int_eq(errors, 1);
    evbus_close(bus);
}
END_TEST

START_TEST(disk_full_is_reported_with_the_path)
{
    evbus_t *bus = open_at(dbpath, "?max_db_bytes=131072");
    char payload[3000];
    memset(payload, 'x', sizeof payload);
    int rc = EVBUS_OK, ok = 0;
    for (int i = 0; i < 1000 && rc == EVBUS_OK; i++)
        if ((rc = evbus_publish_raw(bus, "t", payload, sizeof payload)) ==
            EVBUS_OK)
            ok++;
    ck_assert_int_eq(rc, EVBUS_EIO);
    ck_assert_int_gt(ok, 0);
    int full = count_lines("sqlite", EVBUS_LOG_WARN, "disk full", dbpath);
    if (full != 1)
        dump_lines();
    ck_assert_int_eq(full, 1);
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(evbus_publish_raw(bus, "t", payload, sizeof payload),
                         EVBUS_EIO);
    int lines_now = count_lines("sqlite", EVBUS_LOG_WARN, "publish", NULL);
    ck_assert_int_le(lines_now, 5); /* not one per call */
    /* Small events may still fit where the big ones did not: the events
     * written before are all there. */
    evbus_close(bus);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM evbus_events",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), ok);
    sqlite3_finalize(st);
    sqlite3_close(db);
}
END_TEST

/* A consumer whose fetch keeps failing (another process holds the write
 * lock longer than busy_timeout_ms): the cause is logged once by the
 * backend, the repeats are counted by the core, not a line per poll. */
START_TEST(failing_fetch_logs_its_cause_once)
{
    evbus_t *bus = open_at(dbpath, "?busy_timeout_ms=0");
    evbus_event_t *ev = event();
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", count_handler, NULL));
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    int before = handled;
    for (int i = 0; i < 300; i++)
        evbus_poll(bus, 1);
    ck_assert_int_eq(handled, before);
    int cause = count_lines("sqlite", EVBUS_LOG_WARN, "fetch", dbpath);
    int core = count_lines("core", 0, "fetch", NULL);
    if (cause != 1 || core > 5)
        dump_lines();
    ck_assert_int_eq(cause, 1);
    ck_assert_int_ge(core, 1);
    ck_assert_int_le(core, 5);
    /* The lock goes away: the event is handled, and the recovery said. */
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    for (int i = 0; i < 2000 && handled == before; i++)
        evbus_poll(bus, 10);
    ck_assert_int_eq(handled, before + 1);
    evbus_close(bus);
}
END_TEST

/* The handler takes the write lock from another connection and keeps it:
 * its ACK cannot be written, the watcher retries every 100 ms. */
static sqlite3 *locker;
static evbus_result_t lock_then_ack(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (void)opaque;
    ck_assert_int_eq(sqlite3_open(dbpath, &locker), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    handled++;
    return EVBUS_ACK;
}

static long long pending_rows(void)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM "
                                        "evbus_pending",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

START_TEST(failing_ack_writes_are_rate_limited)
{
    evbus_t *bus = open_at(dbpath, "?busy_timeout_ms=0");
    evbus_event_t *ev = event();
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", lock_then_ack, NULL));
    for (int i = 0; i < 2000 && handled < 1; i++) /* hang guard */
        evbus_poll(bus, 10);
    ck_assert_int_eq(handled, 1);
    /* About a second of retries (ten or so) while the lock is held. */
    for (int i = 0; i < 100; i++)
        evbus_poll(bus, 10);
    int failed = count_lines("sqlite", EVBUS_LOG_WARN,
                             "writing acknowledgements failed", dbpath);
    if (failed < 1 || failed > 2)
        dump_lines();
    ck_assert_int_ge(failed, 1);
    ck_assert_int_le(failed, 2);
    ck_assert_int_eq(pending_rows(), 1);
    sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(locker);
    for (int i = 0; i < 3000 && pending_rows() > 0; i++) /* hang guard */
        evbus_poll(bus, 10);
    ck_assert_int_eq(pending_rows(), 0);
    ck_assert_int_eq(handled, 1);
    evbus_close(bus);
}
END_TEST

int main(void)
{
    TCase *tc = tcase_create("file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, deleted_file_fails_publish_and_fetch);
    tcase_add_test(tc, replaced_file_is_detected);
    tcase_add_test(tc, disk_full_is_reported_with_the_path);
    tcase_add_test(tc, failing_fetch_logs_its_cause_once);
    tcase_add_test(tc, failing_ack_writes_are_rate_limited);
    return tmpdb_run("sqlite-file", tc);
}
