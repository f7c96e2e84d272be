/* Cost of guarding a call with the circuit breaker, and of computing a
 * backoff delay, printed beside the raw call from the same run. The guarded
 * function does a little work (an xorshift step) so the raw figure is a real
 * call, not a folded constant. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evbus/breaker.h>
#include <evbus/evbus.h>
#include <evbus/retry.h>

static long calls = 5000000;
static int threads = 8;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int work(void *opaque)
{
    uint64_t *s = opaque;
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return 0;
}

typedef struct {
    evbus_breaker_t *b; /* NULL = raw */
    long n;
    uint64_t sink;
} job_t;

static void *run(void *arg)
{
    job_t *j = arg;
    uint64_t s = 88172645463325252ull ^ (uintptr_t)j;
    if (j->b) {
        for (long i = 0; i < j->n; i++)
            evbus_breaker_call(j->b, work, NULL, &s);
    } else {
        int (*volatile fn)(void *) = work; /* keep the call */
        for (long i = 0; i < j->n; i++)
            fn(&s);
    }
    j->sink = s;
    return NULL;
}

static double measure(evbus_breaker_t *b, int nthreads)
{
    pthread_t th[64];
    job_t jobs[64];
    long per = calls / nthreads;
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (job_t){.b = b, .n = per};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    return dt * 1e9 / (double)(per * nthreads); /* ns per call, wall clock */
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--calls"))
            calls = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    }
    if (calls < 1 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s [--calls N] [--threads 1..64]\n", argv[0]);
        return 2;
    }
    evbus_breaker_t *b = evbus_breaker_new(NULL, NULL, 0);
    if (!b)
        return 1;
    printf("%-36s %12s %12s\n", "", "raw ns/call", "evbus ns/call");
    printf("%-36s %12.1f %12.1f\n", "breaker_call, 1 thread",
           measure(NULL, 1), measure(b, 1));
    char label[64];
    snprintf(label, sizeof label, "breaker_call, %d threads (wall/call)",
             threads);
    printf("%-36s %12.1f %12.1f\n", label, measure(NULL, threads),
           measure(b, threads));
    evbus_breaker_free(b);

    evbus_retry_policy_t p;
    evbus_retry_policy_init(&p);
    const char *kinds[] = {"none", "full", "equal", "decorrelated"};
    for (int k = 0; k < 4; k++) {
        p.jitter = (evbus_jitter_t)k;
        long n = calls;
        long sum = 0;
        int prev = 0;
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            prev = evbus_retry_delay_ms(&p, (int)(i % 12) + 1, prev);
            sum += prev;
        }
        double ns = (now_s() - t0) * 1e9 / (double)n;
        snprintf(label, sizeof label, "retry_delay_ms %s", kinds[k]);
        printf("%-36s %12s %12.1f   (checksum %ld)\n", label, "-", ns, sum);
    }
    return 0;
}
