/*
 * The saga API around the state machine: what definitions, options and
 * starts refuse, command data from templates and callbacks, local steps
 * inside the orchestrator's transaction, merge callbacks and the data size
 * limit, cleaned reasons, and the read-only inspection calls.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "tmpdir.h"

#define SUCCESS EVBUS_SAGA_SUCCESS
#define FAILURE EVBUS_SAGA_FAILURE

static harness_t h;

static void setup(void)
{
    h_open(&h, NULL);
    sql(h.db, "CREATE TABLE holds(saga TEXT PRIMARY KEY, note TEXT)");
}

static void teardown(void)
{
    h_close(&h);
}

static int add(evbus_saga_def_t *d, evbus_saga_step_t *s, char *err)
{
    err[0] = 0;
    return evbus_saga_def_add_step(d, s, err, 256);
}

START_TEST(definitions_refuse_bad_steps)
{
    char err[256];
    ck_assert_ptr_null(evbus_saga_def_new("bad name", err, sizeof err));
    ck_assert_ptr_null(evbus_saga_def_new("", err, sizeof err));
    evbus_saga_def_t *d = evbus_saga_def_new("order", err, sizeof err);
    ck_assert_ptr_nonnull(d);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "pay";
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    ck_assert_msg(strstr(err, "no action") != NULL, "%s", err);
    s.topic = "has space";
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    s.topic = "payment.charge";
    s.template_json = "[1]";
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    ck_assert_msg(strstr(err, "template_json") != NULL, "%s", err);
    s.template_json = "{}";
    s.build = (evbus_saga_build_fn)1;
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    s.build = NULL;
    s.comp_type = "x.y.z";
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    ck_assert_msg(strstr(err, "without comp_topic") != NULL, "%s", err);
    s.comp_type = NULL;
    s.deadline_ms = -1;
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    s.deadline_ms = 0;
    s.comp_timeout_ms = 0;
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    s.comp_timeout_ms = 1;
    s.struct_size = sizeof(size_t);
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    ck_assert_msg(strstr(err, "struct_size") != NULL, "%s", err);
    s.struct_size = sizeof s;
    s.local = (evbus_saga_local_fn)1;
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    s.local = NULL;
    ck_assert_int_eq(add(d, &s, err), EVBUS_OK);
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL); /* same name */
    ck_assert_msg(strstr(err, "exists") != NULL, "%s", err);
    char name[16];
    for (int i = 1; i < 64; i++) {
        snprintf(name, sizeof name, "s%d", i);
        s.name = name;
        ck_assert_int_eq(add(d, &s, err), EVBUS_OK);
    }
    s.name = "one-too-many";
    ck_assert_int_eq(add(d, &s, err), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_def_steps(d), 64);
    ck_assert_int_eq(evbus_saga_orch_register(h.orch, d, err, sizeof err),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_saga_orch_register(h.orch, d, err, sizeof err),
                     EVBUS_EINVAL);
    evbus_saga_def_free(d);
    d = evbus_saga_def_new("empty", err, sizeof err);
    ck_assert_int_eq(evbus_saga_orch_register(h.orch, d, err, sizeof err),
                     EVBUS_EINVAL);
    evbus_saga_def_free(d);
}
END_TEST

START_TEST(options_are_checked)
{
    char err[256];
    evbus_saga_opts_t o;
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    o.struct_size = 8;
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "struct_size") != NULL, "%s", err);
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    evbus_retry_policy_t rp;
    evbus_retry_policy_init(&rp);
    rp.max_attempts = 0;
    o.compensation_retry = &rp;
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "must end FAILED") != NULL, "%s", err);
    evbus_retry_policy_t raw = {.max_attempts = 3}; /* not initialised */
    o.compensation_retry = &raw;
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "evbus_retry_policy_init") != NULL, "%s", err);
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    o.reply_topic = "bad topic";
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    evbus_saga_opts_init(&o); /* subscribe without a bus */
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "bus is NULL") != NULL, "%s", err);
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "no/slash", NULL, err,
                                            sizeof err));
    /* a relay needs a file */
    sqlite3 *mem;
    ck_assert_int_eq(sqlite3_open(":memory:", &mem), SQLITE_OK);
    evbus_t *bus = evbus_open("memory://saga-opts", err, sizeof err);
    ck_assert_ptr_nonnull(bus);
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    ck_assert_ptr_null(evbus_saga_orch_open(mem, bus, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "database file") != NULL, "%s", err);
    evbus_close(bus);
    sqlite3_close(mem);
    /* a schema newer than this library's is refused */
    sql(h.db, "UPDATE evbus_saga_schema SET version = 99");
    evbus_saga_opts_init(&o);
    o.subscribe = 0;
    o.run_relay = 0;
    ck_assert_ptr_null(evbus_saga_orch_open(h.db, NULL, "x", &o, err,
                                            sizeof err));
    ck_assert_msg(strstr(err, "version 99") != NULL, "%s", err);
}
END_TEST

static void small_data(evbus_saga_opts_t *o)
{
    o->max_data_bytes = 64;
}

START_TEST(starts_are_checked)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", NULL, 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "", NULL),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "a\nb", NULL),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "bad\xff", NULL),
                     EVBUS_EINVAL);
    char long_id[202];
    memset(long_id, 'x', 201);
    long_id[201] = 0;
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", long_id, NULL),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o1", "[1]"),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o1", "{"),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "nope", "o1", NULL),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "Bestellung-\xc3\xa4",
                                      NULL),
                     1);
    h_reopen(&h, small_data);
    d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", NULL, 0);
    h_register(&h, d);
    char big[128];
    snprintf(big, sizeof big, "{\"pad\":\"%070d\"}", 0);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o2", big),
                     EVBUS_ETOOBIG);
    /* a reply that would make the data too big fails the step */
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "o3", "{}"), 1);
    evbus_event_t *skip = h_expect_cmd(&h, "payment.charge", 0, "action");
    evbus_event_free(skip);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_str_eq(evbus_event_ext(c, "sagaid"), "o3");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, big, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "o3"), EVBUS_SAGA_COMPENSATED);
    ck_assert_msg(strstr(h_col(&h, "SELECT reason FROM evbus_saga"
                                   " WHERE id=?1", "o3"),
                         "max_data_bytes") != NULL,
                  "%s", h_col(&h, "SELECT reason FROM evbus_saga"
                                  " WHERE id=?1", "o3"));
}
END_TEST

static char *build_note(const char *id, const char *data, void *opaque)
{
    if (strstr(data, "\"fail\""))
        return NULL;
    char *out = malloc(128);
    snprintf(out, 128, "{\"for\":\"%s\",\"tag\":\"%s\"}", id,
             (const char *)opaque);
    return out;
}

START_TEST(templates_and_build_callbacks)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "pay";
    s.topic = "payment.charge";
    s.template_json = "{\"order\":\"$.orderId\",\"amount\":\"$.total.eur\","
                      "\"first\":\"$.items.0\",\"lit\":\"$$5\","
                      "\"all\":\"$\",\"fixed\":[1,\"$.orderId\"]}";
    s.comp_topic = "payment.refund";
    s.comp_build = build_note;
    s.opaque = "refund";
    char err[256];
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err),
                     EVBUS_OK);
    h_cmd_step(d, "ship", "shipping.ship", NULL, 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "t1",
                                      "{\"orderId\":\"o-1\",\"total\":"
                                      "{\"eur\":12.5},\"items\":[\"pen\"]}"),
                     1);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    cJSON *j = cJSON_Parse(evbus_event_data(c));
    ck_assert_msg(cJSON_GetObjectItem(j, "order") != NULL, "%s",
                  (const char *)evbus_event_data(c));
    ck_assert_str_eq(cJSON_GetObjectItem(j, "order")->valuestring, "o-1");
    ck_assert(cJSON_GetObjectItem(j, "amount")->valuedouble == 12.5);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "first")->valuestring, "pen");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "lit")->valuestring, "$5");
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "fixed"), 1)
                         ->valuestring,
                     "o-1");
    ck_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "all")));
    cJSON_Delete(j);
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "shipping.ship", 1, "action");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "no"), EVBUS_ACK);
    c = h_expect_cmd(&h, "payment.refund", 0, "compensation");
    ck_assert_str_eq(evbus_event_data(c), "{\"for\":\"t1\",\"tag\":\"refund\"}");
    evbus_event_free(c);

    /* a placeholder the data lacks fails the step (and nothing is sent) */
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "t2",
                                      "{\"orderId\":\"o-2\"}"),
                     1);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_state(&h, "t2"), EVBUS_SAGA_COMPENSATED);
    ck_assert_str_eq(h_col(&h, "SELECT reason FROM evbus_saga WHERE id=?1",
                           "t2"),
                     "step pay failed: template: $.total.eur is not in the "
                     "saga data");
    /* a compensation that cannot be built parks the instance */
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "t3",
                                      "{\"orderId\":\"o\",\"total\":{\"eur\":"
                                      "1},\"items\":[1],\"fail\":1}"),
                     1);
    c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    c = h_expect_cmd(&h, "shipping.ship", 1, "action");
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "no"), EVBUS_ACK);
    h_expect_no_cmd(&h);
    ck_assert_int_eq(h_state(&h, "t3"), EVBUS_SAGA_FAILED);
    ck_assert_msg(strstr(h_col(&h, "SELECT reason FROM evbus_saga"
                                   " WHERE id=?1", "t3"),
                         "build callback returned NULL") != NULL,
                  "reason");
}
END_TEST

/* Local steps: "hold" writes a row, "release" deletes it; the amount
 * decides whether hold refuses. */
static int hold(sqlite3 *db, const char *id, const char *data,
                evbus_saga_answer_t *a, void *opaque)
{
    char q[256];
    snprintf(q, sizeof q, "INSERT INTO holds VALUES('%s', 'held')", id);
    sqlite3_exec(db, q, NULL, NULL, NULL);
    if (strstr(data, "\"refuse\"")) {
        evbus_saga_answer_set_reason(a, "over\nthe \xff limit");
        return EVBUS_SAGA_FAILURE; /* the insert above is rolled back */
    }
    evbus_saga_answer_set_data(a, "{\"held\":true}");
    return EVBUS_SAGA_SUCCESS;
}

static int release(sqlite3 *db, const char *id, const char *data,
                   evbus_saga_answer_t *a, void *opaque)
{
    int *calls = opaque;
    (*calls)++;
    char q[256];
    snprintf(q, sizeof q, "DELETE FROM holds WHERE saga = '%s'", id);
    return sqlite3_exec(db, q, NULL, NULL, NULL) == SQLITE_OK ? EVBUS_SAGA_SUCCESS
                                                              : EVBUS_EIO;
}

static int releases;

static void local_def(void)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "check", "risk.check", "risk.forget", 0);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.name = "hold";
    s.local = hold;
    s.comp_local = release;
    s.opaque = &releases;
    char err[256];
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err),
                     EVBUS_OK);
    h_cmd_step(d, "pay", "payment.charge", NULL, 0);
    h_register(&h, d);
}

START_TEST(local_steps_run_in_the_transaction)
{
    local_def();
    releases = 0;
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "l1", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "risk.check", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    /* the reply's transaction ran "hold" and sent the payment */
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM holds"), 1);
    c = h_expect_cmd(&h, "payment.charge", 2, "action");
    ck_assert(strstr(evbus_event_data(c), "\"held\":true") != NULL);
    ck_assert_int_eq(h_reply(&h, c, FAILURE, NULL, "declined"), EVBUS_ACK);
    /* release ran at once, then the command compensation */
    ck_assert_int_eq(releases, 1);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM holds"), 0);
    c = h_expect_cmd(&h, "risk.forget", 0, "compensation");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(h_state(&h, "l1"), EVBUS_SAGA_COMPENSATED);

    /* a refusing local step leaves nothing behind and compensates */
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "l2",
                                      "{\"refuse\":1}"),
                     1);
    c = h_expect_cmd(&h, "risk.check", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM holds"), 0);
    ck_assert_int_eq(releases, 1); /* a failed step is not undone */
    evbus_event_free(h_expect_cmd(&h, "risk.forget", 0, "compensation"));
    /* the reason was made one valid line */
    ck_assert_str_eq(h_col(&h, "SELECT json_extract(steps, '$[1].result')"
                               " FROM evbus_saga WHERE id=?1", "l2"),
                     "over the ? limit");
}
END_TEST

static char *keep_count(const char *data, const evbus_event_t *reply,
                        void *opaque)
{
    cJSON *d = cJSON_Parse(data);
    cJSON *n = cJSON_GetObjectItem(d, "n");
    int v = n ? n->valueint + 1 : 1;
    cJSON_DeleteItemFromObject(d, "n");
    cJSON_AddNumberToObject(d, "n", v);
    char *out = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    return out;
}

START_TEST(merge_callback_decides_the_data)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    evbus_saga_step_t s;
    evbus_saga_step_init(&s);
    s.topic = "a.b";
    s.merge = keep_count;
    char err[256];
    s.name = "one";
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err), 0);
    s.name = "two";
    ck_assert_int_eq(evbus_saga_def_add_step(d, &s, err, sizeof err), 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "m1", "{\"x\":1}"),
                     1);
    for (int i = 0; i < 2; i++) {
        evbus_event_t *c = h_expect_cmd(&h, "a.b", i, "action");
        ck_assert_int_eq(h_reply(&h, c, SUCCESS, "{\"ignored\":1}", NULL),
                         EVBUS_ACK);
    }
    ck_assert_str_eq(h_col(&h, "SELECT data FROM evbus_saga WHERE id=?1",
                           "m1"),
                     "{\"x\":1,\"n\":2}");
}
END_TEST

START_TEST(inspection_json)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", "payment.refund", 0);
    h_cmd_step(d, "ship", "shipping.ship", NULL, 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "i1", "{\"k\":1}"), 1);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "i2", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, "{\"paid\":1}", NULL), EVBUS_ACK);
    char *out = NULL, err[256] = "";
    ck_assert_int_eq(evbus_saga_list_json(h.db, NULL, 0, &out, err,
                                          sizeof err),
                     EVBUS_OK);
    cJSON *j = cJSON_Parse(out);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "count")->valueint, 2);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "states"),
                                         "RUNNING")->valueint,
                     2);
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "sagas"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(first, "id")->valuestring, "i2");
    ck_assert_str_eq(cJSON_GetObjectItem(first, "stepName")->valuestring,
                     "pay");
    ck_assert_str_eq(cJSON_GetObjectItem(first, "waiting")->valuestring,
                     "reply");
    cJSON_Delete(j);
    free(out);
    ck_assert_int_eq(evbus_saga_list_json(h.db, "FAILED", 10, &out, err,
                                          sizeof err),
                     EVBUS_OK);
    j = cJSON_Parse(out);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "sagas")), 0);
    cJSON_Delete(j);
    free(out);
    ck_assert_int_eq(evbus_saga_list_json(h.db, "failed", 10, &out, err,
                                          sizeof err),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_show_json(h.db, "i1", &out, err, sizeof err),
                     EVBUS_OK);
    j = cJSON_Parse(out);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"),
                                         "paid")->valueint,
                     1);
    cJSON *steps = cJSON_GetObjectItem(j, "steps");
    ck_assert_int_eq(cJSON_GetArraySize(steps), 2);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, 0),
                                         "status")->valuestring,
                     "done");
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(
                         cJSON_GetArrayItem(steps, 0), "result"), "paid")
                         ->valueint,
                     1);
    cJSON *hist = cJSON_GetObjectItem(j, "history");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(hist, 0),
                                         "event")->valuestring,
                     "started");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(hist, 0),
                                         "to")->valuestring,
                     "RUNNING");
    cJSON_Delete(j);
    free(out);
    ck_assert_int_eq(evbus_saga_show_json(h.db, "nope", &out, err,
                                          sizeof err),
                     EVBUS_ENOTFOUND);
    ck_assert_int_eq(evbus_saga_resume(h.db, "nope", err, sizeof err),
                     EVBUS_ENOTFOUND);
    ck_assert_int_eq(evbus_saga_resume(h.db, "i1", err, sizeof err),
                     EVBUS_ESTATE);
    /* a database without saga tables */
    sqlite3 *other;
    char *path = tmp_path(h.dir, "other.db");
    ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
    ck_assert_int_eq(evbus_saga_list_json(other, NULL, 0, &out, err,
                                          sizeof err),
                     EVBUS_ENOTFOUND);
    ck_assert_str_eq(err, "no saga tables in this database");
    ck_assert_int_eq(evbus_saga_state_of(other, "i1"), EVBUS_ENOTFOUND);
    sqlite3_close(other);
    free(path);
}
END_TEST

START_TEST(purge_ended_instances)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", NULL, 0);
    h_register(&h, d);
    char id[16];
    for (int i = 0; i < 3; i++) { /* three that end now */
        snprintf(id, sizeof id, "old%d", i);
        ck_assert_int_eq(evbus_saga_start(h.orch, "order", id, NULL), 1);
        evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
        ck_assert_int_eq(h_reply(&h, c, i ? SUCCESS : FAILURE, NULL, "no"),
                         EVBUS_ACK);
    }
    int64_t cutoff = (int64_t)fake_now(&h.clock) + 1;
    h_advance(&h, 1000);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "new", NULL), 1);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_int_eq(h_reply(&h, c, SUCCESS, NULL, NULL), EVBUS_ACK);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "busy", NULL), 1);
    char err[256] = "";
    ck_assert_int_eq(evbus_saga_purge(h.db, cutoff, err, sizeof err), 3);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM evbus_saga"), 2);
    ck_assert_int_eq(sql_int(h.db, "SELECT count(*) FROM evbus_saga_history"
                                   " WHERE saga_id LIKE 'old%'"),
                     0);
    ck_assert_int_gt(sql_int(h.db, "SELECT count(*) FROM evbus_saga_history"
                                   " WHERE saga_id = 'new'"),
                     0);
    ck_assert_int_eq(evbus_saga_purge(h.db, cutoff, err, sizeof err), 0);
    /* a purged id can be started again */
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "old1", NULL), 1);
}
END_TEST

START_TEST(data_must_be_valid_utf8)
{
    evbus_saga_def_t *d = evbus_saga_def_new("order", NULL, 0);
    h_cmd_step(d, "pay", "payment.charge", NULL, 0);
    h_register(&h, d);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "u1",
                                      "{\"name\":\"caf\xe9\"}"),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_saga_start(h.orch, "order", "u1",
                                      "{\"name\":\"caf\xc3\xa9\"}"),
                     1);
    evbus_event_t *c = h_expect_cmd(&h, "payment.charge", 0, "action");
    ck_assert_ptr_null(evbus_saga_reply_new(c, SUCCESS, "{\"x\":\"\xff\"}",
                                            NULL, "/p"));
    evbus_event_free(c);
}
END_TEST

Suite *api_suite(void);
Suite *api_suite(void)
{
    Suite *s = suite_create("saga-api");
    TCase *t = tcase_create("api");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60); /* only catches a hang */
    tcase_add_test(t, definitions_refuse_bad_steps);
    tcase_add_test(t, options_are_checked);
    tcase_add_test(t, starts_are_checked);
    tcase_add_test(t, templates_and_build_callbacks);
    tcase_add_test(t, local_steps_run_in_the_transaction);
    tcase_add_test(t, merge_callback_decides_the_data);
    tcase_add_test(t, inspection_json);
    tcase_add_test(t, purge_ended_instances);
    tcase_add_test(t, data_must_be_valid_utf8);
    suite_add_tcase(s, t);
    return s;
}
