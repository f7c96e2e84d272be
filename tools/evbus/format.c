/* Printing events for tail and dlq list (see format.h). */
#include "format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

int fmt_parse(const char *s)
{
    if (strcmp(s, "json") == 0)
        return FMT_JSON;
    if (strcmp(s, "pretty") == 0)
        return FMT_PRETTY;
    return -1;
}

int fmt_want_color(void)
{
    const char *no = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    if (no && *no) /* https://no-color.org: set and non-empty */
        return 0;
    if (term && strcmp(term, "dumb") == 0)
        return 0;
    return isatty(STDOUT_FILENO);
}

int fmt_is_text(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
                return 0;
            i++;
            continue;
        }
        /* Lead byte of a 2-, 3- or 4-byte sequence (no overlong C0/C1,
         * nothing above U+10FFFF); continuation bytes are checked below. */
        size_t extra = c >= 0xc2 && c <= 0xdf   ? 1
                       : c >= 0xe0 && c <= 0xef ? 2
                       : c >= 0xf0 && c <= 0xf4 ? 3
                                                : 0;
        if (extra == 0)
            return 0;
        for (size_t k = 1; k <= extra; k++)
            if (i + k >= len || (p[i + k] & 0xc0) != 0x80)
                return 0;
        i += extra + 1;
    }
    return 1;
}

static int emit_json(const evbus_event_t *ev)
{
    size_t len = 0;
    char *json = evbus_event_to_json(ev, &len);
    if (!json) {
        cli_error("cannot encode event %s", evbus_event_id(ev));
        errno = ENOMEM;
        return -1;
    }
    /* Raw CR/LF can only be whitespace in valid JSON (inside strings they
     * are escaped), so replacing them keeps the JSON and makes one line. */
    for (size_t i = 0; i < len; i++)
        if (json[i] == '\n' || json[i] == '\r')
            json[i] = ' ';
    int rc = cli_write_line(json, len);
    free(json);
    return rc;
}

/* SGR sequences, or "" without colour. */
typedef struct {
    const char *dim, *bold, *type, *id, *reset;
} palette_t;

static void print_indented(const char *s, size_t len)
{
    fputs("  ", stdout);
    for (size_t i = 0; i < len; i++) {
        fputc(s[i], stdout);
        if (s[i] == '\n' && i + 1 < len)
            fputs("  ", stdout);
    }
    if (len == 0 || s[len - 1] != '\n')
        fputc('\n', stdout);
}

static int emit_pretty(const evbus_event_t *ev, int color)
{
    palette_t c = color ? (palette_t){"\033[2m", "\033[1m", "\033[1;32m",
                                      "\033[36m", "\033[0m"}
                        : (palette_t){"", "", "", "", ""};
    const char *time = evbus_event_time(ev);
    printf("%s%s%s %s%s%s %sid=%s%s%s%s %ssource=%s%s\n", c.dim,
           time ? time : "-", c.reset, c.type, evbus_event_type(ev), c.reset,
           c.dim, c.reset, c.id, evbus_event_id(ev), c.reset, c.dim, c.reset,
           evbus_event_source(ev));
    /* Second line: optional attributes and extensions, when there are any. */
    int any = 0;
    const char *subject = evbus_event_subject(ev);
    const char *schema = evbus_event_dataschema(ev);
    if (subject) {
        printf("  %ssubject=%s%s", c.dim, c.reset, subject);
        any = 1;
    }
    if (schema) {
        printf("%s%sdataschema=%s%s", any ? " " : "  ", c.dim, c.reset,
               schema);
        any = 1;
    }
    for (size_t i = 0; i < evbus_event_ext_count(ev); i++) {
        const char *name, *value;
        if (evbus_event_ext_at(ev, i, &name, &value) != EVBUS_OK)
            continue;
        printf("%s%s%s=%s%s", any ? " " : "  ", c.dim, name, c.reset, value);
        any = 1;
    }
    if (any)
        fputc('\n', stdout);
    const char *data = evbus_event_data(ev);
    size_t len = evbus_event_data_len(ev);
    const char *ct = evbus_event_datacontenttype(ev);
    if (data && fmt_is_text(data, len)) {
        if (ct && strcmp(ct, "application/json") != 0)
            printf("  %s(%s)%s\n", c.dim, ct, c.reset);
        print_indented(data, len);
    } else if (data) {
        printf("  %s<%zu bytes of %s>%s\n", c.dim, len,
               ct ? ct : "binary data", c.reset);
    }
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

int fmt_event(const evbus_event_t *ev, fmt_kind_t kind, int color)
{
    return kind == FMT_JSON ? emit_json(ev) : emit_pretty(ev, color);
}
