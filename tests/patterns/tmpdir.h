/* Temporary directories and SQLite connections for the pattern tests. */
#ifndef PATTERNS_TMPDIR_H
#define PATTERNS_TMPDIR_H

#include <sqlite3.h>

/* Creates a fresh directory; returns a static-lifetime malloc'd path. */
char *tmp_dir(void);
/* dir + "/" + name, malloc'd. */
char *tmp_path(const char *dir, const char *name);
/* Removes the directory and everything in it. */
void tmp_rm(const char *dir);
/* Opens path with WAL, synchronous=NORMAL, busy_timeout 5 s and a todos
 * table (the business table of the examples). Aborts the test on error. */
sqlite3 *app_db_open(const char *path);
/* Runs SQL; aborts the test on error. */
void sql(sqlite3 *db, const char *stmt);
/* First column of the first row as an integer. */
long long sql_int(sqlite3 *db, const char *query);

#endif
