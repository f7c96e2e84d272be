/* Printing events on stdout: JSON lines or a human-readable form. */
#ifndef EVBUS_CLI_FORMAT_H
#define EVBUS_CLI_FORMAT_H

#include <evbus/evbus.h>

typedef enum { FMT_JSON, FMT_PRETTY } fmt_kind_t;

/* Parses "json" / "pretty"; -1 for anything else. */
int fmt_parse(const char *s);

/* 1 when stdout is a terminal and NO_COLOR is unset (or empty) and TERM is
 * not "dumb": the only case where colour is written. */
int fmt_want_color(void);

/* Writes ev as one line of CloudEvents JSON (newlines that JSON allows as
 * whitespace are turned into spaces so one event is one line), or in the
 * pretty form. Returns 0, or -1 on a write error (errno set). */
int fmt_event(const evbus_event_t *ev, fmt_kind_t kind, int color);

/* 1 when data bytes are printable UTF-8 text (tabs/newlines allowed). */
int fmt_is_text(const void *data, size_t len);

#endif
