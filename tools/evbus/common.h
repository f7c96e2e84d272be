/*
 * Shared helpers of the evbus command-line tool: messages and exit codes,
 * opening a bus, number parsing, stop signals and output that notices a
 * closed pipe. Only the installed public headers are used.
 */
#ifndef EVBUS_CLI_COMMON_H
#define EVBUS_CLI_COMMON_H

#include <stdarg.h>
#include <stddef.h>

#include <evbus/evbus.h>

/* Exit codes (documented in evbus(1)). */
#define CLI_OK 0      /* done */
#define CLI_FAIL 1    /* a runtime failure: broker, storage, publish */
#define CLI_USAGE 2   /* the command line or its input is wrong; nothing done */

/* Set from -v / -q (any subcommand). */
extern int cli_verbose;
extern int cli_quiet;

/* "evbus: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "evbus <cmd>: <message>" plus a hint to --help on stderr; returns
 * CLI_USAGE so callers can `return cli_usage_error(...)`. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Installs the stderr log callback when -v was given (INFO, or DEBUG with
 * -vv). The library is silent otherwise. */
void cli_setup_log(void);

/* Opens url; on failure prints "evbus: cannot open URL: reason" and returns
 * NULL. The caller closes the bus with evbus_close. */
evbus_t *cli_open(const char *url);

/* Checks a topic or group name given as `what` with evbus_name_check
 * before the bus is opened: the portable rule, unless url asks for
 * names=native (then the backend's own rule is checked once the bus is
 * open, see cli_check_name_bus). Prints a usage error naming the rule and
 * the offending byte and returns -1 when the name is refused. */
int cli_check_name(const char *cmd, const char *what, const char *name,
                   const char *url);

/* The same check against an open bus (its names= rule). */
int cli_check_name_bus(const char *cmd, const char *what, const char *name,
                       const evbus_t *bus);

/* The value of query option key in url, copied into buf (percent escapes
 * decoded); 0 when present, -1 when absent or longer than n - 1. */
int cli_url_option(const char *url, const char *key, char *buf, size_t n);

/* The max_event_bytes the bus at url will enforce: the URL option when it
 * is a valid number, else the library default. (The library checks the
 * option itself when the bus opens.) */
size_t cli_max_event_bytes(const char *url);

/* Parses a decimal integer in [min, max] for option `what`; prints a usage
 * error and returns -1 when it is not one. */
int cli_parse_long(const char *cmd, const char *what, const char *s, long min,
                   long max, long *out);

/* Parses seconds (decimal, fractions allowed, > 0) into milliseconds. */
int cli_parse_seconds(const char *cmd, const char *what, const char *s,
                      long *out_ms);

/* Routes SIGINT and SIGTERM to evbus_stop(bus) (async-signal-safe) and
 * ignores SIGPIPE, so a closed stdout is seen as EPIPE. bus NULL restores
 * the defaults. */
void cli_stop_on_signals(evbus_t *bus);

/* 1 once SIGINT or SIGTERM arrived. */
int cli_stop_requested(void);

/* A fresh consumer group name "<prefix>-<host>-<pid>-<time>" nobody else
 * uses, written into buf. */
void cli_private_group(char *buf, size_t n, const char *prefix);

/* Writes len bytes and a newline to stdout and flushes. Returns 0, or -1 on
 * a write error (errno kept: EPIPE when the reader went away). */
int cli_write_line(const char *s, size_t len);

/* Reads a file (path "-": stdin) into a NUL-terminated malloc'd buffer,
 * reading at most limit + 1 bytes: a larger input is never read whole.
 * Returns the buffer, or NULL with errno set (EFBIG when the input is over
 * limit bytes). */
char *cli_read_bounded(const char *path, size_t limit, size_t *len);

/* How long to wait for the first event when the idle timeout is idle_ms:
 * idle_ms, but at least 10 s on kafka://, where joining a consumer group
 * takes a few seconds before anything can arrive. */
long cli_first_wait_ms(evbus_t *bus, long idle_ms);

/* Monotonic clock in milliseconds (idle timeouts). */
long long cli_now_ms(void);

#endif
