#include "svc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t svc_db_lock = PTHREAD_MUTEX_INITIALIZER;
volatile int svc_ready;

const char *svc_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

const char *svc_env_required(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "missing environment variable %s\n", name);
        exit(2);
    }
    return v;
}

/* ---------------------------------------------------------------- timeline */

static int timeline_fd = 2;
static char service_name[32];

void svc_timeline_open(const char *service)
{
    snprintf(service_name, sizeof service_name, "%s", service);
    const char *path = getenv("TIMELINE");
    if (path && (timeline_fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
        fprintf(stderr, "%s: cannot open timeline %s: %s\n", service, path,
                strerror(errno));
        timeline_fd = 2;
    }
}

void svc_timeline(const char *fmt, ...)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld  %-18s ", tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)tv.tv_usec / 1000,
                     service_name);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(timeline_fd, line, (size_t)n);
    (void)w;
}

/* ---------------------------------------------------------------- lifecycle */

static evbus_t *signal_bus;
static volatile sig_atomic_t running = 1;

static void on_signal(int sig)
{
    (void)sig;
    running = 0;
    if (signal_bus)
        evbus_stop(signal_bus); /* async-signal-safe */
}

void svc_signals(evbus_t *bus)
{
    signal_bus = bus;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int svc_running(void)
{
    return running;
}

void svc_wait_for_signal(void)
{
    /* A short sleep loop, not pause(): a signal arriving between the check
     * and pause() would be missed. */
    while (running) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void log_to_stderr(int level, const char *component, const char *msg,
                          void *opaque)
{
    fprintf(stderr, "%s: evbus %s: %s\n", (const char *)opaque, component, msg);
    (void)level;
}

evbus_t *svc_open_bus(const char *service)
{
    evbus_set_log(log_to_stderr, EVBUS_LOG_WARN, (void *)service);
    char err[512];
    evbus_t *bus = evbus_open(NULL, err, sizeof err); /* EVBUS_URL */
    if (!bus) {
        fprintf(stderr, "%s: cannot open bus %s: %s\n", service,
                svc_env("EVBUS_URL", "(unset)"), err);
        exit(1);
    }
    return bus;
}

sqlite3 *svc_open_db(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                 NULL, NULL, NULL);
    return db;
}

long svc_path_id(const char *path, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0)
        return -1;
    char *end;
    long id = strtol(path + pl, &end, 10);
    if (end == path + pl || id < 0 || strcmp(end, suffix) != 0)
        return -1;
    return id;
}

void svc_db_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", service_name, err ? err : "sqlite error");
        exit(1);
    }
}

const char *svc_short_id(const evbus_event_t *ev, char buf[9])
{
    snprintf(buf, 9, "%s", evbus_event_id(ev) ? evbus_event_id(ev) : "?");
    return buf;
}
