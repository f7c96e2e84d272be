/*
 * evbus: the command-line tool of libevbus. Dispatches to the subcommands
 * (publish, tail, dlq, health, bench, saga); each parses its own options.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

static const char main_usage[] =
    "usage: evbus [-v] COMMAND [ARGS...]\n"
    "\n"
    "Publish, watch and repair events on a libevbus bus.\n"
    "\n"
    "Commands:\n"
    "  publish URL TOPIC --type T --source S [--data JSON|@FILE|-] ...\n"
    "  publish URL TOPIC --event FILE|-\n"
    "                         publish CloudEvents and print their ids\n"
    "  tail URL TOPIC [--group G] [--format json|pretty] [--count N]\n"
    "                         print events as they arrive\n"
    "  dlq list URL TOPIC     show dead letters with reason and attempts\n"
    "  dlq show URL TOPIC --id ID\n"
    "                         one dead letter in full, truncation explained\n"
    "  dlq replay URL TOPIC (--id ID | --all)\n"
    "                         republish dead letters to their topic\n"
    "  health URL             check that the broker is reachable\n"
    "  bench URL [OPTIONS]    run the evbus-bench benchmark harness\n"
    "  saga list|show ID|resume ID|purge --days N --db PATH\n"
    "                         inspect the sagas of an orchestrator database\n"
    "\n"
    "URLs: memory://NAME, sqlite:///path/bus.db, redis://host:port[/db],\n"
    "kafka://host:port[,host:port], dapr://host:port?pubsub=NAME&app_port=N\n"
    "\n"
    "Options:\n"
    "  -v, --verbose            library log on stderr (-vv: debug)\n"
    "  -h, --help               this text ('evbus COMMAND --help' for one\n"
    "                           command)\n"
    "  -V, --version            tool and library version\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure (broker, storage, publish),\n"
    "2 usage error or invalid input. See evbus(1).\n";

typedef struct {
    const char *name;
    const char *argv0;
    int (*fn)(int, char **);
} command_t;

static const command_t commands[] = {
    {"publish", "evbus publish", cmd_publish},
    {"tail", "evbus tail", cmd_tail},
    {"dlq", "evbus dlq", cmd_dlq},
    {"health", "evbus health", cmd_health},
    {"bench", "evbus bench", cmd_bench},
    {"saga", "evbus saga", cmd_saga},
};

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(main_usage, stdout);
            return CLI_OK;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("evbus %s (libevbus %s)\n", EVBUS_VERSION_STRING,
                   evbus_version());
            return CLI_OK;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            cli_verbose++;
        } else if (strcmp(a, "-vv") == 0) {
            cli_verbose += 2;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            cli_quiet = 1;
        } else {
            fprintf(stderr, "evbus: unknown option '%s'\n"
                            "Try 'evbus --help' for more information.\n", a);
            return CLI_USAGE;
        }
    }
    if (i == argc) {
        fputs(main_usage, stderr);
        return CLI_USAGE;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (strcmp(argv[i], commands[k].name) == 0) {
            argv[i] = (char *)commands[k].argv0; /* getopt's message prefix */
            return commands[k].fn(argc - i, argv + i);
        }
    if (strcmp(argv[i], "help") == 0) {
        fputs(main_usage, stdout);
        return CLI_OK;
    }
    fprintf(stderr, "evbus: unknown command '%s'\n"
                    "Try 'evbus --help' for more information.\n", argv[i]);
    return CLI_USAGE;
}
