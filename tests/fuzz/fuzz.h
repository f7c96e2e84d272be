/* Shared by the fuzz targets: the libFuzzer entry point each one defines,
 * and a check that an accepted event survives its own JSON encoding. */
#ifndef EVBUS_FUZZ_H
#define EVBUS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include <evbus/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts unless ev encodes to JSON that decodes back to an equal event:
 * whatever an edge accepts must be writable as valid JSON. */
void fuzz_check_roundtrip(const evbus_event_t *ev);

#endif
