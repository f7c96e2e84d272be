/*
 * CloudEvents extensions of an event: names (lowercase a-z0-9, at most 20,
 * not a context attribute), string/integer/boolean values kept in
 * insertion order. The rest of the event object is in event.c.
 */
#include <string.h>
#include <stdlib.h>

#include "event_internal.h"
#include "internal.h"

#define NO_EVENT() evbus__event_refuse("no event (NULL)")

/* ---- extensions */

static bool reserved_name(const char *name)
{
    static const char *const r[] = {"id",          "source",  "specversion",
                                    "type",        "datacontenttype",
                                    "dataschema",  "subject", "time",
                                    "data"};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (strcmp(name, r[i]) == 0)
            return true;
    return false;
}

/* Lowercase a-z0-9, at most 20, not a context attribute; records the
 * reason when not. The name is printed only once it is known to be text. */
bool evbus__ext_name_check(const char *name)
{
    if (!evbus__name_ok(name)) {
        size_t bad, len = strlen(name);
        const char *why;
        if (!evbus__utf8_check((const unsigned char *)name, len, &bad, &why))
            evbus__event_refuse("extension name is not valid UTF-8 at byte "
                                "offset %zu: %s",
                                bad, why);
        else if (evbus__has_ctl(name) || !*name)
            evbus__event_refuse("invalid extension name: names use only "
                                "lowercase a-z and 0-9 (at least one)");
        else
            evbus__event_refuse("invalid extension name '%.64s': names use "
                                "only lowercase a-z and 0-9",
                                name);
        return false;
    }
    if (strlen(name) > 20) {
        evbus__event_refuse("extension name '%.64s' is longer than 20 "
                            "characters",
                            name);
        return false;
    }
    if (reserved_name(name)) {
        evbus__event_refuse("'%s' is a context attribute, not an extension "
                            "name",
                            name);
        return false;
    }
    return true;
}

evbus__ext_t *evbus__ext_find(const evbus_event_t *ev, const char *name)
{
    for (size_t i = 0; i < ev->ext_count; i++)
        if (strcmp(ev->ext[i].name, name) == 0)
            return &ev->ext[i];
    return NULL;
}

static void ext_remove(evbus_event_t *ev, evbus__ext_t *x)
{
    size_t i = (size_t)(x - ev->ext);
    evbus__event_release(ev, x->name);
    memmove(&ev->ext[i], &ev->ext[i + 1],
            (ev->ext_count - i - 1) * sizeof *x);
    ev->ext_count--;
}

/* Sets name to value (already validated) with the given kind. */
static int ext_put(evbus_event_t *ev, const char *name, const char *value,
                   int kind)
{
    size_t nl = strlen(name), vl = strlen(value);
    char *buf = malloc(nl + vl + 2);
    if (!buf)
        return EVBUS_ENOMEM;
    memcpy(buf, name, nl + 1);
    memcpy(buf + nl + 1, value, vl + 1);
    evbus__ext_t *x = evbus__ext_find(ev, name);
    if (x) {
        evbus__event_release(ev, x->name);
    } else {
        if (ev->ext_count == ev->ext_cap) {
            size_t cap = ev->ext_cap ? ev->ext_cap * 2 : 4;
            evbus__ext_t *a = malloc(cap * sizeof *a);
            if (!a) {
                free(buf);
                return EVBUS_ENOMEM;
            }
            if (ev->ext_count)
                memcpy(a, ev->ext, ev->ext_count * sizeof *a);
            evbus__event_release(ev, ev->ext);
            ev->ext = a;
            ev->ext_cap = cap;
        }
        x = &ev->ext[ev->ext_count++];
    }
    x->name = buf;
    x->value = buf + nl + 1;
    x->kind = kind;
    return EVBUS_OK;
}

int evbus_event_set_ext(evbus_event_t *ev, const char *name,
                        const char *value)
{
    if (!ev)
        return NO_EVENT();
    if (!name)
        return evbus__event_refuse("extension name is NULL");
    if (!value) {
        /* any present name may be removed, also a long one from the wire */
        evbus__ext_t *x = evbus__ext_find(ev, name);
        if (x)
            ext_remove(ev, x);
        return x || evbus__ext_name_check(name) ? EVBUS_OK : EVBUS_EINVAL;
    }
    if (!evbus__ext_name_check(name))
        return EVBUS_EINVAL;
    size_t n;
    char *buf = evbus__event_reason_buf(&n);
    if (!evbus__text_value_ok("extension", name, value, strlen(value), buf, n))
        return EVBUS_EINVAL;
    return ext_put(ev, name, value, EVBUS__EXT_STRING);
}

/* The checks of a typed extension setter before its value's own. */
static int typed_ext_refused(const evbus_event_t *ev, const char *name)
{
    if (!ev)
        return NO_EVENT();
    if (!name)
        return evbus__event_refuse("extension name is NULL");
    return evbus__ext_name_check(name) ? EVBUS_OK : EVBUS_EINVAL;
}

int evbus_event_set_ext_int(evbus_event_t *ev, const char *name,
                            int64_t value)
{
    int rc = typed_ext_refused(ev, name);
    if (rc != EVBUS_OK)
        return rc;
    if (value > EVBUS__EXT_INT_MAX || value < -EVBUS__EXT_INT_MAX)
        return evbus__event_refuse("extension '%s': %lld is outside "
                                   "+-(2^53 - 1)",
                                   name, (long long)value);
    char buf[24];
    evbus__fmt_int64(buf, value);
    return ext_put(ev, name, buf, EVBUS__EXT_INT);
}

int evbus_event_set_ext_bool(evbus_event_t *ev, const char *name, int value)
{
    int rc = typed_ext_refused(ev, name);
    if (rc != EVBUS_OK)
        return rc;
    return ext_put(ev, name, value ? "true" : "false", EVBUS__EXT_BOOL);
}

const char *evbus_event_ext(const evbus_event_t *ev, const char *name)
{
    if (!ev || !name)
        return NULL;
    const evbus__ext_t *x = evbus__ext_find(ev, name);
    return x ? x->value : NULL;
}

size_t evbus_event_ext_count(const evbus_event_t *ev)
{
    return ev ? ev->ext_count : 0;
}

int evbus_event_ext_at(const evbus_event_t *ev, size_t i, const char **name,
                       const char **value)
{
    if (!ev || i >= ev->ext_count)
        return EVBUS_EINVAL;
    if (name)
        *name = ev->ext[i].name;
    if (value)
        *value = ev->ext[i].value;
    return EVBUS_OK;
}
