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

char *evbus__saga_steps_print(const saga_inst_t *in)
{
    return in->steps ? cJSON_PrintUnformatted(in->steps) : strdup("[]");
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
