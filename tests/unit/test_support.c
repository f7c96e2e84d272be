/* The internal support layer (src/support/) that the core, the backends
 * and the patterns share: the growing buffer and its JSON string writer
 * (the event encoder's and the Dapr backend's one escaper). Links the
 * static library for the evbus__ names. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "support/buf.h"

/* s[0..n) written as a JSON string by the buffer. */
static char *json_of(const char *s, size_t n)
{
    evbus__buf_t b = {0};
    evbus__buf_json_strn(&b, s, n);
    ck_assert(!b.failed);
    ck_assert_uint_eq(strlen(b.data), b.len); /* NUL-terminated */
    return evbus__buf_take(&b, NULL);
}

START_TEST(json_str_escapes_what_json_requires)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "\"plain\""},
        {"a\"b\\c", 5, "\"a\\\"b\\\\c\""},
        {"\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\""},
        {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
        {"a\0b", 3, "\"a\\u0000b\""}, /* n bytes, not up to a NUL */
        {"\x7f/\xc3\xa9", 4, "\"\x7f/\xc3\xa9\""}, /* copied as is */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *j = json_of(cases[i].in, cases[i].n);
        ck_assert_str_eq(j, cases[i].out);
        free(j);
    }
    evbus__buf_t b = {0};
    evbus__buf_json_str(&b, "x\"y");
    ck_assert_str_eq(b.data, "\"x\\\"y\"");
    evbus__buf_free(&b);
}
END_TEST

/* Every position of an escape in and around the 8- and 16-byte blocks the
 * plain-run scan takes at once, each read back by cJSON. */
START_TEST(json_str_escapes_at_every_offset)
{
    static const char specials[] = {'"', '\\', '\n', '\x01', '\x1f'};
    char in[70];
    for (size_t len = 1; len < sizeof in; len++) {
        for (size_t at = 0; at < len; at++) {
            for (size_t k = 0; k < sizeof specials; k++) {
                memset(in, 'a' + (int)(at % 26), len);
                in[at] = specials[k];
                char *j = json_of(in, len);
                cJSON *v = cJSON_Parse(j);
                ck_assert_msg(cJSON_IsString(v), "len %zu at %zu: %s", len,
                              at, j);
                ck_assert_uint_eq(strlen(v->valuestring), len);
                ck_assert(memcmp(v->valuestring, in, len) == 0);
                cJSON_Delete(v);
                free(j);
            }
        }
    }
}
END_TEST

/* Appends after other text, growing from a small buffer many times. */
START_TEST(json_str_grows_the_buffer)
{
    evbus__buf_t b = {0};
    evbus__buf_puts(&b, "[");
    size_t n = 5000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 97 == 0 ? '"' : 'x';
    evbus__buf_json_strn(&b, big, n);
    evbus__buf_puts(&b, "]");
    ck_assert(!b.failed);
    cJSON *v = cJSON_Parse(b.data);
    ck_assert(cJSON_IsArray(v));
    const cJSON *s = cJSON_GetArrayItem(v, 0);
    ck_assert(cJSON_IsString(s));
    ck_assert(memcmp(s->valuestring, big, n) == 0);
    cJSON_Delete(v);
    free(big);
    evbus__buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("support");
    TCase *tc = tcase_create("buf");
    tcase_add_test(tc, json_str_escapes_what_json_requires);
    tcase_add_test(tc, json_str_escapes_at_every_offset);
    tcase_add_test(tc, json_str_grows_the_buffer);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
