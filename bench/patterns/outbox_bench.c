/*
 * Outbox / relay / inbox throughput beside raw baselines measured in the same
 * run, on the same database settings (WAL, synchronous=NORMAL):
 *
 *   1. business insert + outbox add per transaction  vs  bare insert txn
 *      (and, for reference, the same row written with plain SQL)
 *   2. relay into memory://                           vs  publish_async+flush
 *   3. relay into URL (e.g. redis://)                 vs  publish_async+flush
 *   4. inbox claim + commit                           vs  bare insert txn
 *
 *   outbox-bench [-n EVENTS] [-t TXNS] [-b RELAY_BATCH] [URL...]
 * Each figure is the best of 3 rounds (the machine is shared).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evbus/evbus.h>
#include <evbus/inbox.h>
#include <evbus/outbox.h>

#define ROUNDS 3

static char dir[512];
/* 1: the todos table also has an index on user (how a todo service lists a
 * user's tasks), so the business transaction touches two b-trees. */
static int with_user_index;
static int relay_batch_size = 1000;
#define ROUNDS_TXN 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "outbox-bench: %s: %s\n", what, why ? why : "");
    exit(1);
}

static void exec_sql(sqlite3 *db, const char *q)
{
    char *err = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK)
        die(q, err);
}

/* A fresh database file with the settings every figure uses. */
static sqlite3 *fresh_db(const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, name);
    char rm[1200];
    snprintf(rm, sizeof rm, "rm -f '%s' '%s-wal' '%s-shm'", path, path, path);
    if (system(rm) != 0)
        die("rm", path);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("open", path);
    sqlite3_busy_timeout(db, 5000);
    exec_sql(db, "PRAGMA journal_mode=WAL");
    exec_sql(db, "PRAGMA synchronous=NORMAL");
    exec_sql(db, "CREATE TABLE todos(id INTEGER PRIMARY KEY, user TEXT,"
                 " title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0)");
    if (with_user_index)
        exec_sql(db, "CREATE INDEX todos_user ON todos(user)");
    return db;
}

static void report(const char *what, const char *base_name, double base,
                   const char *lib_name, double lib, double target)
{
    printf("%-32s %-33s %9.0f /s\n", what, base_name, base);
    printf("%-32s %-33s %9.0f /s  ratio %.3f (target >= %.2f) %s\n", "",
           lib_name, lib, lib / base, target,
           lib / base >= target ? "ok" : "BELOW TARGET");
}

static evbus_event_t *sample_event(int i);

/* ------------------------------------------------ 1. outbox write path */

static double bare_inserts(int txns)
{
    char path[600];
    sqlite3 *db = fresh_db("bare.db", path, sizeof path);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO todos(user, title) VALUES(?1, ?2)",
                       -1, &ins, NULL);
    double t0 = now_s();
    for (int i = 0; i < txns; i++) {
        exec_sql(db, "BEGIN");
        sqlite3_bind_text(ins, 1, "456", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, "Buy groceries", -1, SQLITE_STATIC);
        sqlite3_step(ins);
        sqlite3_reset(ins);
        exec_sql(db, "COMMIT");
    }
    double rate = txns / (now_s() - t0);
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return rate;
}

/* Reference, no library: the same business insert plus a plain SQL INSERT
 * of an event's JSON into a table shaped like evbus_outbox - what any outbox
 * costs SQLite, whoever implements it. */
static double raw_sql_outbox(int txns)
{
    char path[600];
    sqlite3 *db = fresh_db("rawsql.db", path, sizeof path);
    exec_sql(db, "CREATE TABLE ob(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
                 " event TEXT NOT NULL, created_at INTEGER NOT NULL,"
                 " failed TEXT)");
    sqlite3_stmt *ins, *ob;
    sqlite3_prepare_v2(db, "INSERT INTO todos(user, title) VALUES(?1, ?2)",
                       -1, &ins, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO ob(topic, event, created_at)"
                           " VALUES(?1, ?2, ?3)", -1, &ob, NULL);
    evbus_event_t *ev = sample_event(0);
    size_t len;
    char *json = evbus_event_to_json(ev, &len);
    double t0 = now_s();
    for (int i = 0; i < txns; i++) {
        exec_sql(db, "BEGIN");
        sqlite3_bind_text(ins, 1, "456", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, "Buy groceries", -1, SQLITE_STATIC);
        sqlite3_step(ins);
        sqlite3_reset(ins);
        sqlite3_bind_text(ob, 1, "todos.task.created", -1, SQLITE_STATIC);
        sqlite3_bind_text(ob, 2, json, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(ob, 3, 1700000000000LL + i);
        sqlite3_step(ob);
        sqlite3_reset(ob);
        exec_sql(db, "COMMIT");
    }
    double rate = txns / (now_s() - t0);
    free(json);
    evbus_event_free(ev);
    sqlite3_finalize(ins);
    sqlite3_finalize(ob);
    sqlite3_close(db);
    return rate;
}

/* prebuilt: one event made before the loop (measures outbox_add itself);
 * otherwise each transaction builds its event, as a service would. */
static double outbox_inserts(int txns, int prebuilt)
{
    char path[600];
    sqlite3 *db = fresh_db("outbox.db", path, sizeof path);
    evbus_outbox_t *ob = evbus_outbox_open(db, NULL, 0);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO todos(user, title) VALUES(?1, ?2)",
                       -1, &ins, NULL);
    evbus_event_t *fixed = prebuilt ? sample_event(0) : NULL;
    double t0 = now_s();
    for (int i = 0; i < txns; i++) {
        exec_sql(db, "BEGIN");
        sqlite3_bind_text(ins, 1, "456", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, "Buy groceries", -1, SQLITE_STATIC);
        sqlite3_step(ins);
        sqlite3_reset(ins);
        evbus_event_t *ev = fixed;
        if (!prebuilt) {
            ev = evbus_event_new("todos.task.created", "/todos/api");
            char data[96];
            snprintf(data, sizeof data,
                     "{\"todoId\":\"%lld\",\"userId\":\"456\","
                     "\"title\":\"Buy groceries\"}",
                     (long long)sqlite3_last_insert_rowid(db));
            evbus_event_set_data_json(ev, data);
        }
        if (evbus_outbox_add(ob, "todos.task.created", ev) != EVBUS_OK)
            die("outbox_add", sqlite3_errmsg(db));
        if (!prebuilt)
            evbus_event_free(ev);
        exec_sql(db, "COMMIT");
    }
    double rate = txns / (now_s() - t0);
    evbus_event_free(fixed);
    sqlite3_finalize(ins);
    evbus_outbox_close(ob);
    sqlite3_close(db);
    return rate;
}

/* ------------------------------------------------------- 2./3. relay */

static evbus_event_t *sample_event(int i)
{
    evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
    char data[96];
    snprintf(data, sizeof data,
             "{\"todoId\":\"%d\",\"userId\":\"456\",\"title\":\"Buy groceries\"}",
             i);
    evbus_event_set_data_json(ev, data);
    return ev;
}

/* Raw rate: the bus's own publish_async of n events, then one flush. */
static double publish_async_rate(evbus_t *bus, const char *topic, int n)
{
    evbus_event_t **evs = malloc((size_t)n * sizeof *evs);
    for (int i = 0; i < n; i++)
        evs[i] = sample_event(i);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        int rc = evbus_publish_async(bus, topic, evs[i], NULL, NULL);
        while (rc == EVBUS_EAGAIN || rc == EVBUS_EBUSY) { /* queue full */
            evbus_flush(bus, 10);
            rc = evbus_publish_async(bus, topic, evs[i], NULL, NULL);
        }
        if (rc != EVBUS_OK)
            die("publish_async", evbus_strerror(rc));
    }
    if (evbus_flush(bus, 60000) != EVBUS_OK)
        die("flush", NULL);
    double rate = n / (now_s() - t0);
    for (int i = 0; i < n; i++)
        evbus_event_free(evs[i]);
    free(evs);
    return rate;
}

/* Times a relay publishing n events from an outbox. Cold: the outbox is
 * filled first (not timed) and the relay reads every row back (decoding
 * it unless the backend is EVBUS_FEAT_BYTES_ONLY), as after a restart or
 * with the relay in another process. Same process: the relay is
 * already running when the producer writes, so evbus_outbox_add hands it
 * the event objects; filled and drained in chunks of 5000 (a relay that
 * keeps up), only the draining is timed. */
static double relay_rate(evbus_t *bus, const char *topic, int n,
                         int same_process)
{
    char path[600];
    sqlite3 *db = fresh_db("relay.db", path, sizeof path);
    evbus_outbox_t *ob = evbus_outbox_open(db, NULL, 0);
    char err[256];
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.batch_size = relay_batch_size;
    evbus_relay_t *r = NULL;
    if (same_process) {
        r = evbus_relay_open_opts(path, bus, &o, err, sizeof err);
        if (!r || evbus_relay_run_once(r, 0) != 0)
            die("relay", err);
    }
    int chunk = same_process ? 5000 : n, done = 0;
    double busy = 0;
    while (done < n) {
        int k = n - done < chunk ? n - done : chunk;
        exec_sql(db, "BEGIN");
        for (int i = 0; i < k; i++) {
            evbus_event_t *ev = sample_event(done + i);
            evbus_outbox_add(ob, topic, ev);
            evbus_event_free(ev);
        }
        exec_sql(db, "COMMIT");
        /* the fill's checkpoint belongs to the fill, not to the relay */
        exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        if (!r && !(r = evbus_relay_open_opts(path, bus, &o, err, sizeof err)))
            die("relay", err);
        int total = 0;
        double t0 = now_s();
        while (total < k) {
            int got = evbus_relay_run_once(r, k - total);
            if (got <= 0)
                die("relay_run_once", evbus_strerror(got));
            total += got;
        }
        busy += now_s() - t0;
        done += k;
    }
    evbus_relay_stats_t st;
    evbus_relay_stats_init(&st);
    evbus_relay_stats(r, &st);
    if (same_process ? st.handed_off != (uint64_t)n : st.handed_off != 0)
        die("relay", "unexpected hand-off count");
    evbus_relay_close(r);
    evbus_outbox_close(ob);
    sqlite3_close(db);
    return n / busy;
}

static evbus_result_t ack(const evbus_event_t *ev, void *opaque)
{
    return EVBUS_ACK;
}

static void bench_relay(const char *url, int n, double target, int absolute)
{
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        printf("relay -> %s: NOT MEASURED, cannot open the bus: %s\n", url,
               err);
        return;
    }
    char topic[64];
    snprintf(topic, sizeof topic, "bench.outbox.%d", (int)getpid());
    /* memory:// drops events of topics nobody subscribed to, so give it a
     * group; persistent brokers keep them anyway, and a subscription there
     * would only add a fetcher competing for the CPU (never polled here) */
    if (!(evbus_features(bus) & EVBUS_FEAT_PERSISTENT))
        evbus_subscribe(bus, topic, "bench", ack, NULL);
    double base = 0, cold = 0, warm = 0;
    for (int round = 0; round < ROUNDS; round++) {
        double b = publish_async_rate(bus, topic, n);
        double c = relay_rate(bus, topic, n, 0);
        double w = relay_rate(bus, topic, n, 1);
        base = b > base ? b : base;
        cold = c > cold ? c : cold;
        warm = w > warm ? w : warm;
        evbus_poll(bus, 0);
    }
    char what[128];
    snprintf(what, sizeof what, "relay -> %s (%d events)", evbus_scheme(bus),
             n);
    report(what, "publish_async + flush (raw)", base,
           "relay, same process (hand-off)", warm, target);
    report("", "publish_async + flush (raw)", base,
           "relay, cold (rows read back)", cold, target);
    double lib = warm;
    if (absolute)
        printf("%-32s %-33s %9s     %s\n", "", "absolute target 50000 /s",
               "", lib >= 50000 ? "ok" : "BELOW TARGET");
    evbus_close(bus);
}

/* -------------------------------------------------------- 4. inbox */

static double inbox_claims(int txns)
{
    char path[600];
    sqlite3 *db = fresh_db("inbox.db", path, sizeof path);
    evbus_inbox_t *in = evbus_inbox_open(db, "notify", NULL, 0);
    evbus_event_t **evs = malloc((size_t)txns * sizeof *evs);
    for (int i = 0; i < txns; i++)
        evs[i] = sample_event(i);
    double t0 = now_s();
    for (int i = 0; i < txns; i++) {
        exec_sql(db, "BEGIN");
        if (evbus_inbox_claim(in, evs[i]) != 1)
            die("claim", sqlite3_errmsg(db));
        exec_sql(db, "COMMIT");
    }
    double rate = txns / (now_s() - t0);
    for (int i = 0; i < txns; i++)
        evbus_event_free(evs[i]);
    free(evs);
    evbus_inbox_close(in);
    sqlite3_close(db);
    return rate;
}

int main(int argc, char **argv)
{
    int n = 100000, txns = 20000, opt;
    while ((opt = getopt(argc, argv, "n:t:b:")) != -1) {
        if (opt == 'n')
            n = atoi(optarg);
        else if (opt == 'b')
            relay_batch_size = atoi(optarg);
        else if (opt == 't')
            txns = atoi(optarg);
        else {
            fprintf(stderr, "usage: outbox-bench [-n EVENTS] [-t TXNS] [-b RELAY_BATCH] [URL...]\n");
            return 2;
        }
    }
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/evbus-outbox-bench.XXXXXX", base);
    if (!mkdtemp(dir))
        die("mkdtemp", dir);
    printf("outbox-bench: WAL, synchronous=NORMAL, %d transactions, %d relay"
           " events in batches of %d, best of %d\n", txns, n,
           relay_batch_size, ROUNDS);

    /* Rounds alternate baseline and library so that load changes on the
     * machine hit both; each figure is the best round. */
    for (int idx = 0; idx <= 1; idx++) {
        with_user_index = idx;
        double b = 0, l = 0, p = 0, q = 0;
        for (int r = 0; r < ROUNDS_TXN; r++) {
            double x = bare_inserts(txns), y = outbox_inserts(txns, 0);
            double z = outbox_inserts(txns, 1), w = raw_sql_outbox(txns);
            b = x > b ? x : b;
            l = y > l ? y : l;
            p = z > p ? z : p;
            q = w > q ? w : q;
        }
        printf("-- todos table %s\n", idx ? "with an index on user (2 b-trees)"
                                            : "without secondary index (1 b-tree)");
        report("insert txn (todo)", "bare insert txn (raw)", b,
               "insert + new event + outbox_add", l, 0.6);
        report("", "bare insert txn (raw)", b,
               "insert + outbox_add (prebuilt)", p, 0.6);
        printf("%-32s %-33s %9.0f /s  ratio %.3f (reference: the same row"
               " by hand, no library)\n", "", "insert + plain SQL INSERT", q,
               q / b);
    }
    with_user_index = 0;

    double b = 0, l = 0;
    for (int r = 0; r < ROUNDS_TXN; r++) {
        double x = bare_inserts(txns), y = inbox_claims(txns);
        b = x > b ? x : b;
        l = y > l ? y : l;
    }
    report("inbox", "bare insert txn (raw)", b, "inbox claim + commit txn", l,
           0.6);

    bench_relay("memory://outbox-bench", n, 0.0, 1);
    for (int i = optind; i < argc; i++)
        bench_relay(argv[i], n, 0.8, 0);

    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (system(rm) != 0)
        fprintf(stderr, "outbox-bench: could not remove %s\n", dir);
    return 0;
}
