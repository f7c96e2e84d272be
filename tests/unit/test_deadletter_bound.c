/*
 * A payload over max_event_bytes is dead-lettered with memory bounded by
 * the limit, not by the payload: the consumer's own copies of it cost
 * O(max_event_bytes) whatever its size (issue 16: a 200 MB event made a
 * default consumer use 975 MB). The bound is checked with RLIMIT_AS: the
 * process may grow by less than the payload's size again while it
 * dead-letters, which one whole copy plus its base64 would exceed. Skipped
 * under sanitizers, which reserve address space of their own.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <evbus/evbus.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||    \
    __has_feature(memory_sanitizer)
#define SANITIZED 1
#endif
#endif

#define BIG ((size_t)64 * 1024 * 1024)

/* Bytes of address space the process uses now (/proc/self/statm). */
static size_t vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * 4096;
}

static evbus_result_t never(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(int *)opaque)++;
    return EVBUS_ACK;
}

static evbus_result_t keep(const evbus_event_t *ev, void *opaque)
{
    evbus_event_t **out = opaque;
    if (!*out)
        *out = evbus_event_clone(ev);
    return EVBUS_ACK;
}

START_TEST(oversized_payload_dead_lettered_within_the_limit)
{
    /* A consumer with the default limit (1 MiB); memory:// groups see
     * what is published while they exist. */
    evbus_t *bus = evbus_open("memory://dlbound", NULL, 0);
    ck_assert_ptr_nonnull(bus);
    int handled = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", never, &handled));
    evbus_event_t *dl = NULL;
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t.dlq", "g", keep, &dl));
    ck_assert_int_eq(evbus_poll(bus, 0), 0);

    /* A producer with a larger limit writes 64 MB of bytes. */
    evbus_t *big = evbus_open("memory://dlbound?max_event_bytes=100000000",
                              NULL, 0);
    ck_assert_ptr_nonnull(big);
    char *bytes = malloc(BIG);
    ck_assert_ptr_nonnull(bytes);
    memset(bytes, 'z', BIG);
    ck_assert_int_eq(evbus_publish_raw(big, "t", bytes, BIG), EVBUS_OK);
    free(bytes);

    struct rlimit before;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &before), 0);
    struct rlimit tight = before;
    tight.rlim_cur = vm_bytes() + BIG / 2;
    if (before.rlim_cur != RLIM_INFINITY && before.rlim_cur < tight.rlim_cur)
        tight.rlim_cur = before.rlim_cur;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &tight), 0);
    for (int i = 0; i < 50 && !dl; i++)
        evbus_poll(bus, 20);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &before), 0);

    ck_assert_int_eq(handled, 0);
    ck_assert_msg(dl != NULL, "no dead letter was written within the limit");
    ck_assert_str_eq(evbus_event_type(dl), "evbus.deadletter.undecodable");
    char n[32];
    snprintf(n, sizeof n, "%zu", BIG);
    ck_assert_str_eq(evbus_event_ext(dl, "dlqtruncated"), n);
    ck_assert_str_eq(evbus_event_ext(dl, "dlqdatacontenttype"),
                     "application/octet-stream");
    ck_assert(strstr(evbus_event_ext(dl, "dlqreason"),
                     "over max_event_bytes 1048576") != NULL);
    size_t len = evbus_event_data_len(dl);
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_lt(len, 1048576);
    const char *d = evbus_event_data(dl);
    ck_assert(d[0] == 'z' && d[len - 1] == 'z');
    evbus_event_free(dl);
    evbus_close(bus);
    evbus_close(big);
}
END_TEST

int main(void)
{
#ifdef SANITIZED
    printf("skip: sanitizers reserve address space, RLIMIT_AS cannot bound "
           "the test\n");
    return 77;
#endif
    Suite *s = suite_create("deadletter-bound");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, oversized_payload_dead_lettered_within_the_limit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
