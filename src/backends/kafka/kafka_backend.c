/*
 * kafka:// - the backend table, opening (configuration pass-through),
 * health, logging and error mapping.
 *
 *   kafka://host:port[,host:port...]?content_mode=binary&kafka.linger.ms=5
 *
 * Options:
 *   content_mode=structured|binary   CloudEvents Kafka binding mode used
 *                                    when publishing (default structured);
 *                                    consumers read both
 *   connect_timeout_ms=N             how long evbus_open and evbus_health
 *                                    wait for the cluster (default 10000)
 *   commit_timeout_ms=N              how long a commit that records
 *                                    attempts may wait for the group
 *                                    coordinator (default 5000)
 *   kafka.<property>=V               any librdkafka property, for the
 *                                    producer and every consumer (one
 *                                    per consumer group the bus joins)
 *   kafka.producer.<property>=V      the producer only
 *   kafka.consumer.<property>=V      the consumers only
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_internal.h"

/* ------------------------------------------------------------ errors */

int evbus__kafka_topic_check(const char *topic)
{
    size_t len = topic ? strlen(topic) : 0;
    if (len == 0 || len > 249 || !strcmp(topic, ".") || !strcmp(topic, ".."))
        return EVBUS_EINVAL;
    for (const char *p = topic; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return EVBUS_EINVAL;
    }
    return EVBUS_OK;
}

int evbus__kafka_map_err(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return EVBUS_OK;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        return EVBUS_ETIMEDOUT;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
        return EVBUS_ECONN;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return EVBUS_ETOOBIG;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return EVBUS_EAGAIN;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
        return EVBUS_EAUTH;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return EVBUS_ENOTFOUND;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return EVBUS_EINVAL;
    case RD_KAFKA_RESP_ERR__DESTROY:
        return EVBUS_ECLOSED;
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
        return EVBUS_EAGAIN;
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return EVBUS_EREJECTED;
    default:
        return EVBUS_EIO;
    }
}

/* ------------------------------------------------------------ logging */

static int map_level(int syslog_level)
{
    if (syslog_level <= 3)
        return EVBUS_LOG_ERROR;
    if (syslog_level == 4)
        return EVBUS_LOG_WARN;
    if (syslog_level <= 6)
        return EVBUS_LOG_INFO;
    return EVBUS_LOG_DEBUG;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    kafka_bus_t *kb = kafka_opaque_bus(rd_kafka_opaque(rk));
    if (kb && kb->host)
        evbus_host_log(kb->host, map_level(level), "%s %s: %s",
                       rd_kafka_name(rk), fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque)
{
    kafka_bus_t *kb = kafka_opaque_bus(opaque);
    if (!kb || !kb->host)
        return;
    /* Transport errors are retried by librdkafka; only fatal ones end a
     * handle (a publish then fails with its delivery report). */
    int level = err == RD_KAFKA_RESP_ERR__FATAL ? EVBUS_LOG_ERROR
                                                : EVBUS_LOG_WARN;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        evbus_host_log(kb->host, level, "%s: fatal error %s: %s",
                       rd_kafka_name(rk), rd_kafka_err2name(orig), why);
        return;
    }
    evbus_host_log(kb->host, level, "%s: %s: %s", rd_kafka_name(rk),
                   rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

void evbus__kafka_set_log_callbacks(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
}

/* ------------------------------------------------------------ open */

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                    const char *shown_as, char *errstr, size_t n)
{
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) ==
        RD_KAFKA_CONF_OK)
        return EVBUS_OK;
    snprintf(errstr, n, "kafka: bad option %s=%s: %s", shown_as, value, why);
    return EVBUS_EOPTION;
}

/* The defaults this backend needs; a kafka.* option may override them
 * (except where noted in kafka_open). */
static int set_defaults(rd_kafka_conf_t *pconf, rd_kafka_conf_t *cconf,
                        const char *brokers, char *errstr, size_t n)
{
    static const char *const common[][2] = {
        {"client.id", "evbus"},
        {"log.connection.close", "false"},
    };
    static const char *const producer[][2] = {
        {"enable.idempotence", "true"}, /* implies acks=all */
        {"message.timeout.ms", "60000"},
    };
    static const char *const consumer[][2] = {
        {"auto.offset.reset", "earliest"},
        {"enable.auto.offset.store", "false"},
        {"allow.auto.create.topics", "true"},
        {"enable.partition.eof", "false"},
        {"fetch.wait.max.ms", "100"},
    };
    int rc = EVBUS_OK;
    rc = rc ? rc : conf_set(pconf, "bootstrap.servers", brokers, "URL hosts",
                            errstr, n);
    rc = rc ? rc : conf_set(cconf, "bootstrap.servers", brokers, "URL hosts",
                            errstr, n);
    for (size_t i = 0; !rc && i < sizeof common / sizeof common[0]; i++) {
        rc = conf_set(pconf, common[i][0], common[i][1], common[i][0], errstr,
                      n);
        if (!rc)
            rc = conf_set(cconf, common[i][0], common[i][1], common[i][0],
                          errstr, n);
    }
    for (size_t i = 0; !rc && i < sizeof producer / sizeof producer[0]; i++)
        rc = conf_set(pconf, producer[i][0], producer[i][1], producer[i][0],
                      errstr, n);
    for (size_t i = 0; !rc && i < sizeof consumer / sizeof consumer[0]; i++)
        rc = conf_set(cconf, consumer[i][0], consumer[i][1], consumer[i][0],
                      errstr, n);
    return rc;
}

/* Applies every kafka.* URL parameter and marks it understood. */
static int apply_passthrough(const evbus_url_t *url, rd_kafka_conf_t *pconf,
                             rd_kafka_conf_t *cconf, char *errstr, size_t n)
{
    const char *key, *value;
    for (size_t i = 0; evbus_url_param_at(url, i, &key, &value) == 0; i++) {
        if (strncmp(key, "kafka.", 6) != 0)
            continue;
        const char *prop = key + 6;
        bool to_p = true, to_c = true;
        if (strncmp(prop, "producer.", 9) == 0) {
            prop += 9;
            to_c = false;
        } else if (strncmp(prop, "consumer.", 9) == 0) {
            prop += 9;
            to_p = false;
        }
        if (!*prop) {
            snprintf(errstr, n, "kafka: option %s names no property", key);
            return EVBUS_EOPTION;
        }
        if (!value)
            value = "";
        if (strcmp(prop, "group.id") == 0) {
            snprintf(errstr, n,
                     "kafka: option %s is not allowed: the group is the "
                     "subscription's group",
                     key);
            return EVBUS_EOPTION;
        }
        int rc = EVBUS_OK;
        if (to_p)
            rc = conf_set(pconf, prop, value, key, errstr, n);
        if (!rc && to_c)
            rc = conf_set(cconf, prop, value, key, errstr, n);
        if (rc)
            return rc;
        evbus_url_mark(url, key);
    }
    return EVBUS_OK;
}

static void kafka_close(void *priv);

static int kafka_open(void *priv, evbus_host_t *host, const evbus_url_t *url,
                      char *errstr, size_t n)
{
    kafka_bus_t *kb = priv;
    kb->self = kb;
    kb->host = host;
    pthread_mutex_init(&kb->mu, NULL);
    evbus__cond_init(&kb->cv);
    pthread_mutex_init(&kb->groups_mu, NULL);

    int rc = EVBUS_EURL;
    const char *brokers = evbus_url_hostlist(url);
    if (!brokers || !*brokers) {
        snprintf(errstr, n,
                 "kafka: URL names no broker (kafka://host:port[,host:port])");
        goto fail_early;
    }
    const char *mode = evbus_url_param(url, "content_mode");
    if (!mode || strcmp(mode, "structured") == 0) {
        kb->mode = KAFKA_MODE_STRUCTURED;
    } else if (strcmp(mode, "binary") == 0) {
        kb->mode = KAFKA_MODE_BINARY;
    } else {
        snprintf(errstr, n,
                 "kafka: content_mode must be structured or binary, not '%s'",
                 mode);
        rc = EVBUS_EOPTION;
        goto fail_early;
    }
    long long tmo;
    rc = evbus_url_param_int(url, "connect_timeout_ms", 10000, 1, 3600000,
                             &tmo, errstr, n);
    if (rc != EVBUS_OK)
        goto fail_early;
    kb->timeout_ms = (int)tmo;
    rc = evbus_url_param_int(url, "commit_timeout_ms", 5000, 1, 3600000, &tmo,
                             errstr, n);
    if (rc != EVBUS_OK)
        goto fail_early;
    kb->commit_timeout_ms = (int)tmo;

    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    rd_kafka_conf_t *cconf = rd_kafka_conf_new();
    rc = set_defaults(pconf, cconf, brokers, errstr, n);
    if (!rc)
        rc = apply_passthrough(url, pconf, cconf, errstr, n);
    /* At-least-once depends on committing only settled work, and the
     * attempts travel in the metadata of the backend's own commits
     * (kafka_attempts.c): auto-commit would overwrite it. */
    if (!rc)
        rc = conf_set(cconf, "enable.auto.offset.store", "false",
                      "enable.auto.offset.store", errstr, n);
    if (!rc)
        rc = conf_set(cconf, "enable.auto.commit", "false",
                      "enable.auto.commit", errstr, n);
    /* Refuse a misspelt option before spending connect_timeout_ms on the
     * cluster (the core would refuse it after open anyway). */
    const char *unused = rc ? NULL : evbus_url_unused(url);
    if (unused) {
        snprintf(errstr, n, "unknown option '%s' for kafka:// URLs", unused);
        rc = EVBUS_EOPTION;
    }
    if (rc) {
        rd_kafka_conf_destroy(pconf);
        rd_kafka_conf_destroy(cconf);
        goto fail_early;
    }
    kb->consumer_conf = cconf;
    rc = evbus__kafka_producer_open(kb, pconf, errstr, n); /* takes pconf */
    if (rc) {
        kafka_close(kb);
        return rc;
    }

    /* Fail here, not later, when the cluster cannot be reached. */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err =
        rd_kafka_metadata(kb->producer, 0, NULL, &md, kb->timeout_ms);
    if (err) {
        snprintf(errstr, n, "kafka: cannot reach %s within %d ms: %s",
                 brokers, kb->timeout_ms, rd_kafka_err2str(err));
        kafka_close(kb);
        return EVBUS_ECONN;
    }
    evbus_host_log(host, EVBUS_LOG_INFO,
                   "connected to %s (%d brokers, %s mode)", brokers,
                   md->broker_cnt,
                   kb->mode == KAFKA_MODE_BINARY ? "binary" : "structured");
    rd_kafka_metadata_destroy(md);
    return EVBUS_OK;

fail_early: /* nothing but the locks made yet (or left) */
    pthread_mutex_destroy(&kb->mu);
    pthread_mutex_destroy(&kb->groups_mu);
    pthread_cond_destroy(&kb->cv);
    return rc;
}

static void kafka_close(void *priv)
{
    kafka_bus_t *kb = priv;
    atomic_store(&kb->closing, true);
    evbus__kafka_groups_close(kb);
    evbus__kafka_producer_close(kb);
    if (kb->consumer_conf)
        rd_kafka_conf_destroy(kb->consumer_conf);
    kb->consumer_conf = NULL;
    pthread_mutex_destroy(&kb->mu);
    pthread_mutex_destroy(&kb->groups_mu);
    pthread_cond_destroy(&kb->cv);
}

static int kafka_health(void *priv, char *errstr, size_t n)
{
    kafka_bus_t *kb = priv;
    int tmo = kb->timeout_ms < 3000 ? kb->timeout_ms : 3000;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(kb->producer, 0, NULL, &md,
                                                tmo);
    if (err) {
        snprintf(errstr, n, "kafka: metadata request failed within %d ms: %s",
                 tmo, rd_kafka_err2str(err));
        return evbus__kafka_map_err(err) == EVBUS_ETIMEDOUT ? EVBUS_ETIMEDOUT
                                                            : EVBUS_ECONN;
    }
    int brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    if (brokers <= 0) {
        snprintf(errstr, n, "kafka: the cluster reports no brokers");
        return EVBUS_ECONN;
    }
    char why[256];
    rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(kb->producer, why,
                                                     sizeof why);
    if (fatal) {
        snprintf(errstr, n, "kafka: producer failed permanently: %s", why);
        return EVBUS_EIO;
    }
    return EVBUS_OK;
}

const evbus_backend_t evbus_backend_kafka = {
    .version = EVBUS_BACKEND_VERSION,
    .scheme = "kafka",
    .priv_size = sizeof(kafka_bus_t),
    .features = EVBUS_FEAT_PERSISTENT | EVBUS_FEAT_ORDERED_BY_KEY |
                EVBUS_FEAT_CROSS_PROCESS,
    .open = kafka_open,
    .close = kafka_close,
    .publish = evbus__kafka_publish,
    .publish_async = evbus__kafka_publish_async,
    .flush = evbus__kafka_flush,
    .subscribe = evbus__kafka_subscribe,
    .unsubscribe = evbus__kafka_unsubscribe,
    .fetch = evbus__kafka_fetch,
    .settle = evbus__kafka_settle,
    .health = kafka_health,
    .record_attempts = evbus__kafka_record_attempts,
};
