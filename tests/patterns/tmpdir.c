#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tmpdir.h"

char *tmp_dir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *p = malloc(strlen(base) + 32);
    sprintf(p, "%s/evbus-outbox.XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(p));
    return p;
}

char *tmp_path(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

void tmp_rm(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

void sql(sqlite3 *db, const char *stmt)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, stmt, NULL, NULL, &err);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", stmt, err ? err : "?");
}

long long sql_int(sqlite3 *db, const char *query)
{
    sqlite3_stmt *st;
    ck_assert_msg(sqlite3_prepare_v2(db, query, -1, &st, NULL) == SQLITE_OK,
                  "%s: %s", query, sqlite3_errmsg(db));
    ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "%s: no row", query);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

sqlite3 *app_db_open(const char *path)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sql(db, "PRAGMA journal_mode=WAL");
    sql(db, "PRAGMA synchronous=NORMAL");
    sql(db, "CREATE TABLE IF NOT EXISTS todos("
            "id INTEGER PRIMARY KEY, title TEXT NOT NULL)");
    return db;
}
