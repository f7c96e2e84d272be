/* Helpers for the conformance suite: a URL under test, collectors that
 * record what handlers saw, and polling until a condition holds. */
#ifndef EVBUS_CONFORMANCE_HARNESS_H
#define EVBUS_CONFORMANCE_HARNESS_H

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "evbus/backend.h"
#include "evbus/evbus.h"

/* One case and what it needs of the backend under test. */
typedef struct conf_case {
    const char *name;
    const TTest *test;
    unsigned needs;     /* EVBUS_FEAT_* all required */
    unsigned needs_any; /* ... at least one of these, when not 0 */
    const char *why;    /* said when the case is not run */
    unsigned refused;   /* EVBUS_FEAT_* that rule the case out */
} conf_case_t;

/* Fill out with up to max cases; return how many (Check's test handles are
 * not constants, so the tables are built at run time). */
size_t conformance_cases(conf_case_t *out, size_t max); /* conformance.c */
size_t contract_cases(conf_case_t *out, size_t max);    /* contract.c */
size_t concurrency_cases(conf_case_t *out, size_t max); /* concurrency.c */

/* The URL given on the command line. */
extern const char *conf_url;
/* Feature flags of the backend under test (EVBUS_FEAT_*). */
extern unsigned conf_features;

/* ---- a set of strings (event ids), counting repeats */
typedef struct strset {
    char **slots;
    size_t cap, len;
} strset_t;
/* Adds s; returns 1 when new, 0 when already present. */
int strset_add(strset_t *s, const char *str);
int strset_has(const strset_t *s, const char *str);
void strset_free(strset_t *s);

/* ---- what a handler does */
typedef enum {
    COLLECT_ACK,
    COLLECT_RETRY_N, /* RETRY the first retry_n attempts of each event */
    COLLECT_DROP,
    COLLECT_SLEEP_ACK /* sleep sleep_ms, then ACK */
} collect_mode_t;

typedef struct collector {
    pthread_mutex_t mu;
    collect_mode_t mode;
    int retry_n;
    int sleep_ms;
    int calls;         /* handler invocations */
    int acked;         /* ACK answers */
    int duplicates;    /* ACKs for an id already ACKed */
    strset_t ids;      /* ids ACKed */
    strset_t seen;     /* ids of every call */
    int distinct;      /* events the handler saw at least once */
    int max_attempt;   /* highest evbus_delivery_attempt() seen */
    evbus_event_t *last; /* copy of the last event seen */
    /* per-key order check: last "seq" seen per partitionkey */
    int order_violations;
    char keys[64][32];
    long last_seq[64];
    int nkeys;
    volatile int handler_done; /* set when a SLEEP handler returns */
} collector_t;

void collector_init(collector_t *c, collect_mode_t mode);
void collector_free(collector_t *c);
evbus_result_t collector_handler(const evbus_event_t *ev, void *opaque);
int collector_acked(collector_t *c);
int collector_calls(collector_t *c);
int collector_distinct(collector_t *c);

/* ---- helpers */
evbus_t *open_bus(void);
/* A topic name unique to this run: "conf.<name>.<random>". */
void unique_topic(char *buf, size_t n, const char *name);
/* Polls the buses (NULL-terminated) until *counter >= want (read under
 * c->mu through fn) or timeout_ms passes; returns the final value. */
int poll_until(evbus_t **buses, collector_t *c, int (*value)(collector_t *),
               int want, int timeout_ms);
/* CLOCK_MONOTONIC in milliseconds: for hang guards, never for verdicts. */
uint64_t now_ms(void);
/* Polls for a further ms milliseconds (to see that nothing more arrives). */
void poll_for(evbus_t **buses, int ms);
/* An event with type conf.test.event, a "seq" extension and JSON data. */
evbus_event_t *make_event(int seq);
/* Publishes make_event(from) .. make_event(to - 1), asserting success. */
typedef enum { PUBLISH_SYNC, PUBLISH_ASYNC } publish_mode_t;
void publish_events(evbus_t *bus, const char *topic, int from, int to,
                    publish_mode_t mode);
/* conf_url with one more query parameter ("key=value"). Static buffer. */
const char *conf_url_with(const char *param);

/* Subscription options for fast retries in tests; retry must outlive the
 * subscribe call that uses o. */
void fast_retry_opts(evbus_sub_opts_t *o, evbus_retry_policy_t *retry,
                     int max_attempts);

#endif
