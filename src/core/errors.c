/* Error codes: one X-macro table in evbus.h gives the enum, the messages,
 * the symbolic names and which errors are worth retrying. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

typedef struct {
    int code;
    int retriable;
    const char *name;
    const char *message;
} err_info_t;

static const err_info_t err_table[] = {
#define EVBUS_ERR_ROW_(name, val, retr, msg) {val, retr, "EVBUS_" #name, msg},
    EVBUS_ERRNO_MAP(EVBUS_ERR_ROW_)
#undef EVBUS_ERR_ROW_
};

static const err_info_t *err_find(int err)
{
    /* The table is dense from 0 downwards. */
    if (err > 0 || -err >= (int)(sizeof err_table / sizeof err_table[0]))
        return NULL;
    return &err_table[-err];
}

const char *evbus_strerror(int err)
{
    const err_info_t *e = err_find(err);
    return e ? e->message : "unknown error";
}

const char *evbus_err_name(int err)
{
    const err_info_t *e = err_find(err);
    return e ? e->name : "EVBUS_EUNKNOWN";
}

int evbus_err_retriable(int err)
{
    const err_info_t *e = err_find(err);
    return e ? e->retriable : 0;
}

