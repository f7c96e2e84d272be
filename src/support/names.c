#include <string.h>

#include "core/event_internal.h" /* evbus__utf8_ok */
#include "evbus/evbus.h"
#include "support/errstr.h"
#include "support/names.h"

int evbus__check_name(const char *name, const char *what, bool native,
                      char *why, size_t n)
{
    static const char portable[] =
        "portable names are 1-249 bytes of A-Z a-z 0-9 . _ - and not . or "
        "..; open the bus with names=native for the backend's own rule";
    static const char native_rule[] =
        "names are 1-249 bytes of UTF-8 without spaces or control "
        "characters";
    const char *rule = native ? native_rule : portable;
    if (!name || !*name) {
        evbus__seterr(why, n, "%s name is empty (%s)", what, rule);
        return EVBUS_EINVAL;
    }
    size_t len = strlen(name);
    if (len > EVBUS__NAME_MAX) {
        evbus__seterr(why, n, "%s name is %zu bytes long (%s)", what, len,
                      rule);
        return EVBUS_EINVAL;
    }
    if (!native && (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)) {
        evbus__seterr(why, n, "%s name '%s' is not allowed (%s)", what, name,
                      rule);
        return EVBUS_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = native ? c > ' ' && c != 0x7f : evbus__portable_byte(c);
        if (!ok) {
            if (c > ' ' && c < 0x7f)
                evbus__seterr(why, n, "%s name has '%c' at byte %zu (%s)",
                              what, c, i, rule);
            else
                evbus__seterr(why, n, "%s name has byte 0x%02x at offset %zu "
                              "(%s)", what, c, i, rule);
            return EVBUS_EINVAL;
        }
    }
    if (native && !evbus__utf8_ok((const unsigned char *)name, len)) {
        evbus__seterr(why, n, "%s name is not valid UTF-8 (%s)", what, rule);
        return EVBUS_EINVAL;
    }
    return EVBUS_OK;
}
