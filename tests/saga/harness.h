/*
 * A deterministic stage for the saga state machine: an orchestrator on a
 * temporary database with a fake clock, no bus (subscribe = 0,
 * run_relay = 0), commands read back from its outbox table and replies fed
 * with evbus_saga_on_reply. Everything runs on the test's thread.
 */
#ifndef SAGA_TEST_HARNESS_H
#define SAGA_TEST_HARNESS_H

#include <stdint.h>

#include <evbus/saga.h>

#include "fake_clock.h"

typedef struct {
    char *dir, *db_path;
    sqlite3 *db;
    evbus_saga_orch_t *orch;
    fake_clock_t clock;
    long long cursor; /* last evbus_outbox seq read */
} harness_t;

/* Opens the stage; tweak (may be NULL) adjusts the options first. The fake
 * clock starts at the real wall clock (evbus_saga_resume stamps real
 * time). */
void h_open(harness_t *h, void (*tweak)(evbus_saga_opts_t *o));
/* Closes and reopens the orchestrator on the same database (a restart). */
void h_reopen(harness_t *h, void (*tweak)(evbus_saga_opts_t *o));
void h_close(harness_t *h);
void h_register(harness_t *h, evbus_saga_def_t *d); /* frees d */

/* The next command the orchestrator wrote, or NULL; its topic into
 * topic[64]. The caller frees the event. */
evbus_event_t *h_next_cmd(harness_t *h, char topic[64]);
/* Asserts the next command goes to topic and is `kind` of `step`; returns
 * it. */
evbus_event_t *h_expect_cmd(harness_t *h, const char *topic, int step,
                            const char *kind);
/* Asserts that no command is waiting. */
void h_expect_no_cmd(harness_t *h);
/* Replies to cmd (freed) and returns what the orchestrator answered. */
int h_reply(harness_t *h, evbus_event_t *cmd, int outcome, const char *data,
            const char *reason);

void h_advance(harness_t *h, uint64_t ms);
int h_state(harness_t *h, const char *id);
/* The instance's history events joined by ',' into a static buffer. */
const char *h_history(harness_t *h, const char *id);
/* Column of evbus_saga or evbus_saga_step as text, static buffer. */
const char *h_col(harness_t *h, const char *query, const char *id);

/* A definition step helper: command step with optional compensation. */
void h_cmd_step(evbus_saga_def_t *d, const char *name, const char *topic,
                const char *comp_topic, int64_t deadline_ms);

#endif
