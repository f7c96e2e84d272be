/*
 * The saga crash test: an orchestrator process is SIGKILLed again and again
 * while it runs N sagas against two participants (payment, shipping) under
 * faulty+: commands and replies are duplicated and redelivered, publishes
 * fail or lose their answer. Every other life of the orchestrator kills
 * itself right after a reply's transaction committed and before the broker
 * heard the ACK - the reply then comes back, and the inbox must absorb it.
 *
 * Four scenarios, by saga number i % 4:
 *   0 ok           reserve (local) -> charge -> ship           COMPLETED
 *   1 declined     payment refuses; reservation released       COMPENSATED
 *   2 unshippable  shipping refuses; refund, release           COMPENSATED
 *   3 timeout      shipping never answers; the 1.5 s deadline  COMPENSATED
 *                  passes (perhaps while no orchestrator runs);
 *                  shipment cancelled, refund, release
 * At the end every saga must be in its end state, and every effect -
 * reservation, release, charge, refund, shipment - must have happened
 * exactly as often as the scenario says (0 or 1), counted in the
 * participants' own tables. Counts decide; the time limit catches hangs.
 *
 *   saga-kill URL|sqlite [N] [KILLS]
 *   saga-kill --orch DIR URL N [K]     (child: the orchestrator; with K it
 *                                       dies after its K-th reply)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evbus/saga.h>

#define HANG_MS 180000 /* no progress for this long is a hang */
#define FAULTS "dup=0.03&redeliver=0.03&redeliver_ms=50&fail_publish=0.002" \
               "&lost_reply=0.002"

static void die(const char *what, const char *why)
{
    fprintf(stderr, "saga-kill: FAIL: %s: %s\n", what, why ? why : "");
    exit(1);
}

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

static sqlite3 *open_db(const char *dir, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("open", path);
    sqlite3_busy_timeout(db, 10000);
    exec_sql(db, "PRAGMA journal_mode=WAL");
    exec_sql(db, "PRAGMA synchronous=NORMAL");
    return db;
}

/* Counts one effect of saga `id` in table (saga PRIMARY KEY, n). */
static int count_effect(sqlite3 *db, const char *table, const char *id)
{
    char q[200];
    snprintf(q, sizeof q,
             "INSERT INTO %s VALUES(?1, 1) ON CONFLICT(saga) DO UPDATE"
             " SET n = n + 1",
             table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return EVBUS_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? EVBUS_OK : EVBUS_EIO;
}

static void effect_tables(sqlite3 *db, const char *a, const char *b)
{
    char q[300];
    snprintf(q, sizeof q,
             "CREATE TABLE IF NOT EXISTS %s(saga TEXT PRIMARY KEY, n INT);"
             "CREATE TABLE IF NOT EXISTS %s(saga TEXT PRIMARY KEY, n INT)",
             a, b);
    exec_sql(db, q);
}

/* ------------------------------------------------------- orchestrator */

static int reserve(sqlite3 *db, const char *id, const char *data,
                   evbus_saga_answer_t *a, void *opaque)
{
    return count_effect(db, "reserved", id) == EVBUS_OK ? EVBUS_SAGA_SUCCESS
                                                        : EVBUS_EIO;
}

static int release(sqlite3 *db, const char *id, const char *data,
                   evbus_saga_answer_t *a, void *opaque)
{
    return count_effect(db, "released", id) == EVBUS_OK ? EVBUS_SAGA_SUCCESS
                                                        : EVBUS_EIO;
}

static evbus_saga_def_t *order_def(const char *name, int64_t ship_deadline)
{
    char err[256];
    evbus_saga_def_t *d = evbus_saga_def_new(name, err, sizeof err);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "reserve";
    s.local = reserve;
    s.comp_local = release;
    if (!d || evbus_saga_def_add_step(d, &s, err, sizeof err))
        die("def", err);
    evbus_saga_step_init(&s);
    s.name = "pay";
    s.topic = "payment.charge";
    s.comp_topic = "payment.refund";
    s.deadline_ms = 600000;
    s.comp_timeout_ms = 5000; /* a kill may eat a reply: ask again soon */
    if (evbus_saga_def_add_step(d, &s, err, sizeof err))
        die("def", err);
    s.name = "ship";
    s.topic = "shipping.ship";
    s.comp_topic = "shipping.cancel";
    s.deadline_ms = ship_deadline;
    if (evbus_saga_def_add_step(d, &s, err, sizeof err))
        die("def", err);
    return d;
}

static evbus_saga_orch_t *orch;
static long self_kill_after, replies_seen;

static evbus_result_t on_reply(const evbus_event_t *ev, void *opaque)
{
    evbus_result_t r = evbus_saga_on_reply(orch, ev);
    /* committed, not yet acknowledged to the broker: the worst moment */
    if (r == EVBUS_ACK && ++replies_seen == self_kill_after)
        raise(SIGKILL);
    return r;
}

static int run_orchestrator(const char *dir, const char *url, int n, long k)
{
    self_kill_after = k;
    sqlite3 *db = open_db(dir, "orch.db");
    effect_tables(db, "reserved", "released");
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        die("orchestrator bus", err);
    evbus_saga_opts_t o;
    evbus_saga_opts_init(&o);
    o.subscribe = 0; /* subscribed below, to die at the worst moment */
    evbus_retry_policy_t rp;
    evbus_retry_policy_init(&rp);
    rp.initial_ms = 50;
    rp.max_ms = 500;
    rp.max_attempts = 1000;
    o.compensation_retry = &rp;
    if (!(orch = evbus_saga_orch_open(db, bus, "orders", &o, err,
                                      sizeof err)))
        die("orchestrator", err);
    evbus_saga_def_t *d1 = order_def("order", 600000);
    evbus_saga_def_t *d2 = order_def("order-timeout", 1500);
    if (evbus_saga_orch_register(orch, d1, err, sizeof err) ||
        evbus_saga_orch_register(orch, d2, err, sizeof err))
        die("register", err);
    evbus_saga_def_free(d1);
    evbus_saga_def_free(d2);
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    evbus_retry_policy_t sp;
    evbus_retry_policy_init(&sp);
    sp.initial_ms = 10;
    sp.max_attempts = 50;
    so.retry = &sp;
    if (!evbus_subscribe_opts(bus, "orders.replies", "orders", &so, on_reply,
                              NULL, err, sizeof err))
        die("subscribe orders.replies", err);
    static const char *scenario[] = {"ok", "decline", "noship", "timeout"};
    int next = 0;
    for (;;) {
        /* starting is idempotent: every life starts them all again */
        for (int i = 0; i < 8 && next < n; i++, next++) {
            char id[32], data[64];
            snprintf(id, sizeof id, "s%04d", next);
            snprintf(data, sizeof data, "{\"scenario\":\"%s\"}",
                     scenario[next % 4]);
            int rc = evbus_saga_start(orch,
                                      next % 4 == 3 ? "order-timeout"
                                                    : "order",
                                      id, data);
            if (rc < 0)
                die("start", evbus_strerror(rc));
        }
        int rc = evbus_saga_poll(orch, 20);
        if (rc < 0)
            die("poll", evbus_strerror(rc));
    }
    return 0;
}

/* -------------------------------------------------------- participants */

typedef struct {
    evbus_saga_participant_t *p;
    sqlite3 *db;
    const char *effect, *undo, *refuse;
    long deliveries;
} svc_t;

static int work(sqlite3 *db, const evbus_event_t *cmd,
                evbus_saga_answer_t *a, void *opaque)
{
    svc_t *s = opaque;
    if (strstr(evbus_event_data(cmd), s->refuse)) {
        evbus_saga_answer_set_reason(a, "refused by scenario");
        return EVBUS_SAGA_FAILURE;
    }
    return count_effect(db, s->effect, evbus_event_ext(cmd, "sagaid"));
}

static int undo(sqlite3 *db, const evbus_event_t *cmd,
                evbus_saga_answer_t *a, void *opaque)
{
    svc_t *s = opaque;
    return count_effect(db, s->undo, evbus_event_ext(cmd, "sagaid"));
}

static evbus_result_t on_command(const evbus_event_t *ev, void *opaque)
{
    svc_t *s = opaque;
    s->deliveries++;
    const char *kind = evbus_event_ext(ev, "sagakind");
    /* shipping never answers a timeout scenario's shipment */
    if (strcmp(s->effect, "shipped") == 0 && kind &&
        strcmp(kind, "action") == 0 &&
        strstr(evbus_event_data(ev), "\"timeout\""))
        return EVBUS_ACK;
    return evbus_saga_participant_handle(s->p, ev, work, undo, s);
}

static void svc_open(svc_t *s, const char *dir, const char *name,
                     evbus_t *bus)
{
    char file[64], err[512];
    snprintf(file, sizeof file, "%s.db", name);
    s->db = open_db(dir, file);
    effect_tables(s->db, s->effect, s->undo);
    if (!(s->p = evbus_saga_participant_open(s->db, name, bus, NULL, err,
                                             sizeof err)))
        die("participant", err);
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

/* How many sagas ended, read from the orchestrator's database. */
static long long ended(sqlite3 *orchdb)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(orchdb,
                           "SELECT count(*) FROM evbus_saga WHERE state IN"
                           " ('COMPLETED', 'COMPENSATED', 'FAILED')",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v; /* -1 before the first orchestrator created the table */
}

static int verify(const char *dir, int n);

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "--orch") == 0)
        return run_orchestrator(argv[2], argv[3], atoi(argv[4]),
                                argc == 6 ? atol(argv[5]) : 0);
    if (argc < 2) {
        fprintf(stderr, "usage: saga-kill URL|sqlite [N] [KILLS]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 300;
    int want_kills = argc > 3 ? atoi(argv[3]) : 10;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512], url[700], nbuf[16];
    snprintf(dir, sizeof dir, "%s/evbus-saga-kill.XXXXXX", base);
    if (!mkdtemp(dir))
        die("mkdtemp", dir);
    if (strcmp(argv[1], "sqlite") == 0)
        snprintf(url, sizeof url, "sqlite://%s/bus.db", dir);
    else
        snprintf(url, sizeof url, "%s", argv[1]);
    snprintf(nbuf, sizeof nbuf, "%d", n);
    const char *sep = strchr(url, '?') ? "&" : "?";
    char part_url[900];
    snprintf(part_url, sizeof part_url, "faulty+%s%sseed=7&" FAULTS, url,
             sep);
    printf("saga-kill: %d sagas, %d orchestrator kills, participants on %s,"
           " dir %s\n", n, want_kills, part_url, dir);

    char err[512];
    evbus_t *bus = evbus_open(part_url, err, sizeof err);
    if (!bus)
        die("participant bus", err);
    svc_t pay = {.effect = "charged", .undo = "refunded",
                 .refuse = "\"decline\""};
    svc_t ship = {.effect = "shipped", .undo = "cancelled",
                  .refuse = "\"noship\""};
    svc_open(&pay, dir, "payment", bus);
    svc_open(&ship, dir, "shipping", bus);
    evbus_sub_opts_t so;
    evbus_sub_opts_init(&so);
    evbus_retry_policy_t sp;
    evbus_retry_policy_init(&sp);
    sp.initial_ms = 10;
    sp.max_attempts = 50;
    so.retry = &sp;
    const char *topics[] = {"payment.charge", "payment.refund",
                            "shipping.ship", "shipping.cancel"};
    for (int i = 0; i < 4; i++)
        if (!evbus_subscribe_opts(bus, topics[i], i < 2 ? "payment"
                                                        : "shipping",
                                  &so, on_command, i < 2 ? &pay : &ship, err,
                                  sizeof err))
            die(topics[i], err);

    sqlite3 *orchdb = open_db(dir, "orch.db");
    int kills = 0, self_kills = 0;
    int64_t start = now_ms();
    srand((unsigned)time(NULL));
    for (int life = 0;; life++) {
        char orch_url[900], kbuf[32];
        snprintf(orch_url, sizeof orch_url, "faulty+%s%sseed=%d&" FAULTS,
                 url, sep, 100 + life);
        char *child_argv[] = {argv[0], "--orch", dir, orch_url, nbuf, NULL,
                              NULL};
        int final = kills >= want_kills;
        if (!final && life % 2) {
            snprintf(kbuf, sizeof kbuf, "%d", 1 + rand() % 60);
            child_argv[5] = kbuf;
        }
        pid_t child = spawn(child_argv);
        /* A life before the last is cut short at a random moment. The last
         * one runs until every saga ended: counts decide, the clock only
         * catches a hang - no saga ending for HANG_MS, counted from the
         * life's start too: a slow (sanitized) orchestrator may not have
         * created its tables yet. The test's timeout is the outer guard. */
        int64_t until = now_ms() + (final ? HANG_MS : 150 + rand() % 500);
        long long done = -1;
        for (;;) {
            evbus_poll(bus, 10);
            if (!final && now_ms() >= until)
                break;
            if (!final)
                continue;
            long long e = ended(orchdb);
            if (e == n)
                break;
            if (e != done) {
                done = e;
                until = now_ms() + HANG_MS;
            } else if (now_ms() >= until) {
                fprintf(stderr,
                        "saga-kill: no saga ended for %d s (%lld of"
                        " %d ended): a hang\n",
                        HANG_MS / 1000, e, n);
                break;
            }
        }
        int st = 0;
        if (waitpid(child, &st, WNOHANG) == child) {
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                die("orchestrator", "exited other than by SIGKILL (see its"
                                    " message above)");
            self_kills++;
        } else {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
        }
        if (final)
            break;
        kills++;
    }
    /* late duplicates still in the broker arrive and must change nothing */
    for (int64_t until = now_ms() + 1000; now_ms() < until;)
        evbus_poll(bus, 20);
    double secs = (double)(now_ms() - start) / 1000.0;
    long deliveries = pay.deliveries + ship.deliveries;
    /* the participants' relays publish through the bus: stop them first */
    evbus_saga_participant_close(pay.p);
    evbus_saga_participant_close(ship.p);
    evbus_close(bus);
    sqlite3_close(pay.db);
    sqlite3_close(ship.db);
    printf("saga-kill: %.1f s, %d kills (%d right after a reply's commit),"
           " %ld command deliveries\n",
           secs, kills, self_kills, deliveries);
    int ok = kills >= want_kills;
    if (!ok)
        fprintf(stderr, "saga-kill: FAIL: only %d kills\n", kills);
    ok &= verify(dir, n) == 0;
    sqlite3_close(orchdb);
    if (ok) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "saga-kill: could not remove %s\n", dir);
        printf("saga-kill: PASS\n");
    } else {
        fprintf(stderr, "saga-kill: files kept in %s\n", dir);
    }
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------- verdict */

static int verify(const char *dir, int n)
{
    sqlite3 *db = open_db(dir, "orch.db");
    char q[900];
    snprintf(q, sizeof q, "ATTACH '%s/payment.db' AS pay", dir);
    exec_sql(db, q);
    snprintf(q, sizeof q, "ATTACH '%s/shipping.db' AS ship", dir);
    exec_sql(db, q);
    /* per saga: scenario, state and every effect count */
    const char *rows =
        "SELECT s.id, json_extract(s.data, '$.scenario'), s.state,"
        " coalesce((SELECT n FROM reserved WHERE saga = s.id), 0),"
        " coalesce((SELECT n FROM released WHERE saga = s.id), 0),"
        " coalesce((SELECT n FROM pay.charged WHERE saga = s.id), 0),"
        " coalesce((SELECT n FROM pay.refunded WHERE saga = s.id), 0),"
        " coalesce((SELECT n FROM ship.shipped WHERE saga = s.id), 0),"
        " coalesce((SELECT n FROM ship.cancelled WHERE saga = s.id), 0)"
        " FROM evbus_saga s ORDER BY s.id";
    struct {
        const char *scenario, *state;
        int effects[6]; /* reserved released charged refunded shipped
                           cancelled */
    } want[] = {
        {"ok", "COMPLETED", {1, 0, 1, 0, 1, 0}},
        {"decline", "COMPENSATED", {1, 1, 0, 0, 0, 0}},
        {"noship", "COMPENSATED", {1, 1, 1, 1, 0, 0}},
        {"timeout", "COMPENSATED", {1, 1, 1, 1, 0, 0}},
    };
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, rows, -1, &st, NULL) != SQLITE_OK)
        die("verify", sqlite3_errmsg(db));
    int count = 0, bad = 0;
    long by_state[4] = {0};
    while (sqlite3_step(st) == SQLITE_ROW) {
        count++;
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *sc = (const char *)sqlite3_column_text(st, 1);
        const char *state = (const char *)sqlite3_column_text(st, 2);
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (sc && strcmp(sc, want[i].scenario) == 0)
                k = i;
        if (k < 0) {
            bad++;
            continue;
        }
        int mismatch = strcmp(state, want[k].state) != 0;
        for (int e = 0; e < 6; e++)
            mismatch |= sqlite3_column_int(st, 3 + e) != want[k].effects[e];
        by_state[k] += !mismatch;
        if (mismatch && bad++ < 20)
            fprintf(stderr,
                    "saga-kill: FAIL: %s (%s) is %s with effects"
                    " reserved %d released %d charged %d refunded %d"
                    " shipped %d cancelled %d\n",
                    id, sc, state, sqlite3_column_int(st, 3),
                    sqlite3_column_int(st, 4), sqlite3_column_int(st, 5),
                    sqlite3_column_int(st, 6), sqlite3_column_int(st, 7),
                    sqlite3_column_int(st, 8));
    }
    sqlite3_finalize(st);
    long long ignored = query_int(db, "SELECT count(*) FROM evbus_saga_history"
                                      " WHERE event = 'reply ignored'");
    long long cancelled = query_int(db, "SELECT count(*) FROM"
                                        " ship.evbus_saga_part WHERE state ="
                                        " 'cancelled'");
    printf("saga-kill: %d sagas: %ld ok completed, %ld declined, %ld"
           " unshippable, %ld timed out compensated as expected; %lld late"
           " replies ignored; %lld shipments cancelled before they ran\n",
           count, by_state[0], by_state[1], by_state[2], by_state[3],
           ignored, cancelled);
    if (count != n) {
        fprintf(stderr, "saga-kill: FAIL: %d sagas in the database, want %d\n",
                count, n);
        bad++;
    }
    if (bad)
        fprintf(stderr, "saga-kill: FAIL: %d sagas did not end as their "
                        "scenario says\n", bad);
    sqlite3_close(db);
    return bad ? 1 : 0;
}
