#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "tmpdir.h"

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void open_orch(harness_t *h, void (*tweak)(evbus_saga_opts_t *o))
{
    evbus_saga_opts_t o;
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    o.now_ms = fake_now;
    o.clock_opaque = &h->clock;
    /* deterministic backoff: 1 s, 2 s, 4 s ... */
    evbus_retry_policy_t rp;
    evbus_retry_policy_init(&rp);
    rp.initial_ms = 1000;
    rp.max_ms = 60000;
    rp.jitter = EVBUS_JITTER_NONE;
    rp.max_attempts = 3;
    o.compensation_retry = &rp;
    if (tweak)
        tweak(&o);
    char err[256] = "";
    h->orch = evbus_saga_orch_open(h->db, NULL, "orders", &o, err, sizeof err);
    ck_assert_msg(h->orch != NULL, "%s", err);
}

void h_open(harness_t *h, void (*tweak)(evbus_saga_opts_t *o))
{
    memset(h, 0, sizeof *h);
    atomic_store(&h->clock.now, wall_ms());
    h->dir = tmp_dir();
    h->db_path = tmp_path(h->dir, "orders.db");
    h->db = app_db_open(h->db_path);
    open_orch(h, tweak);
}

void h_reopen(harness_t *h, void (*tweak)(evbus_saga_opts_t *o))
{
    evbus_saga_orch_close(h->orch);
    open_orch(h, tweak);
}

void h_close(harness_t *h)
{
    evbus_saga_orch_close(h->orch);
    sqlite3_close(h->db);
    tmp_rm(h->dir);
    free(h->db_path);
    free(h->dir);
}

void h_register(harness_t *h, evbus_saga_def_t *d)
{
    char err[256] = "";
    ck_assert_msg(evbus_saga_orch_register(h->orch, d, err, sizeof err) ==
                      EVBUS_OK,
                  "%s", err);
    evbus_saga_def_free(d);
}

evbus_event_t *h_next_cmd(harness_t *h, char topic[64])
{
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(h->db,
                                        "SELECT seq, topic, event FROM"
                                        " evbus_outbox WHERE seq > ?1"
                                        " ORDER BY seq LIMIT 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, h->cursor);
    evbus_event_t *ev = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        h->cursor = sqlite3_column_int64(st, 0);
        snprintf(topic, 64, "%s", sqlite3_column_text(st, 1));
        const char *json = (const char *)sqlite3_column_text(st, 2);
        char err[256];
        ev = evbus_event_from_json(json, strlen(json), err, sizeof err);
        ck_assert_msg(ev != NULL, "outbox row: %s", err);
    }
    sqlite3_finalize(st);
    return ev;
}

evbus_event_t *h_expect_cmd(harness_t *h, const char *topic, int step,
                            const char *kind)
{
    char t[64];
    evbus_event_t *ev = h_next_cmd(h, t);
    ck_assert_msg(ev != NULL, "expected a command to %s, got none", topic);
    ck_assert_str_eq(t, topic);
    char s[16];
    snprintf(s, sizeof s, "%d", step);
    ck_assert_str_eq(evbus_event_ext(ev, "sagastep"), s);
    ck_assert_str_eq(evbus_event_ext(ev, "sagakind"), kind);
    return ev;
}

void h_expect_no_cmd(harness_t *h)
{
    char t[64];
    evbus_event_t *ev = h_next_cmd(h, t);
    ck_assert_msg(ev == NULL, "unexpected command to %s (%s)", t,
                  ev ? evbus_event_type(ev) : "");
}

int h_reply(harness_t *h, evbus_event_t *cmd, int outcome, const char *data,
            const char *reason)
{
    evbus_event_t *r = evbus_saga_reply_new(cmd, outcome, data, reason,
                                            "/test/participant");
    ck_assert_ptr_nonnull(r);
    int rc = evbus_saga_on_reply(h->orch, r);
    evbus_event_free(r);
    evbus_event_free(cmd);
    return rc;
}

void h_advance(harness_t *h, uint64_t ms)
{
    fake_advance(&h->clock, ms);
}

int h_state(harness_t *h, const char *id)
{
    return evbus_saga_state_of(h->db, id);
}

const char *h_history(harness_t *h, const char *id)
{
    static char buf[4096];
    buf[0] = 0;
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(h->db,
                                        "SELECT event FROM evbus_saga_history"
                                        " WHERE saga_id = ?1 ORDER BY seq",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "",
                 sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return buf;
}

const char *h_col(harness_t *h, const char *query, const char *id)
{
    static char buf[4096];
    sqlite3_stmt *st;
    ck_assert_msg(sqlite3_prepare_v2(h->db, query, -1, &st, NULL) ==
                      SQLITE_OK,
                  "%s: %s", query, sqlite3_errmsg(h->db));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "%s: no row", query);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, sizeof buf, "%s", t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
    return buf;
}

void h_cmd_step(evbus_saga_def_t *d, const char *name, const char *topic,
                const char *comp_topic, int64_t deadline_ms)
{
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = name;
    s.topic = topic;
    s.comp_topic = comp_topic;
    s.deadline_ms = deadline_ms;
    char err[256] = "";
    ck_assert_msg(evbus_saga_def_add_step(d, &s, err, sizeof err) == EVBUS_OK,
                  "%s", err);
}
