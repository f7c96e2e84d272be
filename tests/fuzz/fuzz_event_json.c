/* Fuzz target: the CloudEvents JSON decoder (evbus_event_from_json). Any
 * input: no crash, no leak; an accepted event encodes to JSON that decodes
 * back to the same event. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    evbus_event_t *ev = evbus_event_from_json((const char *)data, size, err,
                                              sizeof err);
    if (ev) {
        fuzz_check_roundtrip(ev);
        evbus_event_free(ev);
    }
    return 0;
}
