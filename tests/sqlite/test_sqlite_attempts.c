/*
 * sqlite:// durable attempts (schema version 2) on the backend table itself:
 * a file written by the version 1 layout is migrated at open and keeps its
 * events, leases and groups; a file of an unknown newer version is refused;
 * the retry context recorded before a handler call survives a SIGKILL of
 * the recording process, is reported by the next fetch, kept by RELEASE
 * and RETRY (which stores its delay), and never charged for a hand-out
 * that reached no handler.
 */
#include <check.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "tmpdb.h"

static void setup(void) { tmpdb_setup("sqlite-attempts"); }

static void teardown(void) { tmpdb_teardown(); }

static void exec_sql(const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

/* One integer from the file, read with a connection of our own. */
static long long query_int(const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static evbus_t *open_bus(const char *query)
{
    char url[400], err[256] = "";
    snprintf(url, sizeof url, "sqlite://%s%s", dbpath, query ? query : "");
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    return bus;
}

/* Fetches until one message arrives; a hang guard only. */
static void fetch_one(evbus_t *bus, void *sub, evbus_msg_t *m)
{
    for (int i = 0; i < 4000; i++) {
        memset(m, 0, sizeof *m);
        int n = bus->be->fetch(bus->priv, sub, m, 1);
        ck_assert_int_ge(n, 0);
        if (n == 1)
            return;
        usleep(5000);
    }
    ck_abort_msg("no message within the hang guard");
}

/* The layout of schema version 1, as libevbus 0.2 wrote it, with one
 * event a member held when it stopped and one nobody fetched yet. */
static const char v1_file[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE evbus_meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
    "INSERT INTO evbus_meta VALUES('schema', '1');"
    "CREATE TABLE evbus_topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL"
    " UNIQUE);"
    "CREATE TABLE evbus_events(seq INTEGER PRIMARY KEY, topic_id INTEGER NOT"
    " NULL, created_ms INTEGER NOT NULL, payload BLOB NOT NULL);"
    "CREATE INDEX evbus_events_by_topic ON evbus_events(topic_id, seq);"
    "CREATE TABLE evbus_groups(id INTEGER PRIMARY KEY, topic_id INTEGER NOT"
    " NULL, name TEXT NOT NULL, cursor INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE(topic_id, name));"
    "CREATE TABLE evbus_pending(gid INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " visible_at INTEGER NOT NULL, deliveries INTEGER NOT NULL, owner INTEGER"
    " NOT NULL, PRIMARY KEY(gid, seq)) WITHOUT ROWID;"
    "CREATE INDEX evbus_pending_due ON evbus_pending(gid, visible_at);"
    "INSERT INTO evbus_topics VALUES(1, 't');"
    "INSERT INTO evbus_events VALUES(1, 1, 0, 'old0');"
    "INSERT INTO evbus_events VALUES(2, 1, 0, 'old1');"
    "INSERT INTO evbus_groups VALUES(1, 1, 'g', 1);"
    "INSERT INTO evbus_pending VALUES(1, 1, 0, 2, 42);";

START_TEST(version_1_file_is_migrated_and_keeps_working)
{
    exec_sql(v1_file);
    evbus_t *bus = open_bus(NULL);
    ck_assert_int_eq(query_int("SELECT value FROM evbus_meta WHERE "
                               "key='schema'"),
                     2);
    ck_assert_int_eq(query_int("SELECT count(*) FROM pragma_table_info("
                               "'evbus_pending') WHERE name IN ('attempts',"
                               " 'prev_delay_ms', 'first_attempt_ms')"),
                     3);
    /* A second bus on the migrated file opens too (no second migration). */
    evbus_t *other = open_bus(NULL);
    evbus_close(other);

    const evbus_backend_t *be = bus->be;
    void *s;
    char err[256];
    ck_assert_int_eq(be->subscribe(bus->priv, "t", "g", &s, err, sizeof err),
                     EVBUS_OK);
    evbus_msg_t m[4];
    memset(m, 0, sizeof m);
    ck_assert_int_eq(be->fetch(bus->priv, s, m, 4), 2);
    ck_assert_int_eq((int)m[0].len, 4);
    ck_assert(memcmp(m[0].payload, "old0", 4) == 0);
    ck_assert_int_eq(m[0].attempts, 0); /* old hand-outs are not attempts */
    ck_assert(memcmp(m[1].payload, "old1", 4) == 0);
    evbus_msg_t *rec[2] = {&m[0], &m[1]};
    m[0].attempts = m[1].attempts = 1;
    m[0].first_attempt_ms = m[1].first_attempt_ms = 99;
    ck_assert_int_eq(be->record_attempts(bus->priv, s, rec, 2), EVBUS_OK);
    ck_assert_int_eq(query_int("SELECT sum(attempts) FROM evbus_pending"), 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(be->settle(bus->priv, s, &m[i], EVBUS_SETTLE_ACK, 0),
                         EVBUS_OK);
    ck_assert_int_eq(be->fetch(bus->priv, s, m, 4), 0); /* writes the acks */
    ck_assert_int_eq(query_int("SELECT count(*) FROM evbus_pending"), 0);
    be->unsubscribe(bus->priv, s);
    evbus_close(bus);
}
END_TEST

START_TEST(newer_schema_is_refused)
{
    exec_sql(v1_file);
    exec_sql("UPDATE evbus_meta SET value='3' WHERE key='schema'");
    char url[400], err[256] = "";
    snprintf(url, sizeof url, "sqlite://%s", dbpath);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "schema version 3") != NULL, "%s", err);
}
END_TEST

START_TEST(recorded_attempt_survives_sigkill)
{
    /* The first member records attempt 3 and dies in the handler. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        evbus_t *bus = open_bus("?visibility_timeout_ms=200");
        if (evbus_publish_raw(bus, "t", "poison", 6) != EVBUS_OK)
            _exit(2);
        void *s;
        char err[256];
        evbus_msg_t m, *mp = &m;
        if (bus->be->subscribe(bus->priv, "t", "g", &s, err, sizeof err) !=
                EVBUS_OK ||
            bus->be->fetch(bus->priv, s, &m, 1) != 1)
            _exit(3);
        m.attempts = 3;
        m.prev_delay_ms = 40;
        m.first_attempt_ms = 777;
        if (bus->be->record_attempts(bus->priv, s, &mp, 1) != EVBUS_OK)
            _exit(4);
        raise(SIGKILL);
        _exit(5);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child status %d", status);

    /* The next member gets it once the lease ran out, context intact. */
    evbus_t *bus = open_bus("?visibility_timeout_ms=200");
    const evbus_backend_t *be = bus->be;
    void *s;
    char err[256];
    ck_assert_int_eq(be->subscribe(bus->priv, "t", "g", &s, err, sizeof err),
                     EVBUS_OK);
    evbus_msg_t m;
    fetch_one(bus, s, &m);
    ck_assert_int_eq(m.attempts, 3);
    ck_assert_int_eq(m.prev_delay_ms, 40);
    ck_assert_int_eq(m.first_attempt_ms, 777);
    ck_assert_int_eq(m.delivery_count, 0);

    /* Handed back without a handler call: nothing charged. */
    ck_assert_int_eq(be->settle(bus->priv, s, &m, EVBUS_SETTLE_RELEASE, 0),
                     EVBUS_OK);
    fetch_one(bus, s, &m);
    ck_assert_int_eq(m.attempts, 3);
    ck_assert_int_eq(m.first_attempt_ms, 777);

    /* Attempt 4 answered RETRY: the delay is stored, attempts and first
     * attempt are kept, and it stays invisible for the delay. */
    evbus_msg_t *mp = &m;
    m.attempts = 4;
    ck_assert_int_eq(be->record_attempts(bus->priv, s, &mp, 1), EVBUS_OK);
    ck_assert_int_eq(be->settle(bus->priv, s, &m, EVBUS_SETTLE_RETRY, 600000),
                     EVBUS_OK);
    evbus_msg_t none;
    ck_assert_int_eq(be->fetch(bus->priv, s, &none, 1), 0);
    ck_assert_int_eq(query_int("SELECT attempts FROM evbus_pending"), 4);
    ck_assert_int_eq(query_int("SELECT prev_delay_ms FROM evbus_pending"),
                     600000);
    ck_assert_int_eq(query_int("SELECT first_attempt_ms FROM evbus_pending"),
                     777);
    be->unsubscribe(bus->priv, s);
    evbus_close(bus);

    /* ... and after a reopen. */
    bus = open_bus(NULL);
    evbus_close(bus);
    ck_assert_int_eq(query_int("SELECT attempts FROM evbus_pending"), 4);
}
END_TEST

START_TEST(retry_delay_becomes_prev_delay)
{
    evbus_t *bus = open_bus(NULL);
    const evbus_backend_t *be = bus->be;
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "x", 1), EVBUS_OK);
    void *s;
    char err[256];
    ck_assert_int_eq(be->subscribe(bus->priv, "t", "g", &s, err, sizeof err),
                     EVBUS_OK);
    evbus_msg_t m, *mp = &m;
    fetch_one(bus, s, &m);
    ck_assert_int_eq(m.attempts, 0);
    ck_assert_int_eq(m.first_attempt_ms, 0);
    m.attempts = 1;
    m.first_attempt_ms = 5;
    ck_assert_int_eq(be->record_attempts(bus->priv, s, &mp, 1), EVBUS_OK);
    ck_assert_int_eq(be->settle(bus->priv, s, &m, EVBUS_SETTLE_RETRY, 50),
                     EVBUS_OK);
    fetch_one(bus, s, &m);
    ck_assert_int_eq(m.attempts, 1);
    ck_assert_int_eq(m.prev_delay_ms, 50);
    ck_assert_int_eq(m.first_attempt_ms, 5);
    ck_assert_int_eq(be->settle(bus->priv, s, &m, EVBUS_SETTLE_ACK, 0),
                     EVBUS_OK);
    be->unsubscribe(bus->priv, s);
    evbus_close(bus);
}
END_TEST

static int calls, seen_attempt[8];
static evbus_result_t retry_twice(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (void)opaque;
    if (calls < 8)
        seen_attempt[calls] = evbus_delivery_attempt();
    return ++calls < 3 ? EVBUS_RETRY : EVBUS_ACK;
}

/* attempts=memory: nothing is written per handler call (the backend
 * answers ENOTSUP) and the core counts in memory, across the broker-side
 * retries too. */
START_TEST(attempts_in_memory_option)
{
    char url[400], err[256] = "";
    snprintf(url, sizeof url, "sqlite://%s?attempts=sometimes", dbpath);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "attempts=sometimes"), "%s", err);

    evbus_t *bus = open_bus("?attempts=memory");
    ck_assert_int_eq(evbus_publish_raw(bus, "raw", "x", 1), EVBUS_OK);
    void *s;
    ck_assert_int_eq(
        bus->be->subscribe(bus->priv, "raw", "g", &s, err, sizeof err),
        EVBUS_OK);
    evbus_msg_t m, *mp = &m;
    fetch_one(bus, s, &m);
    m.attempts = 1;
    ck_assert_int_eq(bus->be->record_attempts(bus->priv, s, &mp, 1),
                     EVBUS_ENOTSUP);
    ck_assert_int_eq(query_int("SELECT attempts FROM evbus_pending"), 0);
    ck_assert_int_eq(bus->be->settle(bus->priv, s, &m, EVBUS_SETTLE_ACK, 0),
                     EVBUS_OK);
    bus->be->unsubscribe(bus->priv, s);

    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 10;
    retry.max_ms = 10;
    retry.max_attempts = 5;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    o.retry = &retry;
    evbus_event_t *ev = evbus_event_new("test.attempts", "/test");
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_ptr_nonnull(evbus_subscribe_opts(bus, "t", "g", &o, retry_twice,
                                               NULL, err, sizeof err));
    for (int i = 0; i < 3000 && calls < 3; i++) /* hang guard */
        evbus_poll(bus, 10);
    ck_assert_int_eq(calls, 3);
    ck_assert_int_eq(seen_attempt[0], 1);
    ck_assert_int_eq(seen_attempt[1], 2);
    ck_assert_int_eq(seen_attempt[2], 3);
    evbus_close(bus);
}
END_TEST

int main(void)
{
    TCase *tc = tcase_create("attempts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, version_1_file_is_migrated_and_keeps_working);
    tcase_add_test(tc, newer_schema_is_refused);
    tcase_add_test(tc, recorded_attempt_survives_sigkill);
    tcase_add_test(tc, retry_delay_becomes_prev_delay);
    tcase_add_test(tc, attempts_in_memory_option);
    return tmpdb_run("sqlite-attempts", tc);
}
