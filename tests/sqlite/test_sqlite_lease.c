/*
 * sqlite:// lease semantics tested on the backend table itself (through the
 * static library's internals), where the core's pipeline cannot hide them:
 * two members of one group, exclusive leases, RELEASE not counting an
 * attempt, RETRY counting one and waiting its delay, lease expiry handing
 * events to the other member, a stale member unable to change a lease it
 * lost, and leases renewed while the poller makes progress.
 */
#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "tmpdb.h"

static void setup(void) { tmpdb_setup("evbus-sqlite-lease"); }

static void teardown(void) { tmpdb_teardown(); }

static long pending_rows(void)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM "
                                            "evbus_pending", -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The payload of m as a string ("e0"). */
static const char *body(const evbus_msg_t *m)
{
    static char buf[16];
    snprintf(buf, sizeof buf, "%.*s", (int)m->len, (const char *)m->payload);
    return buf;
}

static void wait_ms(int ms) { usleep((useconds_t)ms * 1000); }

START_TEST(two_members_share_leases)
{
    char url[400], err[256];
    snprintf(url, sizeof url, "sqlite://%s?visibility_timeout_ms=1000",
             dbpath);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    const evbus_backend_t *be = bus->be;
    void *priv = bus->priv;
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "e0", 2), EVBUS_OK);
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "e1", 2), EVBUS_OK);
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "e2", 2), EVBUS_OK);

    void *a, *b;
    ck_assert_int_eq(be->subscribe(priv, "t", "g", &a, err, sizeof err),
                     EVBUS_OK);
    ck_assert_int_eq(be->subscribe(priv, "t", "g", &b, err, sizeof err),
                     EVBUS_OK);

    /* a leases two, b gets only the third. */
    evbus_msg_t ma[8], mb[8], mc[8];
    memset(ma, 0, sizeof ma);
    ck_assert_int_eq(be->fetch(priv, a, ma, 2), 2);
    ck_assert_str_eq(body(&ma[0]), "e0");
    ck_assert_str_eq(body(&ma[1]), "e1");
    ck_assert_int_eq(ma[0].attempts, 0); /* never handed to a handler */
    ck_assert_str_eq(ma[0].topic, "t");
    ck_assert_int_eq(be->fetch(priv, b, mb, 8), 1);
    ck_assert_str_eq(body(&mb[0]), "e2");
    ck_assert_int_eq(be->fetch(priv, b, mc, 8), 0); /* all leased */

    /* RELEASE: visible at once, not counted. RETRY: after its delay, with
     * the attempt recorded before the handler ran and the delay. */
    ck_assert_int_eq(be->settle(priv, a, &ma[0], EVBUS_SETTLE_RELEASE, 0),
                     EVBUS_OK);
    evbus_msg_t *rec = &ma[1];
    rec->attempts = 1;
    rec->first_attempt_ms = 1234567;
    ck_assert_int_eq(be->record_attempts(priv, a, &rec, 1), EVBUS_OK);
    ck_assert_int_eq(be->settle(priv, a, &ma[1], EVBUS_SETTLE_RETRY, 300),
                     EVBUS_OK);
    ck_assert_int_eq(be->fetch(priv, b, mc, 8), 1);
    ck_assert_str_eq(body(&mc[0]), "e0");
    ck_assert_int_eq(mc[0].attempts, 0);
    ck_assert_int_eq(be->fetch(priv, b, mc + 1, 7), 0); /* e1 waits */
    wait_ms(400);
    ck_assert_int_eq(be->fetch(priv, b, mc + 1, 7), 1);
    ck_assert_str_eq(body(&mc[1]), "e1");
    ck_assert_int_eq(mc[1].attempts, 1);
    ck_assert_int_eq(mc[1].prev_delay_ms, 300);
    ck_assert_int_eq(mc[1].first_attempt_ms, 1234567);

    /* The bus stops making progress (no fetch or settle, as if its
     * poller hung): renewals stop, and once the last renewed lease ran
     * out (within two timeouts) a gets all three. Leases are not
     * attempts: only e1's recorded handler call counts. */
    ck_assert_int_eq(be->fetch(priv, a, ma, 8), 0);
    wait_ms(2400);
    int n = be->fetch(priv, a, ma, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(body(&ma[0]), "e0");
    ck_assert_int_eq(ma[0].attempts, 0);
    ck_assert_str_eq(body(&ma[1]), "e1");
    ck_assert_int_eq(ma[1].attempts, 1);
    ck_assert_str_eq(body(&ma[2]), "e2");
    ck_assert_int_eq(ma[2].attempts, 0);

    /* b's lease is gone: its RETRY/RELEASE change nothing. */
    ck_assert_int_eq(be->settle(priv, b, &mb[0], EVBUS_SETTLE_RETRY, 0),
                     EVBUS_OK);
    ck_assert_int_eq(be->settle(priv, b, &mc[0], EVBUS_SETTLE_RELEASE, 0),
                     EVBUS_OK);
    ck_assert_int_eq(be->fetch(priv, b, mc, 1), 0);
    /* b's late ACK of e1 still removes it (the work was done). */
    ck_assert_int_eq(be->settle(priv, b, &mc[1], EVBUS_SETTLE_ACK, 0),
                     EVBUS_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(be->settle(priv, a, &ma[i], EVBUS_SETTLE_ACK, 0),
                         EVBUS_OK);
    ck_assert_int_eq(be->fetch(priv, a, ma, 8), 0); /* writes the acks */
    ck_assert_int_eq(pending_rows(), 0);
    ck_assert_int_eq(be->fetch(priv, b, mb, 8), 0);

    be->unsubscribe(priv, a);
    be->unsubscribe(priv, b);
    evbus_close(bus);
}
END_TEST

/* Settles written by the watcher when no fetch follows. */
START_TEST(settles_are_written_without_a_fetch)
{
    char url[400], err[256];
    snprintf(url, sizeof url, "sqlite://%s", dbpath);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    const evbus_backend_t *be = bus->be;
    void *priv = bus->priv;
    ck_assert_int_eq(evbus_publish_raw(bus, "t", "x", 1), EVBUS_OK);
    void *a;
    ck_assert_int_eq(be->subscribe(priv, "t", "g", &a, err, sizeof err),
                     EVBUS_OK);
    evbus_msg_t m[2];
    ck_assert_int_eq(be->fetch(priv, a, m, 2), 1);
    ck_assert_int_eq(pending_rows(), 1);
    ck_assert_int_eq(be->settle(priv, a, &m[0], EVBUS_SETTLE_ACK, 0),
                     EVBUS_OK);
    for (int i = 0; i < 100 && pending_rows() != 0; i++)
        wait_ms(10);
    ck_assert_int_eq(pending_rows(), 0);
    be->unsubscribe(priv, a);
    evbus_close(bus);
}
END_TEST

/* A member that works slowly through a big batch keeps it: its leases are
 * renewed while it makes progress, so no other member gets those events. */
START_TEST(leases_renewed_while_making_progress)
{
    char url[400], err[256];
    snprintf(url, sizeof url, "sqlite://%s?visibility_timeout_ms=600",
             dbpath);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    evbus_t *other = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus && other, "%s", err);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(evbus_publish_raw(bus, "t", "x", 1), EVBUS_OK);
    const evbus_backend_t *be = bus->be;
    void *a, *b;
    ck_assert_int_eq(be->subscribe(bus->priv, "t", "g", &a, err, sizeof err),
                     EVBUS_OK);
    ck_assert_int_eq(
        be->subscribe(other->priv, "t", "g", &b, err, sizeof err), EVBUS_OK);
    evbus_msg_t m[10], mb[10];
    ck_assert_int_eq(be->fetch(bus->priv, a, m, 10), 10);
    /* 10 x 150 ms of work: more than two visibility timeouts. */
    for (int i = 0; i < 10; i++) {
        wait_ms(150);
        ck_assert_int_eq(be->fetch(other->priv, b, mb, 10), 0);
        ck_assert_int_eq(
            be->settle(bus->priv, a, &m[i], EVBUS_SETTLE_ACK, 0), EVBUS_OK);
    }
    ck_assert_int_eq(be->fetch(bus->priv, a, m, 10), 0);
    ck_assert_int_eq(pending_rows(), 0);
    be->unsubscribe(bus->priv, a);
    be->unsubscribe(other->priv, b);
    evbus_close(bus);
    evbus_close(other);
}
END_TEST

int main(void)
{
    TCase *tc = tcase_create("lease");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, two_members_share_leases);
    tcase_add_test(tc, settles_are_written_without_a_fetch);
    tcase_add_test(tc, leases_renewed_while_making_progress);
    return tmpdb_run("sqlite-lease", tc);
}
