/*
 * Text at the edges of the event object: every setter, the constructor and
 * the JSON decoder refuse bytes that are not UTF-8 (RFC 3629) and JSON data
 * that is not strict JSON (RFC 8259), with a message naming the attribute
 * and the byte offset; whatever they accept encodes to JSON that decodes
 * back to the same event.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evbus/evbus.h>

/* Ill-formed sequences, each with what the message must say. */
static const struct {
    const char *bytes;
    const char *why;
} bad_utf8[] = {
    {"\xc0\x80", "overlong"},         /* U+0000 in two bytes */
    {"\xc1\xbf", "overlong"},         /* U+007F in two bytes */
    {"\xe0\x80\xaf", "overlong"},     /* '/' in three bytes */
    {"\xf0\x80\x80\xaf", "overlong"}, /* '/' in four bytes */
    {"\xed\xa0\x80", "surrogate"},    /* U+D800 */
    {"\xed\xbf\xbf", "surrogate"},    /* U+DFFF */
    {"\xf4\x90\x80\x80", "U+10FFFF"}, /* U+110000 */
    {"\xf5\x80\x80\x80", "0xF5"},
    {"\xff\xfe", "0xF5"},
    {"\x80", "continuation"},
    {"\xe2\x82", "truncated"},        /* "€" cut short at the end */
    {"\xe2\x82x", "truncated"},       /* ... and followed by ASCII */
    {"\xf0\x9f\x98", "truncated"},
};

/* Well-formed edge cases that must pass. */
static const char *const good_utf8[] = {
    "plain",
    "\xc3\xa9",         /* é */
    "\xe2\x82\xac",     /* € */
    "\xed\x9f\xbf",     /* U+D7FF, last before the surrogates */
    "\xee\x80\x80",     /* U+E000, first after */
    "\xef\xbf\xbf",     /* U+FFFF */
    "\xf0\x90\x80\x80", /* U+10000 */
    "\xf0\x9f\x98\x80", /* 😀 */
    "\xf4\x8f\xbf\xbf", /* U+10FFFF */
};

#define NBAD (sizeof bad_utf8 / sizeof bad_utf8[0])
#define NGOOD (sizeof good_utf8 / sizeof good_utf8[0])

typedef int (*setter_fn)(evbus_event_t *, const char *);

static int set_ext_x(evbus_event_t *ev, const char *v)
{
    return evbus_event_set_ext(ev, "x", v);
}

static const struct {
    const char *attr; /* what the message must name */
    setter_fn set;
} setters[] = {
    {"'id'", evbus_event_set_id},
    {"'source'", evbus_event_set_source},
    {"'type'", evbus_event_set_type},
    {"'subject'", evbus_event_set_subject},
    {"extension 'x'", set_ext_x},
};

START_TEST(setters_refuse_ill_formed_utf8_with_attribute_and_offset)
{
    evbus_event_t *ev = evbus_event_new("t.t.t", "/s");
    for (size_t s = 0; s < sizeof setters / sizeof setters[0]; s++) {
        for (size_t i = 0; i < NBAD; i++) {
            char v[32];
            snprintf(v, sizeof v, "abc%s", bad_utf8[i].bytes);
            ck_assert_msg(setters[s].set(ev, v) == EVBUS_EINVAL,
                          "%s accepted case %zu", setters[s].attr, i);
            const char *msg = evbus_event_error_message();
            ck_assert_msg(strstr(msg, setters[s].attr) &&
                              strstr(msg, "byte offset 3") &&
                              strstr(msg, bad_utf8[i].why),
                          "%s case %zu: message '%s'", setters[s].attr, i,
                          msg);
        }
        for (size_t i = 0; i < NGOOD; i++) {
            char v[32];
            snprintf(v, sizeof v, "a%sb", good_utf8[i]);
            ck_assert_msg(setters[s].set(ev, v) == EVBUS_OK,
                          "%s refused good case %zu: %s", setters[s].attr, i,
                          evbus_event_error_message());
        }
    }
    /* the examples */
    ck_assert_int_eq(evbus_event_set_id(ev, "x\xff\xfey"), EVBUS_EINVAL);
    ck_assert_ptr_nonnull(strstr(evbus_event_error_message(), "byte offset 1"));
    ck_assert_int_eq(evbus_event_set_subject(ev, "s\xc0\x80"), EVBUS_EINVAL);
    /* a refused value leaves the old one */
    ck_assert_str_eq(evbus_event_subject(ev), "a\xf4\x8f\xbf\xbf" "b");
    evbus_event_free(ev);
}
END_TEST

START_TEST(other_setters_and_constructor_refuse_ill_formed_utf8)
{
    ck_assert_ptr_null(evbus_event_new("t.\xc0\xae.t", "/s"));
    ck_assert_ptr_nonnull(strstr(evbus_event_error_message(), "'type'"));
    ck_assert_ptr_null(evbus_event_new("t.t.t", "/s\xed\xa0\x80"));
    ck_assert_ptr_nonnull(strstr(evbus_event_error_message(), "'source'"));
    evbus_event_t *ev = evbus_event_new("t.t.t", "/s");
    ck_assert_int_eq(
        evbus_event_set_dataschema(ev, "https://x.test/\xff"), EVBUS_EINVAL);
    ck_assert_ptr_nonnull(strstr(evbus_event_error_message(), "'dataschema'"));
    ck_assert_int_eq(evbus_event_set_datacontenttype(
                         ev, "text/plain; charset=\xe2\x82"),
                     EVBUS_EINVAL);
    ck_assert_ptr_nonnull(
        strstr(evbus_event_error_message(), "'datacontenttype'"));
    ck_assert_int_eq(evbus_event_set_time(ev, "2024-01-15T10:30:00\xc2\xa0Z"),
                     EVBUS_EINVAL);
    ck_assert_int_eq(evbus_event_set_ext(ev, "n\xc3\xa9", "v"), EVBUS_EINVAL);
    ck_assert_ptr_nonnull(strstr(evbus_event_error_message(), "extension name"));
    ck_assert_int_eq(evbus_event_set_ext_int(ev, "\xff", 1), EVBUS_EINVAL);
    ck_assert_int_eq(evbus_event_set_ext_bool(ev, "\xff", 1), EVBUS_EINVAL);
    /* a UTF-8 C1 control character is refused as a control character */
    ck_assert_int_eq(evbus_event_set_subject(ev, "a\xc2\x85"), EVBUS_EINVAL);
    ck_assert_ptr_nonnull(
        strstr(evbus_event_error_message(), "control character"));
    evbus_event_free(ev);
}
END_TEST

START_TEST(json_data_must_be_strict_json_text)
{
    evbus_event_t *ev = evbus_event_new("t.t.t", "/s");
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"a\":\"\xff\xfe\"}", "UTF-8"},
        {"{\"a\":\"\xc0\x80\"}", "overlong"},
        {"[\"\xed\xa0\x80\"]", "surrogate"},
        {"{\"a\":\"x\ny\"}", "control character"},
        {"{\"a\":01}", "leading zero"},
        {"[1.]", "number"},
        {"1.e5", "number"},
        {"[1,\x0b 2]", "whitespace"},
        {"{\"a\":1}\x0c", "whitespace"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(evbus_event_set_data_json(ev, bad[i].json) ==
                          EVBUS_EINVAL,
                      "set_data_json accepted case %zu", i);
        const char *msg = evbus_event_error_message();
        ck_assert_msg(strstr(msg, "data") && strstr(msg, "byte offset") &&
                          strstr(msg, bad[i].why),
                      "case %zu: message '%s'", i, msg);
        ck_assert_msg(evbus_event_set_data(ev, bad[i].json,
                                           strlen(bad[i].json),
                                           "application/json") == EVBUS_EINVAL,
                      "set_data(application/json) accepted case %zu", i);
    }
    /* the offset points at the bad byte */
    ck_assert_int_eq(evbus_event_set_data_json(ev, "  {\"a\":\"\xff\"}"),
                     EVBUS_EINVAL);
    ck_assert_ptr_nonnull(
        strstr(evbus_event_error_message(), "byte offset 8"));
    ck_assert_int_eq(evbus_event_set_data_json(
                         ev, "{\"a\":\"\xe2\x82\xac\\n\",\"b\":-0.5e+3}"),
                     EVBUS_OK);
    /* text types with invalid UTF-8 are kept as bytes (data_base64) */
    ck_assert_int_eq(evbus_event_set_data(ev, "\xff\xfe", 2, "text/plain"),
                     EVBUS_OK);
    char *json = evbus_event_to_json(ev, NULL);
    ck_assert_ptr_nonnull(strstr(json, "\"data_base64\":\"//4=\""));
    free(json);
    evbus_event_free(ev);
}
END_TEST

START_TEST(set_data_bytes_keeps_bytes_and_invents_no_content_type)
{
    evbus_event_t *ev = evbus_event_new("t.t.t", "/s");
    /* untyped JSON: written as a JSON value, no datacontenttype */
    ck_assert_int_eq(evbus_event_set_data_bytes(ev, "[1,2]", 5, NULL),
                     EVBUS_OK);
    ck_assert_ptr_null(evbus_event_datacontenttype(ev));
    char *json = evbus_event_to_json(ev, NULL);
    ck_assert_msg(strstr(json, "\"data\":[1,2]") &&
                      !strstr(json, "datacontenttype"),
                  "%s", json);
    free(json);
    /* untyped bytes, whitespace and "null" kept exactly */
    static const char *const raw[] = {" [1] ", "null", "\xff\x00x", "01"};
    static const size_t rawlen[] = {5, 4, 3, 2};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(evbus_event_set_data_bytes(ev, raw[i], rawlen[i],
                                                    NULL),
                         EVBUS_OK);
        ck_assert_ptr_null(evbus_event_datacontenttype(ev));
        ck_assert_int_eq((int)evbus_event_data_len(ev), (int)rawlen[i]);
        ck_assert_int_eq(memcmp(evbus_event_data(ev), raw[i], rawlen[i]), 0);
        size_t len;
        json = evbus_event_to_json(ev, &len);
        char err[256];
        evbus_event_t *back = evbus_event_from_json(json, len, err, sizeof err);
        ck_assert_msg(back != NULL, "%s: %s", json, err);
        ck_assert_msg(evbus_event_equal(ev, back), "case %zu: %s", i, json);
        evbus_event_free(back);
        free(json);
    }
    /* a JSON type drops the whitespace around the value: the JSON format
     * cannot carry it (found by fuzzing the Kafka decoder) */
    ck_assert_int_eq(evbus_event_set_data_bytes(ev, "\n{\"a\":1} ", 9,
                                                "application/json"),
                     EVBUS_OK);
    ck_assert_str_eq(evbus_event_data(ev), "{\"a\":1}");
    /* no data: the content type is still checked (found by fuzzing) */
    ck_assert_int_eq(evbus_event_set_data_bytes(ev, NULL, 0, "textce-x1.1"),
                     EVBUS_EINVAL);
    ck_assert_str_eq(evbus_event_datacontenttype(ev), "application/json");
    /* a JSON type still needs JSON; a refusal keeps the old data */
    ck_assert_int_eq(evbus_event_set_data_bytes(ev, "{x", 2,
                                                "application/json"),
                     EVBUS_EINVAL);
    ck_assert_int_eq((int)evbus_event_data_len(ev), 7);
    evbus_event_free(ev);
}
END_TEST

/* A valid event whose `name` member holds the raw bytes v. */
static char *event_with(const char *name, const char *v)
{
    static char buf[512];
    snprintf(buf, sizeof buf,
             "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
             "\"type\":\"t.t.t\",\"%s\":\"%s\"}",
             name, v);
    return buf;
}

START_TEST(decoder_refuses_ill_formed_utf8_naming_attribute_and_offset)
{
    static const char *const members[] = {"subject", "time", "dataschema",
                                          "datacontenttype", "myext"};
    for (size_t m = 0; m < sizeof members / sizeof members[0]; m++) {
        for (size_t i = 0; i < NBAD; i++) {
            char v[32];
            snprintf(v, sizeof v, "ab%s", bad_utf8[i].bytes);
            char *json = event_with(members[m], v);
            char err[256] = "";
            evbus_event_t *ev =
                evbus_event_from_json(json, strlen(json), err, sizeof err);
            ck_assert_msg(ev == NULL, "%s case %zu decoded", members[m], i);
            char where[64];
            snprintf(where, sizeof where, "'%s'", members[m]);
            /* offset of the bad byte in the input */
            char off[48];
            snprintf(off, sizeof off, "byte offset %zu",
                     (size_t)(strstr(json, v) - json) + 2);
            ck_assert_msg(strstr(err, where) && strstr(err, off) &&
                              strstr(err, "UTF-8"),
                          "%s case %zu: '%s' (want %s)", members[m], i, err,
                          off);
        }
    }
    /* data: in a JSON value, and as a text string */
    const char *in_data = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":"
                          "\"/s\",\"type\":\"t.t.t\",\"data\":{\"a\":\"\xc0\x80\"}}";
    char err[256] = "";
    ck_assert_ptr_null(
        evbus_event_from_json(in_data, strlen(in_data), err, sizeof err));
    ck_assert_msg(strstr(err, "'data'") && strstr(err, "overlong"), "%s",
                  err);
    const char *text = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
                       "\"type\":\"t.t.t\",\"datacontenttype\":\"text/plain\","
                       "\"data\":\"\xf8\"}";
    ck_assert_ptr_null(
        evbus_event_from_json(text, strlen(text), err, sizeof err));
    ck_assert_msg(strstr(err, "'data'"), "%s", err);
    /* lenient JSON cJSON would take */
    const char *lenient[] = {
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
        "\"type\":\"t.t.t\",\"data\":[01]}",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
        "\"type\":\"t.t.t\",\"data\":\"a\tb\"}",
        "{\"specversion\":\"1.0\",\x0b\"id\":\"1\",\"source\":\"/s\","
        "\"type\":\"t.t.t\"}",
    };
    for (size_t i = 0; i < sizeof lenient / sizeof lenient[0]; i++) {
        ck_assert_msg(evbus_event_from_json(lenient[i], strlen(lenient[i]),
                                            err, sizeof err) == NULL,
                      "lenient case %zu decoded", i);
        ck_assert_msg(strstr(err, "not JSON") && strstr(err, "byte offset"),
                      "case %zu: %s", i, err);
    }
    /* escaped non-ASCII is fine, and so is raw UTF-8 */
    const char *ok = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
                     "\"type\":\"t.t.t\",\"subject\":\"\\u00e9\xe2\x82\xac"
                     "\\ud83d\\ude00\",\"data\":{\"k\":\"\xf0\x9f\x98\x80\"}}";
    evbus_event_t *ev = evbus_event_from_json(ok, strlen(ok), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    ck_assert_str_eq(evbus_event_subject(ev),
                     "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    evbus_event_free(ev);
}
END_TEST

/* The decoder skips plain runs of a string many bytes at a time: a byte
 * that needs a look is found wherever it sits in the run, and a string
 * that holds only printable ASCII as written skips the control-character
 * look of the attributes - escapes, DEL and C1 controls still get it. */
START_TEST(decoder_finds_each_byte_of_a_long_string)
{
    static const struct {
        const char *bytes, *want;
    } bad[] = {
        {"\x01", "not JSON: control character inside a string"},
        {"\xff", "attribute 'subject' is not valid UTF-8"},
        {"\xe2\x82", "attribute 'subject' is not valid UTF-8"},
        {"\x7f", "attribute 'subject' contains a control character"},
        {"\xc2\x85", "attribute 'subject' contains a control character"},
        {"\\u0001", "attribute 'subject' contains a control character"},
        {"\\n", "attribute 'subject' contains a control character"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        for (size_t pos = 0; pos <= 40; pos++) {
            char v[64];
            memset(v, 'x', 40);
            v[40] = '\0';
            char bytes[8];
            snprintf(bytes, sizeof bytes, "%s", bad[b].bytes);
            memcpy(v + pos, bytes, strlen(bytes) < 40 - pos ? strlen(bytes)
                                                            : 40 - pos);
            if (pos == 40)
                snprintf(v + 40, sizeof v - 40, "%s", bytes);
            char *json = event_with("subject", v);
            char err[256] = "";
            evbus_event_t *ev =
                evbus_event_from_json(json, strlen(json), err, sizeof err);
            /* a cut escape or sequence may no longer be one */
            if (pos + strlen(bytes) > 40 && pos != 40) {
                evbus_event_free(ev);
                continue;
            }
            ck_assert_msg(ev == NULL, "case %zu at %zu decoded", b, pos);
            ck_assert_msg(strstr(err, bad[b].want), "case %zu at %zu: %s", b,
                          pos, err);
            if (bad[b].bytes[0] != '\\' && strcmp(bad[b].bytes, "\x7f") &&
                strcmp(bad[b].bytes, "\xc2\x85")) {
                char off[48];
                snprintf(off, sizeof off, "byte offset %zu",
                         (size_t)(strstr(json, "\"subject\":\"") - json) +
                             11 + pos);
                ck_assert_msg(strstr(err, off), "case %zu at %zu: %s (want %s)",
                              b, pos, err, off);
            }
        }
    }
    /* the same bytes where they are allowed: DEL, C1 and escapes in text
     * data, and printable ASCII of any length in an attribute */
    for (size_t pos = 1; pos <= 40; pos++) {
        char json[256], v[64];
        memset(v, 'x', 40);
        memcpy(v + pos % 38, "\x7f\xc2\x85", 3);
        v[40] = '\0';
        snprintf(json, sizeof json,
                 "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\","
                 "\"type\":\"t.t.t\",\"datacontenttype\":\"text/plain\","
                 "\"subject\":\"%.*s\",\"data\":\"%s\\n\"}",
                 (int)pos, "~ !#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}z", v);
        char err[256] = "";
        evbus_event_t *ev =
            evbus_event_from_json(json, strlen(json), err, sizeof err);
        ck_assert_msg(ev != NULL, "at %zu: %s", pos, err);
        ck_assert_int_eq((int)strlen(evbus_event_subject(ev)), (int)pos);
        ck_assert_int_eq((int)evbus_event_data_len(ev), 41);
        evbus_event_free(ev);
    }
}
END_TEST

/* Deterministic pseudo-random bytes (xorshift). */
static unsigned long long rng = 88172645463325252ull;
static unsigned rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)rng;
}

START_TEST(whatever_setters_accept_encodes_to_json_that_decodes_back)
{
    /* random strings mixing ASCII, controls, valid and broken UTF-8 */
    static const char *const pieces[] = {
        "a", "Z", "\"", "\\", "/", " ", "\t", "\x7f", "\xc3\xa9",
        "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc0\x80", "\xed\xa0\x80",
        "\xff", "\x80", "\xe2\x82", "\xf4\x90\x80\x80", "\xc2\x85", "%",
        "{", "0", "-", ".",
    };
    size_t np = sizeof pieces / sizeof pieces[0];
    int accepted = 0;
    for (int round = 0; round < 3000; round++) {
        char s[64] = "";
        int k = 1 + (int)(rnd() % 6);
        for (int i = 0; i < k; i++)
            strcat(s, pieces[rnd() % np]);
        evbus_event_t *ev = evbus_event_new("t.t.t", "/s");
        int ok = 0;
        ok += evbus_event_set_subject(ev, s) == EVBUS_OK;
        ok += evbus_event_set_ext(ev, "e", s) == EVBUS_OK;
        ok += evbus_event_set_id(ev, s) == EVBUS_OK;
        char data[80];
        snprintf(data, sizeof data, "{\"v\":\"%s\"}", s);
        ok += evbus_event_set_data_json(ev, data) == EVBUS_OK;
        accepted += ok;
        size_t len;
        char *json = evbus_event_to_json(ev, &len);
        ck_assert_ptr_nonnull(json);
        char err[256];
        evbus_event_t *back = evbus_event_from_json(json, len, err, sizeof err);
        ck_assert_msg(back != NULL, "encoded %s does not decode: %s", json,
                      err);
        ck_assert(evbus_event_equal(ev, back));
        ck_assert_int_eq(evbus_event_validate(ev, err, sizeof err), EVBUS_OK);
        evbus_event_free(back);
        free(json);
        evbus_event_free(ev);
    }
    ck_assert_int_gt(accepted, 100); /* the property was exercised */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event-text");
    TCase *tc = tcase_create("utf8");
    tcase_add_test(tc, setters_refuse_ill_formed_utf8_with_attribute_and_offset);
    tcase_add_test(tc, other_setters_and_constructor_refuse_ill_formed_utf8);
    tcase_add_test(tc, json_data_must_be_strict_json_text);
    tcase_add_test(tc,
                   decoder_refuses_ill_formed_utf8_naming_attribute_and_offset);
    tcase_add_test(tc, decoder_finds_each_byte_of_a_long_string);
    tcase_add_test(tc, whatever_setters_accept_encodes_to_json_that_decodes_back);
    tcase_add_test(tc, set_data_bytes_keeps_bytes_and_invents_no_content_type);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
