/*
 * Structured CloudEvents read from a file or stdin for `evbus publish
 * --event`. The input is split into JSON objects by a small scanner that
 * tracks strings and nesting only (the library's decoder does the real
 * validation), so one pretty-printed event and one event per line both
 * work, and an object longer than max_event_bytes is refused as soon as it
 * gets there instead of being read whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "publish.h"

int evr_open(event_reader_t *r, const char *path, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    int is_stdin = strcmp(path, "-") == 0;
    r->fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0)
        return -1;
    r->name = is_stdin ? "(standard input)" : path;
    r->max_bytes = max_bytes;
    r->line = 1;
    return 0;
}

void evr_close(event_reader_t *r)
{
    if (r->name && r->fd != STDIN_FILENO)
        close(r->fd);
    free(r->buf);
    r->buf = NULL;
    r->name = NULL;
}

/* The next input byte, or EOF at the end or on an error (r->err). */
static int next_byte(event_reader_t *r)
{
    if (r->pos == r->end) {
        if (r->eof)
            return EOF;
        ssize_t n;
        do
            n = read(r->fd, r->in, sizeof r->in);
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            r->eof = 1;
            r->err = n < 0 ? errno : 0;
            return EOF;
        }
        r->pos = 0;
        r->end = (size_t)n;
    }
    return r->in[r->pos++];
}

int evr_would_block(event_reader_t *r)
{
    /* Whitespace after an event (its newline) is not the next event. */
    while (r->pos < r->end &&
           (r->in[r->pos] == ' ' || r->in[r->pos] == '\t' ||
            r->in[r->pos] == '\r' || r->in[r->pos] == '\n')) {
        if (r->in[r->pos] == '\n')
            r->line++;
        r->pos++;
    }
    if (r->pos < r->end || r->eof)
        return 0;
    struct pollfd p = {r->fd, POLLIN, 0};
    return poll(&p, 1, 0) == 0;
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
    while ((c = next_byte(r)) != EOF &&
           (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
        if (c == '\n')
            r->line++;
    if (c == EOF) {
        if (r->err) {
            cli_error("--event %s: read error: %s", r->name, strerror(r->err));
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
    for (; c != EOF; c = next_byte(r)) {
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
    if (c == EOF && r->err) {
        cli_error("--event %s: read error: %s", r->name, strerror(r->err));
        return -1;
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
