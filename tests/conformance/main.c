/*
 * The backend conformance suite: one set of cases every backend must pass.
 *
 *   evbus-conformance URL
 *
 * Cases that need a feature the backend does not declare (persistence,
 * ordering, raw bytes) are not run; the suite prints which and why, and
 * they are not counted as passed. EVBUS_TEST_CASE=NAME runs one case.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void add_cases(TCase *tc, const conf_case_t *cases, size_t n,
                      const char *only, int *added, int *skipped)
{
    for (size_t i = 0; i < n; i++) {
        const conf_case_t *k = &cases[i];
        if (only && strcmp(only, k->name) != 0)
            continue;
        if ((k->refused & conf_features) ||
            (conf_features & k->needs) != k->needs ||
            (k->needs_any && !(conf_features & k->needs_any))) {
            printf("conformance: not run on %s: %s (%s)\n", conf_url, k->name,
                   k->why);
            (*skipped)++;
            continue;
        }
        tcase_add_test(tc, k->test);
        (*added)++;
    }
}

int main(int argc, char **argv)
{
    conf_url = argc > 1 ? argv[1] : getenv("EVBUS_TEST_URL");
    if (!conf_url) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    if (getenv("EVBUS_TEST_LOG"))
        evbus_set_log(evbus_log_stderr, EVBUS_LOG_DEBUG, NULL);
    char err[512];
    evbus_t *probe = evbus_open(conf_url, err, sizeof err);
    if (!probe) {
        fprintf(stderr, "conformance: cannot open %s: %s\n", conf_url, err);
        return 1;
    }
    conf_features = evbus_features(probe);
    evbus_close(probe);

    const char *only = getenv("EVBUS_TEST_CASE");
    Suite *s = suite_create("conformance");
    TCase *tc = tcase_create("backend");
    /* A hang guard only: verdicts come from counts. */
    tcase_set_timeout(tc, 600);
    int skipped = 0, added = 0;
    conf_case_t cases[64];
    size_t n = conformance_cases(cases, 64);
    n += contract_cases(cases + n, 64 - n);
    n += concurrency_cases(cases + n, 64 - n);
    add_cases(tc, cases, n, only, &added, &skipped);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    int run = srunner_ntests_run(sr);
    srunner_free(sr);
    printf("conformance on %s: %d run, %d failed, %d not run (see above)\n",
           conf_url, run, failed, skipped);
    return failed == 0 && run == added ? 0 : 1;
}
