/* Repeated failures logged once, then as a count with a growing interval. */
#include "support/clock.h"
#include "support/lograte.h"

#define FIRST_INTERVAL_MS 1000
#define MAX_INTERVAL_MS 60000

bool evbus__lograte_fail(evbus__lograte_t *r, int err, uint64_t *repeats)
{
    uint64_t now = evbus__mono_ms();
    if (r->err != err || r->count == 0) {
        r->err = err;
        r->count = 1;
        r->logged = 1;
        r->interval_ms = FIRST_INTERVAL_MS;
        r->next_ms = now + r->interval_ms;
        *repeats = 0;
        return true;
    }
    r->count++;
    if (now < r->next_ms)
        return false;
    *repeats = r->count - r->logged;
    r->logged = r->count;
    r->interval_ms = r->interval_ms * 2 > MAX_INTERVAL_MS ? MAX_INTERVAL_MS
                                                         : r->interval_ms * 2;
    r->next_ms = now + r->interval_ms;
    return true;
}

uint64_t evbus__lograte_ok(evbus__lograte_t *r)
{
    uint64_t n = r->count;
    r->err = 0;
    r->count = 0;
    return n;
}
