/*
 * kafka-raw-bench: the librdkafka baseline for kafka:// benchmarks, with the
 * settings the backend uses (idempotent producer, delivery reports, the
 * content-type header; consumer with a fresh group, earliest, offsets
 * stored per message like the backend's acks).
 *
 *   kafka-raw-bench --brokers LIST --mode publish|consume [--events N]
 *                   [--bytes B] [--topic T] [-X property=value]...
 *
 * publish: rd_kafka_producev loop (waiting on a full queue) + flush.
 * consume: fills a fresh topic untimed, then a fresh group reads it all;
 *          seconds include the group join (as evbus-bench consume does),
 *          steady_events_per_s counts from the first record on.
 * --decode: the records are CloudEvents in JSON (B bytes each, like the
 *          events evbus-bench sends) and the consumer handles each one as
 *          the CloudEvents Kafka binding requires at the least: checks the
 *          content-type header for structured mode, parses the value with
 *          cJSON and reads its id, type and data, then stores the offset.
 * --binary: the records are binary-mode CloudEvents as a kafka:// bus
 *          with content_mode=binary writes them (B value bytes, a
 *          content-type and five ce_ headers) and the consumer reads what
 *          any binary-mode consumer must: librdkafka's header list, the
 *          ce_specversion, ce_id, ce_source and ce_type values. The bare
 *          loop reads no header at all; this one is the floor of a binary
 *          consumer through librdkafka's public API.
 * Prints one JSON line like evbus-bench.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int decode, binary;
static long delivered, failed;
static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *o)
{
    (void)rk;
    (void)o;
    if (m->err)
        failed++;
    else
        delivered++;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char err[512];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-raw-bench: %s=%s: %s\n", k, v, err);
        exit(2);
    }
}

/* -X key=value: extra properties for both clients (as kafka.* in URLs) */
static const char *extra[32];
static int nextra;

static void set_extra(rd_kafka_conf_t *c)
{
    for (int i = 0; i < nextra; i++) {
        char kv[512];
        snprintf(kv, sizeof kv, "%s", extra[i]);
        char *eq = strchr(kv, '=');
        if (!eq) {
            fprintf(stderr, "kafka-raw-bench: -X wants key=value\n");
            exit(2);
        }
        *eq = '\0';
        set(c, kv, eq + 1);
    }
}

static void quiet(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf)
{
    (void)rk;
    if (level <= (getenv("RAW_DEBUG") ? 7 : 3))
        fprintf(stderr, "rdkafka %s: %s\n", fac, buf);
}

/* rd_kafka_producev with the given arguments, waiting out a full queue;
 * any other error ends the program. */
#define PRODUCE(rk, ...)                                                      \
    do {                                                                      \
        rd_kafka_resp_err_t e_;                                               \
        while ((e_ = rd_kafka_producev(rk, __VA_ARGS__, RD_KAFKA_V_END)) ==   \
               RD_KAFKA_RESP_ERR__QUEUE_FULL)                                 \
            rd_kafka_poll(rk, 1);                                             \
        if (e_) {                                                             \
            fprintf(stderr, "kafka-raw-bench: producev: %s\n",                \
                    rd_kafka_err2str(e_));                                    \
            exit(1);                                                          \
        }                                                                     \
        rd_kafka_poll(rk, 0);                                                 \
    } while (0)

/* The headers of an event a kafka:// bus writes in binary mode. */
static rd_kafka_headers_t *binary_headers(void)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    rd_kafka_header_add(h, "content-type", -1, "text/plain", -1);
    rd_kafka_header_add(h, "ce_specversion", -1, "1.0", -1);
    rd_kafka_header_add(h, "ce_id", -1, "6f1c2e0a-9a41-4c6e-b7a5-2b1d9f3e8c70",
                        -1);
    rd_kafka_header_add(h, "ce_source", -1, "/evbus/bench", -1);
    rd_kafka_header_add(h, "ce_type", -1, "bench.event.sent", -1);
    rd_kafka_header_add(h, "ce_time", -1, "2026-11-27T05:00:00.000000Z", -1);
    return h;
}

static double produce_all(const char *brokers, const char *topic, long n,
                          const char *value, size_t len)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", brokers);
    set(c, "enable.idempotence", "true");
    set_extra(c);
    rd_kafka_conf_set_dr_msg_cb(c, on_dr);
    rd_kafka_conf_set_log_cb(c, quiet);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka-raw-bench: %s\n", err);
        exit(1);
    }
    /* connect first, as evbus_open does */
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, NULL, &md, 10000) == 0)
        rd_kafka_metadata_destroy(md);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        if (binary) {
            /* the list is librdkafka's once a produce succeeds */
            rd_kafka_headers_t *h = binary_headers();
            PRODUCE(rk, RD_KAFKA_V_TOPIC(topic),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_VALUE((void *)value, len),
                    RD_KAFKA_V_HEADERS(h));
        } else {
            PRODUCE(rk, RD_KAFKA_V_TOPIC(topic),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_VALUE((void *)value, len),
                    RD_KAFKA_V_HEADER("content-type",
                                      "application/cloudevents+json", -1));
        }
    }
    rd_kafka_flush(rk, -1);
    double secs = now_s() - t0;
    rd_kafka_destroy(rk);
    if (failed) {
        fprintf(stderr, "kafka-raw-bench: %ld deliveries failed\n", failed);
        exit(1);
    }
    return secs;
}

/* What a binary-mode consumer reads first (see --binary). */
static int read_binary(const rd_kafka_message_t *m)
{
    static const char *const want[] = {"ce_specversion", "ce_id",
                                       "ce_source", "ce_type"};
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    size_t total = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const void *v;
        size_t n;
        if (rd_kafka_header_get_last(h, want[i], &v, &n) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            return 0;
        total += n;
    }
    return total > 0;
}

/* What a raw-client handler does first: tell the binding's mode from the
 * content-type header, parse the CloudEvent and find the attributes it
 * dispatches on. Returns 0 when the record is not a structured event. */
static int read_event(const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h;
    const void *ct;
    size_t ctlen;
    static const char want[] = "application/cloudevents+json";
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, "content-type", &ct, &ctlen) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        ctlen != sizeof want - 1 || memcmp(ct, want, ctlen) != 0)
        return 0;
    cJSON *root = cJSON_ParseWithLength(m->payload, m->len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    int ok = cJSON_IsString(id) && cJSON_IsString(type) && data != NULL;
    cJSON_Delete(root);
    return ok;
}

/* A structured-mode CloudEvent of exactly len bytes (len >= 200). */
static char *event_value(size_t len)
{
    static const char head[] =
        "{\"specversion\":\"1.0\",\"id\":\"6f1c2e0a-9a41-4c6e-b7a5-"
        "2b1d9f3e8c70\",\"source\":\"/evbus/bench\",\"type\":"
        "\"bench.event.sent\",\"time\":\"2026-11-27T05:00:00.000Z\","
        "\"datacontenttype\":\"text/plain\",\"data\":\"";
    char *v = malloc(len + 1);
    size_t h = sizeof head - 1;
    memcpy(v, head, h);
    memset(v + h, 'x', len - h - 2);
    memcpy(v + len - 2, "\"}", 3);
    return v;
}

static void consume_all(const char *brokers, const char *topic, long n,
                        double *secs, double *steady)
{
    char err[512], group[64];
    snprintf(group, sizeof group, "raw-bench-%d", (int)getpid());
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", brokers);
    set(c, "group.id", group);
    set(c, "auto.offset.reset", "earliest");
    set(c, "enable.auto.offset.store", "false");
    set(c, "fetch.wait.max.ms", "100");
    set_extra(c);
    rd_kafka_conf_set_log_cb(c, quiet);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka-raw-bench: %s\n", err);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    double t0 = now_s(), tfirst = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    long got = 0;
    while (got < n) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            if (!got)
                tfirst = now_s();
            got++;
            if ((decode && !read_event(m)) || (binary && !read_binary(m))) {
                fprintf(stderr, "kafka-raw-bench: record %ld is not an "
                                "event\n", got);
                exit(1);
            }
            rd_kafka_topic_partition_list_t *s =
                rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(s, topic, m->partition)
                ->offset = m->offset + 1;
            rd_kafka_offsets_store(rk, s);
            rd_kafka_topic_partition_list_destroy(s);
        }
        rd_kafka_message_destroy(m);
    }
    double t1 = now_s();
    *secs = t1 - t0;
    *steady = got > 1 && t1 > tfirst ? (double)(got - 1) / (t1 - tfirst) : 0;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *mode = "publish", *topic_opt = NULL;
    long events = 30000, bytes = 350;
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"mode", required_argument, NULL, 'm'},
        {"events", required_argument, NULL, 'n'},
        {"bytes", required_argument, NULL, 's'},
        {"topic", required_argument, NULL, 't'},
        {"set", required_argument, NULL, 'X'},
        {"decode", no_argument, &decode, 1},
        {"binary", no_argument, &binary, 1},
        {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "b:m:n:s:t:X:", opts, NULL)) != -1) {
        switch (ch) {
        case 'b': brokers = optarg; break;
        case 'm': mode = optarg; break;
        case 'n': events = atol(optarg); break;
        case 's': bytes = atol(optarg); break;
        case 't': topic_opt = optarg; break;
        case 'X':
            if (nextra < 32)
                extra[nextra++] = optarg;
            break;
        case 0: break;
        default: return 2;
        }
    }
    if (!brokers || events <= 0 || bytes <= 0 || (decode && bytes < 200) ||
        (decode && binary)) {
        fprintf(stderr, "usage: kafka-raw-bench --brokers LIST --mode "
                        "publish|consume [--events N] [--bytes B]\n"
                        "       [--decode (B >= 200) | --binary] [--topic T] "
                        "[-X prop=value]...\n");
        return 2;
    }
    char topic[128];
    if (topic_opt)
        snprintf(topic, sizeof topic, "%s", topic_opt);
    else
        snprintf(topic, sizeof topic, "rawbench.%s.%d.%ld", mode,
                 (int)getpid(), (long)time(NULL));
    char *value = decode ? event_value((size_t)bytes) : malloc((size_t)bytes);
    if (!decode)
        memset(value, 'x', (size_t)bytes);
    double secs = 0, steady = 0;
    if (strcmp(mode, "publish") == 0) {
        secs = produce_all(brokers, topic, events, value, (size_t)bytes);
        steady = (double)events / secs;
    } else if (strcmp(mode, "consume") == 0) {
        produce_all(brokers, topic, events, value, (size_t)bytes);
        consume_all(brokers, topic, events, &secs, &steady);
    } else {
        return 2;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"mode\":\"raw-%s%s\",\"events\":%ld,\"bytes\":%ld,"
           "\"seconds\":%.3f,\"events_per_s\":%.0f,"
           "\"steady_events_per_s\":%.0f,\"max_rss_kb\":%ld}\n",
           mode, decode ? "-decode" : binary ? "-binary" : "", events, bytes,
           secs,
           (double)events / secs, steady,
           ru.ru_maxrss);
    free(value);
    return 0;
}
