/*
 * Saga definitions: a name and up to SAGA_MAX_STEPS validated steps, each
 * copied out of the caller's evbus_saga_step_t (only struct_size bytes of
 * it are read, so a program built against an older header still works).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_internal.h"

/* The size of evbus_saga_step_t in the first release: smaller is refused. */
#define STEP_SIZE_V1 EVBUS__SIZE_THROUGH(evbus_saga_step_t, opaque)

bool evbus__saga_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > SAGA_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!evbus__portable_byte((unsigned char)*p))
            return false;
    return true;
}

void evbus_saga_step_init_sized(evbus_saga_step_t *out, size_t size)
{
    evbus_saga_step_t defaults, *s = &defaults;
    memset(s, 0, sizeof *s);
    s->struct_size = sizeof *s;
    s->deadline_ms = 60000;
    s->comp_timeout_ms = 30000;
    evbus__struct_defaults(out, size, s, sizeof *s);
}

evbus_saga_def_t *evbus_saga_def_new(const char *name, char *errstr,
                                     size_t n)
{
    if (!evbus__saga_name_ok(name)) {
        evbus__seterr(errstr, n,
                   "saga name must be 1-%d letters, digits, '.', '_' or '-'",
                   SAGA_NAME_MAX);
        return NULL;
    }
    evbus_saga_def_t *d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(name))) {
        free(d);
        evbus__seterr(errstr, n, "out of memory");
        return NULL;
    }
    return d;
}

static void step_free(saga_step_t *s)
{
    free(s->name);
    free(s->topic);
    free(s->type);
    free(s->tmpl);
    free(s->comp_topic);
    free(s->comp_type);
    free(s->comp_tmpl);
    memset(s, 0, sizeof *s);
}

void evbus_saga_def_free(evbus_saga_def_t *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n; i++)
        step_free(&d->steps[i]);
    free(d->name);
    free(d);
}

const char *evbus_saga_def_name(const evbus_saga_def_t *d)
{
    return d ? d->name : NULL;
}

int evbus_saga_def_steps(const evbus_saga_def_t *d)
{
    return d ? d->n : 0;
}

/* Why the step cannot be used, or NULL. */
static const char *step_problem(const evbus_saga_def_t *d,
                                const evbus_saga_step_t *s)
{
    if (!evbus__saga_name_ok(s->name))
        return "step name must be 1-64 letters, digits, '.', '_' or '-'";
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->steps[i].name, s->name) == 0)
            return "a step of this name exists already";
    if (!s->topic && !s->local)
        return "no action: set topic (a command) or local";
    if (s->topic && s->local)
        return "both a command (topic) and a local action";
    if (s->topic && !saga_topic_ok(s->topic, false))
        return "topic is not a valid topic name";
    if (s->template_json && s->build)
        return "both template_json and build";
    if (s->template_json && !evbus__saga_is_object(s->template_json, 0))
        return "template_json is not a JSON object";
    if (s->comp_topic && s->comp_local)
        return "both a compensation command (comp_topic) and comp_local";
    if (s->comp_topic && !saga_topic_ok(s->comp_topic, false))
        return "comp_topic is not a valid topic name";
    if (s->comp_template_json && s->comp_build)
        return "both comp_template_json and comp_build";
    if (s->comp_template_json &&
        !evbus__saga_is_object(s->comp_template_json, 0))
        return "comp_template_json is not a JSON object";
    if ((s->comp_template_json || s->comp_build || s->comp_type) &&
        !s->comp_topic)
        return "compensation data or type given without comp_topic";
    if ((s->template_json || s->build || s->type) && !s->topic)
        return "command data or type given without topic";
    if (s->deadline_ms < 0)
        return "deadline_ms must be >= 0";
    if (s->comp_timeout_ms < 1)
        return "comp_timeout_ms must be >= 1";
    return NULL;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    if (!c)
        *oom = true;
    return c;
}

static char *default_type(const char *saga, const char *step,
                          const char *suffix, bool *oom)
{
    size_t len = strlen(saga) + strlen(step) + strlen(suffix) + 2;
    char *t = malloc(len);
    if (!t) {
        *oom = true;
        return NULL;
    }
    snprintf(t, len, "%s.%s%s", saga, step, suffix);
    return t;
}

int evbus_saga_def_add_step(evbus_saga_def_t *d, const evbus_saga_step_t *in,
                            char *errstr, size_t n)
{
    if (!d || !in) {
        evbus__seterr(errstr, n, "evbus_saga_def_add_step: NULL argument");
        return EVBUS_EINVAL;
    }
    /* Read no more than the caller's struct holds; fields it lacks keep
     * their defaults. */
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    if (evbus__struct_in(&s, sizeof s, in, STEP_SIZE_V1) != EVBUS_OK) {
        evbus__seterr(errstr, n,
                      "evbus_saga_def_add_step: struct_size %zu is smaller "
                      "than any release's (initialise with "
                      "evbus_saga_step_init)",
                      in->struct_size);
        return EVBUS_EINVAL;
    }
    if (d->n >= SAGA_MAX_STEPS) {
        evbus__seterr(errstr, n, "saga %s: more than %d steps", d->name,
                   SAGA_MAX_STEPS);
        return EVBUS_EINVAL;
    }
    const char *bad = step_problem(d, &s);
    if (bad) {
        evbus__seterr(errstr, n, "saga %s, step %s: %s", d->name,
                   s.name && evbus__saga_name_ok(s.name) ? s.name : "?", bad);
        return EVBUS_EINVAL;
    }
    saga_step_t *t = &d->steps[d->n];
    bool oom = false;
    t->name = dup_or_null(s.name, &oom);
    t->topic = dup_or_null(s.topic, &oom);
    t->tmpl = dup_or_null(s.template_json, &oom);
    t->comp_topic = dup_or_null(s.comp_topic, &oom);
    t->comp_tmpl = dup_or_null(s.comp_template_json, &oom);
    if (s.topic)
        t->type = s.type ? dup_or_null(s.type, &oom)
                         : default_type(d->name, s.name, "", &oom);
    if (s.comp_topic)
        t->comp_type = s.comp_type
                           ? dup_or_null(s.comp_type, &oom)
                           : default_type(d->name, s.name, ".compensate",
                                          &oom);
    if (oom) {
        step_free(t);
        evbus__seterr(errstr, n, "out of memory");
        return EVBUS_ENOMEM;
    }
    t->build = s.build;
    t->local = s.local;
    t->comp_build = s.comp_build;
    t->comp_local = s.comp_local;
    t->deadline_ms = s.topic ? s.deadline_ms : 0;
    t->comp_timeout_ms = s.comp_timeout_ms;
    t->merge = s.merge;
    t->opaque = s.opaque;
    d->n++;
    return EVBUS_OK;
}

evbus_saga_def_t *evbus__saga_def_clone(const evbus_saga_def_t *d)
{
    evbus_saga_def_t *c = evbus_saga_def_new(d->name, NULL, 0);
    if (!c)
        return NULL;
    for (int i = 0; i < d->n; i++) {
        const saga_step_t *s = &d->steps[i];
        saga_step_t *t = &c->steps[i];
        bool oom = false;
        *t = *s;
        t->name = dup_or_null(s->name, &oom);
        t->topic = dup_or_null(s->topic, &oom);
        t->type = dup_or_null(s->type, &oom);
        t->tmpl = dup_or_null(s->tmpl, &oom);
        t->comp_topic = dup_or_null(s->comp_topic, &oom);
        t->comp_type = dup_or_null(s->comp_type, &oom);
        t->comp_tmpl = dup_or_null(s->comp_tmpl, &oom);
        c->n = i + 1;
        if (oom) {
            evbus_saga_def_free(c);
            return NULL;
        }
    }
    return c;
}

const evbus_saga_def_t *evbus__saga_find_def(const evbus_saga_orch_t *o,
                                             const char *name)
{
    for (int i = 0; name && i < o->ndefs; i++)
        if (strcmp(o->defs[i]->name, name) == 0)
            return o->defs[i];
    return NULL;
}
