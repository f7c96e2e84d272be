/* Fuzz target: the CloudEvents Kafka binding decoder (binary mode and the
 * structured/bare classification) on a record's headers and value.
 * Input: header lines "name: value" up to an empty line, then the value
 * (a value of exactly "<null>" is a null value). */
#include <stdlib.h>
#include <string.h>

#include "backends/kafka/kafka_internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le == p) { /* empty line: the value follows */
            p = le + 1;
            break;
        }
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            const char *v = colon + 1;
            if (v < le && *v == ' ')
                v++;
            rd_kafka_header_add(h, p, colon - p, v, le - v);
        }
        p = nl ? nl + 1 : end;
    }
    if (p > end)
        p = end;
    size_t len = (size_t)(end - p);
    const void *value = p;
    if (len == 6 && memcmp(p, "<null>", 6) == 0)
        value = NULL, len = 0;
    evbus_event_t *ev = NULL;
    char *why = NULL;
    int rc = evbus__kafka_wire_decode(value, len, h, &ev, &why);
    if (rc == EVBUS_OK && ev)
        fuzz_check_roundtrip(ev);
    if (rc != EVBUS_OK && rc != EVBUS_EDECODE && rc != EVBUS_ENOMEM)
        abort(); /* only these are promised */
    evbus_event_free(ev);
    free(why);
    rd_kafka_headers_destroy(h);
    return 0;
}
