/*
 * evbus publish: the event the command line describes (publish_event.c),
 * read from --event input (event_reader.c), and published with bounded
 * waits on back-pressure (publish.c).
 */
#ifndef EVBUS_CLI_PUBLISH_H
#define EVBUS_CLI_PUBLISH_H

#include <stddef.h>

#include <evbus/evbus.h>

#define PUB_MAX_EXTS 64

typedef enum { EXT_STRING, EXT_INT, EXT_BOOL } ext_kind_t;

typedef struct {
    const char *spec; /* NAME=VALUE as given */
    ext_kind_t kind;
} ext_arg_t;

typedef struct {
    const char *type, *source, *subject, *id, *content_type, *time, *dataschema;
    ext_arg_t ext[PUB_MAX_EXTS];
    int n_ext;
    char *data; /* owned; NULL = no data */
    size_t data_len;
    size_t max_bytes; /* the bus's max_event_bytes */
} publish_args_t;

/* Loads --data: inline, @file or - (stdin), reading at most max_bytes + 1
 * bytes, and checks JSON data with its position. Returns CLI_OK or an exit
 * code after printing why. */
int pub_load_data(publish_args_t *a, const char *spec);

/* Builds one event from the arguments. NULL after printing the library's
 * reason (attribute, byte offset) when a value is refused. */
evbus_event_t *pub_build_event(const publish_args_t *a);

/* Checks that ev encodes to at most max_bytes; prints the size and the
 * limit and returns -1 when it does not. what names the event. */
int pub_check_size(const evbus_event_t *ev, size_t max_bytes, const char *what);

/* Reads structured CloudEvents from a stream: one JSON object, or several
 * (one per line, or simply one after another). Each object is bounded by
 * max_bytes: a longer one is refused without being read whole. */
typedef struct {
    int fd;
    const char *name; /* for messages: the path or "standard input" */
    unsigned char in[65536]; /* read(2) buffer: in[pos..end) not yet used */
    size_t pos, end;
    int eof, err;
    size_t max_bytes;
    long line;  /* line of the next byte, from 1 */
    long index; /* events read so far */
    char *buf;
    size_t cap;
} event_reader_t;

/* Opens path ("-" = stdin). Returns 0, or -1 with errno set. */
int evr_open(event_reader_t *r, const char *path, size_t max_bytes);
void evr_close(event_reader_t *r);

/* The next event: 1 with *out set (caller frees), 0 at the end of the
 * input, -1 after printing why the input is refused (what, where). */
int evr_next(event_reader_t *r, evbus_event_t **out);

/* 1 when reading the next event would wait for more input (a pipe or
 * terminal with nothing buffered or ready; buffered whitespace is skipped):
 * the moment to report what was published so far. */
int evr_would_block(event_reader_t *r);

#endif
