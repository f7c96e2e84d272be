/*
 * redis:// backend tests against a real redis-server started per test:
 * URL and connection errors, AUTH (requirepass and ACL users), SELECT,
 * the Dapr pubsub.redis entry layout in both directions, deleted pending
 * entries, recorded attempts driving dead letters, re-reading our own pending
 * entries, failures while the server is away, and that a member keeps the
 * messages it holds for a retry.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdatomic.h>

#include "test_util.h"

static test_redis_t srv;

static void start_plain(void)
{
    ck_assert_msg(test_redis_start(&srv, NULL) == 0, "redis-server start");
}

static void stop_srv(void)
{
    test_redis_stop(&srv);
}

static evbus_t *open_ok(const char *suffix)
{
    char url[256], err[512] = "";
    evbus_t *bus = evbus_open(tu_url(url, sizeof url, &srv, suffix), err,
                              sizeof err);
    ck_assert_msg(bus != NULL, "evbus_open(%s): %s", url, err);
    return bus;
}

static evbus_event_t *make_event(const char *id)
{
    evbus_event_t *ev = evbus_event_new("test.redis.event", "/tests/redis");
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(evbus_event_set_id(ev, id), EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_data_json(ev, "{\"n\":1}"), EVBUS_OK);
    return ev;
}

/* ------------------------------------------------------------ collector */

typedef struct {
    volatile int calls;
    int max_attempt;
    int answer; /* EVBUS_ACK unless changed */
    char last_id[128];
    evbus_event_t *last;
    evbus_event_t *first[4]; /* copies of the first events seen */
} seen_t;

static evbus_result_t on_event(const evbus_event_t *ev, void *opaque)
{
    seen_t *s = opaque;
    s->calls++;
    if (evbus_delivery_attempt() > s->max_attempt)
        s->max_attempt = evbus_delivery_attempt();
    snprintf(s->last_id, sizeof s->last_id, "%s", evbus_event_id(ev));
    evbus_event_free(s->last);
    s->last = evbus_event_clone(ev);
    if (s->calls <= 4)
        s->first[s->calls - 1] = evbus_event_clone(ev);
    return (evbus_result_t)s->answer;
}

static void seen_free(seen_t *s)
{
    for (int i = 0; i < 4; i++)
        evbus_event_free(s->first[i]);
    evbus_event_free(s->last);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ errors */

START_TEST(open_reports_bad_host_and_urls)
{
    char err[512];
    evbus_t *bus = evbus_open("redis://no-such-host.invalid:6379", err,
                              sizeof err);
    ck_assert_ptr_null(bus);
    ck_assert_msg(strstr(err, "cannot connect to redis at "
                              "no-such-host.invalid:6379"),
                  "message: %s", err);

    /* A port where nothing listens. */
    test_redis_t tmp;
    ck_assert_int_eq(test_redis_start(&tmp, NULL), 0);
    int port = tmp.port;
    test_redis_stop(&tmp);
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d?connect_timeout_ms=500",
             port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "cannot connect") && strstr(err, "refused"),
                  "message: %s", err);

    ck_assert_ptr_null(evbus_open("redis://127.0.0.1:1/notadb", err,
                                  sizeof err));
    ck_assert_msg(strstr(err, "not a database number"), "message: %s", err);
    ck_assert_ptr_null(evbus_open("redis://someone@127.0.0.1:1", err,
                                  sizeof err));
    ck_assert_msg(strstr(err, "no password"), "message: %s", err);
    ck_assert_ptr_null(evbus_open("redis://127.0.0.1:1?batch=0", err,
                                  sizeof err));
    ck_assert_msg(strstr(err, "batch"), "message: %s", err);
}
END_TEST

START_TEST(unknown_option_is_refused)
{
    start_plain();
    char url[256], err[512] = "";
    ck_assert_ptr_null(evbus_open(tu_url(url, sizeof url, &srv,
                                         "?blok_ms=5"),
                                  err, sizeof err));
    ck_assert_msg(strstr(err, "blok_ms"), "message: %s", err);
    stop_srv();
}
END_TEST

/* ------------------------------------------------------------ AUTH */

START_TEST(auth_with_password)
{
    const char *extra[] = {"--requirepass", "s3cret", NULL};
    ck_assert_int_eq(test_redis_start(&srv, extra), 0);
    char url[256], err[512];
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d", srv.port);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_int_eq(evbus_health(bus, err, sizeof err), EVBUS_OK);
    evbus_event_t *ev = make_event("auth-1");
    ck_assert_int_eq(evbus_publish(bus, "auth.topic", ev), EVBUS_OK);
    evbus_event_free(ev);
    evbus_close(bus);

    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", srv.port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "AUTH failed") && strstr(err, "WRONGPASS"),
                  "message: %s", err);

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "NOAUTH") && strstr(err, "password"),
                  "message: %s", err);
    stop_srv();
}
END_TEST

START_TEST(auth_with_acl_user)
{
    start_plain();
    redisContext *c = tu_raw(&srv, NULL);
    ck_assert_ptr_nonnull(c);
    redisReply *r = redisCommand(c, "ACL SETUSER app on >app-pw ~* &* +@all");
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = redisCommand(c, "ACL SETUSER reader on >read-pw ~* &* +@read +ping");
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);

    char url[256], err[512];
    snprintf(url, sizeof url, "redis://app:app-pw@127.0.0.1:%d", srv.port);
    evbus_t *bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    evbus_event_t *ev = make_event("acl-1");
    ck_assert_int_eq(evbus_publish(bus, "acl.topic", ev), EVBUS_OK);
    evbus_close(bus);

    snprintf(url, sizeof url, "redis://app:nope@127.0.0.1:%d", srv.port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "AUTH as user 'app' failed") &&
                      strstr(err, "WRONGPASS"),
                  "message: %s", err);

    /* Authenticated but not allowed to write: a clear EAUTH on publish. */
    snprintf(url, sizeof url, "redis://reader:read-pw@127.0.0.1:%d", srv.port);
    bus = evbus_open(url, err, sizeof err);
    ck_assert_msg(bus != NULL, "%s", err);
    ck_assert_int_eq(evbus_publish(bus, "acl.topic", ev), EVBUS_EAUTH);
    evbus_event_free(ev);
    evbus_close(bus);
    stop_srv();
}
END_TEST

START_TEST(select_db)
{
    start_plain();
    evbus_t *bus = open_ok("/3");
    evbus_event_t *ev = make_event("db-1");
    ck_assert_int_eq(evbus_publish(bus, "db.topic", ev), EVBUS_OK);
    evbus_event_free(ev);
    evbus_close(bus);
    redisContext *c = tu_raw(&srv, NULL);
    ck_assert_int_eq(tu_int(c, "XLEN db.topic"), 0);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    ck_assert_int_eq(tu_int(c, "XLEN db.topic"), 1);
    redisFree(c);

    char url[256], err[512];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/99", srv.port);
    ck_assert_ptr_null(evbus_open(url, err, sizeof err));
    ck_assert_msg(strstr(err, "SELECT 99"), "message: %s", err);
    stop_srv();
}
END_TEST

/* ------------------------------------------------------------ Dapr */

static cJSON *load_json(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/dapr/%s", TESTDATA_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    ck_assert_msg(j != NULL, "bad JSON in %s", path);
    return j;
}

/* XADDs a recorded Dapr entry's fields as they are, like daprd would. */
static void xadd_recorded(redisContext *c, const char *topic, cJSON *entry)
{
    cJSON *fields = cJSON_GetObjectItem(entry, "fields");
    const char *argv[16];
    size_t n = 0;
    argv[n++] = "XADD";
    argv[n++] = topic;
    argv[n++] = "MAXLEN";
    argv[n++] = "~";
    argv[n++] = "10000";
    argv[n++] = "*";
    cJSON *pair;
    cJSON_ArrayForEach(pair, fields)
    {
        argv[n++] = cJSON_GetArrayItem(pair, 0)->valuestring;
        argv[n++] = cJSON_GetArrayItem(pair, 1)->valuestring;
    }
    redisReply *r = redisCommandArgv(c, (int)n, argv, NULL);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

START_TEST(we_read_what_dapr_writes)
{
    start_plain();
    cJSON *json_entry = load_json("redis-entry.json");
    cJSON *text_entry = load_json("redis-entry-text.json");
    char topic[128];
    tu_topic(topic, sizeof topic, "from-dapr");
    redisContext *c = tu_raw(&srv, NULL);
    xadd_recorded(c, topic, json_entry);
    xadd_recorded(c, topic, text_entry);

    evbus_t *bus = open_ok(NULL);
    seen_t s = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "notify", on_event, &s));
    ck_assert_int_eq(tu_poll_until(bus, &s.calls, 2, 5000), 2);
    evbus_event_t **got = s.first;

    evbus_event_t *e = got[0];
    ck_assert_str_eq(evbus_event_id(e), "5929aaac-a5e2-4ca1-859c-edfe73f11565");
    ck_assert_str_eq(evbus_event_source(e), "checkout");
    ck_assert_str_eq(evbus_event_type(e), "com.dapr.event.sent");
    ck_assert_str_eq(evbus_event_datacontenttype(e), "application/json");
    cJSON *data = cJSON_ParseWithLength(evbus_event_data(e),
                                        evbus_event_data_len(e));
    ck_assert_ptr_nonnull(data);
    ck_assert_str_eq(cJSON_GetObjectItem(data, "orderId")->valuestring, "100");
    ck_assert_int_eq(cJSON_GetObjectItem(data, "items")->valueint, 3);
    cJSON_Delete(data);
    ck_assert_str_eq(evbus_event_ext(e, "traceparent"),
                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    ck_assert_str_eq(evbus_event_ext(e, "tracestate"), "");
    ck_assert_str_eq(evbus_event_ext(e, "pubsubname"), "pubsub");
    ck_assert_str_eq(evbus_event_ext(e, "topic"), "orders");

    e = got[1];
    ck_assert_str_eq(evbus_event_id(e), "0b6a3d0e-9c1e-4c59-9a43-5e3f4f0b7a11");
    ck_assert_str_eq(evbus_event_datacontenttype(e), "text/plain");
    ck_assert_uint_eq(evbus_event_data_len(e), strlen("hello from dapr"));
    ck_assert(memcmp(evbus_event_data(e), "hello from dapr", 15) == 0);
    ck_assert_str_eq(evbus_event_ext(e, "expiration"), "2099-01-01T00:00:00Z");

    /* Both acked: nothing pending for the group. */
    evbus_poll(bus, 300);
    redisReply *r = redisCommand(c, "XPENDING %s notify", topic);
    ck_assert_int_eq(r->element[0]->integer, 0);
    freeReplyObject(r);
    seen_free(&s);
    evbus_close(bus);
    redisFree(c);
    cJSON_Delete(json_entry);
    cJSON_Delete(text_entry);
    stop_srv();
}
END_TEST

START_TEST(dapr_reads_what_we_write)
{
    start_plain();
    cJSON *recorded = load_json("redis-entry.json");
    char topic[128];
    tu_topic(topic, sizeof topic, "to-dapr");
    evbus_t *bus = open_ok(NULL);
    evbus_event_t *ev = make_event("to-dapr-1");
    ck_assert_int_eq(evbus_event_set_ext(ev, "traceparent",
                                         "00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                         "00f067aa0ba902b7-01"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL), EVBUS_OK);
    ck_assert_int_eq(evbus_flush(bus, 5000), EVBUS_OK);
    evbus_close(bus);

    /* Read it the way daprd's pubsub.redis does: a consumer group named by
     * consumerID, XREADGROUP, the CloudEvent in field "data". */
    redisContext *c = tu_raw(&srv, NULL);
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s daprapp 0", topic));
    redisReply *r = redisCommand(
        c, "XREADGROUP GROUP daprapp daprapp COUNT 10 STREAMS %s >", topic);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    redisReply *entries = r->element[0]->element[1];
    ck_assert_uint_eq(entries->elements, 2);
    cJSON *want_fields = cJSON_GetObjectItem(recorded, "fields");
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *f = entries->element[i]->element[1];
        /* Same field names in the same order as Dapr writes them. */
        ck_assert_uint_eq(f->elements,
                          2 * (size_t)cJSON_GetArraySize(want_fields));
        for (int k = 0; k < cJSON_GetArraySize(want_fields); k++)
            ck_assert_str_eq(
                f->element[2 * k]->str,
                cJSON_GetArrayItem(cJSON_GetArrayItem(want_fields, k), 0)
                    ->valuestring);
        cJSON *meta = cJSON_Parse(f->element[3]->str);
        ck_assert_msg(meta && cJSON_IsObject(meta), "metadata is a JSON object");
        cJSON_Delete(meta);
        cJSON *ce = cJSON_Parse(f->element[1]->str);
        ck_assert_ptr_nonnull(ce);
        ck_assert_str_eq(cJSON_GetObjectItem(ce, "specversion")->valuestring,
                         "1.0");
        ck_assert_str_eq(cJSON_GetObjectItem(ce, "id")->valuestring,
                         "to-dapr-1");
        ck_assert_str_eq(cJSON_GetObjectItem(ce, "type")->valuestring,
                         "test.redis.event");
        ck_assert_str_eq(cJSON_GetObjectItem(ce, "source")->valuestring,
                         "/tests/redis");
        ck_assert_str_eq(cJSON_GetObjectItem(ce, "traceparent")->valuestring,
                         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"
                         "01");
        ck_assert_int_eq(
            cJSON_GetObjectItem(cJSON_GetObjectItem(ce, "data"), "n")->valueint,
            1);
        cJSON_Delete(ce);
    }
    freeReplyObject(r);
    redisFree(c);
    evbus_event_free(ev);
    cJSON_Delete(recorded);
    stop_srv();
}
END_TEST

/* ------------------------------------------------------------ pending */

/* Makes an entry pending for consumer `who` in group g, as if a member
 * read it and died. Returns its id in idbuf. */
static void make_pending(redisContext *c, const char *topic, const char *who,
                         const char *payload, char *idbuf, size_t n)
{
    redisReply *r = redisCommand(c, "XADD %s * data %s metadata {}", topic,
                                 payload);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    snprintf(idbuf, n, "%s", r->str);
    freeReplyObject(r);
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0 MKSTREAM", topic));
    r = redisCommand(c, "XREADGROUP GROUP g %s COUNT 100 STREAMS %s >", who,
                     topic);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    freeReplyObject(r);
}

static char *event_json(const char *id)
{
    evbus_event_t *ev = make_event(id);
    char *json = evbus_event_to_json(ev, NULL);
    evbus_event_free(ev);
    return json;
}

START_TEST(own_pending_entries_are_read_first)
{
    start_plain();
    char topic[128], id[64];
    tu_topic(topic, sizeof topic, "pending");
    redisContext *c = tu_raw(&srv, NULL);
    char *json = event_json("pending-1");
    make_pending(c, topic, "member-a", json, id, sizeof id);
    free(json);
    /* The same member comes back (fixed consumer name): it gets its own
     * pending entry again. A handler saw it once before (the attempt hash
     * says so), so this is attempt 2. */
    ck_assert_int_eq(
        tu_int(c, "HSET evbus:attempts:{%s}:g %s 1:0:0", topic, id), 1);
    evbus_t *bus = open_ok("?consumer=member-a");
    seen_t s = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", on_event, &s));
    ck_assert_int_eq(tu_poll_until(bus, &s.calls, 1, 5000), 1);
    ck_assert_str_eq(s.last_id, "pending-1");
    ck_assert_int_eq(s.max_attempt, 2);
    evbus_poll(bus, 300);
    redisReply *r = redisCommand(c, "XPENDING %s g", topic);
    ck_assert_int_eq(r->element[0]->integer, 0);
    freeReplyObject(r);
    /* The ack took the attempt record with it. */
    ck_assert_int_eq(tu_int(c, "EXISTS evbus:attempts:{%s}:g", topic), 0);
    seen_free(&s);
    evbus_close(bus);
    redisFree(c);
    stop_srv();
}
END_TEST

START_TEST(deleted_pending_entries_are_acked)
{
    start_plain();
    char topic[128], id[64];
    tu_topic(topic, sizeof topic, "deleted");
    redisContext *c = tu_raw(&srv, NULL);
    char *json = event_json("gone-1");
    make_pending(c, topic, "member-b", json, id, sizeof id);
    free(json);
    ck_assert_int_eq(tu_int(c, "XDEL %s %s", topic, id), 1);

    evbus_t *bus = open_ok("?consumer=member-b");
    seen_t s = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", on_event, &s));
    evbus_event_t *ev = make_event("after-1");
    ck_assert_int_eq(evbus_publish(bus, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_int_eq(tu_poll_until(bus, &s.calls, 1, 5000), 1);
    ck_assert_str_eq(s.last_id, "after-1");
    evbus_poll(bus, 300);
    ck_assert_int_eq(s.calls, 1);
    redisReply *r = redisCommand(c, "XPENDING %s g", topic);
    ck_assert_int_eq(r->element[0]->integer, 0);
    freeReplyObject(r);
    seen_free(&s);
    evbus_close(bus);
    redisFree(c);
    stop_srv();
}
END_TEST

typedef struct {
    volatile int calls;
    char attempts[32];
    char reason[256];
} dlq_seen_t;

static evbus_result_t on_dead_letter(const evbus_event_t *ev, void *opaque)
{
    dlq_seen_t *d = opaque;
    d->calls++;
    const char *a = evbus_event_ext(ev, "dlqattempts");
    const char *why = evbus_event_ext(ev, "dlqreason");
    snprintf(d->attempts, sizeof d->attempts, "%s", a ? a : "");
    snprintf(d->reason, sizeof d->reason, "%s", why ? why : "");
    return EVBUS_ACK;
}

START_TEST(poison_from_a_dead_member_goes_to_dlq)
{
    start_plain();
    char topic[128], dlq[160], id[64];
    tu_topic(topic, sizeof topic, "poison");
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    redisContext *c = tu_raw(&srv, NULL);
    char *json = event_json("poison-1");
    make_pending(c, topic, "crashy", json, id, sizeof id);
    free(json);
    /* It crashed the members that took it 7 times already: 7 handler
     * calls were recorded. */
    freeReplyObject(
        redisCommand(c, "XCLAIM %s g crashy 0 %s RETRYCOUNT 7", topic, id));
    ck_assert_int_eq(
        tu_int(c, "HSET evbus:attempts:{%s}:g %s 7:0:0", topic, id), 1);

    evbus_t *bus = open_ok("?claim_timeout_ms=100");
    seen_t s = {0};
    dlq_seen_t d = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(bus, topic, "g", on_event, &s));
    ck_assert_ptr_nonnull(evbus_subscribe(bus, dlq, "ops", on_dead_letter, &d));
    ck_assert_int_eq(tu_poll_until(bus, &d.calls, 1, 5000), 1);
    ck_assert_int_eq(s.calls, 0); /* never handed to the handler again */
    ck_assert_msg(strstr(d.reason, "already called"), "reason: %s", d.reason);
    ck_assert_int_ge(atoi(d.attempts), 5);
    evbus_poll(bus, 300);
    redisReply *r = redisCommand(c, "XPENDING %s g", topic);
    ck_assert_int_eq(r->element[0]->integer, 0);
    freeReplyObject(r);
    evbus_close(bus);
    seen_free(&s);
    redisFree(c);
    stop_srv();
}
END_TEST

/* A message the core holds for a long retry backoff stays with its member:
 * another member with a short claim timeout must not take it. */
typedef struct {
    volatile int calls;
    int attempts_seen[8];
} retry_once_t;

static evbus_result_t retry_once(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    retry_once_t *r = opaque;
    if (r->calls < 8)
        r->attempts_seen[r->calls] = evbus_delivery_attempt();
    r->calls++;
    return evbus_delivery_attempt() == 1 ? EVBUS_RETRY : EVBUS_ACK;
}

START_TEST(held_messages_are_not_taken_by_others)
{
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "held");
    evbus_t *a = open_ok("?claim_timeout_ms=200");
    evbus_t *b = open_ok("?claim_timeout_ms=200");
    retry_once_t ra = {0};
    seen_t sb = {0};
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 1500; /* far beyond the claim timeout */
    retry.max_ms = 1500;
    retry.jitter = EVBUS_JITTER_NONE;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(a, topic, "g", &o, retry_once, &ra, NULL, 0));
    evbus_event_t *ev = make_event("held-1");
    ck_assert_int_eq(evbus_publish(a, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_int_eq(tu_poll_until(a, &ra.calls, 1, 5000), 1);
    /* Only now does b join, so it could only get the event by a claim. */
    ck_assert_ptr_nonnull(evbus_subscribe(b, topic, "g", on_event, &sb));
    long long end = tu_now_ms() + 2500;
    while (tu_now_ms() < end && ra.calls < 2) {
        evbus_poll(a, 20);
        evbus_poll(b, 20);
    }
    ck_assert_int_eq(ra.calls, 2);
    ck_assert_int_eq(ra.attempts_seen[1], 2);
    end = tu_now_ms() + 500;
    while (tu_now_ms() < end) {
        evbus_poll(a, 20);
        evbus_poll(b, 20);
    }
    ck_assert_int_eq(sb.calls, 0);
    evbus_close(a);
    evbus_close(b);
    seen_free(&sb);
    stop_srv();
}
END_TEST

/* A member closing while the core holds an event for a retry gives it
 * back: another member gets it soon, long before the claim timeout. */
static evbus_result_t always_retry(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(volatile int *)opaque)++;
    return EVBUS_RETRY;
}

START_TEST(closing_member_releases_held_events)
{
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "release");
    evbus_t *a = open_ok(NULL); /* default claim timeout: 30 s */
    volatile int a_calls = 0;
    evbus_sub_opts_t o;
    evbus_sub_opts_init(&o);
    evbus_retry_policy_t retry;
    evbus_retry_policy_init(&retry);
    retry.initial_ms = 60000;
    retry.max_ms = 60000;
    retry.jitter = EVBUS_JITTER_NONE;
    o.retry = &retry;
    ck_assert_ptr_nonnull(
        evbus_subscribe_opts(a, topic, "g", &o, always_retry, (void *)&a_calls, NULL, 0));
    evbus_event_t *ev = make_event("released-1");
    ck_assert_int_eq(evbus_publish(a, topic, ev), EVBUS_OK);
    evbus_event_free(ev);
    ck_assert_int_eq(tu_poll_until(a, (int *)&a_calls, 1, 5000), 1);
    evbus_t *b = open_ok(NULL);
    seen_t s = {0};
    ck_assert_ptr_nonnull(evbus_subscribe(b, topic, "g", on_event, &s));
    evbus_poll(b, 300);
    ck_assert_int_eq(s.calls, 0); /* a still holds it */
    long long t0 = tu_now_ms();
    evbus_close(a); /* gives it back */
    ck_assert_int_eq(tu_poll_until(b, &s.calls, 1, 10000), 1);
    ck_assert_int_lt(tu_now_ms() - t0, 5000);
    ck_assert_str_eq(s.last_id, "released-1");
    evbus_close(b);
    seen_free(&s);
    stop_srv();
}
END_TEST

/* Unsubscribing while the fetcher is busy (its socket is shut down under
 * it) must never kill the process with SIGPIPE; SIGPIPE keeps its default
 * action here, as in an application that did not think about it. */
static evbus_result_t ack_all(const evbus_event_t *ev, void *opaque)
{
    (void)ev;
    (*(volatile int *)opaque)++;
    return EVBUS_ACK;
}

START_TEST(unsubscribe_while_busy_survives)
{
    signal(SIGPIPE, SIG_DFL);
    start_plain();
    char topic[128];
    tu_topic(topic, sizeof topic, "busy");
    evbus_t *bus = open_ok("?batch=50");
    evbus_event_t *ev = make_event("busy-1");
    for (int i = 0; i < 50000; i++)
        ck_assert_int_eq(evbus_publish_async(bus, topic, ev, NULL, NULL),
                         EVBUS_OK);
    ck_assert_int_eq(evbus_flush(bus, 10000), EVBUS_OK);
    evbus_event_free(ev);
    volatile int calls = 0;
    for (int round = 0; round < 60; round++) {
        char group[32];
        snprintf(group, sizeof group, "g%d", round % 3);
        evbus_sub_t *sub =
            evbus_subscribe(bus, topic, group, ack_all, (void *)&calls);
        ck_assert_ptr_nonnull(sub);
        /* Consume for a while so the fetcher is cycling, then stop. */
        long long until = tu_now_ms() + 10 + round % 7;
        while (tu_now_ms() < until)
            evbus_poll(bus, 1);
        ck_assert_int_eq(evbus_unsubscribe(sub), EVBUS_OK);
    }
    ck_assert_int_gt(calls, 0);
    evbus_close(bus);
    stop_srv();
}
END_TEST

/* ------------------------------------------------------------ outages */

typedef struct {
    atomic_int done, failed, ok;
} outcome_t;

static void on_outcome(const evbus_event_t *ev, int err, void *opaque)
{
    (void)ev;
    outcome_t *o = opaque;
    atomic_fetch_add(err == EVBUS_OK ? &o->ok : &o->failed, 1);
    atomic_fetch_add(&o->done, 1);
}

START_TEST(publishes_fail_while_server_is_away_and_resume)
{
    start_plain();
    evbus_t *bus = open_ok("?command_timeout_ms=500&reconnect_max_ms=200");
    evbus_event_t *ev = make_event("away-1");
    ck_assert_int_eq(evbus_publish(bus, "away", ev), EVBUS_OK);
    test_redis_kill(&srv);

    int rc = evbus_publish(bus, "away", ev);
    ck_assert_msg(rc == EVBUS_ECONN || rc == EVBUS_ETIMEDOUT, "rc %s",
                  evbus_err_name(rc));
    outcome_t out = {0};
    ck_assert_int_eq(evbus_publish_async(bus, "away", ev, on_outcome, &out),
                     EVBUS_OK);
    long long end = tu_now_ms() + 5000;
    while (atomic_load(&out.done) < 1 && tu_now_ms() < end)
        evbus_poll(bus, 50);
    ck_assert_int_eq(atomic_load(&out.failed), 1); /* reported, not lost */
    char err[256];
    ck_assert_int_ne(evbus_health(bus, err, sizeof err), EVBUS_OK);

    ck_assert_int_eq(test_redis_restart(&srv), 0);
    end = tu_now_ms() + 5000;
    do {
        rc = evbus_publish(bus, "away", ev);
        if (rc != EVBUS_OK)
            usleep(50000);
    } while (rc != EVBUS_OK && tu_now_ms() < end);
    ck_assert_int_eq(rc, EVBUS_OK);
    ck_assert_int_eq(evbus_publish_async(bus, "away", ev, on_outcome, &out),
                     EVBUS_OK);
    end = tu_now_ms() + 5000;
    while (atomic_load(&out.done) < 2 && tu_now_ms() < end)
        evbus_poll(bus, 50);
    ck_assert_int_eq(atomic_load(&out.ok), 1);
    ck_assert_int_eq(evbus_health(bus, err, sizeof err), EVBUS_OK);
    evbus_event_free(ev);
    evbus_close(bus);
    redisContext *c = tu_raw(&srv, NULL);
    ck_assert_int_eq(tu_int(c, "XLEN away"), 3);
    redisFree(c);
    stop_srv();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, open_reports_bad_host_and_urls);
    tcase_add_test(tc, unknown_option_is_refused);
    tcase_add_test(tc, auth_with_password);
    tcase_add_test(tc, auth_with_acl_user);
    tcase_add_test(tc, select_db);
    tcase_add_test(tc, we_read_what_dapr_writes);
    tcase_add_test(tc, dapr_reads_what_we_write);
    tcase_add_test(tc, own_pending_entries_are_read_first);
    tcase_add_test(tc, deleted_pending_entries_are_acked);
    tcase_add_test(tc, poison_from_a_dead_member_goes_to_dlq);
    tcase_add_test(tc, held_messages_are_not_taken_by_others);
    tcase_add_test(tc, closing_member_releases_held_events);
    tcase_add_test(tc, unsubscribe_while_busy_survives);
    tcase_add_test(tc, publishes_fail_while_server_is_away_and_resume);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
