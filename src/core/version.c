#include "internal.h"

const char *evbus_version(void)
{
    return EVBUS_VERSION_STRING;
}

int evbus_version_num(void)
{
    return EVBUS_VERSION_NUM;
}
