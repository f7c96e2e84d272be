/*
 * Clocks. Monotonic time for deadlines, backoff and latency; wall-clock time
 * only where a moment is stored or shared between processes (leases, the
 * first-attempt time of a retry context).
 */
#ifndef EVBUS_SUPPORT_CLOCK_H
#define EVBUS_SUPPORT_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds / microseconds since an arbitrary point. */
uint64_t evbus__mono_ms(void);
uint64_t evbus__mono_us(void);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t evbus__wall_ms(void);

#endif
