/*
 * The CloudEvents Kafka binding decoder and encoder on their own, without a
 * cluster: records are built as value + librdkafka header lists and given
 * to the backend's decoder (the same function the consumer calls).
 *
 * Links the static library for the backend's internal decoder.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kafka/kafka_internal.h"
#include "core/event_internal.h"

static rd_kafka_headers_t *binary_headers(const char *id)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    rd_kafka_header_add(h, "ce_specversion", -1, "1.0", -1);
    rd_kafka_header_add(h, "ce_id", -1, id, -1);
    rd_kafka_header_add(h, "ce_source", -1, "/peer", -1);
    rd_kafka_header_add(h, "ce_type", -1, "peer.thing.done", -1);
    return h;
}

static evbus_event_t *decode_ok(const void *v, size_t len,
                                rd_kafka_headers_t *h)
{
    evbus_event_t *ev = NULL;
    char *why = NULL;
    int rc = evbus__kafka_wire_decode(v, len, h, &ev, &why);
    ck_assert_msg(rc == EVBUS_OK && ev, "decode failed: %s",
                  why ? why : "(no reason)");
    free(why);
    return ev;
}

START_TEST(binary_without_content_type_invents_nothing)
{
    /* what the CloudEvents SDK's Kafka.binary() writes for an event
     * without datacontenttype: no content-type header */
    const char json[] = "{\"a\":[1,2.5,\"\xc3\xa9\"]}";
    rd_kafka_headers_t *h = binary_headers("b1");
    evbus_event_t *ev = decode_ok(json, sizeof json - 1, h);
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    ck_assert_int_eq((int)evbus_event_data_len(ev), (int)sizeof json - 1);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), json, sizeof json - 1), 0);
    char *out = evbus_event_to_json(ev, NULL);
    ck_assert_msg(strstr(out, "\"data\":{\"a\":[1,2.5,") &&
                      !strstr(out, "datacontenttype") &&
                      !strstr(out, "data_base64"),
                  "%s", out);
    free(out);
    evbus_event_free(ev);

    /* bytes that are not JSON come through as they are, still unlabelled */
    const unsigned char bytes[] = {0, 1, 0xff, ' ', '{'};
    ev = decode_ok(bytes, sizeof bytes, h);
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    ck_assert_int_eq((int)evbus_event_data_len(ev), (int)sizeof bytes);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), bytes, sizeof bytes), 0);
    evbus_event_free(ev);

    /* JSON with surrounding whitespace: the bytes are kept exactly */
    const char spaced[] = " {\"a\":1}\n";
    ev = decode_ok(spaced, sizeof spaced - 1, h);
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    ck_assert_int_eq((int)evbus_event_data_len(ev), (int)sizeof spaced - 1);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), spaced, sizeof spaced - 1),
                     0);
    evbus_event_free(ev);

    /* no value: no data, no content type */
    ev = decode_ok(NULL, 0, h);
    ck_assert_ptr_null(evbus_event_data(ev));
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    evbus_event_free(ev);
    rd_kafka_headers_destroy(h);
}
END_TEST

START_TEST(binary_content_type_is_datacontenttype)
{
    rd_kafka_headers_t *h = binary_headers("b2");
    rd_kafka_header_add(h, "content-type", -1, "text/plain", -1);
    rd_kafka_header_add(h, "ce_subject", -1, "s", -1);
    rd_kafka_header_add(h, "CE_MyExt", -1, "v", -1); /* names are lowered */
    evbus_event_t *ev = decode_ok("hello", 5, h);
    ck_assert_str_eq(evbus_event_datacontenttype(ev), "text/plain");
    ck_assert_str_eq(evbus_event_subject(ev), "s");
    ck_assert_str_eq(evbus_event_ext(ev, "myext"), "v");
    ck_assert_int_eq((int)evbus_event_data_len(ev), 5);
    evbus_event_free(ev);
    rd_kafka_headers_destroy(h);
}
END_TEST

START_TEST(binary_headers_must_be_utf8)
{
    static const char *const names[] = {"ce_subject", "ce_myext", "ce_id",
                                        "ce_source", "ce_type"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        rd_kafka_header_add(h, "ce_specversion", -1, "1.0", -1);
        if (strcmp(names[i], "ce_id"))
            rd_kafka_header_add(h, "ce_id", -1, "b3", -1);
        if (strcmp(names[i], "ce_source"))
            rd_kafka_header_add(h, "ce_source", -1, "/peer", -1);
        if (strcmp(names[i], "ce_type"))
            rd_kafka_header_add(h, "ce_type", -1, "peer.thing.done", -1);
        rd_kafka_header_add(h, names[i], -1, "ok\xc0\x80", -1);
        evbus_event_t *ev = NULL;
        char *why = NULL;
        ck_assert_int_eq(evbus__kafka_wire_decode("x", 1, h, &ev, &why),
                         EVBUS_EDECODE);
        ck_assert_ptr_null(ev);
        ck_assert_msg(why && strstr(why, "UTF-8") &&
                          strstr(why, "byte offset 2"),
                      "%s: %s", names[i], why ? why : "(none)");
        /* the reason is text itself */
        ck_assert_ptr_null(strstr(why, "\xc0"));
        free(why);
        rd_kafka_headers_destroy(h);
    }
    /* a NUL inside a header value is not cut short silently, also not in
     * a required attribute or the content type */
    static const char *const nul_in[] = {"ce_subject", "ce_id", "ce_myext",
                                         "content-type"};
    for (size_t i = 0; i < sizeof nul_in / sizeof nul_in[0]; i++) {
        rd_kafka_headers_t *h = binary_headers("b4");
        rd_kafka_header_add(h, nul_in[i], -1, "a\0b", 3);
        evbus_event_t *ev = NULL;
        char *why = NULL;
        ck_assert_int_eq(evbus__kafka_wire_decode("x", 1, h, &ev, &why),
                         EVBUS_EDECODE);
        ck_assert_ptr_null(ev);
        ck_assert_msg(why && strstr(why, "NUL") && strstr(why, nul_in[i]),
                      "%s: %s", nul_in[i], why ? why : "(none)");
        free(why);
        rd_kafka_headers_destroy(h);
    }
}
END_TEST

/* 1 when p points into ev's own block (no allocation of its own). */
static int in_block(const evbus_event_t *ev, const void *p)
{
    return (const char *)p >= ev->blk && (const char *)p < ev->blk_end;
}

/* The attribute headers in mixed case, and one extension. */
static rd_kafka_headers_t *mixed_case_headers(void)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(10);
    rd_kafka_header_add(h, "ce_specversion", -1, "1.0", -1);
    rd_kafka_header_add(h, "CE_ID", -1, "i", -1);
    rd_kafka_header_add(h, "Ce_Source", -1, "/s", -1);
    rd_kafka_header_add(h, "cE_tYpE", -1, "t.t.t", -1);
    rd_kafka_header_add(h, "CE_SUBJECT", -1, "sub", -1);
    rd_kafka_header_add(h, "ce_Time", -1, "2026-12-02T10:00:00Z", -1);
    rd_kafka_header_add(h, "CE_DATASCHEMA", -1, "https://x.example/s", -1);
    rd_kafka_header_add(h, "CE_DATACONTENTTYPE", -1, "text/plain", -1);
    rd_kafka_header_add(h, "ce_types", -1, "x", -1); /* no attribute */
    rd_kafka_header_add(h, "c", -1, "z", -1);        /* no ce_ header */
    return h;
}

/* Every attribute header is one in any case (and ce_datacontenttype
 * stands in for a missing content-type); other names are extensions. */
START_TEST(binary_attribute_headers_in_any_case)
{
    rd_kafka_headers_t *h = mixed_case_headers();
    evbus_event_t *ev = decode_ok("d", 1, h);
    ck_assert_str_eq(evbus_event_id(ev), "i");
    ck_assert_str_eq(evbus_event_source(ev), "/s");
    ck_assert_str_eq(evbus_event_type(ev), "t.t.t");
    ck_assert_str_eq(evbus_event_subject(ev), "sub");
    ck_assert_str_eq(evbus_event_time(ev), "2026-12-02T10:00:00Z");
    ck_assert_str_eq(evbus_event_dataschema(ev), "https://x.example/s");
    ck_assert_str_eq(evbus_event_datacontenttype(ev), "text/plain");
    ck_assert_int_eq((int)evbus_event_ext_count(ev), 1);
    ck_assert_str_eq(evbus_event_ext(ev, "types"), "x");
    evbus_event_free(ev);
    /* "ce_" names no extension: refused, like any bad name */
    rd_kafka_header_add(h, "ce_", -1, "y", -1);
    char *why = NULL;
    ck_assert_int_eq(evbus__kafka_wire_decode("d", 1, h, &ev, &why),
                     EVBUS_EDECODE);
    ck_assert_msg(why && strstr(why, "ce_"), "%s", why ? why : "(none)");
    free(why);
    rd_kafka_headers_destroy(h);
}
END_TEST

/* A binary-mode record becomes an event in one allocation: header values
 * are copied once, from where librdkafka keeps them, into the event's
 * block (the consume path allocated a dozen times per record before).
 * Repeated names keep the last value, extensions their first place. */
START_TEST(binary_event_is_one_allocation)
{
    rd_kafka_headers_t *h = binary_headers("b5");
    rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
    rd_kafka_header_add(h, "ce_subject", -1, "first", -1);
    rd_kafka_header_add(h, "ce_time", -1, "2026-12-02T10:00:00Z", -1);
    rd_kafka_header_add(h, "ce_dataschema", -1, "https://x.example/s", -1);
    rd_kafka_header_add(h, "ce_a", -1, "1", -1);
    rd_kafka_header_add(h, "ce_b", -1, "2", -1);
    rd_kafka_header_add(h, "CE_A", -1, "3", -1);
    rd_kafka_header_add(h, "ce_subject", -1, "second", -1);
    rd_kafka_header_add(h, "traceparent", -1, "not an attribute", -1);
    const char json[] = "{\"k\":[1,2]}";
    evbus_event_t *ev = decode_ok(json, sizeof json - 1, h);
    rd_kafka_headers_destroy(h); /* the event holds copies */
    ck_assert_str_eq(evbus_event_id(ev), "b5");
    ck_assert_str_eq(evbus_event_subject(ev), "second");
    ck_assert_str_eq(evbus_event_time(ev), "2026-12-02T10:00:00Z");
    ck_assert_str_eq(evbus_event_dataschema(ev), "https://x.example/s");
    ck_assert_str_eq(evbus_event_datacontenttype(ev), "application/json");
    ck_assert_int_eq((int)evbus_event_ext_count(ev), 2);
    const char *name, *value;
    ck_assert_int_eq(evbus_event_ext_at(ev, 0, &name, &value), EVBUS_OK);
    ck_assert_str_eq(name, "a");
    ck_assert_str_eq(value, "3");
    ck_assert_int_eq(evbus_event_ext_at(ev, 1, &name, &value), EVBUS_OK);
    ck_assert_str_eq(name, "b");
    ck_assert_int_eq((int)evbus_event_data_len(ev), 11);
    ck_assert_int_eq(memcmp(evbus_event_data(ev), "{\"k\":[1,2]}", 11), 0);
    const void *parts[] = {evbus_event_id(ev),         evbus_event_source(ev),
                           evbus_event_type(ev),       evbus_event_subject(ev),
                           evbus_event_time(ev),       evbus_event_dataschema(ev),
                           evbus_event_datacontenttype(ev),
                           evbus_event_data(ev),       ev->ext,
                           ev->ext[0].name,            ev->ext[0].value,
                           ev->ext[1].name,            ev->ext[1].value};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        ck_assert_msg(in_block(ev, parts[i]), "part %zu allocated apart", i);
    char *out = evbus_event_to_json(ev, NULL);
    ck_assert_msg(out && strstr(out, "\"data\":{\"k\":[1,2]}"), "%s",
                  out ? out : "(null)");
    free(out);
    evbus_event_free(ev);
}
END_TEST

/* Encodes ev in the JSON format, checks that member is in the text and
 * that decoding gives ev back. */
static void json_round_trip(const evbus_event_t *ev, const char *member)
{
    size_t len;
    char *out = evbus_event_to_json(ev, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strstr(out, member), "no %s in %s", member, out);
    char err[256];
    evbus_event_t *back = evbus_event_from_json(out, len, err, sizeof err);
    ck_assert_msg(back && evbus_event_equal(ev, back), "%s: %s", out,
                  back ? "differs" : err);
    evbus_event_free(back);
    free(out);
}

/* Binary mode takes the value as it is, also under a JSON content type:
 * no JSON parse per record (issue 18). Whether the bytes are JSON matters
 * only if the event is written in the JSON format: `data` when they are
 * exactly one JSON value, else `data_base64` (the same bytes back). */
START_TEST(binary_json_value_is_not_parsed)
{
    static const char *const values[] = {"{\"k\":", " {\"k\":1} ", "null",
                                         "[1,2]"};
    static const char *const members[] = {"\"data_base64\":",
                                          "\"data_base64\":",
                                          "\"data_base64\":",
                                          "\"data\":[1,2]"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        rd_kafka_headers_t *h = binary_headers("b6");
        rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
        size_t n = strlen(values[i]);
        evbus_event_t *ev = decode_ok(values[i], n, h);
        rd_kafka_headers_destroy(h);
        ck_assert_str_eq(evbus_event_datacontenttype(ev), "application/json");
        ck_assert_int_eq((int)evbus_event_data_len(ev), (int)n);
        ck_assert_int_eq(memcmp(evbus_event_data(ev), values[i], n), 0);
        json_round_trip(ev, members[i]);
        /* a content type set later is honoured by the encoder */
        ck_assert_int_eq(evbus_event_set_datacontenttype(ev, "text/x-y"),
                         EVBUS_OK);
        json_round_trip(ev, "\"data_base64\":");
        evbus_event_free(ev);
    }
}
END_TEST

/* The last value of header name as a string in buf, or NULL. */
static const char *header(rd_kafka_headers_t *h, const char *name, char *buf,
                          size_t n)
{
    const void *v;
    size_t size;
    if (rd_kafka_header_get_last(h, name, &v, &size))
        return NULL;
    snprintf(buf, n, "%.*s", (int)size, (const char *)v);
    return buf;
}

/* Commit metadata comes from the broker: whatever another client wrote
 * there, or garbage, is ignored - never a crash, never a wrong count. */
START_TEST(commit_metadata_parses_only_its_own_format)
{
    kafka_meta_t m;
    const char *good = "evbus1;w=1033;10:3:1764000000000:25;12:2:0:0";
    ck_assert(evbus__kafka_meta_parse(good, strlen(good), &m));
    ck_assert_int_eq(m.window, 1033);
    ck_assert_int_eq(m.n, 2);
    ck_assert_int_eq(m.e[0].offset, 10);
    ck_assert_int_eq(m.e[0].attempts, 3);
    ck_assert_int_eq(m.e[0].first_ms, 1764000000000LL);
    ck_assert_int_eq(m.e[0].prev_delay_ms, 25);
    free(m.e);
    ck_assert(evbus__kafka_meta_parse("evbus1", 6, &m)); /* clean */
    ck_assert_int_eq(m.window, -1);
    ck_assert_int_eq(m.n, 0);
    free(m.e);
    static const char *const bad[] = {
        "", "evbus", "evbus2;w=1", "evbus1;", "evbus1;w=", "evbus1;w=-5",
        "evbus1;w=99999999999999999999", "evbus1;10:0:0:0", "evbus1;10:3:0",
        "evbus1;10:3:0:0;", "evbus1;10:3:0:0x", "evbus1;x", "{\"a\":1}",
        "evbus1;10:3:0:99999999999", "evbus1;w=1;w"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!evbus__kafka_meta_parse(bad[i], strlen(bad[i]), &m),
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_null(m.e);
        ck_assert_int_eq(m.window, -1);
    }
    const char nul[] = "evbus1;w=1\0;2:2:0:0";
    ck_assert(!evbus__kafka_meta_parse(nul, sizeof nul - 1, &m));
    ck_assert(!evbus__kafka_meta_parse(NULL, 0, &m));
    /* more entries than the budget: refused as a whole */
    char big[4096];
    size_t len = (size_t)snprintf(big, sizeof big, "evbus1");
    for (int i = 0; i < 65; i++)
        len += (size_t)snprintf(big + len, sizeof big - len, ";%d:2:0:0", i);
    ck_assert(!evbus__kafka_meta_parse(big, len, &m));
    static char huge[5000];
    memset(huge, '1', sizeof huge);
    memcpy(huge, "evbus1;w=", 9);
    ck_assert(!evbus__kafka_meta_parse(huge, sizeof huge, &m));
}
END_TEST

/* A synchronous window commit widens the windows of the partitions about
 * to cross (records waiting, under half a window of 1024 left), so
 * partitions read in turn share one commit; the others keep theirs. */
START_TEST(window_commit_carries_the_windows_about_to_cross)
{
    kafka_sub_t *s = evbus__kafka_sub_new(NULL, "t", "g");
    kafka_msg_t waiting;
    memset(&waiting, 0, sizeof waiting);
    static const struct {
        int64_t commit_off, max_started, window_end;
        bool ready, revoked;
        int64_t want;
    } c[] = {
        {1000, 1024, 2048, true, false, 2048}, /* crossing: note_attempt */
        {800, 900, 1023, true, false, 1924},   /* 123 left: widened */
        {200, 300, 1023, true, false, 1023},   /* 723 left: kept */
        {950, 950, 1023, false, false, 1023},  /* nothing waiting: kept */
        {900, 950, 1023, true, true, 1023},    /* revoked: kept */
        {5000, 4999, -1, true, false, 6023},   /* closed, records came */
        {0, -1, -1, true, false, 1023},        /* nothing started yet */
    };
    size_t n = sizeof c / sizeof c[0];
    for (size_t i = 0; i < n; i++) {
        kafka_part_t *p = evbus__kafka_part_get(s, (int32_t)i);
        p->commit_off = c[i].commit_off;
        p->max_started = c[i].max_started;
        p->window_end = c[i].window_end;
        p->ready_head = c[i].ready ? &waiting : NULL;
        p->revoked = c[i].revoked;
    }
    s->parts[0]->window_prev = 1023;
    evbus__kafka_windows_align(s);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(s->parts[i]->window_end == c[i].want,
                      "partition %zu: window %lld, want %lld", i,
                      (long long)s->parts[i]->window_end,
                      (long long)c[i].want);
        /* a failed commit puts the old window back */
        int64_t prev = s->parts[i]->window_prev;
        ck_assert_int_eq(prev, i == 0                ? 1023
                               : c[i].want != c[i].window_end ? c[i].window_end
                                                    : -2);
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    s->parts[0]->commit_dirty = true;
    evbus__kafka_commit_build(s, l, NULL, false);
    int widened = 0;
    for (int k = 0; k < l->cnt; k++) {
        kafka_meta_t m;
        ck_assert(evbus__kafka_meta_parse(l->elems[k].metadata,
                                          l->elems[k].metadata_size, &m));
        ck_assert_int_eq(m.window, c[l->elems[k].partition].want);
        widened += l->elems[k].partition != 0;
        free(m.e);
    }
    ck_assert_int_eq(widened, 3); /* in the one commit */
    rd_kafka_topic_partition_list_destroy(l);
    for (size_t i = 0; i < n; i++) {
        s->parts[i]->ready_head = NULL;
        free(s->parts[i]);
    }
    evbus__kafka_sub_free(s);
}
END_TEST

/* The poll thread tells structured records by their content-type alone
 * (the thread that fetches them then touches no header). */
START_TEST(structured_is_told_by_content_type)
{
    static const struct {
        const char *ct;
        bool structured;
    } c[] = {
        {"application/cloudevents+json", true},
        {"Application/CloudEvents+JSON; charset=utf-8", true},
        {"application/cloudevents-batch+json", false},
        {"application/json", false},
        {"text/plain", false},
        {NULL, false},
    };
    ck_assert(!evbus__kafka_wire_structured(NULL));
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        rd_kafka_headers_t *h = binary_headers("s1");
        if (c[i].ct)
            rd_kafka_header_add(h, "content-type", -1, c[i].ct, -1);
        ck_assert_msg(evbus__kafka_wire_structured(h) == c[i].structured,
                      "case %zu", i);
        rd_kafka_headers_destroy(h);
    }
}
END_TEST

/* The metadata of a commit as one string. */
static void one_commit_meta(kafka_sub_t *s, char *buf, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    s->parts[0]->commit_dirty = true;
    evbus__kafka_commit_build(s, l, NULL, false);
    ck_assert_int_eq(l->cnt, 1);
    snprintf(buf, n, "%.*s", (int)l->elems[0].metadata_size,
             (const char *)l->elems[0].metadata);
    rd_kafka_topic_partition_list_destroy(l);
}

/* A commit lists the exact entries of records anywhere in a partition's
 * buffer (a previous owner's, arriving with their records), and no more
 * once they are acked; it stops looking once it has them all. */
START_TEST(commit_lists_exact_entries_of_buffered_records)
{
    enum { N = 5000 };
    kafka_sub_t *s = evbus__kafka_sub_new(NULL, "t", "g");
    kafka_part_t *p = evbus__kafka_part_get(s, 0);
    p->commit_off = 0;
    p->prior = calloc(2, sizeof *p->prior);
    p->prior[0] = (kafka_prior_t){10, 3, 0, 1};
    p->prior[1] = (kafka_prior_t){N - 10, 2, 5, 1};
    p->nprior = 2;
    kafka_msg_t *m = calloc(N, sizeof *m);
    for (int i = 0; i < N; i++) {
        m[i].offset = i;
        m[i].part = p;
        evbus__kafka_arrival(s, p, &m[i]);
        if (p->tail)
            p->tail->next_part = &m[i];
        else
            p->head = &m[i];
        p->tail = &m[i];
    }
    ck_assert(m[10].exact && m[N - 10].exact && m[N - 10].attempts == 2);
    char meta[256];
    one_commit_meta(s, meta, sizeof meta);
    ck_assert_str_eq(meta, "evbus1;10:3:1:0;4990:2:1:5");
    /* acked: its entry goes (the record stays until those before it) */
    m[10].state = KMSG_HANDED;
    p->handed = 1;
    evbus_msg_t msg = {.cookie = &m[10]};
    ck_assert_int_eq(evbus__kafka_settle(NULL, s, &msg, EVBUS_SETTLE_ACK, 0),
                     EVBUS_OK);
    one_commit_meta(s, meta, sizeof meta);
    ck_assert_str_eq(meta, "evbus1;4990:2:1:5");
    free(m);
    free(p->prior);
    free(p);
    s->parts[0] = NULL;
    evbus__kafka_sub_free(s);
}
END_TEST

START_TEST(encode_then_decode_gives_the_same_event)
{
    char buf[256];
    /* an event without datacontenttype (decoded from the JSON format) */
    const char *src = "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"/s\","
                      "\"type\":\"a.b.c\",\"subject\":\"\xc3\xa9\","
                      "\"averyveryverylongextensionname\":\"x\","
                      "\"n\":7,\"data\":{\"k\":true}}";
    char err[256];
    evbus_event_t *ev = evbus_event_from_json(src, strlen(src), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    rd_kafka_headers_t *h = evbus__kafka_wire_binary_headers(ev);
    ck_assert_ptr_null(header(h, "content-type", buf, sizeof buf));
    ck_assert_str_eq(header(h, "ce_subject", buf, sizeof buf), "\xc3\xa9");
    ck_assert_str_eq(header(h, "ce_n", buf, sizeof buf), "7");
    /* a long extension name is not cut to fit a buffer */
    ck_assert_str_eq(
        header(h, "ce_averyveryverylongextensionname", buf, sizeof buf), "x");
    rd_kafka_headers_destroy(h);

    /* one with a content type, round trip through the decoder */
    evbus_event_free(ev);
    ev = evbus_event_new("a.b.c", "/s");
    ck_assert_int_eq(evbus_event_set_data(ev, "\x01\x02", 2,
                                          "application/x-thing"),
                     EVBUS_OK);
    ck_assert_int_eq(evbus_event_set_ext(ev, "k", "v"), EVBUS_OK);
    h = evbus__kafka_wire_binary_headers(ev);
    ck_assert_str_eq(header(h, "content-type", buf, sizeof buf),
                     "application/x-thing");
    evbus_event_t *back = decode_ok(evbus_event_data(ev), 2, h);
    ck_assert(evbus_event_equal(ev, back));
    evbus_event_free(back);
    rd_kafka_headers_destroy(h);
    evbus_event_free(ev);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka-wire");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, binary_without_content_type_invents_nothing);
    tcase_add_test(tc, binary_content_type_is_datacontenttype);
    tcase_add_test(tc, binary_headers_must_be_utf8);
    tcase_add_test(tc, binary_attribute_headers_in_any_case);
    tcase_add_test(tc, binary_event_is_one_allocation);
    tcase_add_test(tc, binary_json_value_is_not_parsed);
    tcase_add_test(tc, encode_then_decode_gives_the_same_event);
    tcase_add_test(tc, commit_metadata_parses_only_its_own_format);
    tcase_add_test(tc, window_commit_carries_the_windows_about_to_cross);
    tcase_add_test(tc, commit_lists_exact_entries_of_buffered_records);
    tcase_add_test(tc, structured_is_told_by_content_type);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
