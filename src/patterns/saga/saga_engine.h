/*
 * What the state machine's files share (saga_engine.c: forward steps,
 * replies, timers; saga_comp.c: compensation; saga_command.c: commands and
 * local steps). Every function runs inside the transaction of one
 * transition and changes the instance in memory; the caller writes the
 * instance row and commits. They return EVBUS_OK or a negative error, on
 * which the caller rolls the transition back.
 */
#ifndef EVBUS_PATTERNS_SAGA_ENGINE_H
#define EVBUS_PATTERNS_SAGA_ENGINE_H

#include "saga_internal.h"

/* Writes the command of step k into the outbox. EVBUS_OK when written, 1
 * when it cannot be built or was refused (the reason in why: the step
 * fails), a negative error otherwise. */
int evbus__saga_send(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                     const saga_inst_t *in, int k, saga_kind_t kind,
                     int attempt, char *why, size_t n);

/* Runs a local step function in a SAVEPOINT (released on success, rolled
 * back otherwise). EVBUS_SAGA_SUCCESS, EVBUS_SAGA_FAILURE (ans->reason
 * set), or a negative SQLite-level error. */
int evbus__saga_run_local(evbus_saga_orch_t *o, evbus_saga_local_fn fn,
                          const saga_inst_t *in, void *opaque,
                          evbus_saga_answer_t *ans);

/* Writes one history row of the instance; from/to -1 = no state change. */
int evbus__saga_note(evbus_saga_orch_t *o, saga_inst_t *in, int64_t now,
                     int step, const char *event, int from, int to,
                     const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Starts compensating: state COMPENSATING with reason, then the steps that
 * took effect from step `from` down. */
int evbus__saga_begin_comp(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                           saga_inst_t *in, int64_t now, int from,
                           const char *reason);
/* Compensates from step k down: the next step that needs it, or the end
 * state COMPENSATED. */
int evbus__saga_comp_next(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                          saga_inst_t *in, int64_t now, int k);
/* One attempt (in->attempt) of the compensation of step in->step: EVBUS_OK
 * when it waits (command sent, retry scheduled, or parked), 1 when a local
 * compensation succeeded, or a negative error. */
int evbus__saga_comp_attempt(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                             saga_inst_t *in, int64_t now);
/* The current compensation attempt failed: schedules the next or parks. */
int evbus__saga_comp_failed(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, int64_t now, const char *why);

#endif
