/*
 * Structured CloudEvents read from a file or stdin for `evbus publish
 * --event`. The input is split into JSON objects by a small scanner that
 * tracks strings and nesting only (the library's decoder does the real
 * validation), so one pretty-printed event and one event per line both
 * work, and an object longer than max_event_bytes is refused as soon as it
 * gets there instead of being read whole.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "publish.h"

int evr_open(event_reader_t *r, const char *path, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    int is_stdin = strcmp(path, "-") == 0;
    r->f = is_stdin ? stdin : fopen(path, "rb");
    if (!r->f)
        return -1;
    r->name = is_stdin ? "(standard input)" : path;
    r->max_bytes = max_bytes;
    r->line = 1;
    return 0;
}

void evr_close(event_reader_t *r)
{
    if (r->f && r->f != stdin)
        fclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Appends c to the object being read; -1 when that would pass max_bytes. */
static int put(event_reader_t *r, size_t *n, int c)
{
    if (*n >= r->max_bytes)
        return -1;
    if (*n + 1 >= r->cap) {
        size_t want = r->cap ? r->cap * 2 : 4096;
        if (want > r->max_bytes + 1)
            want = r->max_bytes + 1;
        char *bigger = realloc(r->buf, want);
        if (!bigger)
            return -2;
        r->buf = bigger;
        r->cap = want;
    }
    r->buf[(*n)++] = (char)c;
    return 0;
}

int evr_next(event_reader_t *r, evbus_event_t **out)
{
    int c;
    *out = NULL;
    while ((c = getc(r->f)) != EOF &&
           (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
        if (c == '\n')
            r->line++;
    if (c == EOF) {
        if (ferror(r->f)) {
            cli_error("--event %s: read error: %s", r->name, strerror(errno));
            return -1;
        }
        return 0;
    }
    long index = ++r->index, first_line = r->line;
    if (c != '{') {
        cli_error("--event %s: event %ld (line %ld) is not a JSON object: "
                  "it starts with '%c'",
                  r->name, index, first_line, c >= ' ' && c < 0x7f ? c : '?');
        return -1;
    }
    size_t n = 0;
    int depth = 0, in_string = 0, escaped = 0;
    for (; c != EOF; c = getc(r->f)) {
        int rc = put(r, &n, c);
        if (rc != 0) {
            if (rc == -2)
                cli_error("--event %s: out of memory", r->name);
            else
                cli_error("--event %s: event %ld (line %ld) is larger than "
                          "max_event_bytes (%zu bytes); reading stopped",
                          r->name, index, first_line, r->max_bytes);
            return -1;
        }
        if (c == '\n')
            r->line++;
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (c == '\\')
                escaped = 1;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            break;
        }
    }
    if (c == EOF) {
        cli_error("--event %s: event %ld (line %ld) ends before its closing "
                  "'}'",
                  r->name, index, first_line);
        return -1;
    }
    char why[512] = "";
    *out =
        evbus_event_from_json_limit(r->buf, n, r->max_bytes, why, sizeof why);
    if (!*out) {
        cli_error("--event %s: event %ld (line %ld) is refused: %s", r->name,
                  index, first_line, why);
        return -1;
    }
    return 1;
}
