/*
 * The saga protocol on the wire: reading the extensions of commands and
 * replies, building a reply, the answer object step functions fill, and
 * the names of states and kinds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_internal.h"

const char *evbus_saga_state_name(int state)
{
    switch (state) {
    case EVBUS_SAGA_RUNNING: return "RUNNING";
    case EVBUS_SAGA_COMPENSATING: return "COMPENSATING";
    case EVBUS_SAGA_COMPLETED: return "COMPLETED";
    case EVBUS_SAGA_COMPENSATED: return "COMPENSATED";
    case EVBUS_SAGA_FAILED: return "FAILED";
    default: return "UNKNOWN";
    }
}

const char *evbus__saga_kind_name(saga_kind_t k)
{
    return k == SAGA_ACTION ? "action" : "compensation";
}

/* A decimal extension in [min, max], or -1. */
static long ext_long(const evbus_event_t *ev, const char *name, long min,
                     long max)
{
    const char *s = evbus_event_ext(ev, name);
    if (!s || !*s)
        return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < min || v > max ? -1 : v;
}

int evbus__saga_msg_parse(const evbus_event_t *ev, bool command, saga_msg_t *m,
                          char *why, size_t n)
{
    memset(m, 0, sizeof *m);
    const char *kind = evbus_event_ext(ev, SAGA_EXT_KIND);
    long step = ext_long(ev, SAGA_EXT_STEP, 0, SAGA_MAX_STEPS - 1);
    long attempt = ext_long(ev, SAGA_EXT_ATTEMPT, 1, 1000000000L);
    m->id = evbus_event_ext(ev, SAGA_EXT_ID);
    const char *bad = NULL;
    if (!m->id || !*m->id || strlen(m->id) > SAGA_ID_MAX)
        bad = "no valid " SAGA_EXT_ID " extension";
    else if (step < 0)
        bad = "no valid " SAGA_EXT_STEP " extension (0-63)";
    else if (!kind || (strcmp(kind, "action") && strcmp(kind, "compensation")))
        bad = SAGA_EXT_KIND " is not action or compensation";
    else if (attempt < 0)
        bad = "no valid " SAGA_EXT_ATTEMPT " extension";
    if (!bad && command) {
        m->replyto = evbus_event_ext(ev, SAGA_EXT_REPLYTO);
        if (!saga_topic_ok(m->replyto, true))
            bad = "no valid " SAGA_EXT_REPLYTO " extension";
    }
    if (!bad && !command) {
        const char *out = evbus_event_ext(ev, SAGA_EXT_OUTCOME);
        if (out && strcmp(out, "success") == 0)
            m->outcome = EVBUS_SAGA_SUCCESS;
        else if (out && strcmp(out, "failure") == 0)
            m->outcome = EVBUS_SAGA_FAILURE;
        else
            bad = SAGA_EXT_OUTCOME " is not success or failure";
        m->reason = evbus_event_ext(ev, SAGA_EXT_REASON);
    }
    if (bad) {
        evbus__seterr(why, n, "not a saga %s: %s", command ? "command" : "reply",
                   bad);
        return EVBUS_EINVAL;
    }
    m->step = (int)step;
    m->kind = strcmp(kind, "action") == 0 ? SAGA_ACTION : SAGA_COMPENSATION;
    m->attempt = (int)attempt;
    return EVBUS_OK;
}

const char *evbus_saga_reply_topic(const evbus_event_t *cmd)
{
    return cmd ? evbus_event_ext(cmd, SAGA_EXT_REPLYTO) : NULL;
}

evbus_event_t *evbus_saga_reply_new(const evbus_event_t *cmd, int outcome,
                                    const char *data_json, const char *reason,
                                    const char *source)
{
    saga_msg_t m;
    if (!cmd || evbus__saga_msg_parse(cmd, true, &m, NULL, 0) != EVBUS_OK)
        return NULL;
    if ((outcome != EVBUS_SAGA_SUCCESS && outcome != EVBUS_SAGA_FAILURE) ||
        (data_json && !evbus__saga_is_object(data_json, 0)))
        return NULL;
    const char *type = evbus_event_type(cmd), *cid = evbus_event_id(cmd);
    size_t tl = strlen(type) + 7, il = strlen(cid) + 7;
    char *rtype = malloc(tl), *rid = malloc(il);
    evbus_event_t *r = NULL;
    if (!rtype || !rid)
        goto out;
    snprintf(rtype, tl, "%s.reply", type);
    snprintf(rid, il, "%s.reply", cid);
    r = evbus_event_new(rtype, source && *source ? source : "/evbus/saga");
    if (!r)
        goto out;
    int rc = evbus_event_set_id(r, rid);
    rc |= evbus_event_set_ext(r, SAGA_EXT_ID, m.id);
    rc |= evbus_event_set_ext_int(r, SAGA_EXT_STEP, m.step);
    rc |= evbus_event_set_ext(r, SAGA_EXT_KIND, evbus__saga_kind_name(m.kind));
    rc |= evbus_event_set_ext_int(r, SAGA_EXT_ATTEMPT, m.attempt);
    rc |= evbus_event_set_ext(r, SAGA_EXT_OUTCOME,
                              outcome == EVBUS_SAGA_SUCCESS ? "success"
                                                            : "failure");
    const char *pk = evbus_event_ext(cmd, "partitionkey");
    if (pk)
        rc |= evbus_event_set_ext(r, "partitionkey", pk);
    if (outcome == EVBUS_SAGA_FAILURE) {
        char *clean = evbus__saga_clean_text(
            reason && *reason ? reason : "failed", SAGA_REASON_MAX);
        rc |= clean ? evbus_event_set_ext(r, SAGA_EXT_REASON,
                                          *clean ? clean : "failed")
                    : EVBUS_ENOMEM;
        free(clean);
    }
    if (data_json)
        rc |= evbus_event_set_data_json(r, data_json);
    if (rc != EVBUS_OK) {
        evbus_event_free(r);
        r = NULL;
    }
out:
    free(rtype);
    free(rid);
    return r;
}

/* ----------------------------------------------------------------- answers */

void evbus__saga_answer_reset(evbus_saga_answer_t *a)
{
    free(a->data);
    free(a->reason);
    a->data = a->reason = NULL;
}

int evbus_saga_answer_set_data(evbus_saga_answer_t *a, const char *json)
{
    if (!a || !evbus__saga_is_object(json, 0))
        return EVBUS_EINVAL;
    char *c = strdup(json);
    if (!c)
        return EVBUS_ENOMEM;
    free(a->data);
    a->data = c;
    return EVBUS_OK;
}

int evbus_saga_answer_set_reason(evbus_saga_answer_t *a, const char *reason)
{
    if (!a || !reason)
        return EVBUS_EINVAL;
    char *c = evbus__saga_clean_text(reason, SAGA_REASON_MAX);
    if (!c)
        return EVBUS_ENOMEM;
    free(a->reason);
    a->reason = c;
    return EVBUS_OK;
}
