/*
 * Shared by the fetcher thread's files (redis_fetcher.c, redis_claim.c,
 * redis_entries.c): its loop state and helpers. Only the fetcher thread
 * calls these, on its own connection s->c.
 */
#ifndef EVBUS_REDIS_FETCH_H
#define EVBUS_REDIS_FETCH_H

#include "redis_internal.h"

typedef struct {
    bool group_ready;   /* XGROUP CREATE done on this connection */
    bool pending_phase; /* still re-reading our own pending entries */
    char pending_from[44];
    bool claiming; /* an XAUTOCLAIM scan is under way */
    char claim_cursor[44];
    uint64_t next_claim_ms, next_beat_ms;
    bool was_down;
    bool caught_up;       /* the last non-blocking read found nothing new */
    uint64_t last_ack_ms; /* when the fetcher last sent acks */
} rds_fetch_state_t;

/* Drops the fetcher's connection after an I/O failure. */
void evbus__redis_drop_conn(rds_sub_t *s, const char *why);
/* Handles a failed command: I/O failures drop the connection; NOGROUP
 * (stream or group deleted) makes the fetcher create the group again;
 * other errors are logged and waited out. */
void evbus__redis_command_failed(rds_sub_t *s, rds_fetch_state_t *st,
                                 redisReply *r, const char *what);
/* Milliseconds between claim scans and between heartbeats. */
int evbus__redis_claim_interval(const rds_bus_t *b);
int evbus__redis_beat_interval(const rds_bus_t *b);
/* One XAUTOCLAIM step of the claim scan (st->claim_cursor). */
void evbus__redis_claim_step(rds_sub_t *s, rds_fetch_state_t *st, int count);
/* Resets the idle time of everything s holds. */
void evbus__redis_heartbeat(rds_sub_t *s, rds_fetch_state_t *st);
/* Turns an array of entries into buffered messages. known_new: entries
 * from '>' (never held before, delivered for the first time); otherwise
 * held ones are skipped and recorded attempts looked up. last_id (may be
 * NULL) receives the id of the last entry. Returns how many entries the
 * array had (including skipped and deleted), or an error (ECONN: the
 * connection failed). */
int evbus__redis_take_entries(rds_sub_t *s, const redisReply *entries,
                              bool known_new, char *last_id,
                              size_t last_id_size);
/* Entries of the single stream in an XREADGROUP reply, or NULL. */
const redisReply *evbus__redis_stream_entries(const redisReply *r);

#endif
