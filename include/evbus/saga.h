/*
 * Sagas: multi-step workflows across services that compensate on failure,
 * orchestrated from SQLite and crash-safe on the outbox and the inbox.
 *
 * A saga definition (evbus_saga_def_t) names ordered steps. Each step has an
 * action - a command event published to a participant's topic, or a local
 * function run inside the orchestrator's transaction - an optional
 * compensation of the same two kinds, and a deadline for the participant's
 * reply. An orchestrator (evbus_saga_orch_t) runs instances of registered
 * definitions: it sends a step's command, waits for the reply, merges the
 * reply's data into the instance's JSON data and moves to the next step.
 * A failure reply, or a deadline passing, compensates every step that took
 * effect, in reverse order, one at a time; compensations are retried with a
 * backoff policy until they succeed or the attempts run out, which parks the
 * instance as FAILED with the reason. End states: COMPLETED, COMPENSATED,
 * FAILED.
 *
 * Crash safety. The instance's state lives in the application's SQLite
 * database, next to evbus_outbox and evbus_inbox. Taking a reply (an inbox
 * claim, so a duplicated reply is absorbed), moving the state and writing
 * the next command into the outbox is ONE transaction; deadlines and retry
 * times are stored in the row, not held in memory. An orchestrator killed at
 * any moment and restarted continues every instance where its last commit
 * left it: a command is in the outbox exactly once (the relay may send it
 * again with the same id, which the participant's inbox absorbs), and a
 * compensation that was due is sent when the orchestrator runs again.
 *
 * The protocol. Commands carry these CloudEvents extensions:
 *   sagaid       the instance id
 *   sagastep     the step's index (0-based)
 *   sagakind     "action" or "compensation"
 *   sagaattempt  the attempt (1 for an action; compensations count up)
 *   sagareplyto  the topic the reply goes to
 * and partitionkey = sagaid (per-instance order on Kafka). A reply copies
 * the first four, adds sagaoutcome ("success" or "failure") and, for a
 * failure, sagareason; its data (a JSON object, optional) is merged into
 * the instance's data on success. evbus_saga_reply_new builds one;
 * evbus_saga_participant_handle does everything a participant needs.
 *
 * Tables (created when missing; schema version in evbus_saga_schema):
 *   evbus_saga          one row per instance: definition, state, current
 *                       step, attempt, data, reason, the next timer (due_at)
 *                       and what it waits for, times, and `steps`: a JSON
 *                       array with each step's name, status, attempts,
 *                       start and end times, deadline and result (the
 *                       reply's data or the reason it failed)
 *   evbus_saga_history  every transition with its time, from/to state and
 *                       a detail line, keyed by (instance, number)
 *   evbus_saga_part     (participants) what each participant did per
 *                       (instance, step): done, failed, compensated,
 *                       cancelled
 * Times are Unix milliseconds from the orchestrator's clock.
 *
 * Threads: an orchestrator and a participant use the application's SQLite
 * connection and follow its rule (one thread at a time); the orchestrator
 * serializes its own calls with a lock the application can share
 * (evbus_saga_lock) so an HTTP thread can start sagas while another thread
 * polls. Step callbacks (local, build, merge) run with that lock held: they
 * may call the orchestrator (the lock is recursive) but must not wait for
 * another thread that does. The log callback never runs with it held.
 */
#ifndef EVBUS_SAGA_H
#define EVBUS_SAGA_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "evbus/evbus.h"
#include "evbus/inbox.h"
#include "evbus/outbox.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- states */

/* The state of an instance. The last three are end states. */
typedef enum {
    EVBUS_SAGA_RUNNING = 0,      /* moving forward through its steps */
    EVBUS_SAGA_COMPENSATING = 1, /* undoing the steps that took effect */
    EVBUS_SAGA_COMPLETED = 2,    /* every step succeeded */
    EVBUS_SAGA_COMPENSATED = 3,  /* a step failed or timed out and every
                                    step that took effect was undone */
    EVBUS_SAGA_FAILED = 4        /* a compensation ran out of attempts (or
                                    could not be built): parked with the
                                    reason, needs a person
                                    (evbus_saga_resume) */
} evbus_saga_state_t;

/* "RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED", or
 * "UNKNOWN". Static string. Thread-safe. */
EVBUS_API const char *evbus_saga_state_name(int state);

/* What an action or compensation answers: a participant's work function, a
 * local step function, and the sagaoutcome of a reply. */
typedef enum {
    EVBUS_SAGA_SUCCESS = 0, /* it took effect (or was undone) */
    EVBUS_SAGA_FAILURE = 1  /* a business refusal ("card declined"): for
                               an action nothing took effect and the saga
                               compensates; for a compensation it is tried
                               again later */
} evbus_saga_outcome_t;

/* ------------------------------------------------------------- answers */

/*
 * What a step function (local step or participant work) hands back besides
 * its outcome: data to merge into the saga's data (success) and a reason
 * (failure). Owned by the library; valid only during the call.
 */
typedef struct evbus_saga_answer evbus_saga_answer_t;

/* Sets the data of the answer: a JSON object (copied), merged into the
 * saga's data as a JSON merge patch (RFC 7386) when the step succeeds.
 * Returns EVBUS_OK, EVBUS_EINVAL (NULL, not a JSON object) or
 * EVBUS_ENOMEM. Same thread as the call that received the answer. */
EVBUS_API int evbus_saga_answer_set_data(evbus_saga_answer_t *a,
                                         const char *json);

/* Sets a one-line reason (copied; invalid UTF-8 and control characters are
 * replaced, and it is cut to 400 bytes). Returns EVBUS_OK, EVBUS_EINVAL or
 * EVBUS_ENOMEM. Same thread as the call that received the answer. */
EVBUS_API int evbus_saga_answer_set_reason(evbus_saga_answer_t *a,
                                           const char *reason);

/* ----------------------------------------------------------- definitions */

/*
 * Builds a command's data (JSON text) from the saga's data. Returns a
 * malloc'd JSON string the library frees with free(), or NULL when it
 * cannot (the step then fails with "build failed"). saga_data stays the
 * library's. Runs on the orchestrator's thread inside its transaction.
 */
typedef char *(*evbus_saga_build_fn)(const char *saga_id,
                                     const char *saga_data, void *opaque);

/*
 * A local step (action or compensation): runs inside the orchestrator's
 * transaction on db, within a SAVEPOINT, so what it writes commits together
 * with the state change - or is rolled back when it answers failure.
 * It must not BEGIN, COMMIT or ROLLBACK itself.
 * Returns EVBUS_SAGA_SUCCESS, EVBUS_SAGA_FAILURE (reason through
 * evbus_saga_answer_set_reason), or a negative evbus error (treated as a
 * failure with the error's name as the reason).
 */
typedef int (*evbus_saga_local_fn)(sqlite3 *db, const char *saga_id,
                                   const char *saga_data,
                                   evbus_saga_answer_t *answer, void *opaque);

/*
 * Computes the saga's new data from a success reply. Returns a malloc'd
 * JSON object text (freed by the library), or NULL to treat the reply as a
 * failure ("merge failed"). The default (merge NULL) applies the reply's
 * data, when it is a JSON object, as a JSON merge patch (RFC 7386).
 */
typedef char *(*evbus_saga_merge_fn)(const char *saga_data,
                                     const evbus_event_t *reply,
                                     void *opaque);

/*
 * One step. Initialise with evbus_saga_step_init and set what you need.
 * The action is either a command (topic set) or local (local set), never
 * both; the compensation likewise (comp_topic or comp_local) or none.
 * Strings are copied by evbus_saga_def_add_step.
 */
typedef struct evbus_saga_step {
    size_t struct_size; /* set by evbus_saga_step_init */
    /* Unique within the saga: 1-64 bytes of letters, digits, '.', '_' or
     * '-'. Required. */
    const char *name;

    /* Command action: the topic the command goes to, its CloudEvents type
     * (default "<saga>.<step>") and how its data is built: template (a
     * JSON object whose string values "$" and "$.a.b" - "$.items.0" for
     * an array element - are replaced by the saga's data and the value at
     * that path; a path that is missing fails the step; "$$x" stands for
     * the text "$x") or build (a callback); neither = the saga's data as
     * it is. */
    const char *topic;
    const char *type;
    const char *template_json;
    evbus_saga_build_fn build;
    /* Local action instead of a command. */
    evbus_saga_local_fn local;

    /* Compensation: a command (comp_topic; type default
     * "<saga>.<step>.compensate"; data from comp_template_json, comp_build,
     * or the saga's data) or a local function. A compensation must be
     * idempotent: it may run again after a crash or a lost reply. */
    const char *comp_topic;
    const char *comp_type;
    const char *comp_template_json;
    evbus_saga_build_fn comp_build;
    evbus_saga_local_fn comp_local;

    /* How long the command's reply may take, in ms; when it passes the
     * step counts as timed out: it may have taken effect, so it is
     * compensated too (with the other steps, in reverse order).
     * 0 = no deadline. Default 60000. Local actions have none. */
    int64_t deadline_ms;
    /* How long a compensation command's reply may take before it counts as
     * a failed attempt (ms, >= 1). Default 30000. */
    int64_t comp_timeout_ms;

    /* How a success reply changes the saga's data; NULL = merge patch. */
    evbus_saga_merge_fn merge;
    /* Passed to build, local, comp_build, comp_local and merge. */
    void *opaque;
} evbus_saga_step_t;

/* Fills s with the defaults (all NULL, deadline 60000 ms, compensation
 * timeout 30000 ms) and sets s->struct_size. Thread-safe. */
EVBUS_API void evbus_saga_step_init_sized(
    evbus_saga_step_t *s, size_t struct_size);
static inline void evbus_saga_step_init(evbus_saga_step_t *s)
{
    evbus_saga_step_init_sized(s, sizeof *s);
}

typedef struct evbus_saga_def evbus_saga_def_t;

/*
 * A new, empty saga definition called name (1-64 bytes of letters, digits,
 * '.', '_' or '-'; stored with every instance, so keep it stable across
 * releases of your service). Returns NULL with the reason in errstr.
 * Ownership: name is copied; free the definition with evbus_saga_def_free
 * (evbus_saga_orch_register keeps its own copy). Thread-safe.
 */
EVBUS_API evbus_saga_def_t *evbus_saga_def_new(const char *name,
                                               char *errstr,
                                               size_t errstr_size);

/*
 * Appends a step (copied; the library reads only s->struct_size bytes of
 * it). Returns EVBUS_OK, or EVBUS_EINVAL with the reason in errstr: a
 * struct_size below the first release's, a bad or duplicate name, no
 * action, both a command and a local action (or compensation), a bad
 * topic, a template that is not a JSON object, both a template and a
 * build callback, a negative deadline, comp_timeout_ms < 1, more than 64
 * steps. Not thread-safe: build a definition on one thread (registering
 * copies it, so later changes do not reach an orchestrator).
 */
EVBUS_API int evbus_saga_def_add_step(evbus_saga_def_t *d,
                                      const evbus_saga_step_t *s,
                                      char *errstr, size_t errstr_size);

/* The definition's name and number of steps. Owned by the definition. */
EVBUS_API const char *evbus_saga_def_name(const evbus_saga_def_t *d);
EVBUS_API int evbus_saga_def_steps(const evbus_saga_def_t *d);

/* Frees a definition. NULL is ignored. */
EVBUS_API void evbus_saga_def_free(evbus_saga_def_t *d);

/* ----------------------------------------------------------- orchestrator */

typedef struct evbus_saga_orch evbus_saga_orch_t;

typedef struct evbus_saga_opts {
    size_t struct_size; /* set by evbus_saga_opts_init */
    /* Where participants send replies. Default "<name>.replies". */
    const char *reply_topic;
    /* Consumer group of the reply subscription. Default "<name>". */
    const char *group;
    /* CloudEvents source of commands. Default "/<name>". */
    const char *source;
    /* 1 = subscribe to reply_topic on the bus (replies are handled inside
     * evbus_saga_poll / evbus_poll; a reply whose transaction fails, e.g.
     * database busy, is retried up to 20 times before it is
     * dead-lettered - the step's deadline then still ends the wait);
     * 0 = the application feeds replies with evbus_saga_on_reply.
     * Default 1. */
    int subscribe;
    /* 1 = run an outbox relay (its own thread and connection) that
     * publishes this database's outbox to the bus; 0 = the application
     * runs one. Default 1. Needs a database file (not ":memory:"). */
    int run_relay;
    /* Largest saga data in bytes: a start or a merge that would exceed it
     * fails (the start with EVBUS_ETOOBIG, a reply as a step failure).
     * Default 262144. */
    size_t max_data_bytes;
    /* Instances handled per evbus_saga_run_due call at most. Default 256. */
    int due_batch;
    /* The clock: wall time in Unix milliseconds, stored in the database
     * (deadlines survive restarts). NULL = the real clock. Tests pass a
     * fake one. */
    uint64_t (*now_ms)(void *clock_opaque);
    void *clock_opaque;
    /* Backoff between compensation attempts and when to give up
     * (max_attempts, max_elapsed_ms; one of them must be set). NULL =
     * 1000 ms doubling to 60000 ms, full jitter, 10 attempts. A reply that
     * does not come within the step's comp_timeout_ms counts as a failed
     * attempt. Copied; initialise it with evbus_retry_policy_init. */
    const evbus_retry_policy_t *compensation_retry;
} evbus_saga_opts_t;

/* Fills o with the defaults above and sets o->struct_size. Thread-safe. */
EVBUS_API void evbus_saga_opts_init_sized(
    evbus_saga_opts_t *o, size_t struct_size);
static inline void evbus_saga_opts_init(evbus_saga_opts_t *o)
{
    evbus_saga_opts_init_sized(o, sizeof *o);
}

/*
 * Opens the orchestrator `name` (1-64 bytes of letters, digits, '.', '_',
 * '-'; also the name of its inbox consumer) on the application's
 * connection db and the bus: creates the saga, outbox and inbox tables when
 * missing (refusing a database whose saga schema is newer than this
 * library's), subscribes to the reply topic and starts the relay (see
 * evbus_saga_opts_t). bus may be NULL when subscribe and run_relay are 0.
 * o NULL = defaults; the library reads only o->struct_size bytes and
 * refuses a smaller size than the first release's (EVBUS_EINVAL).
 * Returns NULL with a one-line reason in errstr.
 * Several orchestrator processes may share one database under one name:
 * they share the reply group, and every transition re-reads its instance
 * inside its own write transaction.
 * Ownership: name and o are copied; db and bus stay the caller's and must
 * outlive the orchestrator; close it with evbus_saga_orch_close before
 * closing them. Thread-safe (distinct orchestrators are independent).
 */
EVBUS_API evbus_saga_orch_t *evbus_saga_orch_open(sqlite3 *db, evbus_t *bus,
                                                  const char *name,
                                                  const evbus_saga_opts_t *o,
                                                  char *errstr,
                                                  size_t errstr_size);

/*
 * Registers a definition: instances of it can be started, and replies and
 * timers of stored instances of that name are handled. The orchestrator
 * keeps its own copy. Register every definition before polling: a reply
 * for an instance whose definition is not registered is delivered again
 * later (EVBUS_RETRY) and logged. Returns EVBUS_OK, EVBUS_EINVAL (NULL, no
 * steps, a name already registered). Thread-safe (takes the lock).
 */
EVBUS_API int evbus_saga_orch_register(evbus_saga_orch_t *o,
                                       const evbus_saga_def_t *d,
                                       char *errstr, size_t errstr_size);

/*
 * Starts an instance of the registered definition `saga` with the caller's
 * id (1-200 bytes of valid UTF-8 without control characters; the
 * idempotency key) and data (a JSON object; NULL = {}): records it and runs
 * its first steps - local actions at once, the first command into the
 * outbox. When the connection has a transaction open, the start joins it
 * (a SAVEPOINT): the saga then starts if and only if the caller commits,
 * together with the caller's own writes (e.g. the order row).
 * Returns 1 when started, 0 when an instance with this id already exists
 * (nothing is changed; a second start is not an error), or a negative
 * error: EVBUS_EINVAL (bad id, data not a JSON object, unknown saga),
 * EVBUS_ETOOBIG (data over max_data_bytes), EVBUS_EBUSY, EVBUS_EIO.
 * Ownership: nothing is kept. Thread-safe (takes the lock).
 */
EVBUS_API int evbus_saga_start(evbus_saga_orch_t *o, const char *saga,
                               const char *id, const char *data_json);

/*
 * Applies one reply: in one transaction, claims it in the orchestrator's
 * inbox (a duplicate changes nothing), checks it is the reply the instance
 * waits for (a late or unexpected reply is ignored, logged and written to
 * the history), moves the state, and writes the next command into the
 * outbox. Replies arrive here by themselves with subscribe = 1; call it
 * yourself with subscribe = 0.
 * Returns what an evbus handler answers: EVBUS_ACK (applied or ignored),
 * EVBUS_RETRY (database busy, definition not registered), EVBUS_DROP (not
 * a saga reply: no sagaid, bad sagastep ...).
 * Ownership: reply stays the caller's. Thread-safe (takes the lock).
 */
EVBUS_API evbus_result_t evbus_saga_on_reply(evbus_saga_orch_t *o,
                                             const evbus_event_t *reply);

/*
 * Runs the timers that are due: steps whose deadline passed (they start
 * compensating), compensations whose reply did not come in time, and
 * compensation retries whose backoff is over. Each instance moves in its
 * own transaction. Returns how many instances moved (>= 0) or a negative
 * error (EVBUS_EBUSY, EVBUS_EIO). Thread-safe (takes the lock).
 */
EVBUS_API int evbus_saga_run_due(evbus_saga_orch_t *o);

/* Milliseconds until the next timer (0 when one is due now), or -1 when no
 * instance waits for a timer. Thread-safe (takes the lock). */
EVBUS_API int64_t evbus_saga_next_due_ms(evbus_saga_orch_t *o);

/*
 * The orchestrator's loop step: runs due timers, polls the bus for up to
 * timeout_ms (less when a timer falls due sooner; replies are applied by
 * the reply subscription), and runs due timers again. Returns the number of
 * replies handled plus instances moved by timers (>= 0), or a negative
 * error (the bus's, e.g. EVBUS_ECLOSED; EVBUS_EINVAL for an orchestrator
 * opened without a bus - call evbus_saga_run_due then). Call it in a loop on one thread;
 * other subscriptions of the bus run in it too. A deadline set by a start
 * on another thread is noticed at the latest after timeout_ms, so loop
 * with a bounded timeout (100 ms, say) when other threads start sagas.
 */
EVBUS_API int evbus_saga_poll(evbus_saga_orch_t *o, int timeout_ms);

/*
 * Wakes the relay (after a commit of yours that started sagas). Cheap;
 * any thread.
 */
EVBUS_API void evbus_saga_notify(evbus_saga_orch_t *o);

/*
 * The orchestrator's lock (recursive). Every orchestrator call takes it;
 * hold it around your own transactions on the same connection so they do
 * not interleave with the orchestrator's (e.g. BEGIN; insert the order;
 * evbus_saga_start; COMMIT on an HTTP thread while another thread polls).
 */
EVBUS_API void evbus_saga_lock(evbus_saga_orch_t *o);
EVBUS_API void evbus_saga_unlock(evbus_saga_orch_t *o);

/* The connection the orchestrator uses. */
EVBUS_API sqlite3 *evbus_saga_orch_db(const evbus_saga_orch_t *o);

/*
 * Unsubscribes, stops the relay (it finishes its batch) and frees the
 * orchestrator. Instances stay in the database and continue when an
 * orchestrator is opened on it again. NULL is ignored. Not from inside a
 * handler of the bus; no other call on o may run.
 */
EVBUS_API void evbus_saga_orch_close(evbus_saga_orch_t *o);

/* ---------------------------------------------------------------- metrics */

typedef struct evbus_saga_metrics {
    size_t struct_size; /* set by evbus_saga_metrics_init */
    /* Instances in the database by state (all definitions). */
    uint64_t running, compensating, completed, compensated, failed;
    uint64_t active; /* running + compensating */
    /* Counted by this orchestrator since it was opened. */
    uint64_t started;          /* evbus_saga_start that created one */
    uint64_t commands_sent;    /* actions and compensations written */
    uint64_t replies;          /* replies applied */
    uint64_t replies_ignored;  /* late or unexpected replies */
    uint64_t timeouts;         /* steps whose deadline passed */
    uint64_t compensations_retried; /* attempts after the first */
    uint64_t parked;           /* instances this process parked FAILED */
} evbus_saga_metrics_t;

/* Sets m->struct_size (and zeroes the rest). Thread-safe. */
EVBUS_API void evbus_saga_metrics_init_sized(
    evbus_saga_metrics_t *m, size_t struct_size);
static inline void evbus_saga_metrics_init(evbus_saga_metrics_t *m)
{
    evbus_saga_metrics_init_sized(m, sizeof *m);
}

/* Fills the first m->struct_size bytes of m. Returns EVBUS_OK, EVBUS_EINVAL
 * (NULL, struct_size too small) or a SQLite error mapped (EVBUS_EIO).
 * Thread-safe (takes the lock). */
EVBUS_API int evbus_saga_metrics_get(evbus_saga_orch_t *o,
                                     evbus_saga_metrics_t *m);

/*
 * The metrics in Prometheus text format: evbus_saga_instances{saga,state}
 * from the database, and evbus_saga_*_total counters of this process.
 * Returns a malloc'd string the caller frees, or NULL (out of memory,
 * database error). Thread-safe (takes the lock).
 */
EVBUS_API char *evbus_saga_metrics_prometheus(evbus_saga_orch_t *o);

/* ------------------------------------------------------------ participants */

/*
 * Builds the reply to a saga command: copies sagaid, sagastep, sagakind and
 * sagaattempt (and partitionkey), sets sagaoutcome, sagareason (failure;
 * cleaned as in evbus_saga_answer_set_reason) and the data (a JSON object
 * or NULL). Its type is "<command type>.reply", its id is derived from the
 * command's (a participant that answers the same command twice sends the
 * same id, which the orchestrator's inbox absorbs).
 * Publish it to evbus_saga_reply_topic(cmd). Returns NULL when cmd is not a
 * saga command, data is not a JSON object, or out of memory.
 * Ownership: the caller frees the event. Thread-safe.
 */
EVBUS_API evbus_event_t *evbus_saga_reply_new(const evbus_event_t *cmd,
                                              int outcome,
                                              const char *data_json,
                                              const char *reason,
                                              const char *source);

/* The topic a command's reply goes to (its sagareplyto), or NULL. Owned by
 * cmd. */
EVBUS_API const char *evbus_saga_reply_topic(const evbus_event_t *cmd);

typedef struct evbus_saga_participant evbus_saga_participant_t;

/*
 * A participant's work for one command: apply the action (or undo it, for
 * a compensation) on db inside the transaction the helper opened (do not
 * BEGIN/COMMIT/ROLLBACK). cmd is the command; its data was built by the
 * orchestrator. Returns EVBUS_SAGA_SUCCESS (optionally with data through
 * evbus_saga_answer_set_data), EVBUS_SAGA_FAILURE (with a reason; what the
 * function wrote is rolled back and the failure is answered), or a
 * negative evbus error (everything is rolled back and the command is
 * delivered again later).
 */
typedef int (*evbus_saga_work_fn)(sqlite3 *db, const evbus_event_t *cmd,
                                  evbus_saga_answer_t *answer, void *opaque);

typedef struct evbus_saga_participant_opts {
    size_t struct_size; /* set by evbus_saga_participant_opts_init */
    /* CloudEvents source of replies. Default "/<consumer>". */
    const char *source;
    /* How long what the participant did per (instance, step) is
     * remembered. Must exceed the longest a saga can take to compensate.
     * 0 = forever. Default 30 days. */
    int64_t retention_ms;
    /* How long the inbox remembers a command's id (evbus_inbox_opts_t
     * retention_ms). Default 7 days. */
    int64_t inbox_retention_ms;
} evbus_saga_participant_opts_t;

/* Fills o with the defaults and sets o->struct_size. Thread-safe. */
EVBUS_API void evbus_saga_participant_opts_init_sized(
    evbus_saga_participant_opts_t *o, size_t struct_size);
static inline void evbus_saga_participant_opts_init(
    evbus_saga_participant_opts_t *o)
{
    evbus_saga_participant_opts_init_sized(o, sizeof *o);
}

/*
 * Opens the participant `consumer` (its inbox consumer name) on the
 * application's connection db: creates the inbox, outbox and evbus_saga_part
 * tables when missing. When relay_bus is not NULL a relay (own thread and
 * connection) publishes this database's outbox - the replies - to it;
 * otherwise the application runs one. o NULL = defaults.
 * Returns NULL with a one-line reason in errstr.
 * Ownership: consumer and o are copied; db and relay_bus stay the caller's
 * and must outlive it. Thread-safety: the thread that uses db.
 */
EVBUS_API evbus_saga_participant_t *evbus_saga_participant_open(
    sqlite3 *db, const char *consumer, evbus_t *relay_bus,
    const evbus_saga_participant_opts_t *o, char *errstr,
    size_t errstr_size);

/*
 * Handles one saga command exactly once: in one transaction it claims the
 * command in the inbox (duplicates change nothing), decides by what this
 * participant already did for (sagaid, sagastep), runs action or
 * compensate when needed, records the outcome and writes the reply into
 * the outbox. The rules:
 *   action, first time            -> action runs; reply = its outcome
 *   action after its compensation -> not run; reply failure ("cancelled"):
 *     (the compensation overtook it, e.g. after the step timed out)
 *   compensation of a done action -> compensate runs; reply = its outcome
 *   compensation, action not done -> nothing to undo; reply success, and
 *     (never arrived, or failed)     an action arriving later is refused
 *   compensation already done     -> reply success, compensate not run
 * compensate may be NULL when no step of this participant has one.
 * Returns what the evbus handler answers: EVBUS_ACK, EVBUS_RETRY (work
 * returned an error, database busy), EVBUS_DROP (not a saga command).
 * Ownership: nothing is kept. Thread-safety: the thread that uses db.
 */
EVBUS_API evbus_result_t evbus_saga_participant_handle(
    evbus_saga_participant_t *p, const evbus_event_t *cmd,
    evbus_saga_work_fn action, evbus_saga_work_fn compensate, void *opaque);

/* Wakes the participant's relay (when it runs one). Any thread. */
EVBUS_API void evbus_saga_participant_notify(evbus_saga_participant_t *p);

/* Stops the relay and frees the participant; its records stay. NULL is
 * ignored. Same thread as db. */
EVBUS_API void evbus_saga_participant_close(evbus_saga_participant_t *p);

/* ------------------------------------------------------------- inspection */

/*
 * The instances in db as JSON: {"count":N,"states":{"RUNNING":n,...},
 * "sagas":[{"id","saga","state","step","stepName","attempt","reason",
 * "createdAt","updatedAt","endedAt","dueAt"},...]}, newest first.
 * state NULL = all, else one state name ("FAILED"); limit <= 0 = 100.
 * Reads only; needs no orchestrator (the CLI and status pages use it).
 * Returns EVBUS_OK with *out a malloc'd string (caller frees),
 * EVBUS_ENOTFOUND (no saga tables in db), EVBUS_EINVAL (bad state name),
 * EVBUS_EIO. Thread-safety: the thread that uses db.
 */
EVBUS_API int evbus_saga_list_json(sqlite3 *db, const char *state, int limit,
                                   char **out, char *errstr,
                                   size_t errstr_size);

/*
 * One instance as JSON: the fields of a list entry plus "data" (the saga's
 * data), "steps" ([{"index","name","status","attempts","startedAt",
 * "endedAt","deadlineAt","result"}]) and "history" ([{"at","step","event",
 * "from","to","detail"}], oldest first). Returns EVBUS_OK with *out
 * malloc'd, EVBUS_ENOTFOUND (no such instance, or no saga tables),
 * EVBUS_EIO. Thread-safety: the thread that uses db.
 */
EVBUS_API int evbus_saga_show_json(sqlite3 *db, const char *id, char **out,
                                   char *errstr, size_t errstr_size);

/* The state of instance id (>= 0, an evbus_saga_state_t), EVBUS_ENOTFOUND,
 * or EVBUS_EIO. Thread-safety: the thread that uses db. */
EVBUS_API int evbus_saga_state_of(sqlite3 *db, const char *id);

/*
 * Resumes a FAILED instance after a person fixed the cause: it goes back
 * to COMPENSATING with the failed compensation due now and its attempts
 * counted afresh; the orchestrator sends it at its next evbus_saga_run_due.
 * Needs only the database (the CLI uses it). Returns EVBUS_OK,
 * EVBUS_ENOTFOUND, EVBUS_ESTATE (not FAILED), EVBUS_EBUSY, EVBUS_EIO.
 * Thread-safety: the thread that uses db (with an orchestrator on this
 * connection, hold its lock).
 */
EVBUS_API int evbus_saga_resume(sqlite3 *db, const char *id, char *errstr,
                                size_t errstr_size);

/*
 * Deletes instances that ended as COMPLETED or COMPENSATED before
 * ended_before_ms (Unix milliseconds), with their history, in transactions
 * of at most 500 instances. FAILED instances stay (resume them, or delete
 * them by hand). Ended instances are kept until this is called.
 * An id may be started again once its instance is purged - but the
 * participants keep what they did per (instance id, step) for their
 * retention_ms, so do not reuse an id within that time.
 * Returns how many instances it deleted (>= 0), or EVBUS_ENOTFOUND (no
 * saga tables), EVBUS_EBUSY, EVBUS_EIO with the reason in errstr.
 * Thread-safety: the thread that uses db (with an orchestrator on this
 * connection, hold its lock).
 */
EVBUS_API int evbus_saga_purge(sqlite3 *db, int64_t ended_before_ms,
                               char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_SAGA_H */
