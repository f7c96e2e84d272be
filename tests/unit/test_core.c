/* Core behaviour that does not depend on a particular backend: errors,
 * URLs and options, argument checking, stop/poll threading rules, metrics,
 * logging and the backend registry. Runs on memory://. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evbus/backend.h>
#include <evbus/evbus.h>

START_TEST(error_table_is_complete)
{
    for (int e = 0; e >= EVBUS_EINTERNAL; e--) {
        ck_assert_str_ne(evbus_strerror(e), "unknown error");
        ck_assert_ptr_nonnull(strstr(evbus_err_name(e), "EVBUS_"));
    }
    ck_assert_str_eq(evbus_err_name(EVBUS_EINVAL), "EVBUS_EINVAL");
    ck_assert_str_eq(evbus_strerror(-999), "unknown error");
    ck_assert_str_eq(evbus_strerror(5), "unknown error");
    ck_assert(evbus_err_retriable(EVBUS_ECONN));
    ck_assert(evbus_err_retriable(EVBUS_ETIMEDOUT));
    ck_assert(!evbus_err_retriable(EVBUS_EINVAL));
    ck_assert(!evbus_err_retriable(EVBUS_OK));
}
END_TEST

START_TEST(version_matches_header)
{
    ck_assert_str_eq(evbus_version(), EVBUS_VERSION_STRING);
    ck_assert_int_eq(evbus_version_num(), EVBUS_VERSION_NUM);
}
END_TEST

static void expect_open_error(const char *url, const char *needle)
{
    char err[512] = "";
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus == NULL, "%s opened", url ? url : "(null)");
    ck_assert_msg(strstr(err, needle), "error for %s was '%s', expected '%s'",
                  url ? url : "(null)", err, needle);
}

START_TEST(open_reports_clear_errors)
{
    unsetenv("EVBUS_URL");
    expect_open_error(NULL, "EVBUS_URL");
    expect_open_error("", "no bus URL");
    expect_open_error("localhost:6379", "expected scheme://");
    expect_open_error("nosuch://x", "no backend for URL scheme 'nosuch'");
    expect_open_error("nosuch://x", "memory");
    expect_open_error("memory://x?bogus=1", "unknown option 'bogus'");
    expect_open_error("memory://x?close_timeout_ms=soon", "close_timeout_ms");
    expect_open_error("memory://x?a=1&a=2", "given twice");
    expect_open_error("memory://x?a=%zz", "malformed");
    /* NULL errstr is allowed */
    ck_assert_ptr_null(evbus_open("nosuch://x", NULL, 0));
}
END_TEST

START_TEST(open_reads_evbus_url)
{
    setenv("EVBUS_URL", "memory://from-env", 1);
    char err[256];
    evbus_t *bus = evbus_open(NULL, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_str_eq(evbus_scheme(bus), "memory");
    ck_assert_int_eq(evbus_health(bus, err, sizeof err), EVBUS_OK);
    evbus_close(bus);
    unsetenv("EVBUS_URL");
}
END_TEST

static evbus_result_t ack(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(int *)opaque)++;
    return EVBUS_ACK;
}

START_TEST(publish_checks_its_arguments)
{
    evbus_t *bus = evbus_open("memory://args?max_event_bytes=512", NULL, 0);
    ck_assert_ptr_nonnull(bus);
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_publish(bus, "t", NULL), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(bus, NULL, ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(bus, "", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(bus, "has space", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(NULL, "t", ev), EVBUS_EINVAL);
    char big[1024];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(evbus_event_set_data(ev, big, strlen(big), "text/plain"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_ETOOBIG);
    ck_assert_int_eq(evbus_publish_async(bus, "t", ev, NULL, NULL),
                     EVBUS_ETOOBIG);
    ck_assert_int_eq(evbus_publish_raw(bus, "t", big, sizeof big),
                     EVBUS_ETOOBIG);
    int n = 0;
    char why[256];
    ck_assert_ptr_null(
        evbus_subscribe_opts(bus, NULL, "g", NULL, ack, &n, why, sizeof why));
    ck_assert_msg(strncmp(why, "EVBUS_EINVAL: topic name is empty", 33) == 0,
                  "%s", why);
    ck_assert_ptr_null(evbus_subscribe(bus, "t", "", ack, &n));
    ck_assert_ptr_null(
        evbus_subscribe_opts(bus, "a\tb", "g", NULL, ack, &n, why, sizeof why));
    ck_assert_msg(strstr(why, "EVBUS_EINVAL: topic name has byte 0x09 at "
                              "offset 1"), "%s", why);
    ck_assert_ptr_null(evbus_subscribe(bus, "t", "my group", ack, &n));
    ck_assert_ptr_null(evbus_subscribe(bus, "t", "g", NULL, &n));
    ck_assert_int_eq(evbus_poll(NULL, 0), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_unsubscribe(NULL), EVBUS_EINVAL);
    evbus_event_free(ev);
    evbus_close(bus);
    evbus_close(NULL);
}
END_TEST

static evbus_result_t nested_poll(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    evbus_t *bus = opaque;
    ck_assert_int_eq(evbus_poll(bus, 0), EVBUS_EBUSY);
    ck_assert_int_eq(evbus_run(bus), EVBUS_EBUSY);
    return EVBUS_ACK;
}

START_TEST(poll_is_single_threaded_per_bus)
{
    evbus_t *bus = evbus_open("memory://nested", NULL, 0);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, "t", "g", nested_poll, bus));
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_OK);
    ck_assert_int_eq(evbus_poll(bus, 1000), 1);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

static evbus_t *signal_bus;
static void on_alarm(int sig)
{
    (void)sig;
    evbus_stop(signal_bus); /* async-signal-safe */
}

START_TEST(stop_from_a_signal_handler_ends_run)
{
    signal_bus = evbus_open("memory://signal", NULL, 0);
    int n = 0;
    ck_assert_ptr_nonnull(evbus_subscribe(signal_bus, "t", "g", ack, &n));
    signal(SIGALRM, on_alarm);
    alarm(1);
    ck_assert_int_eq(evbus_run(signal_bus), EVBUS_OK);
    evbus_close(signal_bus);
}
END_TEST

static void *stop_later(void *bus)
{
    usleep(100 * 1000);
    evbus_stop(bus);
    return NULL;
}

START_TEST(stop_wakes_a_waiting_poll)
{
    evbus_t *bus = evbus_open("memory://stoppoll", NULL, 0);
    pthread_t th;
    pthread_create(&th, NULL, stop_later, bus);
    ck_assert_int_eq(evbus_poll(bus, 20000), 0); /* returns at the stop */
    pthread_join(th, NULL);
    evbus_close(bus);
}
END_TEST

typedef struct {
    char last[512];
    int count;
} logbuf_t;

static void capture_log(int level, const char *component, const char *msg,
                        void *opaque)
{
    (void)level;
    logbuf_t *b = opaque;
    snprintf(b->last, sizeof b->last, "%s: %s", component, msg);
    b->count++;
}

START_TEST(log_callback_receives_messages)
{
    logbuf_t lb = {"", 0};
    evbus_set_log(capture_log, EVBUS_LOG_DEBUG, &lb);
    evbus_t *bus = evbus_open("memory://log", NULL, 0);
    ck_assert_int_gt(lb.count, 0); /* "opened memory:// bus" */
    evbus_set_log(NULL, 0, NULL);
    int before = lb.count;
    evbus_close(bus);
    ck_assert_int_eq(lb.count, before); /* silent once removed */
}
END_TEST

START_TEST(metrics_render_as_prometheus_text)
{
    evbus_t *bus = evbus_open("memory://metrics", NULL, 0);
    int n = 0;
    evbus_sub_t *sub = evbus_subscribe(bus, "orders", "billing", ack, &n);
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(evbus_publish(bus, "orders", ev), EVBUS_OK);
    while (n < 3)
        ck_assert_int_ge(evbus_poll(bus, 1000), 0);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    evbus_sub_metrics_get(sub, &m);
    ck_assert_uint_eq(m.delivered, 3);
    ck_assert_uint_eq(m.acked, 3);
    char *text = evbus_metrics_prometheus(bus);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "evbus_published_total{backend=\"memory\"} 3"));
    ck_assert_ptr_nonnull(
        strstr(text, "evbus_acked_total{topic=\"orders\",group=\"billing\"} 3"));
    ck_assert_ptr_nonnull(strstr(text, "evbus_handler_seconds_count{topic=\"orders\",group=\"billing\"} 3"));
    free(text);
    ck_assert_str_eq(evbus_sub_topic(sub), "orders");
    ck_assert_str_eq(evbus_sub_group(sub), "billing");
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

/* A user backend that refuses everything: registration and lookup. */
static int ub_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                   char *errstr, size_t n)
{
    (void)priv;
    (void)host;
    const char *who = evbus_url_param(url, "who");
    if (!who) {
        snprintf(errstr, n, "userbk needs ?who=");
        return EVBUS_EOPTION;
    }
    return EVBUS_OK;
}
static void ub_close(void *priv) { (void)priv; }
static int ub_publish(void *p, const char *t, const evbus_event_t *e,
                      const void *b, size_t l)
{
    (void)p, (void)t, (void)e, (void)b, (void)l;
    return EVBUS_EREJECTED;
}
static int ub_subscribe(void *p, const char *t, const char *g, void **s,
                        char *e, size_t n)
{
    (void)p, (void)t, (void)g, (void)e, (void)n;
    *s = NULL;
    return EVBUS_OK;
}
static void ub_unsubscribe(void *p, void *s) { (void)p, (void)s; }
static int ub_fetch(void *p, void *s, evbus_msg_t *m, int max)
{
    (void)p, (void)s, (void)m, (void)max;
    return 0;
}
static int ub_settle(void *p, void *s, evbus_msg_t *m, evbus_settle_t h, int d)
{
    (void)p, (void)s, (void)m, (void)h, (void)d;
    return EVBUS_OK;
}

static const evbus_backend_t user_backend = {
    .version = EVBUS_BACKEND_VERSION, .scheme = "userbk", .priv_size = 8,
    .open = ub_open, .close = ub_close, .publish = ub_publish,
    .subscribe = ub_subscribe, .unsubscribe = ub_unsubscribe,
    .fetch = ub_fetch, .settle = ub_settle};

START_TEST(user_backends_register_by_scheme)
{
    evbus_backend_t broken = user_backend;
    broken.fetch = NULL;
    ck_assert_int_eq(evbus_backend_register(&broken), EVBUS_EINVAL);
    evbus_backend_t future = user_backend;
    future.version = EVBUS_BACKEND_VERSION + 1;
    ck_assert_int_eq(evbus_backend_register(&future), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_backend_register(&user_backend), EVBUS_OK);
    ck_assert_int_eq(evbus_backend_register(&user_backend), EVBUS_EBUSY);
    ck_assert_ptr_eq(evbus_backend_find("userbk"), &user_backend);
    ck_assert_ptr_nonnull(evbus_backend_find("memory"));
    char err[256];
    ck_assert_ptr_null(evbus_open("userbk://x", err, sizeof err));
    ck_assert_str_eq(err, "userbk needs ?who=");
    evbus_t *bus = evbus_open("userbk://x?who=me", err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_publish(bus, "t", ev), EVBUS_EREJECTED);
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    evbus_metrics_get(bus, &m);
    ck_assert_uint_eq(m.publish_failed, 1);
    /* an async failure surfaces at flush */
    ck_assert_int_eq(evbus_publish_async(bus, "t", ev, NULL, NULL), EVBUS_OK);
    ck_assert_int_eq(evbus_flush(bus, 1000), EVBUS_EREJECTED);
    ck_assert_int_eq(evbus_flush(bus, 1000), EVBUS_OK);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

/* One portable name rule on every backend, the backend's own with
 * names=native, and messages that name the rule and the byte. */
START_TEST(names_follow_one_portable_rule)
{
    char why[256];
    const char *bad[] = {"a/b", "a:b", "a$b", ".", "..", "", "a b", "t\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(evbus_name_check(NULL, bad[i], why, sizeof why),
                         EVBUS_EINVAL);
        ck_assert_msg(strstr(why, "portable names are 1-249 bytes"),
                      "'%s': %s", bad[i], why);
    }
    ck_assert_int_eq(evbus_name_check(NULL, "a/b", why, sizeof why),
                     EVBUS_EINVAL);
    ck_assert_msg(strstr(why, "'/' at byte 1"), "%s", why);
    char longname[251];
    memset(longname, 'a', 250);
    longname[250] = '\0';
    ck_assert_int_eq(evbus_name_check(NULL, longname, why, sizeof why),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_name_check(NULL, longname + 1, NULL, 0), EVBUS_OK);
    ck_assert_int_eq(evbus_name_check(NULL, "Todos.task-created_v2", NULL, 0),
                     EVBUS_OK);

    char err[256];
    evbus_t *portable = evbus_open("memory://names", err, sizeof err);
    evbus_t *native = evbus_open("memory://names?names=native", err,
                                 sizeof err);
    ck_assert_ptr_nonnull(portable);
    ck_assert_ptr_nonnull(native);
    ck_assert_ptr_null(evbus_open("memory://x?names=loose", err, sizeof err));
    ck_assert_msg(strstr(err, "names=loose"), "%s", err);
    evbus_event_t *ev = evbus_event_new("a.b.c", "/src");
    ck_assert_int_eq(evbus_publish(portable, "a/b", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(native, "a/b", ev), EVBUS_OK);
    ck_assert_int_eq(evbus_publish(native, "a b", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_publish(native, "a\xff", ev), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_name_check(native, "a/b", NULL, 0), EVBUS_OK);
    int n = 0;
    ck_assert_ptr_null(evbus_subscribe_opts(portable, "t", "g:1", NULL, ack,
                                            &n, why, sizeof why));
    ck_assert_msg(strstr(why, "group name has ':' at byte 1"), "%s", why);
    ck_assert_ptr_nonnull(evbus_subscribe(native, "t", "g:1", ack, &n));
    evbus_event_free(ev);
    evbus_close(portable);
    evbus_close(native);
}
END_TEST

/* A valid 249-byte topic has a 253-byte default dead-letter topic: the
 * refusal says which name and how to choose another. */
START_TEST(long_topic_needs_its_own_dead_letter_topic)
{
    char topic[250], why[512];
    memset(topic, 't', 249);
    topic[249] = '\0';
    evbus_t *bus = evbus_open("memory://longdlq", NULL, 0);
    ck_assert_ptr_nonnull(bus);
    int n = 0;
    ck_assert_ptr_null(evbus_subscribe_opts(bus, topic, "g", NULL, ack, &n,
                                            why, sizeof why));
    ck_assert_msg(strstr(why, "TOPIC.dlq") && strstr(why, "dlq_topic") &&
                      strstr(why, "253 bytes"),
                  "%s", why);
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    o.dlq_topic = "long.dlq";
    ck_assert_ptr_nonnull(evbus_subscribe_opts(bus, topic, "g", &o, ack, &n,
                                               why, sizeof why));
    evbus_close(bus);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, error_table_is_complete);
    tcase_add_test(tc, version_matches_header);
    tcase_add_test(tc, open_reports_clear_errors);
    tcase_add_test(tc, open_reads_evbus_url);
    tcase_add_test(tc, publish_checks_its_arguments);
    tcase_add_test(tc, poll_is_single_threaded_per_bus);
    tcase_add_test(tc, stop_from_a_signal_handler_ends_run);
    tcase_add_test(tc, stop_wakes_a_waiting_poll);
    tcase_add_test(tc, log_callback_receives_messages);
    tcase_add_test(tc, metrics_render_as_prometheus_text);
    tcase_add_test(tc, user_backends_register_by_scheme);
    tcase_add_test(tc, names_follow_one_portable_rule);
    tcase_add_test(tc, long_topic_needs_its_own_dead_letter_topic);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
