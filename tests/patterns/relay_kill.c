/*
 * The crash test: a relay process is SIGKILLed again and again while a
 * producer commits N events through the outbox and a consumer applies them
 * through an inbox. At the end every committed event must have changed the
 * consumer's state exactly once: none lost, every duplicate (republished by
 * a relay that died before marking its batch) absorbed by the inbox, and no
 * event of a rolled-back transaction seen at all.
 *
 *   relay-kill URL [N] [faults] URL "sqlite" = a fresh sqlite:// bus file;
 *                               "faults" also wraps both sides in faulty+:
 *                               relays see failed publishes and lost
 *                               replies, the consumer duplicated and
 *                               redelivered events
 *   relay-kill --relay APP_DB URL [K]   (child: runs two relays until killed;
 *                                        with K, dies by itself right after
 *                                        the broker accepted its K-th event)
 *   relay-kill --produce APP_DB N       (child: commits N events)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evbus/backend.h>
#include <evbus/evbus.h>
#include <evbus/inbox.h>
#include <evbus/outbox.h>

#define TOPIC "todos.kill"

static void die(const char *what, const char *why)
{
    fprintf(stderr, "relay-kill: FAIL: %s: %s\n", what, why ? why : "");
    exit(1);
}

#define HANG_MS 180000 /* no progress for this long is a hang */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void exec_sql(sqlite3 *db, const char *q)
{
    char *err = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK)
        die(q, err);
}

static long long query_int(sqlite3 *db, const char *q)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        die(q, sqlite3_errmsg(db));
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("open", path);
    sqlite3_busy_timeout(db, 10000);
    exec_sql(db, "PRAGMA journal_mode=WAL");
    exec_sql(db, "PRAGMA synchronous=NORMAL");
    return db;
}

/* ------------------------------------------------------------ children */

/* ---- "diesafter://": forwards publishes to the real bus and SIGKILLs the
 * process right after the K-th one was accepted - the worst moment for a
 * relay: the broker has events it has not recorded as delivered yet. */

static evbus_t *inner_bus;
static long die_after;

static int da_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                   char *errstr, size_t n)
{
    return EVBUS_OK;
}

static void da_close(void *priv) {}

static int da_publish(void *priv, const char *topic, const evbus_event_t *ev,
                      const void *payload, size_t len)
{
    static long count;
    int rc = ev ? evbus_publish(inner_bus, topic, ev)
                : evbus_publish_raw(inner_bus, topic, payload, len);
    if (rc == EVBUS_OK && ++count == die_after)
        raise(SIGKILL);
    return rc;
}

static int da_subscribe(void *priv, const char *topic, const char *group,
                        void **bsub, char *errstr, size_t n)
{
    return EVBUS_ENOTSUP;
}

static void da_unsubscribe(void *priv, void *bsub) {}

static int da_fetch(void *priv, void *bsub, evbus_msg_t *out, int max)
{
    return 0;
}

static int da_settle(void *priv, void *bsub, evbus_msg_t *msg,
                     evbus_settle_t how, int delay_ms)
{
    return EVBUS_OK;
}

static const evbus_backend_t dies_after_backend = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "diesafter",
    .priv_size = 8,
    .open = da_open,
    .close = da_close,
    .publish = da_publish,
    .subscribe = da_subscribe,
    .unsubscribe = da_unsubscribe,
    .fetch = da_fetch,
    .settle = da_settle,
};

static int run_relays(const char *app_db, const char *url, long k)
{
    char err[512];
    if (k > 0) {
        if (!(inner_bus = evbus_open(url, err, sizeof err)))
            die("relay: open bus", err);
        die_after = k;
        evbus_backend_register(&dies_after_backend);
        url = "diesafter://x";
    }
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        die("relay: open bus", err);
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.batch_size = 200;
    o.poll_interval_ms = 5;
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 5;
    retry.max_ms = 100;
    o.retry = &retry;
    /* two relays on one database: the lock lets only one publish */
    evbus_relay_t *r1 = evbus_relay_open_opts(app_db, bus, &o, err, sizeof err);
    evbus_relay_t *r2 = evbus_relay_open_opts(app_db, bus, &o, err, sizeof err);
    if (!r1 || !r2)
        die("relay: new", err);
    evbus_relay_start(r1);
    evbus_relay_start(r2);
    for (;;)
        pause(); /* until SIGKILL */
    return 0;
}

static int produce(const char *app_db, int n)
{
    sqlite3 *db = open_db(app_db);
    char err[256];
    evbus_outbox_t *ob = evbus_outbox_open(db, err, sizeof err);
    if (!ob)
        die("produce: outbox", err);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO todos(title) VALUES(?1)", -1, &ins,
                       NULL);
    srand((unsigned)getpid());
    int done = 0;
    while (done < n) {
        int k = 1 + rand() % 40;
        if (k > n - done)
            k = n - done;
        int rollback = rand() % 10 == 0; /* must never be seen */
        exec_sql(db, "BEGIN IMMEDIATE");
        for (int i = 0; i < k; i++) {
            sqlite3_bind_text(ins, 1, rollback ? "rolled back" : "todo", -1,
                              SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE)
                die("produce: insert", sqlite3_errmsg(db));
            sqlite3_reset(ins);
            evbus_event_t *ev =
                evbus_event_new("todos.task.created", "/todos/api");
            char data[64];
            snprintf(data, sizeof data, "{\"todoId\":%lld}",
                     (long long)sqlite3_last_insert_rowid(db));
            evbus_event_set_data_json(ev, data);
            if (evbus_outbox_add(ob, TOPIC, ev) != EVBUS_OK)
                die("produce: outbox_add", sqlite3_errmsg(db));
            evbus_event_free(ev);
        }
        exec_sql(db, rollback ? "ROLLBACK" : "COMMIT");
        if (!rollback)
            done += k;
        usleep(2000); /* spread the run over several seconds of kills */
    }
    sqlite3_finalize(ins);
    evbus_outbox_close(ob);
    sqlite3_close(db);
    return 0;
}

/* ----------------------------------------------------------- consumer */

typedef struct {
    evbus_inbox_t *in;
    sqlite3_stmt *apply;
    long deliveries, applied, retries;
} consumer_t;

static evbus_result_t apply(sqlite3 *db, const evbus_event_t *ev,
                            evbus_outbox_t *ob, void *opaque)
{
    consumer_t *c = opaque;
    sqlite3_bind_text(c->apply, 1, evbus_event_id(ev), -1, SQLITE_STATIC);
    int rc = sqlite3_step(c->apply);
    sqlite3_reset(c->apply);
    if (rc != SQLITE_DONE)
        return EVBUS_RETRY;
    c->applied++;
    return EVBUS_ACK;
}

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    consumer_t *c = opaque;
    c->deliveries++;
    evbus_result_t r = evbus_inbox_handle(c->in, NULL, ev, apply, c);
    c->retries += r != EVBUS_ACK;
    return r;
}

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "--relay") == 0)
        return run_relays(argv[2], argv[3], argc == 5 ? atol(argv[4]) : 0);
    if (argc == 4 && strcmp(argv[1], "--produce") == 0)
        return produce(argv[2], atoi(argv[3]));
    if (argc < 2) {
        fprintf(stderr, "usage: relay-kill URL|sqlite [N]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 50000;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512], app_db[600], cons_db[600], url[700], nbuf[32];
    snprintf(dir, sizeof dir, "%s/evbus-relay-kill.XXXXXX", base);
    if (!mkdtemp(dir))
        die("mkdtemp", dir);
    snprintf(app_db, sizeof app_db, "%s/app.db", dir);
    snprintf(cons_db, sizeof cons_db, "%s/consumer.db", dir);
    if (strcmp(argv[1], "sqlite") == 0)
        snprintf(url, sizeof url, "sqlite://%s/bus.db", dir);
    else
        snprintf(url, sizeof url, "%s", argv[1]);
    snprintf(nbuf, sizeof nbuf, "%d", n);
    /* the relays' URL and the consumer's (the same broker either way) */
    char relay_url[800], cons_url[800];
    int faults = argc > 3 && strcmp(argv[3], "faults") == 0;
    const char *sep = strchr(url, '?') ? "&" : "?";
    if (faults) {
        snprintf(relay_url, sizeof relay_url,
                 "faulty+%s%sfail_publish=0.002&lost_reply=0.002", url, sep);
        snprintf(cons_url, sizeof cons_url,
                 "faulty+%s%sdup=0.02&redeliver=0.02&redeliver_ms=50", url,
                 sep);
    } else {
        snprintf(relay_url, sizeof relay_url, "%s", url);
        snprintf(cons_url, sizeof cons_url, "%s", url);
    }
    printf("relay-kill: %d events, relays on %s, consumer on %s, dir %s\n", n,
           relay_url, cons_url, dir);

    /* the producer's database with its business table and outbox */
    sqlite3 *app = open_db(app_db);
    exec_sql(app, "CREATE TABLE todos(id INTEGER PRIMARY KEY, title TEXT)");
    evbus_outbox_close(evbus_outbox_open(app, NULL, 0));

    /* the consumer: its own database, inbox and state */
    sqlite3 *cdb = open_db(cons_db);
    exec_sql(cdb, "CREATE TABLE applied(id TEXT PRIMARY KEY, n INTEGER)");
    char err[512];
    consumer_t c = {0};
    c.in = evbus_inbox_open(cdb, "killtest", err, sizeof err);
    if (!c.in)
        die("inbox", err);
    sqlite3_prepare_v2(cdb,
                       "INSERT INTO applied(id, n) VALUES(?1, 1)"
                       " ON CONFLICT(id) DO UPDATE SET n = n + 1",
                       -1, &c.apply, NULL);
    evbus_t *bus = evbus_open(cons_url, err, sizeof err);
    if (!bus)
        die("consumer bus", err);
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 10;
    retry.max_attempts = 50;
    so.retry = &retry;
    char why[512];
    if (!evbus_subscribe_opts(bus, TOPIC, "killtest", &so, on_event, &c, why,
                              sizeof why))
        die("subscribe", why);

    char *prod_argv[] = {argv[0], "--produce", app_db, nbuf, NULL};
    char kbuf[32];
    char *relay_argv[] = {argv[0], "--relay", app_db, relay_url, NULL, NULL};
    pid_t producer = spawn(prod_argv);
    int producing = 1, kills = 0, self_kills = 0;
    /* Runs until the producer finished and every event was applied: counts
     * decide. The clock only catches a hang: HANG_MS without any event
     * applied (the test's timeout is the outer guard). */
    int64_t start = now_ms(), hang_at = start + HANG_MS;
    long last_applied = -1;
    srand((unsigned)time(NULL));
    while (now_ms() < hang_at) {
        /* every other life ends by itself just after a broker ack */
        relay_argv[4] = NULL;
        if (kills % 2) {
            snprintf(kbuf, sizeof kbuf, "%d", 1 + rand() % 1500);
            relay_argv[4] = kbuf;
        }
        pid_t relay = spawn(relay_argv);
        /* A life lasts a random 30-330 ms, and at least until one more
         * event was applied (or it ends by itself): on a slow machine
         * (sanitizers, busy cores) a relay may take longer than that just
         * to start, and killing every one first would livelock. */
        long at_start = c.applied;
        int64_t until = now_ms() + 30 + rand() % 300;
        int st = 0, exited = 0;
        while (now_ms() < hang_at) {
            evbus_poll(bus, 10);
            if (waitpid(relay, &st, WNOHANG) == relay) {
                exited = 1;
                break;
            }
            if (now_ms() >= until && (c.applied > at_start || c.applied >= n))
                break;
        }
        if (exited) {
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                die("relay", "exited other than by SIGKILL");
            self_kills++;
        } else {
            kill(relay, SIGKILL);
            waitpid(relay, NULL, 0);
        }
        kills++;
        if (producing && waitpid(producer, &st, WNOHANG) == producer) {
            producing = 0;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die("producer", "exited with an error");
        }
        if (!producing && c.applied >= n)
            break;
        if (c.applied != last_applied) {
            last_applied = c.applied;
            hang_at = now_ms() + HANG_MS;
        }
    }
    if (producing || c.applied < n)
        fprintf(stderr, "relay-kill: no event applied for %d s: a hang\n",
                HANG_MS / 1000);
    /* let late duplicates (already in the broker) arrive */
    for (int64_t until = now_ms() + 1000; now_ms() < until;)
        evbus_poll(bus, 20);
    double secs = (double)(now_ms() - start) / 1000.0;
    evbus_close(bus);

    long long rows = query_int(app, "SELECT count(*) FROM evbus_outbox");
    long long applied = query_int(cdb, "SELECT count(*) FROM applied");
    long long changes = query_int(cdb, "SELECT sum(n) FROM applied");
    long long most = query_int(cdb, "SELECT max(n) FROM applied");
    char attach[700];
    snprintf(attach, sizeof attach, "ATTACH '%s' AS app", app_db);
    exec_sql(cdb, attach);
    long long missing = query_int(
        cdb, "SELECT count(*) FROM app.evbus_outbox o WHERE NOT EXISTS"
             " (SELECT 1 FROM applied a"
             "  WHERE a.id = json_extract(o.event, '$.id'))");
    long duplicates = c.deliveries - c.applied - c.retries;
    printf("relay-kill: %.1f s, %d relay kills (%d right after a broker ack),"
           " %ld deliveries, %lld applied (%lld state changes, max %lld per"
           " event), %ld duplicates absorbed, %ld retries\n",
           secs, kills, self_kills, c.deliveries, applied, changes, most,
           duplicates, c.retries);
    int ok = 1;
#define CHECK(cond, ...)                                                       \
    if (!(cond)) {                                                             \
        fprintf(stderr, "relay-kill: FAIL: " __VA_ARGS__);                     \
        fputc('\n', stderr);                                                   \
        ok = 0;                                                                \
    }
    CHECK(!producing, "producer did not finish in time");
    CHECK(rows == n, "outbox holds %lld rows, expected %d", rows, n);
    CHECK(applied == n, "%lld events applied, expected %d (lost events)",
          applied, n);
    CHECK(missing == 0, "%lld committed events never applied", missing);
    CHECK(changes == n && most == 1,
          "state changed %lld times (max %lld per event): duplicates got"
          " through", changes, most);
    CHECK(kills >= 5, "only %d kills: the relay was not killed repeatedly",
          kills);
    CHECK(self_kills < 3 || duplicates > 0,
          "%d kills right after a broker ack but no duplicate arrived: the"
          " test did not exercise republishing", self_kills);
    if (producing)
        kill(producer, SIGKILL);
    sqlite3_finalize(c.apply);
    evbus_inbox_close(c.in);
    sqlite3_close(cdb);
    sqlite3_close(app);
    if (ok) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "relay-kill: could not remove %s\n", dir);
        printf("relay-kill: PASS\n");
    }
    return ok ? 0 : 1;
}
