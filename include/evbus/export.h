/* Symbol visibility: everything public is marked EVBUS_API; the library is
 * built with -fvisibility=hidden so nothing else leaks. */
#ifndef EVBUS_EXPORT_H
#define EVBUS_EXPORT_H

#if defined(EVBUS_BUILDING) && defined(__GNUC__)
#define EVBUS_API __attribute__((visibility("default")))
#else
#define EVBUS_API
#endif

#endif /* EVBUS_EXPORT_H */
