/*
 * Topic and consumer-group names. By default every backend accepts the
 * portable rule, Kafka's: 1-249 bytes of [A-Za-z0-9._-], not "." or "..",
 * so code that runs on one backend runs on all. A bus opened with
 * names=native accepts what its backend accepts natively instead (valid
 * UTF-8, no spaces or control characters, 1-249 bytes), for existing
 * streams whose names do not follow the portable rule.
 */
#ifndef EVBUS_SUPPORT_NAMES_H
#define EVBUS_SUPPORT_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define EVBUS__NAME_MAX 249

/* A byte the portable rule allows: A-Z a-z 0-9 . _ - (saga, step and
 * orchestrator names are made of these too). */
static inline bool evbus__portable_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Checks a name. what names it in the message ("topic", "group").
 * EVBUS_OK, or EVBUS_EINVAL with a one-line reason in why that names the
 * rule and the first offending byte. */
int evbus__check_name(const char *name, const char *what, bool native,
                      char *why, size_t n);

#endif
