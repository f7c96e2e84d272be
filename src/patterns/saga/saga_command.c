/*
 * Writing a step's command (action or compensation) into the outbox, in the
 * transaction of the transition that sends it, and running a local step
 * function inside a SAVEPOINT of that transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_engine.h"

/* The command's data: from the template, the build callback, or the saga's
 * data. NULL with the reason in why. */
static char *command_data(const saga_step_t *s, saga_kind_t kind,
                          const saga_inst_t *in, int *err, char *why,
                          size_t n)
{
    const char *tmpl = kind == SAGA_ACTION ? s->tmpl : s->comp_tmpl;
    evbus_saga_build_fn build = kind == SAGA_ACTION ? s->build : s->comp_build;
    char *data = NULL;
    *err = EVBUS_OK;
    if (tmpl) {
        *err = evbus__saga_render(tmpl, in->data, &data, why, n);
    } else if (build) {
        data = build(in->id, in->data, s->opaque);
        if (!data) {
            *err = EVBUS_EINVAL;
            evbus__seterr(why, n, "the build callback returned NULL");
        }
    } else if (!(data = strdup(in->data))) {
        *err = EVBUS_ENOMEM;
    }
    return data;
}

int evbus__saga_send(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                     const saga_inst_t *in, int k, saga_kind_t kind,
                     int attempt, char *why, size_t n)
{
    const saga_step_t *s = &d->steps[k];
    const char *topic = kind == SAGA_ACTION ? s->topic : s->comp_topic;
    const char *type = kind == SAGA_ACTION ? s->type : s->comp_type;
    int err;
    char *data = command_data(s, kind, in, &err, why, n);
    if (!data)
        return err == EVBUS_ENOMEM ? err : 1;
    evbus_event_t *ev = evbus_event_new(type, o->source);
    if (!ev) {
        free(data);
        return EVBUS_ENOMEM;
    }
    int rc = evbus_event_set_data_json(ev, data);
    free(data);
    if (rc != EVBUS_OK) {
        evbus_event_free(ev);
        if (rc == EVBUS_ENOMEM)
            return rc;
        evbus__seterr(why, n, "the command's data is not valid JSON");
        return 1;
    }
    rc = evbus_event_set_ext(ev, SAGA_EXT_ID, in->id);
    rc |= evbus_event_set_ext_int(ev, SAGA_EXT_STEP, k);
    rc |= evbus_event_set_ext(ev, SAGA_EXT_KIND, evbus__saga_kind_name(kind));
    rc |= evbus_event_set_ext_int(ev, SAGA_EXT_ATTEMPT, attempt);
    rc |= evbus_event_set_ext(ev, SAGA_EXT_REPLYTO, o->reply_topic);
    rc |= evbus_event_set_ext(ev, "partitionkey", in->id);
    rc |= evbus_event_set_subject(ev, d->name);
    if (rc != EVBUS_OK) {
        evbus_event_free(ev);
        return EVBUS_ENOMEM;
    }
    rc = evbus_outbox_add(o->ob, topic, ev);
    evbus_event_free(ev);
    if (rc == EVBUS_EINVAL) {
        evbus__seterr(why, n, "the outbox refused the command for %s", topic);
        return 1;
    }
    if (rc != EVBUS_OK)
        return rc;
    o->pend.commands_sent++;
    return EVBUS_OK;
}

int evbus__saga_run_local(evbus_saga_orch_t *o, evbus_saga_local_fn fn,
                          const saga_inst_t *in, void *opaque,
                          evbus_saga_answer_t *ans)
{
    int rc = evbus__sql_exec(o->db, "SAVEPOINT evbus_saga_local", NULL, 0);
    if (rc != EVBUS_OK)
        return rc;
    int r = fn(o->db, in->id, in->data, ans, opaque);
    if (r == EVBUS_SAGA_SUCCESS)
        return evbus__sql_exec(o->db, "RELEASE evbus_saga_local", NULL, 0) ==
                       EVBUS_OK
                   ? EVBUS_SAGA_SUCCESS
                   : EVBUS_EIO;
    rc = evbus__sql_exec(o->db,
                  "ROLLBACK TO evbus_saga_local; RELEASE evbus_saga_local",
                  NULL, 0);
    if (rc != EVBUS_OK)
        return rc;
    if (!ans->reason) {
        char why[96];
        snprintf(why, sizeof why, "%s",
                 r < 0 ? evbus_err_name(r) : "the local step failed");
        evbus_saga_answer_set_reason(ans, why);
    }
    return EVBUS_SAGA_FAILURE;
}
