/*
 * CloudEvents 1.0 event object and its JSON format codec
 * (application/cloudevents+json).
 *
 * An evbus_event_t holds the context attributes (id, source, specversion,
 * type, datacontenttype, dataschema, subject, time), extensions and data.
 * Strings returned by getters are owned by the event and stay valid until the
 * attribute is set again or the event is freed.
 *
 * Thread-safety: an event is a plain value. Several threads may read one
 * event at once; writing needs exclusive access.
 */
#ifndef EVBUS_EVENT_H
#define EVBUS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evbus_event evbus_event_t;

/* Default largest encoded event evbus_event_from_json accepts. */
#define EVBUS_EVENT_MAX_BYTES_DEFAULT (1024 * 1024)

/*
 * New event with the given type and source, a fresh UUIDv4 id, specversion
 * "1.0" and time = now in RFC 3339 UTC with microseconds
 * ("2024-01-15T10:30:00.123456Z"). Returns NULL if type or source is NULL,
 * empty, not valid UTF-8 or holds a control character (the reason is in
 * evbus_event_error_message()), or out of memory.
 * Ownership: the caller frees the result with evbus_event_free.
 */
EVBUS_API evbus_event_t *evbus_event_new(const char *type, const char *source);

/* Deep copy; NULL when out of memory. Caller frees it. */
EVBUS_API evbus_event_t *evbus_event_clone(const evbus_event_t *ev);

/* Frees the event and everything it owns. NULL is ignored. */
EVBUS_API void evbus_event_free(evbus_event_t *ev);

/* ---- context attributes: getters (NULL when unset) */
EVBUS_API const char *evbus_event_id(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_source(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_specversion(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_type(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_datacontenttype(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_dataschema(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_subject(const evbus_event_t *ev);
EVBUS_API const char *evbus_event_time(const evbus_event_t *ev);

/*
 * Why the calling thread's most recent refused call of an evbus_event_*
 * constructor or setter (EVBUS_EINVAL, or NULL from evbus_event_new) was
 * refused, naming the attribute and, for text that is not UTF-8, the byte
 * offset and what is wrong there: "attribute 'subject' is not valid UTF-8 at
 * byte offset 1: overlong encoding". "" before the first refusal; a
 * successful call leaves it as it was.
 * Ownership: a thread-local buffer of the library, valid until the thread's
 * next refused call. Thread-safe (each thread has its own).
 */
EVBUS_API const char *evbus_event_error_message(void);

/*
 * ---- context attributes: setters. The value is validated and copied.
 * Return EVBUS_OK, or EVBUS_EINVAL when the value breaks the spec (empty,
 * not valid UTF-8 - RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequences -, control characters, a time that
 * is not RFC 3339, a content type that is not type/subtype, a dataschema
 * that is not an absolute URI); evbus_event_error_message() says why.
 * NULL unsets an optional attribute (datacontenttype, dataschema, subject,
 * time); id, source and type cannot be unset.
 */
EVBUS_API int evbus_event_set_id(evbus_event_t *ev, const char *id);
EVBUS_API int evbus_event_set_source(evbus_event_t *ev, const char *source);
EVBUS_API int evbus_event_set_type(evbus_event_t *ev, const char *type);
EVBUS_API int evbus_event_set_datacontenttype(evbus_event_t *ev,
                                              const char *content_type);
EVBUS_API int evbus_event_set_dataschema(evbus_event_t *ev, const char *uri);
EVBUS_API int evbus_event_set_subject(evbus_event_t *ev, const char *subject);
EVBUS_API int evbus_event_set_time(evbus_event_t *ev, const char *rfc3339);

/* ---- data */

/*
 * Sets data to a JSON value given as text (object, array, string, number,
 * true, false or null) and datacontenttype to "application/json".
 * Returns EVBUS_EINVAL when json is not strict JSON text (RFC 8259: valid
 * UTF-8, control characters in strings escaped, numbers without leading
 * zeros), with the byte offset in evbus_event_error_message(). json is copied as written
 * (surrounding whitespace removed). "null" removes the data: the JSON format
 * cannot tell null data from no data.
 */
EVBUS_API int evbus_event_set_data_json(evbus_event_t *ev, const char *json);

/*
 * Sets data to len bytes (copied) with the given content type
 * (NULL = "application/octet-stream"). With a JSON content type
 * (application/json, * /json, * /\*+json) the bytes must be strict JSON
 * text as for evbus_event_set_data_json, else EVBUS_EINVAL. Text types (text/\*, application/xml, * /\*+xml) with UTF-8
 * bytes are encoded as a JSON string, everything else as data_base64.
 * data NULL with len 0 removes the data.
 */
EVBUS_API int evbus_event_set_data(evbus_event_t *ev, const void *data,
                                   size_t len, const char *content_type);

/*
 * Sets data to len bytes (copied) as given, with content_type as
 * datacontenttype - or none at all when content_type is NULL. This is what
 * the binary modes of the HTTP and Kafka bindings need: the body or record
 * value is the data, and a missing Content-Type / content-type header is a
 * missing datacontenttype, not application/octet-stream. A JSON content type
 * still requires strict JSON text (EVBUS_EINVAL otherwise) and, as with
 * evbus_event_set_data, whitespace around it is dropped (the JSON format
 * cannot carry it); untyped bytes
 * that are exactly one JSON value are written as `data` in the JSON format,
 * other bytes as `data_base64`. data NULL with len 0 removes the data and
 * sets datacontenttype to content_type.
 * Same ownership and thread-safety as evbus_event_set_data.
 */
EVBUS_API int evbus_event_set_data_bytes(evbus_event_t *ev, const void *data,
                                         size_t len,
                                         const char *content_type);

/* The data bytes (NULL when the event has none) and their length. For JSON
 * data these are the JSON text. The bytes are always followed by a NUL that
 * is not counted in the length, so text data can be used as a C string. */
EVBUS_API const void *evbus_event_data(const evbus_event_t *ev);
EVBUS_API size_t evbus_event_data_len(const evbus_event_t *ev);

/* ---- extensions */

/*
 * Sets extension `name` (lowercase a-z and 0-9, at most 20 characters, not a
 * context attribute name and not "data") to a string value (copied).
 * value NULL removes it. EVBUS_EINVAL on a bad name or on a value that is
 * not valid UTF-8 or holds a control character (reason in
 * evbus_event_error_message()).
 */
EVBUS_API int evbus_event_set_ext(evbus_event_t *ev, const char *name,
                                  const char *value);
/* Integer and boolean extension values, kept as JSON numbers / booleans.
 * Integers must lie within +-(2^53 - 1), what a JSON number holds exactly. */
EVBUS_API int evbus_event_set_ext_int(evbus_event_t *ev, const char *name,
                                      int64_t value);
EVBUS_API int evbus_event_set_ext_bool(evbus_event_t *ev, const char *name,
                                       int value);

/* The extension's value as a string ("10", "true" for non-string values),
 * or NULL when unset. */
EVBUS_API const char *evbus_event_ext(const evbus_event_t *ev,
                                      const char *name);

/* Number of extensions and the i-th one (0-based, in insertion order).
 * Returns EVBUS_OK or EVBUS_EINVAL when i is out of range; *name and *value
 * are owned by the event. */
EVBUS_API size_t evbus_event_ext_count(const evbus_event_t *ev);
EVBUS_API int evbus_event_ext_at(const evbus_event_t *ev, size_t i,
                                 const char **name, const char **value);

/* ---- codec */

/*
 * Encodes the event in the CloudEvents JSON format: attributes and
 * extensions as top-level members; data as a JSON value for JSON content
 * types (and when no content type is set but the data is JSON), as
 * data_base64 for binary content, as a JSON string otherwise.
 * Returns a NUL-terminated malloc'd string (caller frees with free()) and its
 * length in *len when len is not NULL; NULL when out of memory or the event
 * lacks a required attribute.
 */
EVBUS_API char *evbus_event_to_json(const evbus_event_t *ev, size_t *len);

/*
 * Decodes one event in the CloudEvents JSON format, at most
 * EVBUS_EVENT_MAX_BYTES_DEFAULT bytes. json need not be NUL-terminated.
 * Validates and refuses, each with its own message in errstr: input over the
 * size limit, text that is not JSON (with the byte offset), bytes that are
 * not valid UTF-8 (naming the attribute and the byte offset), a missing or
 * empty required attribute, specversion other than "1.0", an attribute of
 * the wrong JSON type, an attribute or extension name outside a-z0-9, control
 * characters, a time that is not RFC 3339, a datacontenttype that is not
 * type/subtype, data together with data_base64, invalid base64.
 * Extension names longer than 20 characters are accepted (the spec says
 * SHOULD); extension values may be strings, integers or booleans.
 * Returns NULL on failure. Ownership: the caller frees the result.
 */
EVBUS_API evbus_event_t *evbus_event_from_json(const char *json, size_t len,
                                               char *errstr,
                                               size_t errstr_size);

/* evbus_event_from_json with a size limit of max_bytes (0 = no limit). */
EVBUS_API evbus_event_t *evbus_event_from_json_limit(const char *json,
                                                     size_t len,
                                                     size_t max_bytes,
                                                     char *errstr,
                                                     size_t errstr_size);

/* Checks an event the way evbus_event_from_json would (required attributes
 * present). Returns EVBUS_OK or EVBUS_EINVAL with the reason in errstr. */
EVBUS_API int evbus_event_validate(const evbus_event_t *ev, char *errstr,
                                   size_t errstr_size);

/*
 * Checks that type follows this project's naming convention
 * <domain>.<entity>.<action>: three or more dot-separated segments of
 * lowercase letters, digits, '-' or '_', each starting with a letter
 * ("todos.task.created"). Returns EVBUS_OK or EVBUS_EINVAL with the reason.
 * Thread-safe.
 */
EVBUS_API int evbus_event_type_check(const char *type, char *errstr,
                                     size_t errstr_size);

/* 1 when both events have the same attributes, extensions (compared as
 * strings) and data bytes; times compared as instants. */
EVBUS_API int evbus_event_equal(const evbus_event_t *a,
                                const evbus_event_t *b);

#ifdef __cplusplus
}
#endif

#endif /* EVBUS_EVENT_H */
