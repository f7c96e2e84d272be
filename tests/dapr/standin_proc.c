#include "standin_proc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

int standin_start(standin_t *s, const char *exe, const char *const *args)
{
    memset(s, 0, sizeof *s);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    const char *argv[32] = {exe, "--port", "0"};
    int n = 3;
    for (int i = 0; args && args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[128];
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "PORT %d", &s->port) == 1)
            continue;
        if (sscanf(line, "APP_PORT %d", &s->app_port) == 1)
            break;
    }
    if (f)
        fclose(f); /* the stand-in writes nothing more to stdout */
    s->pid = pid;
    if (s->port <= 0 || s->app_port <= 0) {
        fprintf(stderr, "stand-in %s did not report its ports\n", exe);
        standin_stop(s);
        return -1;
    }
    return 0;
}

void standin_stop(standin_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

void standin_url(const standin_t *s, char *buf, size_t n, const char *extra)
{
    snprintf(buf, n, "dapr://127.0.0.1:%d?pubsub=pubsub&app_port=%d%s",
             s->port, s->app_port, extra ? extra : "");
}

typedef struct {
    char *p;
    size_t len;
} buf_t;

static size_t on_body(char *d, size_t sz, size_t nm, void *o)
{
    buf_t *b = o;
    char *p = realloc(b->p, b->len + sz * nm + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, d, sz * nm);
    b->len += sz * nm;
    p[b->len] = '\0';
    b->p = p;
    return sz * nm;
}

long http_request(int port, const char *method, const char *path,
                  const void *body, size_t len, const char *const *headers,
                  char **out, char **out_headers)
{
    CURL *h = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    buf_t b = {0}, hb = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (out_headers) {
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &hb);
    }
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    }
    if (method)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    long status = 0;
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else if (getenv("EVBUS_TEST_LOG"))
        fprintf(stderr, "http %s: %s\n", url, curl_easy_strerror(cc));
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (out)
        *out = b.p ? b.p : strdup("");
    else
        free(b.p);
    if (out_headers)
        *out_headers = hb.p ? hb.p : strdup("");
    return status;
}

long http_call(int port, const char *path, const char *body,
               const char *const *headers, char **out)
{
    return http_request(port, NULL, path, body, body ? strlen(body) : 0,
                        headers, out, NULL);
}

long standin_stat(const standin_t *s, const char *name)
{
    char *body = NULL;
    long v = -1;
    if (http_call(s->port, "/standin/stats", NULL, NULL, &body) == 200) {
        cJSON *j = cJSON_Parse(body);
        cJSON *x = cJSON_GetObjectItem(j, name);
        if (cJSON_IsNumber(x))
            v = (long)x->valuedouble;
        cJSON_Delete(j);
    }
    free(body);
    return v;
}
