/*
 * The backend registry: built-in backends (generated list) plus those the
 * application registers. evbus_open looks a scheme up here; a scheme with a
 * '+' ("faulty+redis") is looked up whole first, then by its prefix, so a
 * wrapper backend can claim every "<wrapper>+..." URL.
 */
#include <stddef.h>
#include <string.h>

#include "builtin_backends.h"
#include "internal.h"

#define X(name) extern const evbus_backend_t evbus_backend_##name;
EVBUS_BUILTIN_BACKENDS(X)
#undef X

static const evbus_backend_t *const builtin[] = {
#define X(name) &evbus_backend_##name,
    EVBUS_BUILTIN_BACKENDS(X)
#undef X
    NULL};

#define MAX_USER_BACKENDS 32

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const evbus_backend_t *user[MAX_USER_BACKENDS];
static size_t nuser;

/* Caller holds reg_mu for the user list. */
static const evbus_backend_t *find_locked(const char *scheme)
{
    for (size_t i = 0; builtin[i]; i++)
        if (strcmp(builtin[i]->scheme, scheme) == 0)
            return builtin[i];
    for (size_t i = 0; i < nuser; i++)
        if (strcmp(user[i]->scheme, scheme) == 0)
            return user[i];
    return NULL;
}

static const evbus_backend_t *find_exact(const char *scheme)
{
    pthread_mutex_lock(&reg_mu);
    const evbus_backend_t *be = find_locked(scheme);
    pthread_mutex_unlock(&reg_mu);
    return be;
}

const evbus_backend_t *evbus_backend_find(const char *scheme)
{
    return scheme ? find_exact(scheme) : NULL;
}

const evbus_backend_t *evbus__backend_lookup(const char *scheme)
{
    const evbus_backend_t *be = find_exact(scheme);
    const char *plus = strchr(scheme, '+');
    if (!be && plus) {
        char prefix[64];
        size_t n = (size_t)(plus - scheme);
        if (n < sizeof prefix) {
            memcpy(prefix, scheme, n);
            prefix[n] = '\0';
            be = find_exact(prefix);
        }
    }
    return be;
}

size_t evbus_backend_msg_size(const evbus_backend_t *be)
{
    /* Version 1 messages end before the retry context. */
    return !be ? 0
               : be->version < 2 ? offsetof(evbus_msg_t, attempts)
                                 : sizeof(evbus_msg_t);
}

int evbus_backend_register(const evbus_backend_t *be)
{
    if (!be || !be->scheme || !*be->scheme || be->version < 1 ||
        be->version > EVBUS_BACKEND_VERSION || !be->open || !be->close ||
        !be->publish || !be->subscribe || !be->unsubscribe || !be->fetch ||
        !be->settle)
        return EVBUS_EINVAL;
    /* Look up and insert under one lock: two registrations of one scheme
     * cannot both succeed. */
    int rc = EVBUS_OK;
    pthread_mutex_lock(&reg_mu);
    if (find_locked(be->scheme))
        rc = EVBUS_EBUSY;
    else if (nuser == MAX_USER_BACKENDS)
        rc = EVBUS_ENOMEM;
    else
        user[nuser++] = be;
    pthread_mutex_unlock(&reg_mu);
    return rc;
}
