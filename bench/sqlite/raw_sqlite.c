/*
 * Raw SQLite baseline for the sqlite:// backend: what plain SQLite does on
 * the same file settings (WAL, synchronous=NORMAL, same table layout) with
 * no library in between.
 *
 *   sqlite-raw-bench --db PATH [--events N] [--size BYTES] [--batch N]
 *
 * Prints one JSON line per mode:
 *   raw-insert-one    one INSERT per BEGIN IMMEDIATE/COMMIT
 *   raw-insert-batch  --batch INSERTs per transaction
 *   raw-select        reading every row back in seq order, 64 per query
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void check(int rc, sqlite3 *db, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *mode, long n, uint64_t us, uint64_t *lat,
                   long nlat)
{
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_u64);
    printf("{\"mode\":\"%s\",\"events\":%ld,\"events_per_s\":%.0f,"
           "\"p50_us\":%llu,\"p99_us\":%llu}\n",
           mode, n, us ? n * 1e6 / (double)us : 0.0,
           (unsigned long long)(nlat ? lat[nlat / 2] : 0),
           (unsigned long long)(nlat ? lat[nlat * 99 / 100] : 0));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long events = 100000, size = 256, batch = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--db")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--events")) events = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atol(argv[i + 1]);
    }
    if (!path || events <= 0 || size <= 0 || batch <= 0) {
        fprintf(stderr, "usage: %s --db PATH [--events N] [--size BYTES] "
                        "[--batch N]\n", argv[0]);
        return 2;
    }
    unlink(path);
    sqlite3 *db;
    check(sqlite3_open(path, &db), db, "open");
    check(sqlite3_exec(db,
                       "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                       "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-8192;"
                       "CREATE TABLE ev(seq INTEGER PRIMARY KEY, topic_id "
                       "INTEGER NOT NULL, created_ms INTEGER NOT NULL, payload "
                       "BLOB NOT NULL);"
                       "CREATE INDEX ev_t ON ev(topic_id, seq);",
                       NULL, NULL, NULL),
          db, "schema");
    char *payload = malloc((size_t)size);
    for (long i = 0; i < size; i++)
        payload[i] = (char)('a' + i % 26);
    sqlite3_stmt *ins, *begin, *commit, *sel;
    check(sqlite3_prepare_v2(db, "INSERT INTO ev(topic_id, created_ms, "
                                 "payload) VALUES(1, ?1, ?2)", -1, &ins, NULL),
          db, "prepare");
    check(sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL), db,
          "prepare");
    check(sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL), db, "prepare");
    check(sqlite3_prepare_v2(db, "SELECT seq, payload FROM ev WHERE "
                                 "topic_id=1 AND seq>?1 ORDER BY seq LIMIT 64",
                             -1, &sel, NULL),
          db, "prepare");
    uint64_t *lat = malloc(sizeof *lat * (size_t)events);

    /* one insert per transaction */
    uint64_t t0 = now_us();
    for (long i = 0; i < events; i++) {
        uint64_t s = now_us();
        check(sqlite3_step(begin), db, "begin");
        sqlite3_reset(begin);
        sqlite3_bind_int64(ins, 1, (sqlite3_int64)(s / 1000));
        sqlite3_bind_blob(ins, 2, payload, (int)size, SQLITE_STATIC);
        check(sqlite3_step(ins), db, "insert");
        sqlite3_reset(ins);
        check(sqlite3_step(commit), db, "commit");
        sqlite3_reset(commit);
        lat[i] = now_us() - s;
    }
    report("raw-insert-one", events, now_us() - t0, lat, events);

    /* batched inserts */
    t0 = now_us();
    long nb = 0;
    for (long i = 0; i < events; i += batch) {
        uint64_t s = now_us();
        check(sqlite3_step(begin), db, "begin");
        sqlite3_reset(begin);
        for (long j = i; j < events && j < i + batch; j++) {
            sqlite3_bind_int64(ins, 1, (sqlite3_int64)(s / 1000));
            sqlite3_bind_blob(ins, 2, payload, (int)size, SQLITE_STATIC);
            check(sqlite3_step(ins), db, "insert");
            sqlite3_reset(ins);
        }
        check(sqlite3_step(commit), db, "commit");
        sqlite3_reset(commit);
        lat[nb++] = now_us() - s;
    }
    report("raw-insert-batch", events, now_us() - t0, lat, nb);

    /* read everything back in pages of 64, copying each payload */
    t0 = now_us();
    long got = 0, np = 0;
    sqlite3_int64 last = 0;
    char *copy = malloc((size_t)size);
    for (;;) {
        uint64_t s = now_us();
        sqlite3_bind_int64(sel, 1, last);
        int rows = 0, rc;
        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
            last = sqlite3_column_int64(sel, 0);
            memcpy(copy, sqlite3_column_blob(sel, 1),
                   (size_t)sqlite3_column_bytes(sel, 1));
            rows++;
        }
        check(rc, db, "select");
        sqlite3_reset(sel);
        if (!rows)
            break;
        got += rows;
        if (np < events)
            lat[np++] = now_us() - s;
    }
    report("raw-select", got, now_us() - t0, lat, np);

    sqlite3_finalize(ins);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_finalize(sel);
    sqlite3_close(db);
    free(payload);
    free(copy);
    free(lat);
    return 0;
}
