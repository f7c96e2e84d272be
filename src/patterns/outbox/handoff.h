/*
 * In-process hand-off from evbus_outbox_add to a relay of the same database
 * file in the same process: the relay can publish the event object the
 * producer already built instead of decoding the row's JSON again.
 *
 * Only an optimisation, never a source of truth: the relay still reads every
 * row from the database, and uses a handed-off event only when its JSON is
 * byte-for-byte the row's JSON (so a rolled-back add whose seq was reused by
 * another event can never be published). Anything missing or different is
 * decoded from the row as usual. Bounded: beyond HANDOFF_MAX_BYTES pending,
 * adds are simply not handed off.
 */
#ifndef EVBUS_PATTERNS_HANDOFF_H
#define EVBUS_PATTERNS_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/event.h"

#define HANDOFF_MAX_BYTES (8u << 20)

typedef struct handoff handoff_t;

/* A relay that holds the lock for db_file starts receiving hand-offs.
 * Returns NULL when out of memory (the relay then always decodes). */
handoff_t *evbus__handoff_open(const char *db_file);
/* Stops receiving and frees what was pending. NULL is ignored. */
void evbus__handoff_close(handoff_t *h);

/* Producer side: offers the event just written as row seq of db_file,
 * encoded as json (ownership of json passes to this call in every case).
 * Cheap when no relay of this process listens on db_file. */
void evbus__handoff_offer(const char *db_file, int64_t seq,
                          const evbus_event_t *ev, char *json, size_t len);

/* Relay side: the event handed off for row seq when its JSON equals
 * json/len (caller frees it with evbus_event_free), else NULL. Forgets
 * offers for rows below seq (rolled back or already taken). */
evbus_event_t *evbus__handoff_take(handoff_t *h, int64_t seq, const char *json,
                                   size_t len);

#endif
