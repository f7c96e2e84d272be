/*
 * "obrec://" - a backend for the pattern tests that records every accepted
 * publish (topic + event id, in order) and can be told to fail, so tests see
 * exactly what a relay published and can take the broker down.
 * "obrecb://" is the same recorder declaring EVBUS_FEAT_BYTES_ONLY.
 * Registered through the public evbus_backend_register.
 */
#ifndef PATTERNS_REC_BACKEND_H
#define PATTERNS_REC_BACKEND_H

#include <stddef.h>

/* Registers obrec:// (idempotent). */
void rec_register(void);
/* Forgets everything recorded and clears the failure mode. */
void rec_reset(void);
/* Every publish fails with err from now on (0 = accept again). */
void rec_fail_with(int err);
/* Events accepted so far. */
size_t rec_count(void);
/* Id / topic of the i-th accepted event (owned by the recorder). */
const char *rec_id(size_t i);
const char *rec_topic(size_t i);
/* The bytes of the i-th accepted publish (owned by the recorder). */
const char *rec_payload(size_t i);
/* How many accepted events have this id. */
size_t rec_times(const char *id);
/* Publish attempts (accepted or failed). */
size_t rec_attempts(void);

#endif
