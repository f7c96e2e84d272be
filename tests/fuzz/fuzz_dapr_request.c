/* Fuzz target: what turns an HTTP request to the dapr:// app server into
 * deliveries (evbus__dapr_parse_delivery): structured, binary mode, Dapr's
 * bulk envelope, batches. Input: header lines "Name: value" up to an empty
 * line, then the body. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backends/dapr/dapr_internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the server hands the parser NUL-terminated header strings */
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *names[64], *values[64];
    size_t n = 0;
    char *p = copy, *end = copy + size;
    const char *ct = NULL;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        if (le == p) {
            p = le + 1;
            break;
        }
        *le = '\0';
        char *colon = strchr(p, ':');
        if (colon && n < 64) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            names[n] = p;
            values[n++] = v;
            if (strcasecmp(p, "Content-Type") == 0)
                ct = v;
        }
        p = nl ? nl + 1 : end;
    }
    if (p > end)
        p = end;
    dapr_http_req_t in = {.content_type = ct,
                          .n_headers = n,
                          .names = names,
                          .values = values,
                          .body = p,
                          .len = (size_t)(end - p),
                          .max_bytes = EVBUS_EVENT_MAX_BYTES_DEFAULT};
    dapr_delivery_t d;
    if (evbus__dapr_parse_delivery(&in, &d) == EVBUS_OK)
        for (int i = 0; i < d.n; i++) {
            if (!d.e[i].event == !d.e[i].why)
                abort(); /* each entry is an event or says why not */
            if (d.e[i].event)
                fuzz_check_roundtrip(d.e[i].event);
        }
    evbus__dapr_delivery_free(&d);
    free(copy);
    return 0;
}
