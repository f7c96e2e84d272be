/*
 * Internal layout of evbus_event_t and helpers shared by event.c, event_ext.c,
 * event_encode.c, event_decode.c, event_validate.c and text_check.c. Not
 * part of the public API.
 *
 * Memory layout: an event is one malloc holding the struct, followed by an
 * optional trailing block (extension array, strings, data bytes) filled at
 * once by evbus_event_new, evbus_event_clone and evbus_event_from_json, so a
 * decoded event costs a single allocation. A setter that replaces a value
 * allocates the new one separately; pointers inside the trailing block are
 * never freed on their own (see evbus__event_release).
 */
#ifndef EVBUS_EVENT_INTERNAL_H
#define EVBUS_EVENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evbus/event.h"

/* How an extension's value is written in JSON. */
enum { EVBUS__EXT_STRING, EVBUS__EXT_INT, EVBUS__EXT_BOOL };

/* How data is written in JSON: `data` as raw JSON text, `data` as a JSON
 * string, or `data_base64`. */
enum {
    EVBUS__DATA_NONE,
    EVBUS__DATA_JSON,
    EVBUS__DATA_TEXT,
    EVBUS__DATA_BINARY,
    /* bytes taken as they came (a Kafka binary-mode value under a JSON
     * content type or none), not parsed: the JSON encoder decides (`data`
     * when they are exactly one JSON value, else `data_base64`) */
    EVBUS__DATA_RAW
};

/* name and value share one allocation (value follows name's NUL), owned
 * through name. */
typedef struct {
    char *name;
    char *value;
    int kind;
} evbus__ext_t;

struct evbus_event {
    char *id, *source, *type;
    char *datacontenttype, *dataschema, *subject, *time;
    unsigned char *data; /* data_len bytes + a NUL not counted */
    size_t data_len;
    int data_kind;
    bool ct_json; /* datacontenttype is a JSON type (cached for encoding) */
    evbus__ext_t *ext;
    size_t ext_count, ext_cap;
    char *blk, *blk_end; /* the trailing block [blk, blk_end) */
};

/* Largest integer extension value kept exactly by a JSON number (2^53-1). */
#define EVBUS__EXT_INT_MAX INT64_C(9007199254740991)

/* ---- event.c */

/* One malloc: struct + room for n_ext extensions + bytes bytes. The
 * extension array (capacity n_ext) is ev->ext; *cursor points at the bytes.
 * Everything else is zero. NULL when out of memory. */
evbus_event_t *evbus__event_alloc(size_t n_ext, size_t bytes, char **cursor);

/* evbus_event_new for decoders: the id given (validated like
 * evbus_event_set_id), no time, room for n_ext extensions. No UUID is
 * generated: libuuid's system calls per record cost a Kafka binary-mode
 * consumer most of its rate. NULL when an attribute is refused (the
 * reason in evbus_event_error_message) or out of memory. */
evbus_event_t *evbus__event_new_with_id(const char *type, const char *source,
                                        const char *id, size_t n_ext);
/* The attributes evbus__attr_check knows. */
enum {
    EVBUS__ATTR_ID,
    EVBUS__ATTR_SOURCE,
    EVBUS__ATTR_TYPE,
    EVBUS__ATTR_SUBJECT,
    EVBUS__ATTR_TIME,
    EVBUS__ATTR_DATASCHEMA,
    EVBUS__ATTR_DATACONTENTTYPE
};
/* Checks a (non-NULL) value of attribute attr as its setter does: text,
 * not empty; time RFC 3339, dataschema an absolute URI, datacontenttype a
 * media type. EVBUS_OK or EVBUS_EINVAL with the reason recorded (NULL is
 * refused as missing). Thread-safe. */
int evbus__attr_check(int attr, const char *v);
/* How evbus_event_set_data (exact false) or evbus_event_set_data_bytes
 * (exact true) keeps len bytes (not NULL) of content type ct (already
 * checked; NULL: untyped): returns EVBUS__DATA_* with the bytes to keep in
 * [*p, *p + *n) (JSON loses surrounding whitespace), or -1 with the reason
 * recorded when ct is a JSON type and the bytes are not one JSON value. */
int evbus__data_kind(const void *data, size_t len, const char *ct,
                     bool exact, const char **p, size_t *n);
/* Are the n bytes at data exactly one JSON value other than null, without
 * whitespace around it (what the JSON format gives back byte for byte)? */
bool evbus__data_is_json_exact(const void *data, size_t n);
/* Copies n bytes plus a NUL to *cursor, advances it, returns the copy. */
char *evbus__blk_put(char **cursor, const void *src, size_t n);

/* ---- event_ext.c: the extension named name, or NULL. */
evbus__ext_t *evbus__ext_find(const evbus_event_t *ev, const char *name);
/* An extension name: lowercase a-z0-9, at most 20, not a context
 * attribute. Records the reason when not. */
bool evbus__ext_name_check(const char *name);

/* Frees p unless it lives in ev's trailing block. */
void evbus__event_release(evbus_event_t *ev, void *p);

/* Formats v in decimal into buf (at least 21 bytes); returns the length. */
size_t evbus__fmt_int64(char *buf, int64_t v);

/* evbus_event_to_json into a caller-owned buffer that grows as needed
 * (buf and cap start as NULL and 0; the caller frees buf when done).
 * Returns the buffer holding the text, or NULL (invalid event, no memory). */
char *evbus__event_encode_reuse(const evbus_event_t *ev, char **buf,
                                size_t *cap, size_t *len);

/* ---- event_validate.c */

/* Lowercase a-z and 0-9 only, at least one character. */
bool evbus__name_ok(const char *s);
/* Contains a control character U+0000-001F or U+007F-009F (UTF-8)? */
bool evbus__has_ctl(const char *s);
bool evbus__has_ctl_n(const char *s, size_t n);
/* A string value as text: valid UTF-8 and no control characters. On
 * failure writes "<what> '<name>' is not valid UTF-8 at byte offset N:
 * <reason>" (or names the control character's offset) to err. */
bool evbus__text_value_ok(const char *what, const char *name, const char *v,
                          size_t n, char *err, size_t errn);
/* type/subtype with RFC 2045 token characters, optional ;parameters. */
bool evbus__media_type_ok(const char *s);
/* application/json, * /json, * /\*+json (parameters ignored). */
bool evbus__media_type_is_json(const char *s);
/* text/\*, application/xml, * /\*+xml: data sent as a JSON string. */
bool evbus__media_type_is_text(const char *s);
/* scheme ":" rest, no spaces or control characters. */
bool evbus__uri_absolute(const char *s);

/* ---- text_check.c: the one UTF-8 and JSON text validator */

/* Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequence) and no NUL in s[0..n)? On failure
 * *bad (when not NULL) is the offset of the first offending byte and *why
 * (when not NULL) a short static reason. */
bool evbus__utf8_check(const unsigned char *s, size_t n, size_t *bad,
                       const char **why);
bool evbus__utf8_ok(const unsigned char *s, size_t n);
/* Is JSON text that cJSON parsed also strict RFC 8259 JSON: UTF-8, no raw
 * control characters in strings, only space/tab/CR/LF as whitespace,
 * numbers by the grammar? Same failure reporting as evbus__utf8_check. */
bool evbus__json_text_check(const char *s, size_t n, size_t *bad,
                            const char **why);
/* evbus__json_text_check that also says what the strings of the text hold
 * (*seen, when not NULL): EVBUS__TEXT_ESCAPES, a backslash escape;
 * EVBUS__TEXT_UNPRINTABLE, a byte outside 0x20-0x7e. With neither, every
 * string (member names included) is printable ASCII as written, so the
 * strings cJSON made of it hold no control character. */
#define EVBUS__TEXT_ESCAPES 1u
#define EVBUS__TEXT_UNPRINTABLE 2u
bool evbus__json_text_scan(const char *s, size_t n, size_t *bad,
                           const char **why, unsigned *seen);

/* ---- event.c: why the calling thread's last setter refused its input */
int evbus__event_refuse(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
char *evbus__event_reason_buf(size_t *n);

/* An RFC 3339 time as an instant: UTC seconds since the epoch and the
 * fractional digits without trailing zeros. */
typedef struct {
    int64_t sec;
    const char *frac; /* points into the parsed string */
    size_t frac_len;
} evbus__instant_t;

/* Strict RFC 3339 (seconds required, Z or +hh:mm). out may be NULL. */
bool evbus__time_parse(const char *s, evbus__instant_t *out);
/* Same instant? Both must parse. */
bool evbus__time_same(const char *a, const char *b);

#endif /* EVBUS_EVENT_INTERNAL_H */
