/*
 * Compensation: undoing, in reverse order and one at a time, every step
 * that took effect (done) or may have (timed out). A compensation command
 * is retried with the orchestrator's backoff policy - after a failure
 * reply, or when its reply does not come within the step's comp_timeout_ms
 * - until it succeeds; when the policy gives up the instance is parked as
 * FAILED with the reason, never silently dropped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_engine.h"

int evbus__saga_note(evbus_saga_orch_t *o, saga_inst_t *in, int64_t now,
                     int step, const char *event, int from, int to,
                     const char *fmt, ...)
{
    char detail[SAGA_REASON_MAX + 200] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    return evbus__saga_history(&o->st, in, now, step, event, from, to,
                               fmt ? detail : NULL);
}

static int set_reason(saga_inst_t *in, const char *reason)
{
    char *c = evbus__saga_clean_text(reason, SAGA_REASON_MAX);
    if (!c)
        return EVBUS_ENOMEM;
    free(in->reason);
    in->reason = c;
    return EVBUS_OK;
}

int evbus__saga_begin_comp(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                           saga_inst_t *in, int64_t now, int from,
                           const char *reason)
{
    int prev = in->state;
    int rc = set_reason(in, reason);
    if (rc != EVBUS_OK)
        return rc;
    in->state = EVBUS_SAGA_COMPENSATING;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    rc = evbus__saga_note(o, in, now, in->step, "compensating", prev,
                          in->state, "%s", in->reason);
    return rc != EVBUS_OK ? rc : evbus__saga_comp_next(o, d, in, now, from);
}

/* Parks the instance as FAILED: a person has to look (evbus_saga_resume). */
static int park(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                saga_inst_t *in, int64_t now, const char *why)
{
    const saga_step_t *s = &d->steps[in->step];
    char reason[SAGA_REASON_MAX + 1];
    snprintf(reason, sizeof reason,
             "compensation of step %s failed after %d attempt%s: %s", s->name,
             in->attempt, in->attempt == 1 ? "" : "s", why);
    int rc = set_reason(in, reason);
    if (rc != EVBUS_OK)
        return rc;
    int prev = in->state;
    in->state = EVBUS_SAGA_FAILED;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    o->pend.parked++;
    evbus__saga_log(o, EVBUS_LOG_ERROR, "saga %s %s parked FAILED: %s", d->name,
                    in->id, in->reason);
    rc = evbus__saga_step_set(in, in->step, s->name,
                              "comp_failed", in->attempt, -1, -1, -1, why);
    return rc != EVBUS_OK ? rc
                          : evbus__saga_note(o, in, now, in->step, "failed",
                                             prev, in->state, "%s",
                                             in->reason);
}

int evbus__saga_comp_failed(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                            saga_inst_t *in, int64_t now, const char *why)
{
    const evbus_retry_policy_t *p = &o->comp_retry;
    const saga_step_t *s = &d->steps[in->step];
    int delay = evbus_retry_delay_ms(p, in->attempt, in->prev_delay_ms);
    uint64_t elapsed = now > in->comp_started_at
                           ? (uint64_t)(now - in->comp_started_at)
                           : 0;
    if (!evbus_retry_should_retry(p, in->attempt, elapsed, delay))
        return park(o, d, in, now, why);
    in->waiting = SAGA_WAIT_RETRY;
    in->due_at = now + delay;
    in->prev_delay_ms = delay;
    int rc = evbus__saga_step_set(in, in->step, s->name,
                                  "compensating", in->attempt, -1, -1, -1,
                                  why);
    return rc != EVBUS_OK
               ? rc
               : evbus__saga_note(o, in, now, in->step,
                                  "compensation failed", -1, -1,
                                  "step %s attempt %d: %s; next attempt in "
                                  "%d ms",
                                  s->name, in->attempt, why, delay);
}

int evbus__saga_comp_attempt(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                             saga_inst_t *in, int64_t now)
{
    const saga_step_t *s = &d->steps[in->step];
    int rc;
    if (s->comp_local) {
        evbus_saga_answer_t ans = {0};
        int r = evbus__saga_run_local(o, s->comp_local, in, s->opaque, &ans);
        if (r < 0) {
            evbus__saga_answer_reset(&ans);
            return r;
        }
        if (r == EVBUS_SAGA_SUCCESS) {
            evbus__saga_answer_reset(&ans);
            rc = evbus__saga_step_set(in, in->step, s->name,
                                      "compensated", in->attempt, -1, -1, -1,
                                      NULL);
            if (rc == EVBUS_OK)
                rc = evbus__saga_note(o, in, now, in->step, "compensated",
                                      -1, -1, "step %s (local), attempt %d",
                                      s->name, in->attempt);
            return rc != EVBUS_OK ? rc : 1;
        }
        rc = evbus__saga_comp_failed(o, d, in, now, ans.reason);
        evbus__saga_answer_reset(&ans);
        return rc;
    }
    char why[SAGA_REASON_MAX];
    rc = evbus__saga_send(o, d, in, in->step, SAGA_COMPENSATION, in->attempt,
                          why, sizeof why);
    if (rc < 0)
        return rc;
    if (rc == 1) /* a command that cannot be built now never will be */
        return park(o, d, in, now, why);
    in->waiting = SAGA_WAIT_REPLY;
    in->due_at = now + s->comp_timeout_ms;
    rc = evbus__saga_step_set(in, in->step, s->name,
                              "compensating", in->attempt, -1, -1, -1, NULL);
    return rc != EVBUS_OK ? rc
                          : evbus__saga_note(o, in, now, in->step,
                                             "compensation sent", -1, -1,
                                             "step %s attempt %d to %s",
                                             s->name, in->attempt,
                                             s->comp_topic);
}

int evbus__saga_comp_next(evbus_saga_orch_t *o, const evbus_saga_def_t *d,
                          saga_inst_t *in, int64_t now, int k)
{
    int rc;
    for (; k >= 0; k--) {
        const char *status = evbus__saga_step_status(in, k);
        if (strcmp(status, "done") != 0 && strcmp(status, "timed_out") != 0)
            continue; /* never ran, or answered failure: nothing to undo */
        if (!saga_step_has_comp(&d->steps[k]))
            continue;
        in->step = k;
        in->attempt = 1;
        in->comp_started_at = now;
        in->prev_delay_ms = 0;
        rc = evbus__saga_comp_attempt(o, d, in, now);
        if (rc != 1)
            return rc; /* waiting for a reply or a retry, parked, or error */
    }
    int prev = in->state;
    in->state = EVBUS_SAGA_COMPENSATED;
    in->waiting = SAGA_WAIT_NONE;
    in->due_at = -1;
    return evbus__saga_note(o, in, now, -1, "compensated", prev, in->state,
                            "%s", in->reason ? in->reason : "");
}
