/*
 * evbus bench URL [evbus-bench options]: runs the benchmark harness
 * evbus-bench with --url URL and the other options passed through, adding
 * --progress when stderr is a terminal. The harness is looked for next to
 * this binary (installed layout), then in ../bench and ../../bench relative
 * to it (the build tree: tools/evbus/evbus and bench/evbus-bench), then on
 * PATH.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"

static const char bench_usage[] =
    "usage: evbus bench URL [evbus-bench options]\n"
    "\n"
    "Measures throughput and latency of the bus at URL with evbus-bench and\n"
    "prints its one-line JSON result. Options are passed through:\n"
    "  --events N  --size BYTES  --mode publish|publish-sync|consume|roundtrip\n"
    "  --window W  --topic T  --fresh-events\n"
    "A progress line is shown on stderr when stderr is a terminal.\n"
    "Run 'evbus-bench --help' for the harness's own usage.\n";

/* Finds evbus-bench; writes its path into out or leaves out empty when
 * only a PATH lookup remains. */
static void find_bench(char *out, size_t n)
{
    out[0] = '\0';
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return;
    self[len] = '\0';
    char *dir = dirname(self);
    static const char *const rel[] = {"", "/../bench", "/../../bench"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s%s/evbus-bench", dir, rel[i]);
        if (access(path, X_OK) == 0) {
            snprintf(out, n, "%s", path);
            return;
        }
    }
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(bench_usage, stdout);
        return CLI_OK;
    }
    if (argc < 2 || argv[1][0] == '-')
        return cli_usage_error("bench", "expected URL first");
    int progress = isatty(STDERR_FILENO);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--progress") == 0)
            progress = 0; /* already asked for */
        if (strcmp(argv[i], "--url") == 0 || strncmp(argv[i], "--url=", 6) == 0)
            return cli_usage_error("bench", "give the URL as the first "
                                   "argument, not with --url");
    }
    char path[PATH_MAX + 32];
    find_bench(path, sizeof path);
    /* evbus-bench --url URL [options...] [--progress] NULL */
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    int k = 0;
    args[k++] = path[0] ? path : "evbus-bench";
    args[k++] = "--url";
    args[k++] = argv[1];
    for (int i = 2; i < argc; i++)
        args[k++] = argv[i];
    if (progress)
        args[k++] = "--progress";
    args[k] = NULL;
    fflush(NULL);
    if (path[0])
        execv(path, args);
    else
        execvp("evbus-bench", args);
    cli_error("cannot run %s: %s", path[0] ? path : "evbus-bench (not "
              "found next to evbus nor on PATH)", strerror(errno));
    free(args);
    return CLI_FAIL;
}
