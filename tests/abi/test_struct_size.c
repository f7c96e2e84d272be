/*
 * Public structs that can grow (docs/conventions.md, "Structs that can
 * grow"): the library reads and writes only the first struct_size bytes,
 * so a program built against an older header keeps working with a newer
 * library, and a struct whose struct_size was never set is refused.
 *
 * The first release is the first with struct_size, so no public struct has
 * an older size yet. The mechanism is therefore proven on a struct that
 * grew (a "1.0" and a "1.1" layout) through the library's own helpers, and
 * every public function that takes or fills such a struct is checked to go
 * through them: unset sizes are refused, and a caller's struct of another
 * size is read and written only within the bytes both know of. Buffers
 * are heap blocks of exactly struct_size bytes, so a build with
 * AddressSanitizer also catches a read or write past them.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evbus/breaker.h>
#include <evbus/bulkhead.h>
#include <evbus/evbus.h>
#include <evbus/inbox.h>
#include <evbus/outbox.h>
#include <evbus/retry.h>
#include <evbus/saga.h>

#include "support/structs.h"

/* ------------------------------------------- a struct that grew in 1.1 */

/* Members added later start past the previous release's sizeof
 * (docs/conventions.md). */
typedef struct {
    size_t struct_size;
    int a; /* default 1 */
} v10_t;

typedef struct {
    size_t struct_size;
    int a;     /* default 1 */
    int64_t b; /* added in 1.1; default 7 */
} v11_t;

#define V10_SIZE EVBUS__SIZE_THROUGH(v10_t, a)

static const v10_t v10_defaults = {sizeof(v10_t), 1};
static const v11_t v11_defaults = {sizeof(v11_t), 1, 7};

/* A program built against 1.0 runs with the 1.1 library: its init writes
 * only the program's bytes, and the library takes its new member's
 * default. */
START_TEST(old_program_new_library)
{
    v10_t *old = malloc(sizeof *old); /* exactly the old size */
    evbus__struct_defaults(old, sizeof *old, &v11_defaults,
                           sizeof v11_defaults);
    ck_assert_uint_eq(old->struct_size, sizeof *old);
    ck_assert_int_eq(old->a, 1);
    old->a = 5;
    v11_t lib = v11_defaults;
    ck_assert_int_eq(evbus__struct_in(&lib, sizeof lib, old, V10_SIZE),
                     EVBUS_OK);
    ck_assert_int_eq(lib.a, 5);
    ck_assert_int_eq(lib.b, 7);
    ck_assert_uint_eq(lib.struct_size, sizeof lib);

    /* an output struct: only the old members are written */
    evbus__struct_init(old, sizeof *old);
    ck_assert_uint_eq(old->struct_size, sizeof *old);
    lib.a = 6;
    ck_assert_int_eq(evbus__struct_out(old, &lib, sizeof lib, V10_SIZE),
                     EVBUS_OK);
    ck_assert_int_eq(old->a, 6);
    ck_assert_uint_eq(old->struct_size, sizeof *old);
    free(old);
}
END_TEST

/* A program built against 1.1 runs with the 1.0 library: the member the
 * library does not know is zero, and never read. */
START_TEST(new_program_old_library)
{
    v11_t *newer = malloc(sizeof *newer);
    evbus__struct_defaults(newer, sizeof *newer, &v10_defaults,
                           sizeof v10_defaults);
    ck_assert_uint_eq(newer->struct_size, sizeof *newer);
    ck_assert_int_eq(newer->a, 1);
    ck_assert_int_eq(newer->b, 0);
    newer->a = 5;
    newer->b = 9;
    v10_t lib = v10_defaults;
    ck_assert_int_eq(evbus__struct_in(&lib, sizeof lib, newer, V10_SIZE),
                     EVBUS_OK);
    ck_assert_int_eq(lib.a, 5);
    ck_assert_uint_eq(lib.struct_size, sizeof lib);
    free(newer);
}
END_TEST

START_TEST(unset_or_short_struct_is_refused)
{
    v11_t lib = v11_defaults;
    v10_t zero = {0, 5};
    ck_assert_int_eq(evbus__struct_in(&lib, sizeof lib, &zero, V10_SIZE),
                     EVBUS_EINVAL);
    ck_assert_int_eq(lib.a, 1); /* untouched */
    size_t short_size = sizeof(size_t);
    ck_assert_int_eq(evbus__struct_out(&short_size, &lib, sizeof lib,
                                       V10_SIZE),
                     EVBUS_EINVAL);
}
END_TEST

/* ------------------------------------------------ the public functions */

#define PAD 64 /* what a newer header might have added */

/* A heap block of size bytes starting with struct_size = size, the rest
 * 0xAB: the caller's struct as some other header laid it out. */
static void *caller_struct(size_t size)
{
    unsigned char *p = malloc(size);
    memset(p, 0xAB, size);
    memcpy(p, &size, sizeof size);
    return p;
}

/* 1 when bytes [from, to) of p are all still 0xAB. */
static int untouched(const void *p, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (((const unsigned char *)p)[i] != 0xAB)
            return 0;
    return 1;
}

/* The public _init_sized function with a smaller size (an older header)
 * writes no byte past it. */
#define CHECK_INIT_WRITES_WITHIN(T, init_sized)                               \
    do {                                                                      \
        size_t old_ = sizeof(size_t) + 4;                                     \
        T *p_ = caller_struct(sizeof(T) + PAD);                               \
        init_sized(p_, old_);                                                 \
        ck_assert_uint_eq(p_->struct_size, old_);                             \
        ck_assert_msg(untouched(p_, old_, sizeof(T) + PAD),                   \
                      #init_sized " wrote past struct_size");                 \
        free(p_);                                                             \
    } while (0)

/* An output struct of a newer header: its init zeroes all of it, the call
 * fills it up to the library's size and leaves the rest alone, keeping its
 * struct_size; size 0 is refused. */
#define CHECK_OUT(T, init_sized, call_with)                                   \
    do {                                                                      \
        CHECK_INIT_WRITES_WITHIN(T, init_sized);                              \
        T *newer_ = caller_struct(sizeof(T) + PAD);                           \
        init_sized(newer_, sizeof(T) + PAD);                                  \
        ck_assert_uint_eq(newer_->struct_size, sizeof(T) + PAD);              \
        memset((char *)newer_ + sizeof(size_t), 0xAB,                         \
               sizeof(T) + PAD - sizeof(size_t));                             \
        ck_assert_int_eq(call_with(newer_), EVBUS_OK);                        \
        ck_assert_uint_eq(newer_->struct_size, sizeof(T) + PAD);              \
        ck_assert(untouched(newer_, sizeof(T), sizeof(T) + PAD));             \
        ck_assert(!untouched(newer_, sizeof(size_t), sizeof(T)));             \
        free(newer_);                                                         \
        T *unset_ = caller_struct(sizeof(T));                                 \
        unset_->struct_size = 0;                                              \
        ck_assert_int_eq(call_with(unset_), EVBUS_EINVAL);                    \
        ck_assert(untouched(unset_, sizeof(size_t), sizeof(T)));              \
        free(unset_);                                                         \
    } while (0)

static evbus_t *bus;
static evbus_sub_t *sub;
static evbus_breaker_t *breaker;
static evbus_bulkhead_t *bulkhead;
static evbus_relay_t *relay;

static int metrics_(evbus_metrics_t *m) { return evbus_metrics_get(bus, m); }
static int sub_metrics_(evbus_sub_metrics_t *m)
{
    return evbus_sub_metrics_get(sub, m);
}
static int breaker_stats_(evbus_breaker_stats_t *s)
{
    return evbus_breaker_stats(breaker, s);
}
static int bulkhead_stats_(evbus_bulkhead_stats_t *s)
{
    return evbus_bulkhead_stats(bulkhead, s);
}
static int relay_stats_(evbus_relay_stats_t *s)
{
    return evbus_relay_stats(relay, s);
}

static evbus_result_t ack(const evbus_event_t *ev, void *opaque)
{
    (void)ev, (void)opaque;
    return EVBUS_ACK;
}

START_TEST(output_structs_are_written_within_struct_size)
{
    char err[256], path[] = "/tmp/evbus-struct-size-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    bus = evbus_open("memory://", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    sub = evbus_subscribe(bus, "t", "g", ack, NULL);
    ck_assert_ptr_nonnull(sub);
    breaker = evbus_breaker_new(NULL, err, sizeof err);
    ck_assert_msg(breaker != NULL, "%s", err);
    bulkhead = evbus_bulkhead_new(NULL, err, sizeof err);
    ck_assert_msg(bulkhead != NULL, "%s", err);
    relay = evbus_relay_open(path, bus, err, sizeof err);
    ck_assert_msg(relay != NULL, "%s", err);

    CHECK_OUT(evbus_metrics_t, evbus_metrics_init_sized, metrics_);
    CHECK_OUT(evbus_sub_metrics_t, evbus_sub_metrics_init_sized,
              sub_metrics_);
    CHECK_OUT(evbus_breaker_stats_t, evbus_breaker_stats_init_sized,
              breaker_stats_);
    CHECK_OUT(evbus_bulkhead_stats_t, evbus_bulkhead_stats_init_sized,
              bulkhead_stats_);
    CHECK_OUT(evbus_relay_stats_t, evbus_relay_stats_init_sized,
              relay_stats_);

    evbus_relay_close(relay);
    evbus_bulkhead_free(bulkhead);
    evbus_breaker_free(breaker);
    evbus_close(bus);
    unlink(path);
}
END_TEST

/* An input struct of a newer header: its init writes the defaults the
 * library's own init gives, zeroes past the library's size, and the
 * library accepts it; with struct_size 0 it is refused. open_with(p)
 * answers non-zero when it accepted p. */
#define CHECK_IN(T, init_sized, open_with)                                    \
    do {                                                                      \
        CHECK_INIT_WRITES_WITHIN(T, init_sized);                              \
        T lib_;                                                               \
        init_sized(&lib_, sizeof lib_);                                       \
        T *newer_ = caller_struct(sizeof(T) + PAD);                           \
        init_sized(newer_, sizeof(T) + PAD);                                  \
        ck_assert_uint_eq(newer_->struct_size, sizeof(T) + PAD);              \
        ck_assert(memcmp((char *)newer_ + sizeof(size_t),                     \
                         (char *)&lib_ + sizeof(size_t),                      \
                         sizeof(T) - sizeof(size_t)) == 0);                   \
        for (size_t i_ = sizeof(T); i_ < sizeof(T) + PAD; i_++)               \
            ck_assert_int_eq(((unsigned char *)newer_)[i_], 0);               \
        ck_assert_msg(open_with(newer_), "%s: newer size refused", #T);       \
        newer_->struct_size = 0;                                              \
        ck_assert_msg(!open_with(newer_), "%s: unset size accepted", #T);     \
        free(newer_);                                                         \
    } while (0)

static int sub_opts_(const evbus_sub_opts_t *o)
{
    char err[256];
    evbus_sub_t *s = evbus_subscribe_opts(bus, "t", "g2", o, ack, NULL, err,
                                          sizeof err);
    if (!s)
        ck_assert_ptr_nonnull(strstr(err, "evbus_sub_opts_init"));
    evbus_unsubscribe(s);
    return s != NULL;
}
/* The defaults without jitter, so that a trusted policy's delay is > 0. */
static void policy_init_(evbus_retry_policy_t *p, size_t size)
{
    evbus_retry_policy_init_sized(p, size);
    if (size >= EVBUS__SIZE_THROUGH(evbus_retry_policy_t, jitter))
        p->jitter = EVBUS_JITTER_NONE;
}
static int policy_(const evbus_retry_policy_t *p)
{
    /* no error code here: an untrusted policy gives no delay */
    return evbus_retry_delay_ms(p, 3, 0) > 0;
}
static int breaker_opts_(const evbus_breaker_opts_t *o)
{
    char err[256];
    evbus_breaker_t *b = evbus_breaker_new(o, err, sizeof err);
    if (!b)
        ck_assert_ptr_nonnull(strstr(err, "evbus_breaker_opts_init"));
    evbus_breaker_free(b);
    return b != NULL;
}
static int bulkhead_opts_(const evbus_bulkhead_opts_t *o)
{
    char err[256];
    evbus_bulkhead_t *b = evbus_bulkhead_new(o, err, sizeof err);
    if (!b)
        ck_assert_ptr_nonnull(strstr(err, "evbus_bulkhead_opts_init"));
    evbus_bulkhead_free(b);
    return b != NULL;
}
static char db_path[64];
static int relay_opts_(const evbus_relay_opts_t *o)
{
    char err[256];
    evbus_relay_t *r = evbus_relay_open_opts(db_path, bus, o, err, sizeof err);
    if (!r)
        ck_assert_ptr_nonnull(strstr(err, "_init function"));
    evbus_relay_close(r);
    return r != NULL;
}
static sqlite3 *db;
static int inbox_opts_(const evbus_inbox_opts_t *o)
{
    char err[256];
    evbus_inbox_t *in = evbus_inbox_open_opts(db, "c", o, err, sizeof err);
    if (!in)
        ck_assert_ptr_nonnull(strstr(err, "evbus_inbox_opts_init"));
    evbus_inbox_close(in);
    return in != NULL;
}

START_TEST(input_structs_are_read_within_struct_size)
{
    char err[256];
    snprintf(db_path, sizeof db_path, "/tmp/evbus-struct-size-XXXXXX");
    int fd = mkstemp(db_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    bus = evbus_open("memory://", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);

    CHECK_IN(evbus_sub_opts_t, evbus_sub_opts_init_sized, sub_opts_);
    CHECK_IN(evbus_retry_policy_t, policy_init_, policy_);
    CHECK_IN(evbus_breaker_opts_t, evbus_breaker_opts_init_sized,
             breaker_opts_);
    CHECK_IN(evbus_bulkhead_opts_t, evbus_bulkhead_opts_init_sized,
             bulkhead_opts_);
    CHECK_IN(evbus_relay_opts_t, evbus_relay_opts_init_sized, relay_opts_);
    CHECK_IN(evbus_inbox_opts_t, evbus_inbox_opts_init_sized, inbox_opts_);

    sqlite3_close(db);
    evbus_close(bus);
    unlink(db_path);
}
END_TEST

/* The saga structs: every init stays within the size it is given; a
 * step of a newer header is taken by evbus_saga_def_add_step. */
static evbus_saga_def_t *def;
static int step_n;
static int step_(const evbus_saga_step_t *st)
{
    static char name[16];
    char err[256];
    evbus_saga_step_t *p = (evbus_saga_step_t *)st; /* the test's block */
    snprintf(name, sizeof name, "s%d", step_n++);
    p->name = name;
    p->topic = "t";
    p->type = "x.y";
    int rc = evbus_saga_def_add_step(def, p, err, sizeof err);
    if (rc != EVBUS_OK)
        ck_assert_ptr_nonnull(strstr(err, "struct_size"));
    return rc == EVBUS_OK;
}

START_TEST(saga_structs_are_read_within_struct_size)
{
    char err[256];
    def = evbus_saga_def_new("abi", err, sizeof err);
    ck_assert_msg(def != NULL, "%s", err);
    CHECK_IN(evbus_saga_step_t, evbus_saga_step_init_sized, step_);
    evbus_saga_def_free(def);
    CHECK_INIT_WRITES_WITHIN(evbus_saga_opts_t, evbus_saga_opts_init_sized);
    CHECK_INIT_WRITES_WITHIN(evbus_saga_metrics_t,
                             evbus_saga_metrics_init_sized);
    CHECK_INIT_WRITES_WITHIN(evbus_saga_participant_opts_t,
                             evbus_saga_participant_opts_init_sized);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("struct-size");
    TCase *tc = tcase_create("struct-size");
    tcase_set_timeout(tc, 60); /* a hang guard */
    tcase_add_test(tc, old_program_new_library);
    tcase_add_test(tc, new_program_old_library);
    tcase_add_test(tc, unset_or_short_struct_is_refused);
    tcase_add_test(tc, output_structs_are_written_within_struct_size);
    tcase_add_test(tc, input_structs_are_read_within_struct_size);
    tcase_add_test(tc, saga_structs_are_read_within_struct_size);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
