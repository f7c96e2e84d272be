/*
 * The redis backend's entry-id set (open addressing with backward-shift
 * deletion) against a plain array, with random adds and deletes, and the
 * entry id parser. Uses the static library to reach the hidden symbols.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "backends/redis/redis_internal.h"

START_TEST(idset_matches_a_reference)
{
    enum { UNIVERSE = 3000, STEPS = 200000 };
    static unsigned char ref[UNIVERSE];
    memset(ref, 0, sizeof ref);
    rds_idset_t s = {0};
    srand(42);
    size_t count = 0;
    for (int i = 0; i < STEPS; i++) {
        int k = rand() % UNIVERSE;
        /* Clustered ids, like a stream's: same ms, consecutive seq. */
        rds_id_t id = {1700000000000ull + (uint64_t)(k / 7), (uint64_t)(k % 7)};
        if (rand() % 3) {
            ck_assert_int_eq(evbus__redis_idset_add(&s, id), EVBUS_OK);
            count += !ref[k];
            ref[k] = 1;
        } else {
            evbus__redis_idset_del(&s, id);
            count -= ref[k];
            ref[k] = 0;
        }
        if (i % 997 == 0)
            for (int j = 0; j < UNIVERSE; j++) {
                rds_id_t q = {1700000000000ull + (uint64_t)(j / 7),
                              (uint64_t)(j % 7)};
                ck_assert_int_eq(evbus__redis_idset_has(&s, q), ref[j]);
            }
        ck_assert_uint_eq(s.len, count);
    }
    evbus__redis_idset_free(&s);
}
END_TEST

START_TEST(id_parser)
{
    rds_id_t id;
    ck_assert(evbus__redis_id_parse("1526919030474-55", 16, &id));
    ck_assert_uint_eq(id.ms, 1526919030474ull);
    ck_assert_uint_eq(id.seq, 55);
    ck_assert(!evbus__redis_id_parse("1526919030474", 13, &id));
    ck_assert(!evbus__redis_id_parse("-5", 2, &id));
    ck_assert(!evbus__redis_id_parse("5-", 2, &id));
    ck_assert(!evbus__redis_id_parse("1-2-3", 5, &id));
    ck_assert(!evbus__redis_id_parse("a-1", 3, &id));
}
END_TEST

int main(void)
{
    Suite *su = suite_create("redis-idset");
    TCase *tc = tcase_create("idset");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idset_matches_a_reference);
    tcase_add_test(tc, id_parser);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
