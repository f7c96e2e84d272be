/* Starting the Dapr sidecar stand-in from a test or bench, and small HTTP
 * helpers (libcurl) to talk to it and to the app server directly. */
#ifndef EVBUS_TEST_STANDIN_PROC_H
#define EVBUS_TEST_STANDIN_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct standin {
    pid_t pid;
    int port;     /* the sidecar API */
    int app_port; /* chosen for the app */
} standin_t;

/* Starts exe with extra arguments (NULL-terminated, may be NULL) on free
 * ports. Returns 0, or -1 with a message on stderr. */
int standin_start(standin_t *s, const char *exe, const char *const *args);
void standin_stop(standin_t *s);

/* A URL for this stand-in with extra query text ("&x=y", may be ""). */
void standin_url(const standin_t *s, char *buf, size_t n, const char *extra);

/* HTTP to 127.0.0.1:port. body NULL = GET. headers: NULL-terminated
 * "Name: value" lines or NULL. Returns the status (0 = no answer); *out
 * (when not NULL) receives the malloc'd body. */
long http_call(int port, const char *path, const char *body,
               const char *const *headers, char **out);

/* http_call with a method (NULL: GET, or POST with a body), a body of len
 * bytes, and the response's header block in *out_headers (malloc'd; may
 * be NULL). */
long http_request(int port, const char *method, const char *path,
                  const void *body, size_t len, const char *const *headers,
                  char **out, char **out_headers);

/* A number from the stand-in's /standin/stats. */
long standin_stat(const standin_t *s, const char *name);

#endif
