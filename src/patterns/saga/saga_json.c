/*
 * The saga's JSON work, on cJSON: checking that data is an object, the RFC
 * 7386 merge patch that folds a reply's data into the saga's data, the
 * command templates ("$.order.total" placeholders), and cleaning the
 * free-text reasons that participants send (valid UTF-8, one line, cut).
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saga_internal.h"

bool evbus__saga_is_object(const char *json, size_t max)
{
    if (!json)
        return false;
    size_t len = strlen(json);
    if ((max && len > max) || !evbus__saga_utf8_ok(json, len))
        return false; /* cJSON does not check the strings' UTF-8 */
    cJSON *j = cJSON_ParseWithOpts(json, NULL, 1);
    bool ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    return ok;
}

/* RFC 7386: returns the merged value; target is consumed (reused or
 * deleted), patch is only read. NULL when out of memory. */
static cJSON *merge(cJSON *target, const cJSON *patch)
{
    if (!cJSON_IsObject(patch)) {
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, 1);
    }
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        if (!(target = cJSON_CreateObject()))
            return NULL;
    }
    for (const cJSON *p = patch->child; p; p = p->next) {
        if (cJSON_IsNull(p)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, p->string);
            continue;
        }
        cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(target,
                                                             p->string);
        cJSON *v = merge(old, p);
        if (!v || !cJSON_AddItemToObject(target, p->string, v)) {
            cJSON_Delete(v);
            cJSON_Delete(target);
            return NULL;
        }
    }
    return target;
}

int evbus__saga_merge_patch(const char *doc, const char *patch, char **out)
{
    *out = NULL;
    cJSON *d = cJSON_Parse(doc), *p = cJSON_Parse(patch);
    if (!cJSON_IsObject(d) || !cJSON_IsObject(p)) {
        cJSON_Delete(d);
        cJSON_Delete(p);
        return EVBUS_EINVAL;
    }
    cJSON *m = merge(d, p);
    cJSON_Delete(p);
    if (m)
        *out = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    return *out ? EVBUS_OK : EVBUS_ENOMEM;
}

/* The value at "$", "$.a.b" or "$.items.0" in data, or NULL. */
static const cJSON *lookup(const cJSON *data, const char *path)
{
    if (strcmp(path, "$") == 0)
        return data;
    if (strncmp(path, "$.", 2) != 0)
        return NULL;
    const cJSON *cur = data;
    const char *p = path + 2;
    char seg[256];
    while (cur && *p) {
        size_t len = strcspn(p, ".");
        if (len == 0 || len >= sizeof seg)
            return NULL;
        memcpy(seg, p, len);
        seg[len] = 0;
        p += len + (p[len] == '.');
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(seg, &end, 10);
            cur = *end || i < 0 ? NULL : cJSON_GetArrayItem(cur, (int)i);
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(cur, seg);
        }
    }
    return cur;
}

/* Gives item the member name key (NULL in arrays) instead of the name it
 * had where it was copied from. 0 when out of memory. */
static int take_key(cJSON *item, const char *key)
{
    if (item->string && !(item->type & cJSON_StringIsConst))
        cJSON_free(item->string);
    item->type &= ~cJSON_StringIsConst;
    item->string = NULL;
    if (!key)
        return 1;
    if (!(item->string = cJSON_malloc(strlen(key) + 1)))
        return 0;
    strcpy(item->string, key);
    return 1;
}

/* Replaces placeholders below node in place. */
static int render_node(cJSON *node, const cJSON *data, char *why, size_t n)
{
    for (cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsString(c) && c->valuestring[0] == '$') {
            const char *s = c->valuestring;
            if (s[1] == '$') { /* "$$x" stands for "$x" */
                memmove(c->valuestring, s + 1, strlen(s));
                continue;
            }
            const cJSON *v = lookup(data, s);
            if (!v) {
                evbus__seterr(why, n, "template: %.200s is not in the saga data",
                           s);
                return EVBUS_EINVAL;
            }
            cJSON *copy = cJSON_Duplicate(v, 1);
            if (copy && !take_key(copy, c->string)) {
                cJSON_Delete(copy);
                copy = NULL;
            }
            if (!copy || !cJSON_ReplaceItemViaPointer(node, c, copy)) {
                cJSON_Delete(copy);
                return EVBUS_ENOMEM;
            }
            c = copy;
        } else if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            int rc = render_node(c, data, why, n);
            if (rc != EVBUS_OK)
                return rc;
        }
    }
    return EVBUS_OK;
}

int evbus__saga_render(const char *tmpl, const char *data, char **out,
                       char *why, size_t n)
{
    *out = NULL;
    cJSON *t = cJSON_Parse(tmpl), *d = cJSON_Parse(data);
    int rc = EVBUS_EINVAL;
    if (!t || !d)
        evbus__seterr(why, n, "template: %s is not JSON", t ? "data" : "template");
    else if ((rc = render_node(t, d, why, n)) == EVBUS_OK &&
             !(*out = cJSON_PrintUnformatted(t)))
        rc = EVBUS_ENOMEM;
    cJSON_Delete(t);
    cJSON_Delete(d);
    return rc;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* overlong 3/4-byte forms, surrogates, above U+10FFFF */
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
        return 0;
    return len;
}

bool evbus__saga_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t k = *p ? utf8_seq(p) : 0; /* stops at a NUL, never past it */
        if (k == 0 || k > (size_t)(end - p))
            return false;
        p += k;
    }
    return true;
}

char *evbus__saga_clean_text(const char *in, size_t max)
{
    const unsigned char *s = (const unsigned char *)(in ? in : "");
    size_t len = strlen((const char *)s);
    char *out = malloc((len < max ? len : max) + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    while (*s) {
        size_t k = utf8_seq(s);
        size_t w = k ? k : 1;
        if (o + w > max)
            break;
        if (k == 0)
            out[o++] = '?';
        else if (k == 1 && (*s < 0x20 || *s == 0x7f))
            out[o++] = ' ';
        else
            memcpy(out + o, s, k), o += k;
        s += w;
    }
    out[o] = 0;
    return out;
}
