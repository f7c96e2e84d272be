/*
 * What payment-service and shipping-service share: a participant of the
 * order saga. It subscribes to its action and compensation topics, handles
 * every command exactly once through evbus_saga_participant_handle (the
 * inbox, its record of what it did per saga step, the reply in the same
 * transaction, a relay that publishes the replies), serves GET <list_path>
 * and /healthz, and stops on SIGTERM.
 */
#ifndef ORDER_SAGA_PARTICIPANT_H
#define ORDER_SAGA_PARTICIPANT_H

#include <evbus/saga.h>

#include "common/svc.h"

typedef struct {
    const char *service;      /* "payment-service" */
    const char *consumer;     /* inbox consumer and consumer group */
    const char *action_topic; /* e.g. payment.charge */
    const char *comp_topic;   /* e.g. payment.refund */
    evbus_saga_work_fn action, compensate;
    const char *db_env, *db_default;
    const char *schema;       /* the service's own tables */
    const char *list_path;    /* GET path that lists what it did */
    /* Builds the GET list_path answer (svc_db_lock held). */
    cJSON *(*list)(sqlite3 *db);
    /* Optional: 1 when a command is to be left unanswered (a service that
     * hangs), after recording that in the service's tables. */
    int (*ignore)(sqlite3 *db, const evbus_event_t *cmd);
} part_svc_t;

/* Runs the service until SIGTERM; returns the exit status. */
int part_svc_main(const part_svc_t *s);

/* Runs sql with ?1 bound to text (the order id): EVBUS_OK or EVBUS_EIO. */
int part_exec(sqlite3 *db, const char *sql, const char *text);

/* A field of the command's JSON data as a string ("" when missing); the
 * caller frees the cJSON it gets back in *data. */
const char *part_field(const evbus_event_t *cmd, const char *name,
                       cJSON **data);

#endif
