/*
 * Bus URLs: scheme://[user[:password]@]authority[/path][?k=v&...]
 * Parsed once at evbus_open; backends read parts and options through the
 * evbus_url_* accessors. Every option read is marked, so the core can refuse
 * a URL with an option nobody understood (a typo must not pass silently).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    char *key, *value;
    atomic_bool used;
} url_param_t;

struct evbus_url {
    char *scheme;
    char *rest;      /* between "://" and '?' */
    char *user, *password, *host, *hostlist, *path;
    int port;
    url_param_t *params;
    size_t nparams;
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; '+' is kept as is (it is not
 * form encoding). NULL on a malformed escape or out of memory. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int a = hexval((unsigned char)s[i + 1]);
            int b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0) {
                free(out);
                return NULL;
            }
            *o++ = (char)(a * 16 + b);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

void evbus__url_free(evbus_url_t *u)
{
    if (!u)
        return;
    free(u->scheme);
    free(u->rest);
    free(u->user);
    free(u->password);
    free(u->host);
    free(u->hostlist);
    free(u->path);
    for (size_t i = 0; i < u->nparams; i++) {
        free(u->params[i].key);
        free(u->params[i].value);
    }
    free(u->params);
    free(u);
}

static int parse_query(evbus_url_t *u, const char *q, char *errstr, size_t n)
{
    size_t count = 1;
    for (const char *p = q; *p; p++)
        count += *p == '&';
    u->params = calloc(count, sizeof *u->params);
    if (!u->params)
        return EVBUS_ENOMEM;
    const char *p = q;
    while (*p) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        if (end > p) {
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *kend = eq ? eq : end;
            url_param_t *pr = &u->params[u->nparams];
            pr->key = pct_decode(p, (size_t)(kend - p));
            pr->value = eq ? pct_decode(eq + 1, (size_t)(end - eq - 1))
                           : strdup("");
            if (!pr->key || !pr->value || !*pr->key) {
                free(pr->key);
                free(pr->value);
                pr->key = pr->value = NULL;
                evbus__seterr(errstr, n, "malformed query parameter '%.*s'",
                              (int)(end - p), p);
                return EVBUS_EURL;
            }
            for (size_t i = 0; i < u->nparams; i++)
                if (strcmp(u->params[i].key, pr->key) == 0) {
                    evbus__seterr(errstr, n,
                                  "query parameter '%s' given twice",
                                  pr->key);
                    free(pr->key);
                    free(pr->value);
                    pr->key = pr->value = NULL;
                    return EVBUS_EURL;
                }
            u->nparams++;
        }
        p = *end ? end + 1 : end;
    }
    return EVBUS_OK;
}

/* Splits the authority into user, password, host and port. A list of
 * host:port pairs (kafka) is kept whole in hostlist; host/port then name the
 * first one. */
static int parse_authority(evbus_url_t *u, const char *a, size_t len,
                           char *errstr, size_t n)
{
    const char *at = NULL;
    for (size_t i = 0; i < len; i++)
        if (a[i] == '@')
            at = a + i;
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        size_t ulen = colon ? (size_t)(colon - a) : (size_t)(at - a);
        if (ulen)
            u->user = pct_decode(a, ulen);
        if (colon)
            u->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
        if ((ulen && !u->user) || (colon && !u->password)) {
            evbus__seterr(errstr, n, "malformed user information in URL");
            return EVBUS_EURL;
        }
        len -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    u->hostlist = strndup(a, len);
    if (!u->hostlist)
        return EVBUS_ENOMEM;
    /* host and port of the first entry */
    size_t first = len;
    const char *comma = memchr(a, ',', len);
    if (comma)
        first = (size_t)(comma - a);
    const char *h = a, *hend = a + first, *portp = NULL;
    if (first && *h == '[') { /* [ipv6]:port */
        const char *rb = memchr(h, ']', first);
        if (!rb) {
            evbus__seterr(errstr, n, "unterminated '[' in URL host");
            return EVBUS_EURL;
        }
        u->host = strndup(h + 1, (size_t)(rb - h - 1));
        if (rb + 1 < hend && rb[1] == ':')
            portp = rb + 2;
    } else {
        const char *colon = memchr(h, ':', first);
        u->host = strndup(h, colon ? (size_t)(colon - h) : first);
        if (colon)
            portp = colon + 1;
    }
    if (!u->host)
        return EVBUS_ENOMEM;
    if (portp) {
        long port = 0;
        const char *q = portp;
        for (; q < hend && isdigit((unsigned char)*q); q++)
            port = port * 10 + (*q - '0');
        if (q != hend || q == portp || port < 1 || port > 65535) {
            evbus__seterr(errstr, n, "invalid port '%.*s' in URL",
                          (int)(hend - portp), portp);
            return EVBUS_EURL;
        }
        u->port = (int)port;
    }
    return EVBUS_OK;
}

evbus_url_t *evbus__url_parse(const char *url, char *errstr, size_t n)
{
    if (!url || !*url) {
        evbus__seterr(errstr, n, "no bus URL given (and EVBUS_URL is unset)");
        return NULL;
    }
    const char *sep = strstr(url, "://");
    if (!sep || sep == url) {
        evbus__seterr(errstr, n,
                      "malformed bus URL '%s': expected scheme://...", url);
        return NULL;
    }
    for (const char *p = url; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' &&
            *p != '.') {
            evbus__seterr(errstr, n, "malformed URL scheme in '%s'", url);
            return NULL;
        }
    evbus_url_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->scheme = strndup(url, (size_t)(sep - url));
    const char *rest = sep + 3;
    const char *q = strchr(rest, '?');
    size_t rlen = q ? (size_t)(q - rest) : strlen(rest);
    u->rest = strndup(rest, rlen);
    if (!u->scheme || !u->rest)
        goto oom;
    for (char *p = u->scheme; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    const char *slash = memchr(rest, '/', rlen);
    size_t alen = slash ? (size_t)(slash - rest) : rlen;
    if (slash) {
        u->path = pct_decode(slash, rlen - alen);
        if (!u->path) {
            evbus__seterr(errstr, n, "malformed escape in URL path");
            goto fail;
        }
    }
    if (parse_authority(u, rest, alen, errstr, n) != EVBUS_OK)
        goto fail;
    if (q && parse_query(u, q + 1, errstr, n) != EVBUS_OK)
        goto fail;
    return u;
oom:
    evbus__seterr(errstr, n, "out of memory");
fail:
    evbus__url_free(u);
    return NULL;
}

const char *evbus_url_rest(const evbus_url_t *u) { return u->rest; }
const char *evbus_url_user(const evbus_url_t *u) { return u->user; }
const char *evbus_url_password(const evbus_url_t *u) { return u->password; }
const char *evbus_url_host(const evbus_url_t *u)
{
    return u->host && *u->host ? u->host : NULL;
}
int evbus_url_port(const evbus_url_t *u) { return u->port; }
const char *evbus_url_hostlist(const evbus_url_t *u)
{
    return u->hostlist && *u->hostlist ? u->hostlist : NULL;
}
const char *evbus_url_path(const evbus_url_t *u) { return u->path; }

static url_param_t *find_param(const evbus_url_t *u, const char *key)
{
    for (size_t i = 0; i < u->nparams; i++)
        if (strcmp(u->params[i].key, key) == 0)
            return &u->params[i];
    return NULL;
}

const char *evbus_url_param(const evbus_url_t *u, const char *key)
{
    url_param_t *p = find_param(u, key);
    if (!p)
        return NULL;
    atomic_store(&p->used, true);
    return p->value;
}

int evbus_url_param_int(const evbus_url_t *u, const char *key,
                        long long def, long long min, long long max,
                        long long *out, char *errstr, size_t n)
{
    const char *v = evbus_url_param(u, key);
    if (!v) {
        *out = def;
        return EVBUS_OK;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        evbus__seterr(errstr, n,
                      "option %s=%s: expected an integer from %lld to %lld",
                      key, v, min, max);
        return EVBUS_EOPTION;
    }
    *out = x;
    return EVBUS_OK;
}

int evbus_url_param_at(const evbus_url_t *u, size_t i, const char **key,
                       const char **value)
{
    if (i >= u->nparams)
        return EVBUS_ENOTFOUND;
    *key = u->params[i].key;
    *value = u->params[i].value;
    return 0;
}

void evbus_url_mark(const evbus_url_t *u, const char *key)
{
    url_param_t *p = find_param(u, key);
    if (p)
        atomic_store(&p->used, true);
}

int evbus_url_param_is_marked(const evbus_url_t *u, const char *key)
{
    url_param_t *p = find_param(u, key);
    return p && atomic_load(&p->used);
}

const char *evbus__url_unused(const evbus_url_t *u)
{
    for (size_t i = 0; i < u->nparams; i++)
        if (!atomic_load(&u->params[i].used))
            return u->params[i].key;
    return NULL;
}

evbus_url_t *evbus_url_new(const char *url, char *errstr, size_t n)
{
    return evbus__url_parse(url, errstr, n);
}

void evbus_url_free(evbus_url_t *url) { evbus__url_free(url); }
const char *evbus_url_scheme(const evbus_url_t *url) { return url->scheme; }
const char *evbus_url_unused(const evbus_url_t *url)
{
    return evbus__url_unused(url);
}
