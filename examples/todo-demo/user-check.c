/* todo-service's synchronous call to user-service: GET /users/{id} through a
 * short retry (evbus_retry_call) inside a circuit breaker
 * (evbus_breaker_call_ex), with "accepted, user unverified" as the fallback
 * while user-service cannot answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <evbus/breaker.h>
#include <evbus/retry.h>

#include "common/svc.h"
#include "user-check.h"

static evbus_breaker_t *breaker;
static evbus_retry_policy_t retry;
static const char *user_service_url;

static void on_state(evbus_breaker_state_t from, evbus_breaker_state_t to,
                      void *opaque)
{
    (void)opaque;
    svc_timeline("breaker users: %s -> %s", evbus_breaker_state_name(from),
                 evbus_breaker_state_name(to));
}

void user_check_init(void)
{
    user_service_url = svc_env_required("USER_SERVICE_URL");
    /* Sized for the demo: react after 2 failures, stay open 1.5 s, one probe. */
    evbus_breaker_opts_t o;
    evbus_breaker_opts_init(&o);
    o.window_size = 5;
    o.minimum_calls = 5;
    o.failure_rate_pct = 50;
    o.consecutive_failures = 2;
    o.open_ms = atoi(svc_env("BREAKER_OPEN_MS", "1500"));
    o.half_open_calls = 1;
    breaker = evbus_breaker_new(&o, NULL, 0);
    if (!breaker) {
        fprintf(stderr, "todo-service: bad breaker options\n");
        exit(2);
    }
    evbus_breaker_set_name(breaker, "users");
    evbus_breaker_on_state(breaker, on_state, NULL);

    evbus_retry_policy_init(&retry);
    retry.initial_ms = 50;
    retry.max_ms = 200;
    retry.jitter = EVBUS_JITTER_EQUAL;
    retry.max_attempts = 3;
    retry.max_elapsed_ms = 1000;
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t discard(char *p, size_t sz, size_t n, void *u)
{
    (void)p;
    (void)u;
    return sz * n;
}

/* One HTTP attempt. 0 = user-service answered (200 or 404); a retriable
 * evbus error when it could not (so evbus_retry_call tries again). */
static int ask_once(void *opaque)
{
    user_check_t *c = opaque;
    c->attempts++;
    char url[512];
    snprintf(url, sizeof url, "%s/users/%ld", user_service_url, c->user_id);
    CURL *h = curl_easy_init();
    if (!h)
        return EVBUS_ENOMEM;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 300L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 800L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    int rc;
    if (cc == CURLE_OPERATION_TIMEDOUT)
        rc = EVBUS_ETIMEDOUT;
    else if (cc != CURLE_OK)
        rc = EVBUS_ECONN;
    else if (status == 200 || status == 404) {
        /* A 404 is an answer ("no such user"), not a failure: unknown users
         * must not open the breaker against a healthy service. */
        c->exists = status == 200;
        return 0;
    } else
        rc = status >= 500 ? EVBUS_EIO : EVBUS_EREJECTED;
    snprintf(c->why, sizeof c->why, "%s",
             cc != CURLE_OK ? curl_easy_strerror(cc) : "bad HTTP status");
    svc_timeline("user check attempt %d for user %ld failed: %s", c->attempts,
                 c->user_id, c->why);
    return rc;
}

static int ask_with_retry(void *opaque)
{
    return evbus_retry_call(&retry, ask_once, opaque);
}

/* Graceful degradation: accept, and say the owner is unverified. */
static int degrade(void *opaque, int err)
{
    user_check_t *c = opaque;
    c->exists = 1;
    c->verified = 0;
    if (err == EVBUS_EBREAKER)
        snprintf(c->why, sizeof c->why, "breaker open: user-service not called");
    else {
        char tmp[sizeof c->why];
        snprintf(tmp, sizeof tmp, "user-service unreachable after %d attempts (%.120s)",
                 c->attempts, c->why);
        memcpy(c->why, tmp, sizeof c->why);
    }
    return 0;
}

void user_check(user_check_t *c)
{
    c->exists = 0;
    c->verified = 1;
    c->attempts = 0;
    c->why[0] = '\0';
    evbus_breaker_call_ex(breaker, ask_with_retry, degrade, c);
}

cJSON *user_check_breaker_json(void)
{
    evbus_breaker_stats_t s;
    evbus_breaker_stats_init(&s);
    evbus_breaker_stats(breaker, &s);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", evbus_breaker_name(breaker));
    cJSON_AddStringToObject(o, "state",
                            evbus_breaker_state_name(evbus_breaker_state(breaker)));
    cJSON_AddNumberToObject(o, "calls", (double)s.calls);
    cJSON_AddNumberToObject(o, "rejected", (double)s.rejected);
    cJSON_AddNumberToObject(o, "successes", (double)s.successes);
    cJSON_AddNumberToObject(o, "failures", (double)s.failures);
    cJSON_AddNumberToObject(o, "opened", (double)s.opened);
    return o;
}

void user_check_free(void)
{
    evbus_breaker_free(breaker);
    curl_global_cleanup();
}
