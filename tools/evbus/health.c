/*
 * evbus health URL: "ok" and exit 0 when the broker is reachable and usable,
 * else one line "evbus: ..." on stderr naming what is wrong and exit 1.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

static const char health_usage[] =
    "usage: evbus health URL [-q] [-v]\n"
    "\n"
    "Checks that the bus URL opens and the broker answers its health check\n"
    "(PING, metadata request, sidecar health endpoint, storage query).\n"
    "Prints \"ok\" and exits 0, or prints one line saying what is wrong on\n"
    "stderr and exits 1 (2 on usage errors).\n"
    "\n"
    "  -q, --quiet              print nothing on success\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text\n";

int cmd_health(int argc, char **argv)
{
    static const struct option longs[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "qvh", longs, NULL)) != -1) {
        switch (c) {
        case 'q': cli_quiet = 1; break;
        case 'v': cli_verbose++; break;
        case 'h': fputs(health_usage, stdout); return CLI_OK;
        default:
            fprintf(stderr, "Try 'evbus health --help' for more "
                            "information.\n");
            return CLI_USAGE;
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("health", "expected one URL, got %d arguments",
                               argc - optind);
    const char *url = argv[optind];
    evbus_t *bus = cli_open(url);
    if (!bus)
        return CLI_FAIL;
    char err[512] = "";
    int rc = evbus_health(bus, err, sizeof err);
    evbus_close(bus);
    if (rc != EVBUS_OK) {
        cli_error("%s is unhealthy: %s", url,
                  err[0] ? err : evbus_strerror(rc));
        return CLI_FAIL;
    }
    if (!cli_quiet)
        puts("ok");
    return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}
