/*
 * Conformance cases for the delivery contract (docs/concepts.md,
 * "Delivery guarantees"), the same on every backend: evbus_stop under a
 * backlog, attempts that count handler calls across crashes, retry limits
 * that hold across broker-side retries, dead-letter writes that fail for
 * good, a poller undisturbed by unsubscribes, one back-pressure rule.
 * Verdicts come from counts; timeouts only guard against hangs.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define HANG_MS 120000 /* generous: only a hang gets this far */

static int acked(collector_t *c) { return collector_acked(c); }

/* ------------------------------------------------------------ stop */

typedef struct {
    evbus_t *bus;
    atomic_int calls;
    collector_t c;
} stopper_t;

static evbus_result_t stop_at_first(const evbus_event_t *ev, void *opaque)
{
    stopper_t *s = opaque;
    if (atomic_fetch_add(&s->calls, 1) == 0)
        evbus_stop(s->bus);
    return collector_handler(ev, &s->c);
}

/* evbus_stop from a handler ends evbus_run after that handler, however
 * many events are waiting; none of them is lost. */
START_TEST(stop_with_backlog_returns_after_the_running_handler)
{
    enum { N = 2000 };
    char topic[128];
    unique_topic(topic, sizeof topic, "stop");
    evbus_t *bus = open_bus();
    stopper_t st;
    memset(&st, 0, sizeof st);
    st.bus = bus;
    collector_init(&st.c, COLLECT_ACK);
    ck_assert_ptr_nonnull(
        evbus_subscribe(bus, topic, "g", stop_at_first, &st));
    publish_events(bus, topic, 0, N, PUBLISH_ASYNC);
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
    ck_assert_int_eq(evbus_run(bus), EVBUS_OK);
    int after_stop = atomic_load(&st.calls);
    ck_assert_msg(after_stop >= 1 && after_stop <= 2,
                  "evbus_run returned after %d handler calls with %d events "
                  "waiting (want 1, at most 2)",
                  after_stop, N);
    /* What was fetched and not handed out went back: all arrive, once. */
    evbus_t *buses[] = {bus, NULL};
    ck_assert_int_eq(poll_until(buses, &st.c, acked, N, HANG_MS), N);
    ck_assert_int_eq(st.c.duplicates, 0);
    evbus_close(bus);
    collector_free(&st.c);
}
END_TEST

/* ------------------------------------------------------------ crash loop */

/* One consumer process: handles the topic with max_attempts 3 and dies on
 * the poison event as a crash would (no close, no settle). Every call is
 * appended to the journal first. It also watches the dead-letter topic
 * and exits 0 once the poison arrived there and its own topic went quiet. */
typedef struct {
    int journal;
    atomic_int calls;
    atomic_bool poison_dead;
} crash_ctx_t;

static evbus_result_t crash_on_poison(const evbus_event_t *ev, void *opaque)
{
    crash_ctx_t *c = opaque;
    const char *seq = evbus_event_ext(ev, "seq");
    char line[64];
    int n = snprintf(line, sizeof line, "%s %d\n", seq ? seq : "?",
                     evbus_delivery_attempt());
    if (write(c->journal, line, (size_t)n) != n)
        _exit(70);
    atomic_fetch_add(&c->calls, 1);
    if (seq && strcmp(seq, "10") == 0)
        _exit(3); /* the poison: the process dies inside its handler */
    return EVBUS_ACK;
}

static evbus_result_t watch_dead_letters(const evbus_event_t *ev, void *opaque)
{
    crash_ctx_t *c = opaque;
    if (strcmp(evbus_event_id(ev), "the-poison") == 0)
        atomic_store(&c->poison_dead, true);
    return EVBUS_ACK;
}

static void crash_child(const char *url, const char *topic, int journal)
{
    char err[512], dlq[160];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus)
        _exit(71);
    crash_ctx_t c = {journal, 0, false};
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 3);
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    if (!evbus_subscribe_opts(bus, topic, "crashers", &o, crash_on_poison, &c,
                              err, sizeof err) ||
        !evbus_subscribe(bus, dlq, "watch", watch_dead_letters, &c))
        _exit(72);
    /* The hang guard (4 min) ends the child with status 74. */
    int quiet = 0, last = -1;
    for (uint64_t guard = now_ms() + 240000; now_ms() < guard;) {
        evbus_poll(bus, 100);
        int now = atomic_load(&c.calls);
        quiet = now == last ? quiet + 1 : 0;
        last = now;
        if (atomic_load(&c.poison_dead) && quiet >= 5) {
            evbus_close(bus);
            _exit(0);
        }
    }
    _exit(74);
}

/* A poison event that kills its consumer, restarted again and again, ends
 * in the dead-letter topic after max_attempts handler calls - alone: the
 * events fetched with it and never handled are not charged. */
START_TEST(crash_looping_poison_dead_letters_only_itself)
{
    enum { N = 300, POISON = 10, MAX_ATTEMPTS = 3, MAX_RUNS = 12 };
    char topic[128], journal_path[] = "/tmp/evbus-crash-XXXXXX";
    unique_topic(topic, sizeof topic, "crash");
    int journal = mkstemp(journal_path);
    ck_assert_int_ge(journal, 0);
    evbus_t *bus = open_bus();
    /* The group must exist before the events for non-history backends. */
    collector_t none;
    collector_init(&none, COLLECT_ACK);
    char dlq[160];
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "crashers",
                                          collector_handler, &none));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "watch",
                                          collector_handler, &none));
    for (int i = 0; i < N; i++) {
        evbus_event_t *ev = make_event(i);
        ck_assert_int_eq(evbus_event_set_ext(ev, "partitionkey", "k"),
                         EVBUS_OK);
        if (i == POISON)
            ck_assert_int_eq(evbus_event_set_id(ev, "the-poison"), EVBUS_OK);
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
        evbus_event_free(ev);
    }
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
    evbus_close(bus); /* leaves the group without having fetched */
    collector_free(&none);

    int runs = 0, status = 0;
    for (; runs < MAX_RUNS; runs++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            crash_child(conf_url, topic, journal);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
                                            WEXITSTATUS(status) == 3),
                      "consumer %d ended with status 0x%x", runs, status);
        if (WEXITSTATUS(status) == 0)
            break;
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "still crashing after %d runs", runs);
    ck_assert_int_eq(runs, MAX_ATTEMPTS); /* one crash per attempt */

    /* The journal: every event handled, the poison exactly MAX_ATTEMPTS
     * times, numbered 1..MAX_ATTEMPTS across the crashes. */
    FILE *f = fdopen(journal, "r");
    ck_assert_ptr_nonnull(f);
    rewind(f);
    static int handled[N];
    memset(handled, 0, sizeof handled);
    int seq, attempt, poison_calls = 0, max_seen = 0;
    while (fscanf(f, "%d %d", &seq, &attempt) == 2) {
        ck_assert(seq >= 0 && seq < N);
        handled[seq]++;
        if (seq == POISON) {
            poison_calls++;
            ck_assert_int_eq(attempt, poison_calls);
        }
        if (attempt > max_seen && seq != POISON)
            max_seen = attempt;
    }
    fclose(f);
    unlink(journal_path);
    ck_assert_int_eq(poison_calls, MAX_ATTEMPTS);
    for (int i = 0; i < N; i++)
        ck_assert_msg(handled[i] >= 1, "event %d never handled", i);

    /* The dead-letter topic holds the poison alone (a marker published
     * after the consumers ended closes the read; one partition key keeps
     * them in order on every backend). */
    bus = open_bus();
    collector_t d;
    collector_init(&d, COLLECT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "dlqcheck",
                                          collector_handler, &d));
    evbus_event_t *marker = make_event(-1);
    ck_assert_int_eq(evbus_event_set_ext(marker, "partitionkey", "k"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, dlq, marker), EVBUS_OK);
    evbus_t *buses[] = {bus, NULL};
    int got = poll_until(buses, &d, acked, 2, HANG_MS);
    pthread_mutex_lock(&d.mu);
    ck_assert_msg(got == 2 && strset_has(&d.ids, evbus_event_id(marker)) &&
                      strset_has(&d.ids, "the-poison"),
                  "dead-letter topic: %d events, the poison %s", got,
                  strset_has(&d.ids, "the-poison") ? "among them" : "missing");
    pthread_mutex_unlock(&d.mu);
    evbus_event_free(marker);
    evbus_close(bus);
    collector_free(&d);
}
END_TEST

/* ------------------------------------------------------------ elapsed */

typedef struct {
    pthread_mutex_t mu;
    int calls;
    char reason[512];
    char attempts[16];
    int dead;
} retry_forever_t;

static evbus_result_t always_retry(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    retry_forever_t *r = opaque;
    pthread_mutex_lock(&r->mu);
    r->calls++;
    pthread_mutex_unlock(&r->mu);
    return EVBUS_RETRY;
}

static evbus_result_t note_dead_letter(const evbus_event_t *ev, void *opaque)
{
    retry_forever_t *r = opaque;
    pthread_mutex_lock(&r->mu);
    const char *why = evbus_event_ext(ev, "dlqreason");
    const char *n = evbus_event_ext(ev, "dlqattempts");
    snprintf(r->reason, sizeof r->reason, "%s", why ? why : "");
    snprintf(r->attempts, sizeof r->attempts, "%s", n ? n : "");
    r->dead++;
    pthread_mutex_unlock(&r->mu);
    return EVBUS_ACK;
}

/* max_attempts 0 (no limit) with max_elapsed_ms: the event is
 * dead-lettered once retrying it has taken longer than that, whether the
 * core or the broker runs the retries. */
START_TEST(max_elapsed_dead_letters_on_every_backend)
{
    char topic[128], dlq[160];
    unique_topic(topic, sizeof topic, "elapsed");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    evbus_t *bus = open_bus();
    retry_forever_t r = {PTHREAD_MUTEX_INITIALIZER, 0, "", "", 0};
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 0);
    retry.max_elapsed_ms = 400;
    ck_assert_ptr_nonnull(evbus_subscribe_opts(bus, topic, "g", &o,
                                               always_retry, &r, NULL, 0));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "ops", note_dead_letter,
                                          &r));
    evbus_event_t *ev = make_event(1);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    for (uint64_t guard = now_ms() + HANG_MS; now_ms() < guard;) {
        pthread_mutex_lock(&r.mu);
        int dead = r.dead;
        pthread_mutex_unlock(&r.mu);
        if (dead)
            break;
        evbus_poll(bus, 50);
    }
    pthread_mutex_lock(&r.mu);
    ck_assert_msg(r.dead == 1, "not dead-lettered after %d calls", r.calls);
    ck_assert_msg(strstr(r.reason, "elapsed"), "reason: %s", r.reason);
    ck_assert_int_ge(r.calls, 2);
    ck_assert_int_eq(atoi(r.attempts), r.calls);
    pthread_mutex_unlock(&r.mu);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------------ dlq failure */

/* A dead-letter write the broker refuses for good is tried once, counted
 * and logged, and the event is parked - not retried in a loop. */
START_TEST(rejected_dead_letter_is_parked)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "dlqfail");
    char url[2048];
    if (strncmp(conf_url, "faulty+", 7) == 0)
        snprintf(url, sizeof url, "%s", conf_url_with("reject_dlq=1"));
    else
        snprintf(url, sizeof url, "faulty+%s", conf_url_with("reject_dlq=1"));
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s: %s", url, err);
    collector_t c;
    collector_init(&c, COLLECT_DROP);
    evbus_sub_opts_t o;
    evbus_retry_policy_t retry;
    fast_retry_opts(&o, &retry, 3);
    retry.max_ms = 60000; /* parked a minute: longer than this case */
    evbus_sub_t *sub = evbus_subscribe_opts(bus, topic, "g", &o,
                                            collector_handler, &c, NULL, 0);
    ck_assert_ptr_nonnull(sub);
    evbus_event_t *ev = make_event(1);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    evbus_sub_metrics_t m;
    evbus_sub_metrics_init(&m);
    for (uint64_t guard = now_ms() + HANG_MS;
         m.dlq_failed == 0 && now_ms() < guard;) {
        evbus_poll(bus, 50);
        ck_assert_int_eq(evbus_sub_metrics_get(sub, &m), EVBUS_OK);
    }
    ck_assert_int_eq(m.dlq_failed, 1);
    ck_assert_int_eq(m.dead_lettered, 0);
    evbus_metrics_t bm;
    evbus_metrics_init(&bm);
    ck_assert_int_eq(evbus_metrics_get(bus, &bm), EVBUS_OK);
    /* the refusal is permanent: one dead-letter write, then parked (other
     * faults the URL under test injects may add to the count) */
    ck_assert_uint_ge(bm.faults_injected, 1);
    if (strncmp(conf_url, "faulty+", 7) != 0)
        ck_assert_int_eq(bm.faults_injected, 1);
    ck_assert_int_ge(collector_calls(&c), 1);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

/* ------------------------------------------------------------ the role */

typedef struct {
    evbus_t *bus;
    const char *topic;
    atomic_bool done;
    int rounds;
} churn_t;

static evbus_result_t ack_all(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (void)opaque;
    return EVBUS_ACK;
}

static void *churn(void *arg)
{
    churn_t *c = arg;
    char topic[160];
    for (int i = 0; i < c->rounds; i++) {
        snprintf(topic, sizeof topic, "%s.c%d", c->topic, i % 3);
        evbus_sub_t *s = evbus_subscribe(c->bus, topic, "churn", ack_all, NULL);
        if (s)
            evbus_unsubscribe(s);
    }
    atomic_store(&c->done, true);
    return NULL;
}

/* Subscribing and unsubscribing from another thread never makes the
 * polling thread's evbus_poll fail with EVBUS_EBUSY. */
START_TEST(unsubscribe_never_disturbs_the_poller)
{
    char topic[128];
    unique_topic(topic, sizeof topic, "churn");
    evbus_t *bus = open_bus();
    collector_t c;
    collector_init(&c, COLLECT_ACK);
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", collector_handler,
                                          &c));
    churn_t ch = {bus, topic, false, 60};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, churn, &ch), 0);
    long polls = 0, busy = 0;
    while (!atomic_load(&ch.done)) {
        int rc = evbus_poll(bus, 1);
        polls++;
        if (rc == EVBUS_EBUSY)
            busy++;
        else
            ck_assert_msg(rc >= 0, "evbus_poll: %s", evbus_strerror(rc));
    }
    pthread_join(th, NULL);
    ck_assert_msg(busy == 0, "%ld of %ld polls answered EVBUS_EBUSY", busy,
                  polls);
    evbus_close(bus);
    collector_free(&c);
}
END_TEST

/* ------------------------------------------------------------ back-pressure */

static void count_outcome(const evbus_event_t *ev, int err, void *opaque)
{
    (void)ev;
    (void)err;
    atomic_fetch_add((atomic_int *)opaque, 1);
}

/* max_pending unconfirmed publishes - a callback not yet run counts - and
 * the next publish_async answers EVBUS_EAGAIN, on every backend alike. */
START_TEST(backpressure_is_one_rule)
{
    enum { BOUND = 8 };
    char topic[128], err[512];
    unique_topic(topic, sizeof topic, "bound");
    evbus_t *bus = evbus_open(conf_url_with("max_pending=8&publish_wait_ms=20"),
                              err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    atomic_int outcomes = 0;
    evbus_event_t *ev = make_event(1);
    for (int i = 0; i < BOUND; i++)
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, count_outcome,
                                             &outcomes),
                         EVBUS_OK);
    /* Nobody ran the callbacks: no room, even after the bounded wait. */
    ck_assert_int_eq(evbus_publish_async(bus, topic, ev, count_outcome,
                                         &outcomes),
                     EVBUS_EAGAIN);
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
    ck_assert_int_eq(atomic_load(&outcomes), BOUND);
    ck_assert_int_eq(evbus_publish_async(bus, topic, ev, count_outcome,
                                         &outcomes),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_flush(bus, HANG_MS), EVBUS_OK);
    evbus_metrics_t m;
    evbus_metrics_init(&m);
    ck_assert_int_eq(evbus_metrics_get(bus, &m), EVBUS_OK);
    ck_assert_int_eq(m.publish_eagain, 1);
    ck_assert_int_eq(m.published, BOUND + 1);
    evbus_event_free(ev);
    evbus_close(bus);
}
END_TEST

/* ------------------------------------------------------------ the cases */

size_t contract_cases(conf_case_t *out, size_t max)
{
    const conf_case_t cases[] = {
        {"stop_with_backlog_returns_after_the_running_handler",
         stop_with_backlog_returns_after_the_running_handler, 0, 0, NULL, 0},
        {"crash_looping_poison_dead_letters_only_itself",
         crash_looping_poison_dead_letters_only_itself,
         EVBUS_FEAT_PERSISTENT | EVBUS_FEAT_CROSS_PROCESS, 0,
         "events do not outlive a crashed process", 0},
        {"max_elapsed_dead_letters_on_every_backend",
         max_elapsed_dead_letters_on_every_backend, 0, 0, NULL, 0},
        {"rejected_dead_letter_is_parked", rejected_dead_letter_is_parked, 0, 0,
         NULL, 0},
        {"unsubscribe_never_disturbs_the_poller",
         unsubscribe_never_disturbs_the_poller, 0, 0, NULL, 0},
        {"backpressure_is_one_rule", backpressure_is_one_rule, 0, 0, NULL, 0},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = cases[i];
    return n < max ? n : max;
}

