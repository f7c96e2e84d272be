/* todo-service: does a user exist? Asked of user-service through a circuit
 * breaker and a retry policy, degrading to "unverified" while it is down. */
#ifndef TODO_DEMO_USER_CHECK_H
#define TODO_DEMO_USER_CHECK_H

#include <cJSON.h>

typedef struct {
    long user_id;
    int exists;   /* user-service said yes (or the fallback assumed it) */
    int verified; /* 0 when the fallback answered */
    int attempts; /* HTTP attempts made */
    char why[200]; /* why unverified, for the reply and the timeline */
} user_check_t;

/* Reads USER_SERVICE_URL and BREAKER_OPEN_MS; creates the breaker. */
void user_check_init(void);
/* Fills c from c->user_id. Blocking (at most ~1 s); one caller at a time is
 * what the demo needs, but the breaker itself is thread-safe. */
void user_check(user_check_t *c);
/* {"name","state","calls",...}: caller owns the object. */
cJSON *user_check_breaker_json(void);
void user_check_free(void);

#endif
