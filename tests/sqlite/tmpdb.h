/*
 * What every sqlite:// test program shares: a fresh directory per test (the
 * database path in it, symbolic links resolved, so it matches what the
 * backend logs) removed afterwards, and running one Check case.
 */
#ifndef EVBUS_TESTS_SQLITE_TMPDB_H
#define EVBUS_TESTS_SQLITE_TMPDB_H

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

static char tmpdir[256];
static char dbpath[300];

/* Makes /tmp/<name>.XXXXXX and points dbpath at bus.db in it. */
static void tmpdb_setup(const char *name)
{
    char dir[128], real[PATH_MAX];
    snprintf(dir, sizeof dir, "/tmp/%s.XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_ptr_nonnull(realpath(dir, real));
    size_t len = strlen(real);
    ck_assert_uint_lt(len, sizeof tmpdir);
    memcpy(tmpdir, real, len + 1);
    snprintf(dbpath, sizeof dbpath, "%s/bus.db", tmpdir);
}

static void tmpdb_teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    int r = system(cmd);
    (void)r;
}

/* Runs tc as the suite name; the process's exit status. */
static int tmpdb_run(const char *name, TCase *tc)
{
    Suite *s = suite_create(name);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
