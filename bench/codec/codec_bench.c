/*
 * The CloudEvents JSON codec beside cJSON, from the same run:
 *   decode  evbus_event_from_json (parse with cJSON, strict JSON text and
 *           UTF-8 check, every attribute validated, one allocation)
 *           vs the raw baseline cJSON_ParseWithLength + cJSON_Delete,
 *           the least any consumer of JSON events does;
 *   encode  evbus_event_to_json vs cJSON_PrintUnformatted of the same
 *           event as a prebuilt cJSON tree.
 * Several rounds, alternating; prints each round and the median ratio.
 *
 *   codec-bench [--events N] [--size DATA_BYTES] [--rounds R] [--utf8]
 * --utf8 fills the data and subject with non-ASCII text (the slow path of
 * the UTF-8 check) instead of ASCII.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <evbus/evbus.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long events = 200000, size = 100;
    int rounds = 5, utf8 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc)
            events = atol(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = atol(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--utf8"))
            utf8 = 1;
        else {
            fprintf(stderr, "usage: %s [--events N] [--size BYTES] "
                            "[--rounds R] [--utf8]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > 50)
        rounds = 5;
    /* one event like evbus-bench's: a JSON string of size bytes as data */
    char *text = malloc((size_t)size + 1);
    for (long i = 0; i < size; i++)
        text[i] = (char)('a' + i % 26);
    if (utf8)
        for (long i = 0; i + 2 <= size; i += 2)
            memcpy(text + i, "\xc3\xa9", 2);
    text[size] = '\0';
    char *data = malloc((size_t)size + 32);
    snprintf(data, (size_t)size + 32, "{\"payload\":\"%s\"}", text);
    evbus_event_t *ev = evbus_event_new("bench.codec.measured", "/bench/codec");
    evbus_event_set_subject(ev, utf8 ? "sujet \xc3\xa9t\xc3\xa9" : "subject");
    evbus_event_set_ext(ev, "partitionkey", "key-42");
    if (evbus_event_set_data_json(ev, data) != EVBUS_OK) {
        fprintf(stderr, "bad data: %s\n", evbus_event_error_message());
        return 1;
    }
    size_t len;
    char *json = evbus_event_to_json(ev, &len);
    cJSON *tree = cJSON_ParseWithLength(json, len);

    double dec_ratio[50], enc_ratio[50];
    printf("codec-bench: %ld events of %zu bytes (%s data), %d rounds\n",
           events, len, utf8 ? "non-ASCII" : "ASCII", rounds);
    for (int r = 0; r < rounds; r++) {
        char err[256];
        double t0 = now();
        for (long i = 0; i < events; i++) {
            cJSON *c = cJSON_ParseWithLength(json, len);
            if (!c)
                return 1;
            cJSON_Delete(c);
        }
        double t1 = now();
        for (long i = 0; i < events; i++) {
            evbus_event_t *e = evbus_event_from_json(json, len, err,
                                                     sizeof err);
            if (!e) {
                fprintf(stderr, "decode: %s\n", err);
                return 1;
            }
            evbus_event_free(e);
        }
        double t2 = now();
        for (long i = 0; i < events; i++)
            free(cJSON_PrintUnformatted(tree));
        double t3 = now();
        for (long i = 0; i < events; i++)
            free(evbus_event_to_json(ev, NULL));
        double t4 = now();
        double raw_d = events / (t1 - t0), ev_d = events / (t2 - t1);
        double raw_e = events / (t3 - t2), ev_e = events / (t4 - t3);
        dec_ratio[r] = ev_d / raw_d;
        enc_ratio[r] = ev_e / raw_e;
        printf("round %d: decode evbus %.0f/s cJSON %.0f/s (%.2fx); "
               "encode evbus %.0f/s cJSON %.0f/s (%.2fx)\n",
               r + 1, ev_d, raw_d, dec_ratio[r], ev_e, raw_e, enc_ratio[r]);
    }
    qsort(dec_ratio, (size_t)rounds, sizeof dec_ratio[0], cmp);
    qsort(enc_ratio, (size_t)rounds, sizeof enc_ratio[0], cmp);
    printf("median ratio: decode %.2fx of cJSON parse, encode %.2fx of "
           "cJSON print\n",
           dec_ratio[rounds / 2], enc_ratio[rounds / 2]);
    cJSON_Delete(tree);
    free(json);
    free(data);
    free(text);
    evbus_event_free(ev);
    return 0;
}
