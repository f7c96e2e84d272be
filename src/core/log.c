/* Process-wide log callback. Silent until the application installs one. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static struct {
    pthread_mutex_t mu;
    evbus_log_fn fn;
    void *opaque;
    atomic_int max_level;
} g_log = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, -1};

void evbus_set_log(evbus_log_fn fn, int max_level, void *opaque)
{
    pthread_mutex_lock(&g_log.mu);
    g_log.fn = fn;
    g_log.opaque = opaque;
    atomic_store(&g_log.max_level, fn ? max_level : -1);
    pthread_mutex_unlock(&g_log.mu);
}

bool evbus__log_enabled(int level)
{
    return level <= atomic_load_explicit(&g_log.max_level,
                                         memory_order_relaxed);
}

void evbus__vlog(int level, const char *component, const char *fmt,
                 va_list ap)
{
    if (!evbus__log_enabled(level))
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pthread_mutex_lock(&g_log.mu);
    evbus_log_fn fn = g_log.fn;
    void *opaque = g_log.opaque;
    pthread_mutex_unlock(&g_log.mu);
    if (fn)
        fn(level, component, msg, opaque);
}

void evbus__log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbus__vlog(level, component, fmt, ap);
    va_end(ap);
}

void evbus_log_stderr(int level, const char *component, const char *msg,
                      void *opaque)
{
    (void)opaque;
    static const char *names[] = {"", "", "", "error", "warn", "", "info",
                                  "debug"};
    const char *lv = (level >= 0 && level <= 7) ? names[level] : "log";
    fprintf(stderr, "evbus %s %s: %s\n", lv, component, msg);
}
