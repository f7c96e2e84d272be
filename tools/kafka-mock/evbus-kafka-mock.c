/*
 * evbus-kafka-mock - runs a librdkafka mock cluster (real Kafka protocol on
 * 127.0.0.1 ports, no Kafka needed) so separate processes can share it.
 *
 *   evbus-kafka-mock [--brokers N] [--topic NAME[:PARTITIONS]]...
 *                    [--partitions P] [--no-stdin]
 *
 * Prints "BROKERS=<host:port,...>" on stdout (flushed) once the cluster is
 * up, then runs until stdin reaches end of file (the parent went away or
 * closed the pipe), SIGTERM or SIGINT. --no-stdin ignores stdin (daemons).
 * Topics are auto-created on first use (the mock's default partition
 * count); --topic creates one upfront with PARTITIONS partitions (default
 * --partitions, else 4) and replication factor min(3, brokers).
 * Exit status 0 after a clean stop, 1 on errors, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: evbus-kafka-mock [--brokers N] [--partitions P] "
               "[--topic NAME[:PARTITIONS]]... [--no-stdin]\n");
}

static int quiet_log_level = 3;

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    (void)rk;
    if (level <= quiet_log_level)
        fprintf(stderr, "evbus-kafka-mock: %s: %s\n", fac, buf);
}

int main(int argc, char **argv)
{
    int brokers = 3, partitions = 0, use_stdin = 1;
    const char *topics[64];
    int ntopics = 0;
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"partitions", required_argument, NULL, 'p'},
        {"topic", required_argument, NULL, 't'},
        {"no-stdin", no_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:p:t:nvh", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            brokers = atoi(optarg);
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 't':
            if (ntopics == (int)(sizeof topics / sizeof topics[0])) {
                fprintf(stderr, "evbus-kafka-mock: too many --topic\n");
                return 2;
            }
            topics[ntopics++] = optarg;
            break;
        case 'n':
            use_stdin = 0;
            break;
        case 'v':
            quiet_log_level = 7;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (brokers < 1 || brokers > 64 || partitions < 0 || optind != argc) {
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before librdkafka starts threads, so only
     * the signalfd below sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
    if (sfd < 0) {
        perror("evbus-kafka-mock: signalfd");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "evbus-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "evbus-kafka-mock: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 0; i < ntopics; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s", topics[i]);
        int parts = partitions > 0 ? partitions : 4;
        char *colon = strrchr(name, ':');
        if (colon) {
            *colon = '\0';
            parts = atoi(colon + 1);
        }
        int rf = brokers < 3 ? brokers : 3;
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, parts, rf);
        if (e || parts < 1) {
            fprintf(stderr, "evbus-kafka-mock: cannot create topic %s: %s\n",
                    name, e ? rd_kafka_err2str(e) : "bad partition count");
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("BROKERS=%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    struct pollfd pfd[2] = {{sfd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    int nfds = use_stdin ? 2 : 1;
    int rc = 0;
    for (;;) {
        if (poll(pfd, (nfds_t)nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("evbus-kafka-mock: poll");
            rc = 1;
            break;
        }
        if (pfd[0].revents)
            break; /* a stop signal */
        if (nfds == 2 && pfd[1].revents) {
            char buf[256];
            ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                break; /* stdin closed */
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    close(sfd);
    return rc;
}
