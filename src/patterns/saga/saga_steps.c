/*
 * Per-step results, kept in the instance row's `steps` column as a JSON
 * array ([{"index","name","status","attempts","startedAt","endedAt",
 * "deadlineAt","result"}, ...]) rather than in a table of their own: a
 * transition then writes one row instead of two (SQLite writes every
 * b-tree page a transaction touches, and that is most of a step's cost).
 * Parsed once when the instance is loaded, printed once when it is saved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saga_internal.h"
#include "support/buf.h"

int evbus__saga_steps_parse(saga_inst_t *in, const char *text)
{
    cJSON_Delete(in->steps);
    in->steps = text && *text ? cJSON_Parse(text) : cJSON_CreateArray();
    if (!cJSON_IsArray(in->steps)) {
        cJSON_Delete(in->steps);
        in->steps = NULL;
        return text ? EVBUS_EIO : EVBUS_ENOMEM;
    }
    return EVBUS_OK;
}

/* A number as cJSON prints it, except that integers up to 2^53 (the
 * times, attempts, indexes) are written as digits without going through
 * printf("%1.15g") and the sscanf that checks it: printing the list is on
 * every transition's path, and that check was most of its cost. */
static void print_number(evbus__buf_t *b, double v)
{
    if (v != v || v - v != 0) { /* NaN, infinity: what cJSON writes */
        evbus__buf_puts(b, "null");
        return;
    }
    if (v >= -9007199254740992.0 && v <= 9007199254740992.0 &&
        v == (double)(int64_t)v) {
        char digits[24], *p = digits + sizeof digits;
        int64_t i = (int64_t)v;
        uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        do
            *--p = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        if (i < 0)
            *--p = '-';
        evbus__buf_append(b, p, (size_t)(digits + sizeof digits - p));
        return;
    }
    char text[32];
    snprintf(text, sizeof text, "%1.15g", v);
    double back;
    if (sscanf(text, "%lg", &back) != 1 || back != v)
        snprintf(text, sizeof text, "%1.17g", v);
    evbus__buf_puts(b, text);
}

/* Writes item as compact JSON (the same text as cJSON_PrintUnformatted
 * but for the integers above). */
static void print_item(evbus__buf_t *b, const cJSON *item)
{
    if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
        bool obj = cJSON_IsObject(item);
        evbus__buf_append(b, obj ? "{" : "[", 1);
        for (const cJSON *c = item->child; c; c = c->next) {
            if (c != item->child)
                evbus__buf_append(b, ",", 1);
            if (obj) {
                evbus__buf_json_str(b, c->string ? c->string : "");
                evbus__buf_append(b, ":", 1);
            }
            print_item(b, c);
        }
        evbus__buf_append(b, obj ? "}" : "]", 1);
    } else if (cJSON_IsString(item)) {
        evbus__buf_json_str(b, item->valuestring ? item->valuestring : "");
    } else if (cJSON_IsNumber(item)) {
        print_number(b, item->valuedouble);
    } else if (cJSON_IsRaw(item) && item->valuestring) {
        evbus__buf_puts(b, item->valuestring);
    } else {
        evbus__buf_puts(b, cJSON_IsTrue(item)    ? "true"
                           : cJSON_IsFalse(item) ? "false"
                                                 : "null");
    }
}

char *evbus__saga_steps_print(const saga_inst_t *in)
{
    if (!in->steps)
        return strdup("[]");
    evbus__buf_t b = {0};
    print_item(&b, in->steps);
    return evbus__buf_take(&b, NULL);
}

/* Sets a number member (time < 0 or attempts < 0: leave as it is). */
static int set_num(cJSON *e, const char *key, double v)
{
    cJSON *old = cJSON_GetObjectItemCaseSensitive(e, key);
    if (old) {
        cJSON_SetNumberValue(old, v);
        return 1;
    }
    return cJSON_AddNumberToObject(e, key, v) != NULL;
}

static int set_item(cJSON *e, const char *key, cJSON *v)
{
    if (!v)
        return 0;
    if (cJSON_GetObjectItemCaseSensitive(e, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(e, key, v);
    return cJSON_AddItemToObject(e, key, v);
}

int evbus__saga_step_set(saga_inst_t *in, int step, const char *name,
                         const char *status, int attempts, int64_t started_at,
                         int64_t ended_at, int64_t deadline_at,
                         const char *result)
{
    if (!in->steps && evbus__saga_steps_parse(in, NULL) != EVBUS_OK)
        return EVBUS_ENOMEM;
    /* dense: steps start in order, so index k exists once k - 1 did */
    while (cJSON_GetArraySize(in->steps) <= step) {
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddNumberToObject(e, "index",
                                           cJSON_GetArraySize(in->steps)) ||
            !cJSON_AddItemToArray(in->steps, e)) {
            cJSON_Delete(e);
            return EVBUS_ENOMEM;
        }
    }
    cJSON *e = cJSON_GetArrayItem(in->steps, step);
    int ok = set_item(e, "name", cJSON_CreateString(name)) &&
             set_item(e, "status", cJSON_CreateString(status));
    if (ok && attempts >= 0)
        ok = set_num(e, "attempts", attempts);
    if (ok && started_at >= 0)
        ok = set_num(e, "startedAt", (double)started_at);
    if (ok && ended_at >= 0)
        ok = set_num(e, "endedAt", (double)ended_at);
    if (ok && deadline_at >= 0)
        ok = set_num(e, "deadlineAt", (double)deadline_at);
    if (ok && result) {
        cJSON *v = result[0] == '{' ? cJSON_Parse(result) : NULL;
        ok = set_item(e, "result", v ? v : cJSON_CreateString(result));
    }
    return ok ? EVBUS_OK : EVBUS_ENOMEM;
}

const char *evbus__saga_step_status(const saga_inst_t *in, int step)
{
    cJSON *e = in->steps ? cJSON_GetArrayItem(in->steps, step) : NULL;
    cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "status");
    return cJSON_IsString(s) ? s->valuestring : "";
}
