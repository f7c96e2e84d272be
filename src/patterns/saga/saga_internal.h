/*
 * The saga module's internal declarations: the definition's copy of its
 * steps, the orchestrator object, an instance as loaded from evbus_saga,
 * the protocol's extensions, and the helpers the files share. Internal
 * symbols carry the evbus__saga_ prefix (hidden by the library's symbol
 * visibility).
 */
#ifndef EVBUS_PATTERNS_SAGA_INTERNAL_H
#define EVBUS_PATTERNS_SAGA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/patterns.h"          /* the log channel, policy copies */
#include "evbus/saga.h"
#include "patterns/outbox/sql_util.h" /* evbus__sql_exec, evbus__sql_prepare, ... */
#include "support/clock.h"
#include "support/errstr.h"
#include "support/names.h"
#include "support/sqlite_err.h"
#include "support/structs.h"

#define SAGA_MAX_STEPS 64
#define SAGA_NAME_MAX 64
#define SAGA_ID_MAX 200
#define SAGA_REASON_MAX 400
#define SAGA_SCHEMA_VERSION 1

/* The protocol's extension names (see saga.h). */
#define SAGA_EXT_ID "sagaid"
#define SAGA_EXT_STEP "sagastep"
#define SAGA_EXT_KIND "sagakind"
#define SAGA_EXT_ATTEMPT "sagaattempt"
#define SAGA_EXT_REPLYTO "sagareplyto"
#define SAGA_EXT_OUTCOME "sagaoutcome"
#define SAGA_EXT_REASON "sagareason"

typedef enum { SAGA_ACTION = 0, SAGA_COMPENSATION = 1 } saga_kind_t;

/* What an instance's timer (due_at) means. */
typedef enum {
    SAGA_WAIT_NONE = 0,  /* no timer: ended, or a step without deadline */
    SAGA_WAIT_REPLY = 1, /* a command is out; due_at is its deadline */
    SAGA_WAIT_RETRY = 2  /* a compensation failed; due_at is the retry */
} saga_wait_t;

/* A step as the definition keeps it (strings owned). */
typedef struct saga_step {
    char *name;
    char *topic, *type, *tmpl;
    evbus_saga_build_fn build;
    evbus_saga_local_fn local;
    char *comp_topic, *comp_type, *comp_tmpl;
    evbus_saga_build_fn comp_build;
    evbus_saga_local_fn comp_local;
    int64_t deadline_ms, comp_timeout_ms;
    evbus_saga_merge_fn merge;
    void *opaque;
} saga_step_t;

struct evbus_saga_def {
    char *name;
    int n;
    saga_step_t steps[SAGA_MAX_STEPS];
};

/* Topics the orchestrator sends to or listens on follow the portable
 * name rule (every backend accepts them); a command's sagareplyto is
 * checked only for what any backend could accept. */
static inline bool saga_topic_ok(const char *t, bool native)
{
    return t && evbus__check_name(t, "topic", native, NULL, 0) == EVBUS_OK;
}

static inline bool saga_step_has_comp(const saga_step_t *s)
{
    return s->comp_topic || s->comp_local;
}

struct evbus_saga_answer {
    char *data;   /* JSON object text or NULL */
    char *reason; /* cleaned one-liner or NULL */
};

/* A command or reply as the protocol's extensions describe it. */
typedef struct saga_msg {
    const char *id;      /* sagaid (owned by the event) */
    int step;
    saga_kind_t kind;
    int attempt;
    const char *replyto; /* commands; NULL on replies */
    int outcome;         /* replies: EVBUS_SAGA_SUCCESS / FAILURE */
    const char *reason;  /* replies: sagareason or NULL */
} saga_msg_t;

struct cJSON;

/* An instance row (strings malloc'd). */
typedef struct saga_inst {
    char *id, *saga, *data, *reason;
    int state, step, attempt;
    saga_wait_t waiting;
    int64_t due_at; /* -1 = none */
    int prev_delay_ms;
    int64_t comp_started_at;
    struct cJSON *steps; /* the per-step results (saga_steps.c) */
    int64_t hseq;        /* history rows written so far */
    int stored_state;    /* the state in its row (-1: no row yet) */
} saga_inst_t;

/* Prepared statements on the orchestrator's connection. */
typedef struct saga_store {
    sqlite3 *db;
    sqlite3_stmt *insert, *exists, *load, *update, *update_same, *history;
    sqlite3_stmt *due, *next_due, *count_states;
    sqlite3_stmt *begin, *commit; /* BEGIN IMMEDIATE / COMMIT, parsed once */
} saga_store_t;

struct evbus_saga_orch {
    sqlite3 *db;
    evbus_t *bus;
    char *name, *reply_topic, *group, *source;
    evbus_saga_opts_t o; /* strings point at the copies above */
    evbus_retry_policy_t comp_retry; /* o.compensation_retry points here */
    pthread_mutex_t mu;  /* recursive; every public call takes it */
    evbus_outbox_t *ob;
    evbus_inbox_t *in;
    evbus_sub_t *sub;
    evbus_relay_t *relay;
    saga_store_t st;
    evbus_saga_def_t **defs;
    int ndefs;
    atomic_uint_fast64_t started, commands_sent, replies, replies_ignored,
        timeouts, comp_retried, parked;
    /* Log lines written while mu is held, emitted once it is released:
     * the application's log callback never runs under a library lock. */
    int lock_depth;
    struct {
        int level;
        char msg[480];
    } logs[16];
    int nlogs;
    unsigned logs_dropped;
    /* Counted by the transaction in progress; added to the totals above
     * only when it commits (under mu). */
    struct {
        uint64_t commands_sent, timeouts, comp_retried, parked;
    } pend;
};

/* ---- saga_def.c */
bool evbus__saga_name_ok(const char *s);
const evbus_saga_def_t *evbus__saga_find_def(const evbus_saga_orch_t *o,
                                             const char *name);
evbus_saga_def_t *evbus__saga_def_clone(const evbus_saga_def_t *d);

/* ---- saga_json.c (cJSON) */
/* 1 when json is a JSON object of at most max bytes (0 = no limit). */
bool evbus__saga_is_object(const char *json, size_t max);
/* Applies patch (JSON object text) to doc as RFC 7386 merge patch; *out
 * malloc'd. EVBUS_OK, EVBUS_EINVAL (not objects), EVBUS_ENOMEM. */
int evbus__saga_merge_patch(const char *doc, const char *patch, char **out);
/* Renders a template against data (see evbus_saga_step_t). *out malloc'd.
 * EVBUS_OK, or EVBUS_EINVAL with the reason, or EVBUS_ENOMEM. */
int evbus__saga_render(const char *tmpl, const char *data, char **out,
                       char *why, size_t n);
/* 1 when the n bytes at s are well-formed UTF-8 without NUL. */
bool evbus__saga_utf8_ok(const char *s, size_t n);
/* A copy of s cut to max bytes on a character boundary, with invalid
 * UTF-8 and control characters replaced. NULL when out of memory. */
char *evbus__saga_clean_text(const char *s, size_t max);

/* ---- saga_msg.c */
/* Reads the protocol's extensions of a command (want_replyto) or reply.
 * EVBUS_OK or EVBUS_EINVAL with the reason. */
int evbus__saga_msg_parse(const evbus_event_t *ev, bool command, saga_msg_t *m,
                          char *why, size_t n);
const char *evbus__saga_kind_name(saga_kind_t k);
void evbus__saga_answer_reset(evbus_saga_answer_t *a);

/* ---- saga_schema.c */
/* Creates the orchestrator's tables (and checks the schema version). */
int evbus__saga_schema(sqlite3 *db, char *why, size_t n);
/* Creates the participant's table. */
int evbus__saga_part_schema(sqlite3 *db, char *why, size_t n);
/* 1 when db has the evbus_saga table, 0 when not, negative on error. */
int evbus__saga_has_tables(sqlite3 *db);
/* Runs sql as a transaction boundary: BEGIN IMMEDIATE, or a SAVEPOINT when
 * one is open already (*nested = 1). */
int evbus__saga_tx_begin(sqlite3 *db, int *nested, const char *savepoint);
int evbus__saga_tx_commit(sqlite3 *db, int nested, const char *savepoint);
void evbus__saga_tx_rollback(sqlite3 *db, int nested, const char *savepoint);

/* ---- saga_store.c */
/* evbus__saga_tx_begin / _commit on the orchestrator's connection, with
 * BEGIN IMMEDIATE and COMMIT prepared once. */
int evbus__saga_store_begin(saga_store_t *st, int *nested,
                            const char *savepoint);
int evbus__saga_store_commit(saga_store_t *st, int nested,
                             const char *savepoint);
int evbus__saga_store_open(saga_store_t *st, sqlite3 *db, char *why,
                           size_t n);
void evbus__saga_store_close(saga_store_t *st);
/* 1 inserted, 0 exists, negative error. */
int evbus__saga_store_insert(saga_store_t *st, const saga_inst_t *in,
                             int64_t now);
/* 1 when an instance with this id exists, 0 when not, negative error. */
int evbus__saga_store_exists(saga_store_t *st, const char *id);
/* EVBUS_OK, EVBUS_ENOTFOUND, or an error. */
int evbus__saga_store_load(saga_store_t *st, const char *id, saga_inst_t *out);
int evbus__saga_store_update(saga_store_t *st, const saga_inst_t *in,
                             int64_t now);
void evbus__saga_inst_free(saga_inst_t *in);
/* Appends a history row (its number is ++in->hseq). */
int evbus__saga_history(saga_store_t *st, saga_inst_t *in, int64_t at,
                        int step, const char *event, int from, int to,
                        const char *detail);
/* Ids of instances of `saga` due at now (at most max), malloc'd array of
 * malloc'd strings in *ids. Returns the count or an error. */
int evbus__saga_store_due(saga_store_t *st, const char *saga, int64_t now,
                          int max, char ***ids);
/* Earliest due_at of `saga`, or -1. */
int64_t evbus__saga_store_next_due(saga_store_t *st, const char *saga);

/* ---- saga_steps.c: the per-step results of an instance (in memory) */
/* Parses the steps column (NULL: an empty list). */
int evbus__saga_steps_parse(saga_inst_t *in, const char *text);
/* The steps as JSON text, malloc'd; NULL when out of memory. */
char *evbus__saga_steps_print(const saga_inst_t *in);
/* Sets step `step`'s name and status; attempts < 0 and times < 0 leave
 * those as they were, result NULL too (a JSON object text is kept as an
 * object, anything else as a string). EVBUS_OK or EVBUS_ENOMEM. */
int evbus__saga_step_set(saga_inst_t *in, int step, const char *name,
                         const char *status, int attempts, int64_t started_at,
                         int64_t ended_at, int64_t deadline_at,
                         const char *result);
/* The step's status ("done", "timed_out", ...), "" when it never ran. */
const char *evbus__saga_step_status(const saga_inst_t *in, int step);

/* ---- saga_engine.c: transitions, inside an open transaction. They return
 * EVBUS_OK or a negative error (the caller rolls back). */
int evbus__saga_advance(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                        saga_inst_t *in, int64_t now);
/* 0 applied, 1 ignored (late or unexpected), negative error. */
int evbus__saga_apply_reply(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, const saga_msg_t *m,
                            const evbus_event_t *reply, int64_t now);
int evbus__saga_apply_timer(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, int64_t now);

/* ---- saga_orch.c */
int64_t evbus__saga_now(const evbus_saga_orch_t *o);
/* The orchestrator's lock; unlocking the outermost level emits the log
 * lines written meanwhile. */
void evbus__saga_lock(evbus_saga_orch_t *o);
void evbus__saga_unlock(evbus_saga_orch_t *o);
/* Adds the committed transaction's counts to the totals / forgets them. */
void evbus__saga_pend_commit(evbus_saga_orch_t *o);
void evbus__saga_pend_clear(evbus_saga_orch_t *o);
/* Logs (component "saga"); with o, and o's lock held, the line waits
 * until the lock is released. o may be NULL (participants hold no lock). */
void evbus__saga_log(evbus_saga_orch_t *o, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
