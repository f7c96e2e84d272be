#include <string.h>

#include "evbus/evbus.h"
#include "support/structs.h"

void evbus__struct_init(void *p, size_t size)
{
    if (p && size >= sizeof size) {
        memset(p, 0, size);
        memcpy(p, &size, sizeof size);
    }
}

void evbus__struct_defaults(void *p, size_t size, const void *defaults,
                            size_t defaults_size)
{
    if (!p || size < sizeof size)
        return;
    size_t n = size < defaults_size ? size : defaults_size;
    memcpy(p, defaults, n);
    memset((char *)p + n, 0, size - n);
    memcpy(p, &size, sizeof size);
}

int evbus__struct_in(void *dst, size_t dst_size, const void *src,
                     size_t min_size)
{
    size_t n;
    memcpy(&n, src, sizeof n);
    if (n < min_size)
        return EVBUS_EINVAL;
    memcpy(dst, src, n < dst_size ? n : dst_size);
    memcpy(dst, &dst_size, sizeof dst_size);
    return EVBUS_OK;
}

int evbus__struct_out(void *dst, const void *src, size_t src_size,
                      size_t min_size)
{
    size_t n;
    memcpy(&n, dst, sizeof n);
    if (n < min_size)
        return EVBUS_EINVAL;
    size_t copy = n < src_size ? n : src_size;
    memcpy((char *)dst + sizeof n, (const char *)src + sizeof n,
           copy - sizeof n);
    return EVBUS_OK;
}
