/*
 * Three-step sagas per second on sqlite://, beside a hand-written baseline
 * that does the same three steps with plain outbox + inbox code, in the
 * same run, on the same topology:
 *
 *   orchestrator thread (its database, relay, bus)  --commands-->
 *   participant thread (three databases, three relays, one bus)  --replies-->
 *
 * Library: evbus_saga_start / evbus_saga_on_reply / evbus_saga_poll and
 * evbus_saga_participant_handle (deadlines, history, step rows, the
 * per-step participant record). Baseline: an orders table with a step
 * column, evbus_inbox_handle on both sides, evbus_outbox_add for commands
 * and replies - what a careful service writes by hand, minus deadlines,
 * compensation and history.
 *
 *   saga-bench [-n SAGAS] [-r ROUNDS] [-d DIR] [-m saga|baseline] [URL]
 * (-m runs one kind only, for profiling; no ratio then).
 * URL defaults to a fresh sqlite:// file per run. Prints each run's sagas/s,
 * wall and CPU microseconds per step, each round's ratio, and the median.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <evbus/saga.h>

#define STEPS 3
static const char *const topics[STEPS] = {"bench.reserve", "bench.charge",
                                          "bench.ship"};
static char dir[512], url_arg[700];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "saga-bench: %s: %s\n", what, why ? why : "");
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void exec_sql(sqlite3 *db, const char *q)
{
    char *err = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK)
        die(q, err);
}

static sqlite3 *fresh_db(const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, name);
    char rm[1400];
    snprintf(rm, sizeof rm, "rm -f '%s' '%s-wal' '%s-shm'", path, path, path);
    if (system(rm) != 0)
        die("rm", path);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("open", path);
    sqlite3_busy_timeout(db, 5000);
    exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    exec_sql(db, "CREATE TABLE effects(order_id TEXT, step INTEGER)");
    return db;
}

/* ------------------------------------------------------------ a run */

typedef struct run {
    evbus_t *obus, *pbus;
    sqlite3 *odb, *pdb[STEPS];
    char opath[700], ppath[STEPS][700];
    atomic_long replies;
    atomic_bool stop;
    /* library */
    evbus_saga_orch_t *orch;
    evbus_saga_participant_t *part[STEPS];
    /* baseline */
    evbus_outbox_t *ob, *pob[STEPS];
    evbus_inbox_t *in, *pin[STEPS];
    evbus_relay_t *relay, *prelay[STEPS];
    sqlite3_stmt *ins_order, *get_step, *set_step;
    int step_of[STEPS]; /* participant index -> step */
} run_t;

typedef struct {
    run_t *r;
    int k;
} part_ref_t;
static part_ref_t refs[STEPS];

static void *participants_thread(void *arg)
{
    run_t *r = arg;
    while (!atomic_load(&r->stop))
        if (evbus_poll(r->pbus, 10) < 0)
            break;
    return NULL;
}

static int effect(sqlite3 *db, const char *order, int step)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v3(db, "INSERT INTO effects VALUES(?1, ?2)", -1,
                       SQLITE_PREPARE_PERSISTENT, &st, NULL);
    sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, step);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : EVBUS_EIO;
}

/* ---- library */

static int lib_work(sqlite3 *db, const evbus_event_t *cmd,
                    evbus_saga_answer_t *a, void *opaque)
{
    part_ref_t *p = opaque;
    return effect(db, evbus_event_ext(cmd, "sagaid"), p->k);
}

static evbus_result_t lib_command(const evbus_event_t *ev, void *opaque)
{
    part_ref_t *p = opaque;
    return evbus_saga_participant_handle(p->r->part[p->k], ev, lib_work, NULL,
                                         p);
}

static evbus_result_t lib_reply(const evbus_event_t *ev, void *opaque)
{
    run_t *r = opaque;
    evbus_result_t res = evbus_saga_on_reply(r->orch, ev);
    if (res == EVBUS_ACK)
        atomic_fetch_add(&r->replies, 1);
    return res;
}

static void lib_setup(run_t *r)
{
    char err[512];
    evbus_saga_opts_t o;
    evbus_saga_opts_init(&o);
    o.subscribe = 0; /* subscribed below, to count replies */
    if (!(r->orch = evbus_saga_orch_open(r->odb, r->obus, "bench", &o, err,
                                         sizeof err)))
        die("orchestrator", err);
    evbus_saga_def_t *d = evbus_saga_def_new("order", err, sizeof err);
    static const char *names[STEPS] = {"reserve", "charge", "ship"};
    for (int k = 0; k < STEPS; k++) {
        evbus_saga_step_t s;
        evbus_saga_step_init(&s);
        s.name = names[k];
        s.topic = topics[k];
        if (evbus_saga_def_add_step(d, &s, err, sizeof err))
            die("def", err);
    }
    if (evbus_saga_orch_register(r->orch, d, err, sizeof err))
        die("register", err);
    evbus_saga_def_free(d);
    if (!evbus_subscribe(r->obus, "bench.replies", "bench", lib_reply, r))
        die("subscribe", "bench.replies");
    for (int k = 0; k < STEPS; k++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", k);
        if (!(r->part[k] = evbus_saga_participant_open(r->pdb[k], name,
                                                       r->pbus, NULL, err,
                                                       sizeof err)))
            die("participant", err);
        refs[k] = (part_ref_t){r, k};
        if (!evbus_subscribe(r->pbus, topics[k], name, lib_command, &refs[k]))
            die("subscribe", topics[k]);
    }
}

static void lib_start(run_t *r, const char *id)
{
    int rc = evbus_saga_start(r->orch, "order", id, "{\"qty\":1}");
    if (rc != 1)
        die("start", evbus_strerror(rc));
}

static void lib_poll(run_t *r)
{
    if (evbus_saga_poll(r->orch, 10) < 0)
        die("poll", "evbus_saga_poll failed");
}

static void lib_teardown(run_t *r)
{
    evbus_saga_orch_close(r->orch);
    for (int k = 0; k < STEPS; k++)
        evbus_saga_participant_close(r->part[k]);
}

/* ---- baseline: the same three steps by hand */

static evbus_event_t *base_command(const char *order, int step)
{
    evbus_event_t *ev = evbus_event_new(topics[step], "/bench/orders");
    char data[64];
    snprintf(data, sizeof data, "{\"qty\":1,\"step\":%d}", step);
    evbus_event_set_data_json(ev, data);
    evbus_event_set_ext(ev, "orderid", order);
    evbus_event_set_ext_int(ev, "step", step);
    evbus_event_set_ext(ev, "partitionkey", order);
    return ev;
}

static evbus_result_t base_pwork(sqlite3 *db, const evbus_event_t *ev,
                                 evbus_outbox_t *ob, void *opaque)
{
    part_ref_t *p = opaque;
    const char *order = evbus_event_ext(ev, "orderid");
    if (effect(db, order, p->k))
        return EVBUS_RETRY;
    evbus_event_t *rep = evbus_event_new("bench.reply", "/bench/participant");
    evbus_event_set_ext(rep, "orderid", order);
    evbus_event_set_ext_int(rep, "step", p->k);
    evbus_event_set_ext(rep, "outcome", "success");
    int rc = evbus_outbox_add(ob, "bench.replies", rep);
    evbus_event_free(rep);
    return rc == EVBUS_OK ? EVBUS_ACK : EVBUS_RETRY;
}

static evbus_result_t base_command_handler(const evbus_event_t *ev,
                                           void *opaque)
{
    part_ref_t *p = opaque;
    evbus_result_t res = evbus_inbox_handle(p->r->pin[p->k], p->r->pob[p->k],
                                            ev, base_pwork, p);
    evbus_relay_notify(p->r->prelay[p->k]);
    return res;
}

static evbus_result_t base_owork(sqlite3 *db, const evbus_event_t *ev,
                                 evbus_outbox_t *ob, void *opaque)
{
    run_t *r = opaque;
    const char *order = evbus_event_ext(ev, "orderid");
    sqlite3_bind_text(r->get_step, 1, order, -1, SQLITE_STATIC);
    int step = sqlite3_step(r->get_step) == SQLITE_ROW
                   ? sqlite3_column_int(r->get_step, 0)
                   : -1;
    sqlite3_reset(r->get_step);
    const char *got = evbus_event_ext(ev, "step");
    if (step < 0 || !got || atoi(got) != step)
        return EVBUS_ACK; /* late or unknown: ignore */
    int rc = EVBUS_OK;
    if (step + 1 < STEPS) {
        evbus_event_t *cmd = base_command(order, step + 1);
        rc = evbus_outbox_add(ob, topics[step + 1], cmd);
        evbus_event_free(cmd);
    }
    sqlite3_bind_int(r->set_step, 1, step + 1);
    sqlite3_bind_text(r->set_step, 2, step + 1 < STEPS ? "running" : "done",
                      -1, SQLITE_STATIC);
    sqlite3_bind_text(r->set_step, 3, order, -1, SQLITE_STATIC);
    if (rc == EVBUS_OK && sqlite3_step(r->set_step) != SQLITE_DONE)
        rc = EVBUS_EIO;
    sqlite3_reset(r->set_step);
    return rc == EVBUS_OK ? EVBUS_ACK : EVBUS_RETRY;
}

static evbus_result_t base_reply(const evbus_event_t *ev, void *opaque)
{
    run_t *r = opaque;
    evbus_result_t res = evbus_inbox_handle(r->in, r->ob, ev, base_owork, r);
    if (res == EVBUS_ACK) {
        atomic_fetch_add(&r->replies, 1);
        evbus_relay_notify(r->relay);
    }
    return res;
}

static evbus_relay_t *relay_on(const char *path, evbus_t *bus)
{
    char err[512];
    evbus_relay_opts_t o;
    evbus_relay_opts_init(&o);
    o.poll_interval_ms = 50; /* what the saga module uses */
    evbus_relay_t *rl = evbus_relay_open_opts(path, bus, &o, err, sizeof err);
    if (!rl || evbus_relay_start(rl) != EVBUS_OK)
        die("relay", err);
    return rl;
}

static void base_setup(run_t *r)
{
    char err[512];
    exec_sql(r->odb, "CREATE TABLE orders(id TEXT PRIMARY KEY, step INTEGER"
                     " NOT NULL, state TEXT NOT NULL, data TEXT)");
    if (!(r->ob = evbus_outbox_open(r->odb, err, sizeof err)) ||
        !(r->in = evbus_inbox_open(r->odb, "bench", err, sizeof err)))
        die("baseline", err);
    sqlite3_prepare_v2(r->odb, "INSERT INTO orders VALUES(?1, 0, 'running',"
                               " '{\"qty\":1}')", -1, &r->ins_order, NULL);
    sqlite3_prepare_v2(r->odb, "SELECT step FROM orders WHERE id = ?1", -1,
                       &r->get_step, NULL);
    sqlite3_prepare_v2(r->odb, "UPDATE orders SET step = ?1, state = ?2"
                               " WHERE id = ?3", -1, &r->set_step, NULL);
    r->relay = relay_on(r->opath, r->obus);
    if (!evbus_subscribe(r->obus, "bench.replies", "bench", base_reply, r))
        die("subscribe", "bench.replies");
    for (int k = 0; k < STEPS; k++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", k);
        if (!(r->pob[k] = evbus_outbox_open(r->pdb[k], err, sizeof err)) ||
            !(r->pin[k] = evbus_inbox_open(r->pdb[k], name, err, sizeof err)))
            die("baseline participant", err);
        r->prelay[k] = relay_on(r->ppath[k], r->pbus);
        refs[k] = (part_ref_t){r, k};
        if (!evbus_subscribe(r->pbus, topics[k], name, base_command_handler,
                             &refs[k]))
            die("subscribe", topics[k]);
    }
}

static void base_start(run_t *r, const char *id)
{
    exec_sql(r->odb, "BEGIN IMMEDIATE");
    sqlite3_bind_text(r->ins_order, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(r->ins_order) != SQLITE_DONE)
        die("insert", sqlite3_errmsg(r->odb));
    sqlite3_reset(r->ins_order);
    evbus_event_t *cmd = base_command(id, 0);
    if (evbus_outbox_add(r->ob, topics[0], cmd) != EVBUS_OK)
        die("outbox_add", sqlite3_errmsg(r->odb));
    evbus_event_free(cmd);
    exec_sql(r->odb, "COMMIT");
    evbus_relay_notify(r->relay);
}

static void base_poll(run_t *r)
{
    if (evbus_poll(r->obus, 10) < 0)
        die("poll", "evbus_poll failed");
}

static void base_teardown(run_t *r)
{
    evbus_relay_close(r->relay);
    for (int k = 0; k < STEPS; k++) {
        evbus_relay_close(r->prelay[k]);
        evbus_inbox_close(r->pin[k]);
        evbus_outbox_close(r->pob[k]);
    }
    sqlite3_finalize(r->ins_order);
    sqlite3_finalize(r->get_step);
    sqlite3_finalize(r->set_step);
    evbus_inbox_close(r->in);
    evbus_outbox_close(r->ob);
}

typedef struct {
    const char *name;
    void (*setup)(run_t *);
    void (*start)(run_t *, const char *);
    void (*poll)(run_t *);
    void (*teardown)(run_t *);
} bench_mode_t;

static const bench_mode_t modes[2] = {
    {"hand-written outbox+inbox", base_setup, base_start, base_poll,
     base_teardown},
    {"evbus saga", lib_setup, lib_start, lib_poll, lib_teardown},
};

typedef struct {
    double per_s, wall_us_step, cpu_us_step;
} result_t;

static result_t one_run(const bench_mode_t *m, int n)
{
    run_t *r = calloc(1, sizeof *r);
    char url[900], bus_path[700], err[512];
    if (*url_arg) {
        snprintf(url, sizeof url, "%s", url_arg);
    } else {
        /* its own directory: the sqlite backend watches the bus file's
         * directory, and every write to a database next to it would wake
         * its watcher */
        sqlite3_close(fresh_db("bus/bus.db", bus_path, sizeof bus_path));
        snprintf(url, sizeof url, "sqlite://%s", bus_path);
    }
    r->odb = fresh_db("orders.db", r->opath, sizeof r->opath);
    for (int k = 0; k < STEPS; k++) {
        char name[16];
        snprintf(name, sizeof name, "p%d.db", k);
        r->pdb[k] = fresh_db(name, r->ppath[k], sizeof r->ppath[k]);
    }
    if (!(r->obus = evbus_open(url, err, sizeof err)) ||
        !(r->pbus = evbus_open(url, err, sizeof err)))
        die("open bus", err);
    m->setup(r);
    pthread_t th;
    pthread_create(&th, NULL, participants_thread, r);
    /* the run id keeps ids unique when URL is a shared broker */
    static int run_no;
    run_no++;
    double t0 = now_s(), c0 = cpu_s();
    int started = 0;
    long want = (long)n * STEPS;
    double limit = t0 + 600;
    while (atomic_load(&r->replies) < want && now_s() < limit) {
        for (int i = 0; i < 64 && started < n; i++, started++) {
            char id[48];
            snprintf(id, sizeof id, "r%d-%d-o%07d", (int)getpid(), run_no,
                     started);
            m->start(r, id);
        }
        m->poll(r);
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    if (atomic_load(&r->replies) < want)
        die(m->name, "did not finish within 600 s");
    atomic_store(&r->stop, true);
    pthread_join(th, NULL);
    m->teardown(r);
    evbus_close(r->obus);
    evbus_close(r->pbus);
    sqlite3_close(r->odb);
    for (int k = 0; k < STEPS; k++)
        sqlite3_close(r->pdb[k]);
    free(r);
    return (result_t){n / wall, wall * 1e6 / (double)want,
                      cpu * 1e6 / (double)want};
}

static void compare(int n, int rounds);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = 20000, rounds = 5, opt;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/evbus-saga-bench.XXXXXX", base);
    int own_dir = 1;
    const char *only = NULL;
    while ((opt = getopt(argc, argv, "n:r:d:m:")) != -1) {
        switch (opt) {
        case 'm': only = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'd': snprintf(dir, sizeof dir, "%s", optarg); own_dir = 0; break;
        default:
            fprintf(stderr, "usage: saga-bench [-n SAGAS] [-r ROUNDS] "
                            "[-d DIR] [-m saga|baseline] [URL]\n");
            return 2;
        }
    }
    if (optind < argc)
        snprintf(url_arg, sizeof url_arg, "%s", argv[optind]);
    if (n < 1 || rounds < 1 || rounds > 99)
        die("usage", "-n and -r must be positive (-r at most 99)");
    if (own_dir && !mkdtemp(dir))
        die("mkdtemp", dir);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/bus", dir);
    mkdir(sub, 0700);
    printf("saga-bench: %d three-step sagas per run, %d rounds, bus %s,"
           " files in %s\n", n, rounds, *url_arg ? url_arg : "sqlite:// (a "
           "fresh file per run)", dir);
    printf("%-5s %-28s %12s %14s %14s\n", "round", "run", "sagas/s",
           "wall us/step", "cpu us/step");
    if (only) { /* one kind of run, for profiling */
        int m = strcmp(only, "saga") == 0 ? 1 : 0;
        for (int i = 0; i < rounds; i++) {
            result_t res = one_run(&modes[m], n);
            printf("%-5d %-28s %12.0f %14.1f %14.1f\n", i + 1, modes[m].name,
                   res.per_s, res.wall_us_step, res.cpu_us_step);
        }
    } else {
        compare(n, rounds);
    }
    if (own_dir) {
        char rm[700];
        snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
        if (system(rm) != 0)
            fprintf(stderr, "saga-bench: could not remove %s\n", dir);
    }
    return 0;
}

/* Both kinds, alternating which goes first, each round's ratio and the
 * median. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The machine may be shared: the load average says how much. */
static void print_load(const char *when)
{
    double l[3];
    if (getloadavg(l, 3) == 3)
        printf("load average %s: %.2f %.2f %.2f\n", when, l[0], l[1], l[2]);
}

static void compare(int n, int rounds)
{
    double ratios[99], per_s[2][99], cpu[2][99];
    print_load("before");
    for (int i = 0; i < rounds; i++) {
        result_t res[2];
        /* alternate which goes first: the machine is shared */
        for (int j = 0; j < 2; j++) {
            int m = (i + j) % 2;
            res[m] = one_run(&modes[m], n);
        }
        for (int m = 0; m < 2; m++)
            printf("%-5d %-28s %12.0f %14.1f %14.1f\n", i + 1, modes[m].name,
                   res[m].per_s, res[m].wall_us_step, res[m].cpu_us_step);
        ratios[i] = res[1].per_s / res[0].per_s;
        printf("%-5d %-28s %12.3f\n", i + 1, "ratio saga/baseline",
               ratios[i]);
        for (int m = 0; m < 2; m++) {
            per_s[m][i] = res[m].per_s;
            cpu[m][i] = res[m].cpu_us_step;
        }
    }
    print_load("after");
    for (int m = 0; m < 2; m++)
        printf("median over %d rounds, %-28s %8.0f sagas/s %8.1f cpu us/step"
               "\n", rounds, modes[m].name, median(per_s[m], rounds),
               median(cpu[m], rounds));
    printf("median ratio saga/baseline over %d rounds: %.3f\n", rounds,
           median(ratios, rounds));
}
