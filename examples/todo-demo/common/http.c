/* The demo's HTTP server: libmicrohttpd with one internal thread, request
 * bodies collected into a buffer, every reply JSON (or what the route says)
 * with a CORS header so the UI page can read all four services. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc.h"

#define MAX_BODY (64 * 1024)

typedef struct {
    char *buf;
    size_t len;
    int too_big;
} body_t;

static struct MHD_Daemon *daemon_;
static svc_route_fn route;

void svc_reply_json(svc_reply_t *r, int status, char *json)
{
    r->status = status;
    r->body = json;
    r->content_type = "application/json";
}

void svc_reply_cjson(svc_reply_t *r, int status, cJSON *obj)
{
    svc_reply_json(r, status, cJSON_PrintUnformatted(obj));
    cJSON_Delete(obj);
}

void svc_reply_text(svc_reply_t *r, int status, const char *content_type,
                    char *body)
{
    r->status = status;
    r->body = body;
    r->content_type = content_type;
}

void svc_reply_error(svc_reply_t *r, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    svc_reply_cjson(r, status, o);
}

char *svc_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    body_t *b = *con_cls;
    if (!b) { /* first call: headers only */
        *con_cls = calloc(1, sizeof *b);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        if (b->len + *upload_size > MAX_BODY) {
            b->too_big = 1;
        } else {
            char *nb = realloc(b->buf, b->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            b->buf = nb;
            memcpy(b->buf + b->len, upload, *upload_size);
            b->len += *upload_size;
            b->buf[b->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    svc_reply_t r = {404, NULL, "application/json"};
    if (b->too_big)
        svc_reply_error(&r, 413, "request body too large");
    else if (strcmp(method, "OPTIONS") == 0)
        svc_reply_json(&r, 204, strdup(""));
    else if (strcmp(url, "/healthz") == 0)
        svc_reply_json(&r, svc_ready ? 200 : 503,
                       strdup(svc_ready ? "{\"status\":\"ok\"}"
                                        : "{\"status\":\"starting\"}"));
    else
        route(method, url, b->buf ? b->buf : "", &r);
    if (!r.body)
        svc_reply_error(&r, r.status ? r.status : 404, "not found");
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(r.body), r.body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type",
                            r.content_type ? r.content_type : "application/json");
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Content-Type");
    MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                            "GET, POST, OPTIONS");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    body_t *b = *con_cls;
    if (b) {
        free(b->buf);
        free(b);
        *con_cls = NULL;
    }
}

void svc_http_start(int port, svc_route_fn fn)
{
    route = fn;
    /* Loopback only unless BIND_ADDR says otherwise (a demo, not a server). */
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, svc_env("BIND_ADDR", "127.0.0.1"), &sa.sin_addr) != 1) {
        fprintf(stderr, "BIND_ADDR is not an IPv4 address\n");
        exit(2);
    }
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
                                   MHD_USE_ERROR_LOG,
                               (uint16_t)port, NULL, NULL, answer, NULL,
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                               MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                               MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                               MHD_OPTION_END);
    if (!daemon_) {
        fprintf(stderr, "cannot listen on port %d\n", port);
        exit(1);
    }
}

void svc_http_stop(void)
{
    if (daemon_)
        MHD_stop_daemon(daemon_);
    daemon_ = NULL;
}
