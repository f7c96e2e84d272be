#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

void fuzz_check_roundtrip(const evbus_event_t *ev)
{
    size_t len;
    char *json = evbus_event_to_json(ev, &len);
    if (!json) {
        fprintf(stderr, "accepted event does not encode\n");
        abort();
    }
    char err[256];
    evbus_event_t *back = evbus_event_from_json_limit(json, len, 0, err,
                                                      sizeof err);
    if (!back || !evbus_event_equal(ev, back)) {
        fprintf(stderr, "accepted event does not survive encoding: %s\n%s\n",
                back ? "differs" : err, json);
        abort();
    }
    evbus_event_free(back);
    free(json);
}
