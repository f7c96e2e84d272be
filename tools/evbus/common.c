/* Shared helpers of the evbus command-line tool (see common.h). */
#include "common.h"
#include "format.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_verbose;
int cli_quiet;

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("evbus: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "evbus %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'evbus %s --help' for more information.\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

void cli_setup_log(void)
{
    if (cli_verbose > 0)
        evbus_set_log(evbus_log_stderr,
                      cli_verbose > 1 ? EVBUS_LOG_DEBUG : EVBUS_LOG_INFO, NULL);
}

evbus_t *cli_open(const char *url)
{
    char err[512] = "";
    cli_setup_log();
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        cli_error("cannot open %s: %s", url, err[0] ? err : "unknown error");
    return bus;
}

/* name as shown in a message: control characters and bytes of an invalid
 * UTF-8 name as '?', at most 63 bytes. */
static void shown_name(char *out, size_t n, const char *name)
{
    int text = fmt_is_text(name, strlen(name));
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < n; p++) {
        unsigned char c = (unsigned char)*p;
        out[k++] = c < ' ' || c == 0x7f || (!text && c >= 0x80) ? '?' : *p;
    }
    out[k] = '\0';
}

static int name_refused(const char *cmd, const char *what, const char *name,
                        const char *why)
{
    char shown[64];
    shown_name(shown, sizeof shown, name);
    cli_usage_error(cmd, "invalid %s '%s': %s", what, shown, why);
    return -1;
}

int cli_check_name(const char *cmd, const char *what, const char *name,
                   const char *url)
{
    char rule[16];
    if (url && cli_url_option(url, "names", rule, sizeof rule) == 0 &&
        strcmp(rule, "native") == 0)
        return 0; /* the backend's rule: checked once the bus is open */
    char why[256] = "";
    if (evbus_name_check(NULL, name, why, sizeof why) != EVBUS_OK)
        return name_refused(cmd, what, name, why);
    return 0;
}

int cli_check_name_bus(const char *cmd, const char *what, const char *name,
                       const evbus_t *bus)
{
    char why[256] = "";
    if (evbus_name_check(bus, name, why, sizeof why) != EVBUS_OK)
        return name_refused(cmd, what, name, why);
    return 0;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int cli_url_option(const char *url, const char *key, char *buf, size_t n)
{
    const char *q = strchr(url, '?');
    size_t klen = strlen(key);
    while (q && *q) {
        const char *p = q + 1;
        const char *end = p + strcspn(p, "&");
        q = *end ? end : NULL;
        if ((size_t)(end - p) <= klen || strncmp(p, key, klen) != 0 ||
            p[klen] != '=')
            continue;
        size_t k = 0;
        for (p += klen + 1; p < end; p++) {
            char c = *p;
            if (c == '%' && end - p > 2 && hex_digit(p[1]) >= 0 &&
                hex_digit(p[2]) >= 0) {
                c = (char)(hex_digit(p[1]) * 16 + hex_digit(p[2]));
                p += 2;
            }
            if (k + 1 >= n)
                return -1;
            buf[k++] = c;
        }
        buf[k] = '\0';
        return 0;
    }
    return -1;
}

size_t cli_max_event_bytes(const char *url)
{
    char v[32];
    if (cli_url_option(url, "max_event_bytes", v, sizeof v) == 0) {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (!errno && end != v && !*end && x > 0)
            return (size_t)x;
    }
    return EVBUS_EVENT_MAX_BYTES_DEFAULT;
}

int cli_parse_long(const char *cmd, const char *what, const char *s, long min,
                   long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_usage_error(cmd, "%s wants a whole number from %ld to %ld, not '%s'",
                        what, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_seconds(const char *cmd, const char *what, const char *s,
                      long *out_ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400.0 * 365) {
        cli_usage_error(cmd, "%s wants a number of seconds > 0, not '%s'",
                        what, s);
        return -1;
    }
    *out_ms = (long)(v * 1000.0 + 0.5);
    if (*out_ms < 1)
        *out_ms = 1;
    return 0;
}

/* The bus the signal handler stops; a signal handler may only touch
 * lock-free atomics and async-signal-safe calls (evbus_stop is one). */
static _Atomic(evbus_t *) stop_bus;
static volatile sig_atomic_t stop_flag;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
    evbus_t *bus = atomic_load(&stop_bus);
    if (bus)
        evbus_stop(bus);
}

void cli_stop_on_signals(evbus_t *bus)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    /* A signal must not fail a write to stdout or a read with EINTR: the
     * stop is seen through evbus_stop and cli_stop_requested instead. */
    sa.sa_flags = SA_RESTART;
    atomic_store(&stop_bus, bus);
    sa.sa_handler = bus ? on_stop_signal : SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = bus ? SIG_IGN : SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL);
}

int cli_stop_requested(void) { return stop_flag != 0; }

void cli_private_group(char *buf, size_t n, const char *prefix)
{
    char host[64] = "host";
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "host");
    host[sizeof host - 1] = '\0';
    /* Group names stay within what every backend accepts. */
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            *p = '-';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "%s-%s-%d-%lld%03ld", prefix, host, (int)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec / 1000000L);
}

int cli_write_line(const char *s, size_t len)
{
    if (len && fwrite(s, 1, len, stdout) != len)
        return -1;
    if (fputc('\n', stdout) == EOF)
        return -1;
    return fflush(stdout) == 0 ? 0 : -1;
}

char *cli_read_bounded(const char *path, size_t limit, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    /* Grows by doubling up to limit + 2 bytes: one byte more than allowed
     * tells "too big" apart from "exactly limit", plus the NUL. */
    size_t max = limit < SIZE_MAX - 2 ? limit + 2 : SIZE_MAX;
    size_t cap = max < 4096 ? max : 4096, n = 0;
    char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > limit) {
            err = EFBIG;
            break;
        }
        if (got == 0) {
            if (ferror(f))
                err = errno ? errno : EIO;
            break;
        }
        if (n + 1 == cap) {
            size_t want = cap < max / 2 ? cap * 2 : max;
            char *bigger = realloc(buf, want);
            if (!bigger) {
                err = ENOMEM;
                break;
            }
            buf = bigger;
            cap = want;
        }
    }
    if (f != stdin)
        fclose(f);
    if (err) {
        free(buf);
        errno = err;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

long cli_first_wait_ms(evbus_t *bus, long idle_ms)
{
    const long kafka_join_ms = 10000;
    /* "kafka", and wrappers over it such as "faulty+kafka" */
    const char *scheme = evbus_scheme(bus);
    size_t n = strlen(scheme);
    int kafka = n >= 5 && strcmp(scheme + n - 5, "kafka") == 0;
    if (kafka && idle_ms < kafka_join_ms)
        return kafka_join_ms;
    return idle_ms;
}

long long cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
