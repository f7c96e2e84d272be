/*
 * The state machine's forward direction and its inputs: running steps
 * (local actions at once, commands into the outbox), applying a reply, and
 * a timer falling due. Compensation is in saga_comp.c.
 *
 * Which reply counts: only the reply to what the instance waits for - the
 * action of its current step while RUNNING, or the compensation of its
 * current step while COMPENSATING (a failure only from the attempt in
 * flight; a success from any attempt, since any of them undoing the step
 * is enough). Everything else is late or unexpected: ignored, logged and
 * written to the history.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_engine.h"

/* Applies a success's data to the saga's data. EVBUS_OK, 1 with the reason
 * in why (the step counts as failed), or a negative error. */
static int merge_data(evbus_saga_orch_t *o, const saga_step_t *s,
                      saga_inst_t *in, const evbus_event_t *reply,
                      const char *patch, char *why, size_t n)
{
    char *merged = NULL;
    if (s->merge && reply) {
        merged = s->merge(in->data, reply, s->opaque);
        if (!merged || !evbus__saga_is_object(merged, 0)) {
            free(merged);
            snprintf(why, n, "the merge callback returned no JSON object");
            return 1;
        }
    } else if (patch && evbus__saga_is_object(patch, 0)) {
        int rc = evbus__saga_merge_patch(in->data, patch, &merged);
        if (rc != EVBUS_OK)
            return rc == EVBUS_EINVAL ? (snprintf(why, n, "merge failed"), 1)
                                      : rc;
    } else {
        return EVBUS_OK; /* nothing to merge */
    }
    if (strlen(merged) > o->o.max_data_bytes) {
        free(merged);
        snprintf(why, n, "the saga data would exceed max_data_bytes (%zu)",
                 o->o.max_data_bytes);
        return 1;
    }
    free(in->data);
    in->data = merged;
    return EVBUS_OK;
}

/* The reply's data as text when it is JSON, else NULL. */
static const char *reply_json(const evbus_event_t *reply)
{
    if (!reply || evbus_event_data_len(reply) == 0)
        return NULL;
    const char *ct = evbus_event_datacontenttype(reply);
    if (ct && !strstr(ct, "json"))
        return NULL;
    return (const char *)evbus_event_data(reply);
}

/* Step k failed (refused, or could not be sent): compensate below it. */
static int step_failed(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                       saga_inst_t *in, int64_t now, const char *why)
{
    const saga_step_t *s = &d->steps[in->step];
    int rc = evbus__saga_step_set(in, in->step, s->name, "failed",
                                  -1, now, now, -1, why);
    if (rc == EVBUS_OK)
        rc = evbus__saga_note(o, in, now, in->step, "step failed", -1, -1,
                              "%s: %s", s->name, why);
    if (rc != EVBUS_OK)
        return rc;
    char reason[SAGA_REASON_MAX + 80];
    snprintf(reason, sizeof reason, "step %s failed: %s", s->name, why);
    return evbus__saga_begin_comp(o, d, in, now, in->step - 1, reason);
}

int evbus__saga_advance(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                        saga_inst_t *in, int64_t now)
{
    int rc;
    char why[SAGA_REASON_MAX];
    while (in->step < d->n) {
        const saga_step_t *s = &d->steps[in->step];
        if (s->local) {
            evbus_saga_answer_t ans = {0};
            int r = evbus__saga_run_local(o, s->local, in, s->opaque, &ans);
            if (r == EVBUS_SAGA_SUCCESS)
                r = merge_data(o, s, in, NULL, ans.data, why, sizeof why);
            else if (r == EVBUS_SAGA_FAILURE)
                snprintf(why, sizeof why, "%s", ans.reason);
            if (r == EVBUS_OK)
                r = evbus__saga_step_set(in, in->step, s->name,
                                         "done", -1, now, now, -1, ans.data);
            if (r == EVBUS_OK)
                r = evbus__saga_note(o, in, now, in->step, "step done", -1,
                                     -1, "%s (local)", s->name);
            evbus__saga_answer_reset(&ans);
            if (r < 0)
                return r;
            if (r > 0) /* refused, or its data could not be merged */
                return step_failed(o, d, in, now, why);
            in->step++;
            continue;
        }
        rc = evbus__saga_send(o, d, in, in->step, SAGA_ACTION, 1, why,
                              sizeof why);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return step_failed(o, d, in, now, why);
        int64_t deadline = s->deadline_ms ? now + s->deadline_ms : -1;
        in->attempt = 1;
        in->waiting = SAGA_WAIT_REPLY;
        in->due_at = deadline;
        rc = evbus__saga_step_set(in, in->step, s->name,
                                  "running", -1, now, -1, deadline, NULL);
        return rc != EVBUS_OK ? rc
                              : evbus__saga_note(o, in, now, in->step,
                                                 "command sent", -1, -1,
                                                 "%s to %s", s->name,
                                                 s->topic);
    }
    int prev = in->state;
    in->state = EVBUS_SAGA_COMPLETED;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    return evbus__saga_note(o, in, now, -1, "completed", prev, in->state,
                            NULL);
}

static int action_reply(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                        saga_inst_t *in, const saga_msg_t *m,
                        const evbus_event_t *reply, int64_t now)
{
    const saga_step_t *s = &d->steps[in->step];
    char why[SAGA_REASON_MAX];
    if (m->outcome == EVBUS_SAGA_FAILURE) {
        snprintf(why, sizeof why, "%s", m->reason ? m->reason : "failed");
        return step_failed(o, d, in, now, why);
    }
    const char *patch = reply_json(reply);
    int rc = merge_data(o, s, in, reply, patch, why, sizeof why);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return step_failed(o, d, in, now, why);
    rc = evbus__saga_step_set(in, in->step, s->name, "done", -1,
                              -1, now, -1,
                              patch && evbus__saga_is_object(patch, 0)
                                  ? patch
                                  : NULL);
    if (rc == EVBUS_OK)
        rc = evbus__saga_note(o, in, now, in->step, "step done", -1, -1,
                              "%s", s->name);
    if (rc != EVBUS_OK)
        return rc;
    in->step++;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    return evbus__saga_advance(o, d, in, now);
}

static int comp_reply(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                      saga_inst_t *in, const saga_msg_t *m, int64_t now)
{
    const saga_step_t *s = &d->steps[in->step];
    if (m->outcome == EVBUS_SAGA_FAILURE)
        return evbus__saga_comp_failed(o, d, in, now,
                                       m->reason ? m->reason : "failed");
    int prev = in->state;
    if (prev == EVBUS_SAGA_FAILED) { /* the one it gave up on did succeed */
        in->state = EVBUS_SAGA_COMPENSATING;
        evbus__saga_log(o, EVBUS_LOG_WARN,
                        "saga %s %s: compensation of %s succeeded after it "
                        "was parked; compensating on",
                        d->name, in->id, s->name);
    }
    int rc = evbus__saga_step_set(in, in->step, s->name,
                                  "compensated", m->attempt, -1, -1, -1,
                                  NULL);
    if (rc == EVBUS_OK)
        rc = evbus__saga_note(o, in, now, in->step, "compensated", prev,
                              prev == in->state ? -1 : in->state,
                              "step %s, attempt %d", s->name, m->attempt);
    if (rc != EVBUS_OK)
        return rc;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    return evbus__saga_comp_next(o, d, in, now, in->step - 1);
}

int evbus__saga_apply_reply(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, const saga_msg_t *m,
                            const evbus_event_t *reply, int64_t now)
{
    bool same_step = m->step == in->step && m->step < d->n;
    if (same_step && m->kind == SAGA_ACTION &&
        in->state == EVBUS_SAGA_RUNNING && in->waiting == SAGA_WAIT_REPLY)
        return action_reply(o, d, in, m, reply, now);
    if (same_step && m->kind == SAGA_COMPENSATION &&
        (in->state == EVBUS_SAGA_COMPENSATING ||
         in->state == EVBUS_SAGA_FAILED) &&
        (m->outcome == EVBUS_SAGA_SUCCESS
             ? in->waiting != SAGA_WAIT_NONE || in->state == EVBUS_SAGA_FAILED
             : m->attempt == in->attempt &&
                   in->waiting == SAGA_WAIT_REPLY))
        return comp_reply(o, d, in, m, now);
    evbus__saga_log(o, EVBUS_LOG_INFO,
                    "saga %s %s: ignored a late or unexpected reply (%s of "
                    "step %d, attempt %d, %s) while %s at step %d",
                    d->name, in->id, evbus__saga_kind_name(m->kind), m->step,
                    m->attempt,
                    m->outcome == EVBUS_SAGA_SUCCESS ? "success" : "failure",
                    evbus_saga_state_name(in->state), in->step);
    int rc = evbus__saga_note(
        o, in, now, m->step, "reply ignored", -1, -1,
        "late or unexpected: %s of step %d, attempt %d, %s%s%s (while %s at "
        "step %d)",
        evbus__saga_kind_name(m->kind), m->step, m->attempt,
        m->outcome == EVBUS_SAGA_SUCCESS ? "success" : "failure",
        m->reason ? ": " : "", m->reason ? m->reason : "",
        evbus_saga_state_name(in->state), in->step);
    return rc != EVBUS_OK ? rc : 1;
}

int evbus__saga_apply_timer(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, int64_t now)
{
    if (in->due_at < 0 || in->due_at > now)
        return 1; /* moved on since it was found due */
    if (in->step >= d->n) { /* stored by a definition with more steps */
        in->due_at = -1;
        in->waiting = SAGA_WAIT_NONE;
        evbus__saga_log(o, EVBUS_LOG_ERROR, "saga %s %s waits at step %d, which "
                        "the registered definition does not have; timer "
                        "dropped", d->name, in->id, in->step);
        return evbus__saga_note(o, in, now, in->step, "timer dropped", -1,
                                -1, "the definition has no step %d",
                                in->step);
    }
    const saga_step_t *s = &d->steps[in->step];
    char why[160];
    if (in->state == EVBUS_SAGA_RUNNING && in->waiting == SAGA_WAIT_REPLY) {
        snprintf(why, sizeof why, "no reply within %lld ms",
                 (long long)s->deadline_ms);
        o->pend.timeouts++;
        int rc = evbus__saga_step_set(in, in->step, s->name,
                                      "timed_out", -1, -1, now, -1, why);
        if (rc == EVBUS_OK)
            rc = evbus__saga_note(o, in, now, in->step, "step timed out", -1,
                                  -1, "%s: %s", s->name, why);
        if (rc != EVBUS_OK)
            return rc;
        char reason[240];
        snprintf(reason, sizeof reason, "step %s timed out: %s", s->name,
                 why);
        /* from this step down: its command may have taken effect */
        return evbus__saga_begin_comp(o, d, in, now, in->step, reason);
    }
    if (in->state == EVBUS_SAGA_COMPENSATING &&
        in->waiting == SAGA_WAIT_REPLY) {
        snprintf(why, sizeof why, "no reply within %lld ms",
                 (long long)s->comp_timeout_ms);
        return evbus__saga_comp_failed(o, d, in, now, why);
    }
    if (in->state == EVBUS_SAGA_COMPENSATING &&
        in->waiting == SAGA_WAIT_RETRY) {
        in->attempt++;
        o->pend.comp_retried++;
        int rc = evbus__saga_comp_attempt(o, d, in, now);
        return rc == 1 ? evbus__saga_comp_next(o, d, in, now, in->step - 1)
                       : rc;
    }
    return 1;
}
