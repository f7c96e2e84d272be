/* See redis_server.h. */
#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int spawn(test_redis_t *r)
{
    const char *bin = getenv("REDIS_SERVER");
    if (!bin || !*bin)
        bin = "redis-server";
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    const char *argv[40];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "yes";
    argv[n++] = "--dir";
    argv[n++] = r->dir;
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--logfile";
    argv[n++] = log;
    for (int i = 0; r->extra[i] && n < 38; i++)
        argv[n++] = r->extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execvp(bin, (char *const *)argv);
        fprintf(stderr, "test_redis: cannot run %s: %s\n", bin,
                strerror(errno));
        _exit(127);
    }
    r->pid = pid;
    /* Ready when it answers PING (NOAUTH counts: it is up). */
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            return -1; /* exited: port taken, bad option, ... */
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            int up = rep && (rep->type == REDIS_REPLY_STATUS ||
                             (rep->type == REDIS_REPLY_ERROR &&
                              strncmp(rep->str, "LOADING", 7) != 0));
            freeReplyObject(rep);
            redisFree(c);
            if (up)
                return 0;
        } else if (c) {
            redisFree(c);
        }
        usleep(10000);
    }
    return -1;
}

int test_redis_start(test_redis_t *r, const char *const *extra)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; extra && extra[i] && i < 7; i++)
        r->extra[i] = extra[i];
    snprintf(r->dir, sizeof r->dir, "/tmp/evbus-redis-test-XXXXXX");
    if (!mkdtemp(r->dir)) {
        fprintf(stderr, "test_redis: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = free_port();
        if (r->port > 0 && spawn(r) == 0) {
            snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
            return 0;
        }
    }
    fprintf(stderr, "test_redis: cannot start redis-server (see %s/redis.log)\n",
            r->dir);
    return -1;
}

void test_redis_kill(test_redis_t *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    r->pid = 0;
}

int test_redis_restart(test_redis_t *r)
{
    test_redis_kill(r);
    for (int attempt = 0; attempt < 50; attempt++) {
        if (spawn(r) == 0)
            return 0;
        usleep(100000); /* the port may linger a moment */
    }
    fprintf(stderr, "test_redis: cannot restart redis-server on %d\n", r->port);
    return -1;
}

void test_redis_stop(test_redis_t *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        for (int i = 0; i < 300; i++) {
            if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
                r->pid = 0;
                break;
            }
            usleep(10000);
        }
        test_redis_kill(r);
    }
    if (r->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_redis: cannot remove %s\n", r->dir);
        r->dir[0] = '\0';
    }
}
