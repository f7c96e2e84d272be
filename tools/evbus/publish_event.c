/*
 * The event `evbus publish` builds from its options: data loaded and checked
 * before the bus is touched, each value set through the library's setters
 * so a refusal carries the library's reason (attribute, byte offset).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "common.h"
#include "format.h"
#include "publish.h"

/* application/json, text/json, application/foo+json (what the library
 * treats as JSON, see evbus_event_set_data). */
static int is_json_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    const char *slash = memchr(ct, '/', n);
    if (!slash)
        return 0;
    size_t sub = n - (size_t)(slash + 1 - ct);
    const char *s = slash + 1;
    return (sub == 4 && strncasecmp(s, "json", 4) == 0) ||
           (sub > 5 && strncasecmp(s + sub - 5, "+json", 5) == 0);
}

/* Checks JSON text with cJSON to report where it breaks: byte offset,
 * line and column, and the text there. Returns 0 when valid. */
static int check_json(const char *what, const char *buf, size_t len)
{
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        cli_error("%s is not valid JSON: NUL byte at byte %zu", what,
                  (size_t)(nul - buf));
        return -1;
    }
    const char *end = NULL;
    /* len + 1 includes the terminating NUL, which is how cJSON checks that
     * nothing but whitespace follows the value. */
    cJSON *doc = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (doc) {
        cJSON_Delete(doc);
        return 0;
    }
    size_t off =
        end && end >= buf && end <= buf + len ? (size_t)(end - buf) : len;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    if (off >= len) {
        cli_error("%s is not valid JSON: unexpected end at byte %zu "
                  "(line %zu, column %zu)",
                  what, off, line, col);
    } else {
        char near[24];
        size_t k = 0;
        for (size_t i = off; i < len && k < 16 && buf[i] != '\n'; i++)
            near[k++] = (unsigned char)buf[i] < 0x20 ? ' ' : buf[i];
        near[k] = '\0';
        cli_error("%s is not valid JSON: error at byte %zu (line %zu, "
                  "column %zu) near '%s'",
                  what, off, line, col, near);
    }
    return -1;
}

int pub_load_data(publish_args_t *a, const char *spec)
{
    const char *what = "--data";
    char what_buf[300];
    if (spec[0] == '@' || strcmp(spec, "-") == 0) {
        const char *path = spec[0] == '@' ? spec + 1 : "-";
        int is_stdin = strcmp(path, "-") == 0;
        snprintf(what_buf, sizeof what_buf, "--data %s",
                 is_stdin ? "(standard input)" : path);
        what = what_buf;
        /* The data alone can never be larger than the encoded event, so
         * reading stops one byte past max_event_bytes. */
        a->data = cli_read_bounded(path, a->max_bytes, &a->data_len);
        if (!a->data && errno == EFBIG) {
            cli_error("%s is larger than max_event_bytes (%zu bytes): no "
                      "event carrying it can be published (reading stopped "
                      "at byte %zu)",
                      what, a->max_bytes, a->max_bytes + 1);
            return CLI_USAGE;
        }
        if (!a->data) {
            cli_error("cannot read --data %s: %s",
                      is_stdin ? "from standard input" : path, strerror(errno));
            return CLI_FAIL;
        }
    } else {
        a->data_len = strlen(spec);
        if (a->data_len > a->max_bytes) {
            cli_error("--data is %zu bytes, larger than max_event_bytes (%zu "
                      "bytes)",
                      a->data_len, a->max_bytes);
            return CLI_USAGE;
        }
        a->data = strdup(spec);
        if (!a->data) {
            cli_error("out of memory");
            return CLI_FAIL;
        }
    }
    int is_json = !a->content_type || is_json_type(a->content_type);
    if (is_json && check_json(what, a->data, a->data_len) != 0)
        return CLI_USAGE;
    return CLI_OK;
}

/* "evbus: invalid OPTION 'value': <the library's reason>". */
static int refused(const char *option, const char *value)
{
    char shown[80];
    size_t k = 0;
    for (const char *p = value; *p && k + 4 < sizeof shown; p++)
        shown[k++] = (unsigned char)*p < ' ' || *p == 0x7f ? '?' : *p;
    shown[k] = '\0';
    if (fmt_is_text(shown, k))
        cli_error("invalid %s '%s': %s", option, shown,
                  evbus_event_error_message());
    else /* do not echo bytes that are not UTF-8 to the terminal */
        cli_error("invalid %s: %s", option, evbus_event_error_message());
    return -1;
}

static int set_ext(evbus_event_t *ev, const ext_arg_t *x)
{
    static const char *const option[] = {"--ext", "--ext-int", "--ext-bool"};
    const char *opt = option[x->kind];
    const char *eq = strchr(x->spec, '=');
    char name[64];
    size_t nl = eq ? (size_t)(eq - x->spec) : 0;
    if (!eq || nl == 0 || nl >= sizeof name) {
        cli_error("invalid %s '%s': expected NAME=VALUE", opt, x->spec);
        return -1;
    }
    memcpy(name, x->spec, nl);
    name[nl] = '\0';
    const char *value = eq + 1;
    int rc;
    if (x->kind == EXT_INT) {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end) {
            cli_error("invalid --ext-int '%s': '%s' is not a whole number",
                      x->spec, value);
            return -1;
        }
        rc = evbus_event_set_ext_int(ev, name, (int64_t)v);
    } else if (x->kind == EXT_BOOL) {
        int b = strcmp(value, "true") == 0    ? 1
                : strcmp(value, "false") == 0 ? 0
                                              : -1;
        if (b < 0) {
            cli_error("invalid --ext-bool '%s': the value is true or false, "
                      "not '%s'",
                      x->spec, value);
            return -1;
        }
        rc = evbus_event_set_ext_bool(ev, name, b);
    } else {
        rc = evbus_event_set_ext(ev, name, value);
    }
    return rc == EVBUS_OK ? 0 : refused(opt, x->spec);
}

evbus_event_t *pub_build_event(const publish_args_t *a)
{
    evbus_event_t *ev = evbus_event_new(a->type, a->source);
    if (!ev) {
        /* Which of the two was refused: the message names the attribute. */
        const char *why = evbus_event_error_message();
        cli_error("invalid %s: %s",
                  strstr(why, "'source'") ? "--source" : "--type",
                  why[0] ? why : "out of memory");
        return NULL;
    }
    if ((a->id && evbus_event_set_id(ev, a->id) != EVBUS_OK &&
         refused("--id", a->id)) ||
        (a->subject && evbus_event_set_subject(ev, a->subject) != EVBUS_OK &&
         refused("--subject", a->subject)) ||
        (a->time && evbus_event_set_time(ev, a->time) != EVBUS_OK &&
         refused("--time", a->time)) ||
        (a->dataschema &&
         evbus_event_set_dataschema(ev, a->dataschema) != EVBUS_OK &&
         refused("--dataschema", a->dataschema)))
        goto fail;
    for (int i = 0; i < a->n_ext; i++)
        if (set_ext(ev, &a->ext[i]) != 0)
            goto fail;
    if (a->content_type &&
        evbus_event_set_datacontenttype(ev, a->content_type) != EVBUS_OK &&
        refused("--content-type", a->content_type))
        goto fail;
    if (a->data) {
        int rc = a->content_type
                     ? evbus_event_set_data(ev, a->data, a->data_len,
                                            a->content_type)
                     : evbus_event_set_data_json(ev, a->data);
        if (rc != EVBUS_OK) {
            cli_error("--data refused: %s", evbus_event_error_message());
            goto fail;
        }
    }
    char why[256] = "";
    if (evbus_event_validate(ev, why, sizeof why) != EVBUS_OK) {
        cli_error("invalid event: %s", why);
        goto fail;
    }
    return ev;
fail:
    evbus_event_free(ev);
    return NULL;
}

int pub_check_size(const evbus_event_t *ev, size_t max_bytes, const char *what)
{
    size_t len = 0;
    char *json = evbus_event_to_json(ev, &len);
    if (!json) {
        cli_error("cannot encode %s: out of memory", what);
        return -1;
    }
    free(json);
    if (len <= max_bytes)
        return 0;
    cli_error("%s is %zu bytes encoded, over max_event_bytes %zu (raise it "
              "with the URL option max_event_bytes=N where every consumer "
              "does too)",
              what, len, max_bytes);
    return -1;
}
