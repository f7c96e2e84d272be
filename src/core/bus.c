/*
 * Opening and closing a bus; the host services backends call back into.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "builtin_backends.h"
#include "internal.h"

/* Schemes that exist but may be left out of a build. */
static const char *const known_optional[][2] = {
    {"redis", "hiredis (libhiredis-dev)"},
    {"kafka", "librdkafka (librdkafka-dev)"},
    {"dapr", "libcurl and libmicrohttpd (libcurl4-openssl-dev, libmicrohttpd-dev)"},
};

static void no_backend_error(const char *scheme, char *errstr, size_t n)
{
    for (size_t i = 0; i < sizeof known_optional / sizeof known_optional[0];
         i++)
        if (strcmp(scheme, known_optional[i][0]) == 0) {
            evbus__seterr(errstr, n,
                          "the %s backend is not built into this libevbus "
                          "(it needs %s at build time)",
                          scheme, known_optional[i][1]);
            return;
        }
    char list[256] = "";
#define X(name)                                                                \
    if (strlen(list) + sizeof(#name) + 2 < sizeof list) {                      \
        if (*list)                                                             \
            strcat(list, ", ");                                                \
        strcat(list, #name);                                                   \
    }
    EVBUS_BUILTIN_BACKENDS(X)
#undef X
    evbus__seterr(errstr, n,
                  "no backend for URL scheme '%s' (built in: %s; others can "
                  "be added with evbus_backend_register)",
                  scheme, list);
}

static int read_core_options(evbus_t *bus, char *errstr, size_t n)
{
    long long v;
    int rc = evbus_url_param_int(bus->url, "close_timeout_ms", 10000, 0,
                                 INT32_MAX, &v, errstr, n);
    if (rc)
        return rc;
    bus->close_timeout_ms = (int)v;
    rc = evbus_url_param_int(bus->url, "max_event_bytes",
                             EVBUS_EVENT_MAX_BYTES_DEFAULT, 256,
                             (long long)1 << 30, &v, errstr, n);
    if (rc)
        return rc;
    bus->max_event_bytes = (size_t)v;
    if ((rc = evbus_url_param_int(bus->url, "max_pending", 100000, 1,
                                  INT32_MAX, &v, errstr, n)))
        return rc;
    bus->max_pending = (long)v;
    if ((rc = evbus_url_param_int(bus->url, "max_pending_bytes",
                                  (long long)256 << 20, 4096,
                                  (long long)1 << 40, &v, errstr, n)))
        return rc;
    bus->max_pending_bytes = (size_t)v;
    if ((rc = evbus_url_param_int(bus->url, "publish_wait_ms", 0, 0,
                                  INT32_MAX, &v, errstr, n)))
        return rc;
    bus->publish_wait_ms = (int)v;
    const char *names = evbus_url_param(bus->url, "names");
    if (names && strcmp(names, "native") != 0 &&
        strcmp(names, "portable") != 0) {
        evbus__seterr(errstr, n, "option names=%s: expected portable or "
                      "native", names);
        return EVBUS_EOPTION;
    }
    bus->native_names = names && strcmp(names, "native") == 0;
    return EVBUS_OK;
}

evbus_t *evbus_open(const char *url, char *errstr, size_t n)
{
    if (!url)
        url = getenv("EVBUS_URL");
    evbus_url_t *u = evbus__url_parse(url, errstr, n);
    if (!u)
        return NULL;
    const evbus_backend_t *be = evbus__backend_lookup(evbus_url_scheme(u));
    if (!be) {
        no_backend_error(evbus_url_scheme(u), errstr, n);
        evbus__url_free(u);
        return NULL;
    }
    evbus_t *bus = calloc(1, sizeof *bus);
    if (!bus) {
        evbus__seterr(errstr, n, "out of memory");
        evbus__url_free(u);
        return NULL;
    }
    bus->host.bus = bus;
    bus->be = be;
    bus->url = u;
    snprintf(bus->scheme, sizeof bus->scheme, "%s", evbus_url_scheme(u));
    pthread_mutex_init(&bus->mu, NULL);
    pthread_mutex_init(&bus->work_mu, NULL);
    evbus__cond_init(&bus->cv);
    pthread_cond_init(&bus->role_cv, NULL);
    bus->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (bus->wake_fd < 0) {
        evbus__seterr(errstr, n, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (read_core_options(bus, errstr, n) != EVBUS_OK)
        goto fail;
    bus->priv = calloc(1, be->priv_size ? be->priv_size : 1);
    if (!bus->priv) {
        evbus__seterr(errstr, n, "out of memory");
        goto fail;
    }
    if (be->open(bus->priv, &bus->host, u, errstr, n) != EVBUS_OK)
        goto fail;
    /* One feature word and the version-dependent parts, fixed for the
     * bus's life. */
    bus->features = be->features_of ? be->features_of(bus->priv)
                                     : be->features;
    bus->msg_stride = evbus_backend_msg_size(be);
    bus->record_attempts = be->version >= 2 ? be->record_attempts : NULL;
    const char *unused = evbus__url_unused(u);
    if (unused) {
        evbus__seterr(errstr, n, "unknown option '%s' for %s:// URLs",
                      unused, bus->scheme);
        be->close(bus->priv);
        goto fail;
    }
    evbus__log(EVBUS_LOG_INFO, "core", "opened %s:// bus", bus->scheme);
    return bus;
fail:
    if (bus->wake_fd >= 0)
        close(bus->wake_fd);
    pthread_mutex_destroy(&bus->mu);
    pthread_mutex_destroy(&bus->work_mu);
    pthread_cond_destroy(&bus->cv);
    pthread_cond_destroy(&bus->role_cv);
    free(bus->priv);
    evbus__url_free(u);
    free(bus);
    return NULL;
}

/* Wakes a poller sleeping on the eventfd. write() is async-signal-safe, so
 * evbus_stop can use this from a signal handler. */
static void wake_poller(evbus_t *bus)
{
    uint64_t one = 1;
    ssize_t r = write(bus->wake_fd, &one, sizeof one);
    (void)r; /* EAGAIN means the counter is already non-zero: awake anyway */
}

void evbus_host_notify(evbus_host_t *host)
{
    evbus_t *bus = host->bus;
    atomic_fetch_add_explicit(&bus->gen, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&bus->sleeping, memory_order_seq_cst))
        wake_poller(bus);
}

void evbus_stop(evbus_t *bus)
{
    if (!bus)
        return;
    atomic_store(&bus->stop, true);
    wake_poller(bus);
}

void evbus_close(evbus_t *bus)
{
    if (!bus)
        return;
    if (evbus__polling_bus == bus) {
        evbus__log(EVBUS_LOG_ERROR, "core",
                   "evbus_close called from inside a handler or callback of "
                   "the same bus; ignored (close it after evbus_run returns)");
        return;
    }
    atomic_store(&bus->closing, true);
    evbus_stop(bus);
    /* A poller sees `closing` after its running handler and leaves; threads
     * waiting to poll give up. Then we hold the role for good. */
    pthread_mutex_lock(&bus->mu);
    pthread_cond_broadcast(&bus->role_cv);
    pthread_mutex_unlock(&bus->mu);
    evbus__role_take_control(bus);
    evbus__release_all(bus);
    int rc = evbus_flush(bus, bus->close_timeout_ms);
    if (rc == EVBUS_ETIMEDOUT)
        evbus__log(EVBUS_LOG_WARN, "core",
                   "close: %ld publishes still pending after %d ms",
                   atomic_load(&bus->unconfirmed), bus->close_timeout_ms);
    /* The backend completes whatever is still outstanding with an error. */
    bus->be->close(bus->priv);
    evbus__run_completions(bus);
    /* Threads that were waiting to poll must have left before the mutex
     * goes (they return EVBUS_ECLOSED). */
    pthread_mutex_lock(&bus->mu);
    while (bus->role_waiters > 0) {
        pthread_cond_broadcast(&bus->role_cv);
        pthread_mutex_unlock(&bus->mu);
        sched_yield();
        pthread_mutex_lock(&bus->mu);
    }
    pthread_mutex_unlock(&bus->mu);
    evbus__heap_free(&bus->heap);
    close(bus->wake_fd);
    pthread_mutex_destroy(&bus->mu);
    pthread_mutex_destroy(&bus->work_mu);
    pthread_cond_destroy(&bus->cv);
    pthread_cond_destroy(&bus->role_cv);
    evbus__url_free(bus->url);
    free(bus->priv);
    free(bus);
}

const char *evbus_scheme(const evbus_t *bus)
{
    return bus ? bus->scheme : NULL;
}

unsigned evbus_features(const evbus_t *bus)
{
    return bus ? bus->features : 0;
}

int evbus_health(evbus_t *bus, char *errstr, size_t n)
{
    if (!bus)
        return EVBUS_EINVAL;
    if (atomic_load(&bus->closing)) {
        evbus__seterr(errstr, n, "bus is closing");
        return EVBUS_ECLOSED;
    }
    if (!bus->be->health) {
        evbus__seterr(errstr, n, "ok");
        return EVBUS_OK;
    }
    int rc = bus->be->health(bus->priv, errstr, n);
    if (rc == EVBUS_OK)
        evbus__seterr(errstr, n, "ok");
    return rc;
}

void evbus_host_log(evbus_host_t *host, int level, const char *fmt, ...)
{
    if (!evbus__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    evbus__vlog(level, host->bus->scheme, fmt, ap);
    va_end(ap);
}

void evbus_host_count_fault(evbus_host_t *host)
{
    atomic_fetch_add_explicit(&host->bus->faults_injected, 1,
                              memory_order_relaxed);
}

size_t evbus_host_max_event_bytes(const evbus_host_t *host)
{
    return host->bus->max_event_bytes;
}

size_t evbus_host_max_pending(const evbus_host_t *host)
{
    return (size_t)host->bus->max_pending;
}
