/* Runs one of the saga Check suites, named on the command line (meson
 * registers each as its own test). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Suite *machine_suite(void);
Suite *api_suite(void);
Suite *participant_suite(void);

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";
    Suite *s = strcmp(which, "machine") == 0       ? machine_suite()
               : strcmp(which, "api") == 0         ? api_suite()
               : strcmp(which, "participant") == 0 ? participant_suite()
                                                   : NULL;
    if (!s) {
        fprintf(stderr, "usage: test-saga machine|api|participant\n");
        return 2;
    }
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
