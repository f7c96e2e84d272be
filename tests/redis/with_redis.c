/*
 * with-redis PROGRAM ARGS... - starts a private redis-server on 127.0.0.1
 * and an unused port, runs PROGRAM with every "@URL@" inside an argument
 * replaced by redis://127.0.0.1:PORT, stops the server and exits with the
 * program's status. Used to run the conformance suite on a real server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis_server.h"

static char *substitute(const char *arg, const char *url)
{
    const char *at = strstr(arg, "@URL@");
    if (!at)
        return strdup(arg);
    size_t n = strlen(arg) - 5 + strlen(url) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%.*s%s%s", (int)(at - arg), arg, url, at + 5);
    return out;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: with-redis PROGRAM [ARGS with @URL@...]\n");
        return 2;
    }
    test_redis_t r;
    if (test_redis_start(&r, NULL) != 0) {
        fprintf(stderr, "with-redis: FAILED to start redis-server\n");
        return 1;
    }
    fprintf(stderr, "with-redis: redis-server on %s (data in %s)\n", r.url,
            r.dir);
    char **args = calloc((size_t)argc, sizeof *args);
    for (int i = 1; i < argc; i++)
        args[i - 1] = substitute(argv[i], r.url);
    pid_t pid = fork();
    if (pid == 0) {
        execv(args[0], args);
        perror("with-redis: exec");
        _exit(127);
    }
    int st = 1;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        st = 1 << 8;
    test_redis_stop(&r);
    for (int i = 0; i < argc - 1; i++)
        free(args[i]);
    free(args);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    fprintf(stderr, "with-redis: program killed by signal %d\n",
            WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    return 1;
}
