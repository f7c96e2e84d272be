/*
 * Multi-process test of the sqlite:// backend: 3 producer processes and 3
 * consumer processes of one group share one database file; 30,000 events;
 * one consumer is killed with SIGKILL mid-run. Afterwards every event was
 * handled at least once, and every event handled more than once was handled
 * by the killed consumer (so it held the lease: its ack died with it) -
 * never twice by live members. Retention runs every 50 ms meanwhile and
 * must not delete anything the group still needs.
 *
 *   test-sqlite-multiproc                         the driver (this test)
 *   test-sqlite-multiproc produce URL K COUNT     a producer
 *   test-sqlite-multiproc consume URL OUT READY   a consumer
 *
 * Each consumer appends "id\n" with one write() per handled event to its own
 * file (no fsync: the kernel keeps it when the process is killed).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "evbus/evbus.h"

#define PRODUCERS 3
#define CONSUMERS 3
#define PER_PRODUCER 10000
#define TOTAL (PRODUCERS * PER_PRODUCER)
#define TOPIC "mp.events"
#define GROUP "workers"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void die(const char *fmt, const char *a)
{
    fprintf(stderr, "FAIL: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    exit(1);
}

/* ------------------------------------------------------------ producer */

static int produce(const char *url, int k, int count)
{
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        die("producer: %s", err);
    int failures = 0;
    for (int i = 0; i < count; i++) {
        evbus_event_t *ev = evbus_event_new("test.mp.produced", "/mp");
        char id[32];
        snprintf(id, sizeof id, "p%d-%d", k, i);
        evbus_event_set_id(ev, id);
        evbus_event_set_data_json(ev, "{\"work\":true}");
        /* half one by one, half through the batching writer */
        int rc = i % 2 ? evbus_publish_async(bus, TOPIC, ev, NULL, NULL)
                       : evbus_publish(bus, TOPIC, ev);
        if (rc != EVBUS_OK) {
            fprintf(stderr, "producer %d: publish %s: %s\n", k, id,
                    evbus_strerror(rc));
            failures++;
        }
        evbus_event_free(ev);
    }
    int rc = evbus_flush(bus, 60000);
    if (rc != EVBUS_OK) {
        fprintf(stderr, "producer %d: flush: %s\n", k, evbus_strerror(rc));
        failures++;
    }
    evbus_close(bus);
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------ consumer */

static evbus_t *consumer_bus;
static int out_fd = -1;

static void on_term(int sig)
{
    (void)sig;
    evbus_stop(consumer_bus);
}

static evbus_result_t record(const evbus_event_t *ev, void *opaque)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", evbus_event_id(ev));
    if (write(out_fd, line, (size_t)n) != n)
        return EVBUS_RETRY;
    /* A little work per event, so a backlog builds up and the killed
     * member dies holding leases (handled and not yet handled ones). */
    usleep(100);
    return EVBUS_ACK;
}

static int consume(const char *url, const char *out, const char *ready)
{
    char err[512];
    out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out_fd < 0)
        die("consumer: cannot open %s", out);
    consumer_bus = evbus_open(url, err, sizeof err);
    if (!consumer_bus)
        die("consumer: %s", err);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    if (!evbus_subscribe(consumer_bus, TOPIC, GROUP, record, NULL))
        die("consumer: subscribe failed%s", "");
    int fd = open(ready, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0)
        close(fd);
    int rc = evbus_run(consumer_bus);
    evbus_close(consumer_bus);
    close(out_fd);
    return rc == EVBUS_OK ? 0 : 1;
}

/* ------------------------------------------------------------ driver */

typedef struct {
    unsigned char n[CONSUMERS][TOTAL];
} counts_t;

/* Reads every consumer's file; returns how many distinct events. */
static int read_counts(char files[][320], counts_t *c)
{
    memset(c, 0, sizeof *c);
    int distinct = 0;
    for (int p = 0; p < CONSUMERS; p++) {
        FILE *f = fopen(files[p], "r");
        if (!f)
            continue;
        int k, i;
        while (fscanf(f, "p%d-%d\n", &k, &i) == 2) {
            if (k < 0 || k >= PRODUCERS || i < 0 || i >= PER_PRODUCER) {
                fprintf(stderr, "FAIL: unknown event p%d-%d\n", k, i);
                exit(1);
            }
            int idx = k * PER_PRODUCER + i;
            if (c->n[p][idx] < 255)
                c->n[p][idx]++;
        }
        fclose(f);
    }
    for (int idx = 0; idx < TOTAL; idx++) {
        int sum = 0;
        for (int p = 0; p < CONSUMERS; p++)
            sum += c->n[p][idx];
        distinct += sum > 0;
    }
    return distinct;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return pid;
}

/* count(*) of a table of the database, -1 on error. */
static long rows_of(const char *db, const char *table)
{
    sqlite3 *h;
    long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = (long)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return v;
}

static int drive(void)
{
    char dir[] = "/tmp/evbus-mp.XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp: %s", strerror(errno));
    char db[300], url[400];
    snprintf(db, sizeof db, "%s/bus.db", dir);
    /* A short lease so the killed member's events come back quickly, and
     * retention running all the time: it must never delete an event the
     * group still needs (including those the killed member held). */
    snprintf(url, sizeof url,
             "sqlite://%s?visibility_timeout_ms=2000&retention_ms=0&"
             "retention_interval_ms=50",
             db);

    char files[CONSUMERS][320], ready[CONSUMERS][320];
    pid_t cons[CONSUMERS], prod[PRODUCERS];
    for (int p = 0; p < CONSUMERS; p++) {
        snprintf(files[p], sizeof files[p], "%s/handled.%d", dir, p);
        snprintf(ready[p], sizeof ready[p], "%s/ready.%d", dir, p);
        char *argv[] = {"multiproc", "consume", url, files[p], ready[p], NULL};
        cons[p] = spawn(argv);
    }
    uint64_t t0 = now_ms();
    for (int p = 0; p < CONSUMERS; p++)
        while (access(ready[p], F_OK) != 0) {
            if (now_ms() - t0 > 20000)
                die("consumer %s did not start", files[p]);
            usleep(10000);
        }
    char count[16];
    snprintf(count, sizeof count, "%d", PER_PRODUCER);
    for (int k = 0; k < PRODUCERS; k++) {
        char ks[8];
        snprintf(ks, sizeof ks, "%d", k);
        char *argv[] = {"multiproc", "produce", url, ks, count, NULL};
        prod[k] = spawn(argv);
    }

    /* Kill consumer 0 mid-run: once it has handled a fair share and about
     * a third of all events are done. */
    const int victim = 0;
    uint64_t t1 = now_ms();
    for (;;) {
        off_t total = 0;
        for (int p = 0; p < CONSUMERS; p++)
            total += file_size(files[p]);
        /* lines are ~9 bytes ("p1-2345\n") */
        if (file_size(files[victim]) > 500 * 9 && total > TOTAL / 3 * 9)
            break;
        if (now_ms() - t1 > 120000)
            die("consumers made no progress%s", "");
        usleep(2000);
    }
    kill(cons[victim], SIGKILL);
    int status;
    waitpid(cons[victim], &status, 0);
    printf("killed consumer %d (pid %d) mid-run\n", victim, (int)cons[victim]);

    for (int k = 0; k < PRODUCERS; k++) {
        waitpid(prod[k], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die("a producer failed%s", "");
    }
    printf("producers done: %d events published in %llu ms\n", TOTAL,
           (unsigned long long)(now_ms() - t0));

    static counts_t c;
    uint64_t t2 = now_ms();
    int distinct;
    while ((distinct = read_counts(files, &c)) < TOTAL &&
           now_ms() - t2 < 60000)
        usleep(100000);
    printf("all handled %llu ms after the producers finished\n",
           (unsigned long long)(now_ms() - t2));
    /* A moment more, so late duplicates would show. */
    usleep(500000);
    for (int p = 0; p < CONSUMERS; p++)
        if (p != victim) {
            kill(cons[p], SIGTERM);
            waitpid(cons[p], &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                die("a consumer did not stop cleanly%s", "");
        }
    distinct = read_counts(files, &c);

    int missing = 0, dups = 0, bad_dups = 0, by_victim = 0;
    int per[CONSUMERS] = {0};
    for (int idx = 0; idx < TOTAL; idx++) {
        int sum = 0;
        for (int p = 0; p < CONSUMERS; p++) {
            sum += c.n[p][idx];
            per[p] += c.n[p][idx];
        }
        by_victim += c.n[victim][idx] > 0;
        if (sum == 0) {
            if (missing < 5)
                fprintf(stderr, "missing p%d-%d\n", idx / PER_PRODUCER,
                        idx % PER_PRODUCER);
            missing++;
        } else if (sum > 1) {
            dups++;
            if (c.n[victim][idx] == 0) {
                if (bad_dups < 5)
                    fprintf(stderr,
                            "p%d-%d handled %d times by live members only\n",
                            idx / PER_PRODUCER, idx % PER_PRODUCER, sum);
                bad_dups++;
            }
        }
    }
    long left = rows_of(db, "evbus_pending");
    long kept = rows_of(db, "evbus_events");
    printf("handled per consumer: %d (killed) %d %d; distinct %d of %d; "
           "missing %d; duplicates %d (all of them handled by the killed "
           "member: %s); unacknowledged rows left %ld; events retention "
           "kept %ld\n",
           per[0], per[1], per[2], distinct, TOTAL, missing, dups,
           bad_dups ? "NO" : "yes", left, kept);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    /* kept < TOTAL shows that retention really ran during the test */
    if (missing || bad_dups || by_victim == 0 || left != 0 || kept < 0 ||
        kept >= TOTAL) {
        fprintf(stderr, "FAIL\n");
        return 1;
    }
    printf("PASS\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "consume") == 0)
        return consume(argv[2], argv[3], argv[4]);
    if (argc == 1)
        return drive();
    fprintf(stderr, "usage: %s [produce URL K COUNT | consume URL OUT READY]\n",
            argv[0]);
    return 2;
}
