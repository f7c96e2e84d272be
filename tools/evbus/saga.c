/*
 * evbus saga list | show ID | resume ID | purge: looks after the sagas in
 * an orchestrator's SQLite database (--db PATH, or EVBUS_SAGA_DB), without
 * an orchestrator running: the instance list with states and reasons, one
 * instance with its steps and history, resuming an instance parked as
 * FAILED, and deleting old ended instances. Reads through evbus_saga_list_json / evbus_saga_show_json, so
 * the tool shows exactly what the library stores.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <evbus/saga.h>

#include "commands.h"
#include "common.h"

static const char saga_usage[] =
    "usage: evbus saga list [--db PATH] [--state STATE] [--limit N] [--json]\n"
    "       evbus saga show ID [--db PATH] [--json]\n"
    "       evbus saga resume ID [--db PATH]\n"
    "       evbus saga purge --days N [--db PATH]\n"
    "\n"
    "Inspects the sagas of an orchestrator's SQLite database (the file its\n"
    "evbus_saga_orch_open used; --db PATH or the EVBUS_SAGA_DB environment\n"
    "variable). Reading needs no running orchestrator.\n"
    "\n"
    "list: one line per instance, newest first: id, saga, state, the step\n"
    "  it is at, when it last moved, and the reason for compensation or\n"
    "  failure; a count per state on stderr.\n"
    "      --state STATE        only RUNNING, COMPENSATING, COMPLETED,\n"
    "                           COMPENSATED or FAILED\n"
    "      --limit N            at most N instances (default 100)\n"
    "show: the instance, its data, its steps (status, attempts, times,\n"
    "  result) and its history of transitions with times.\n"
    "resume: sends a FAILED instance's failed compensation again (a fresh\n"
    "  series of attempts) once its orchestrator runs; for after a person\n"
    "  fixed the cause.\n"
    "purge: deletes instances that ended COMPLETED or COMPENSATED more than\n"
    "  --days N days ago, with their history (FAILED ones stay).\n"
    "\n"
    "      --db PATH            the orchestrator's database\n"
    "      --json               the library's JSON instead of a table\n"
    "  -q, --quiet              no summary line on stderr\n"
    "  -h, --help               this text\n"
    "\n"
    "Times are UTC. Exit status: 0 on success, 1 when the database cannot be\n"
    "read, has no saga tables, or has no such instance (or it is not FAILED,\n"
    "for resume), 2 on usage errors.\n";

/* "2024-01-15 10:30:00.123" (UTC) or "-" for a missing time. */
static const char *when(const cJSON *v, char buf[32])
{
    if (!cJSON_IsNumber(v))
        return "-";
    time_t s = (time_t)(v->valuedouble / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03d", (int)((long long)v->valuedouble % 1000));
    return buf;
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && *v->valuestring ? v->valuestring : "-";
}

static long num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

static int print_list(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    const cJSON *sagas = cJSON_GetObjectItem(j, "sagas"), *s;
    printf("%-24s %-14s %-13s %-16s %-23s %s\n", "ID", "SAGA", "STATE",
           "STEP", "UPDATED (UTC)", "REASON");
    cJSON_ArrayForEach(s, sagas)
    {
        char t[32], step[48] = "-"; /* past the last step: completed */
        if (strcmp(str(s, "stepName"), "-") != 0)
            snprintf(step, sizeof step, "%ld %s", num(s, "step"),
                     str(s, "stepName"));
        printf("%-24s %-14s %-13s %-16s %-23s %s\n", str(s, "id"),
               str(s, "saga"), str(s, "state"), step,
               when(cJSON_GetObjectItem(s, "updatedAt"), t), str(s, "reason"));
    }
    if (!cli_quiet) {
        fprintf(stderr, "%d shown of %ld:", cJSON_GetArraySize(sagas),
                num(j, "count"));
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "states"))
            fprintf(stderr, " %s %ld", c->string, (long)c->valuedouble);
        fputc('\n', stderr);
    }
    cJSON_Delete(j);
    return 0;
}

static int print_show(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    char t1[32], t2[32], t3[32];
    printf("saga      %s (%s)\n", str(j, "id"), str(j, "saga"));
    printf("state     %s, at step %ld %s, attempt %ld\n", str(j, "state"),
           num(j, "step"), str(j, "stepName"), num(j, "attempt"));
    printf("reason    %s\n", str(j, "reason"));
    printf("created   %s   updated %s   ended %s\n",
           when(cJSON_GetObjectItem(j, "createdAt"), t1),
           when(cJSON_GetObjectItem(j, "updatedAt"), t2),
           when(cJSON_GetObjectItem(j, "endedAt"), t3));
    if (strcmp(str(j, "waiting"), "-") != 0)
        printf("waiting   for a %s until %s\n", str(j, "waiting"),
               when(cJSON_GetObjectItem(j, "dueAt"), t1));
    char *data = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "data"));
    printf("data      %s\n\n", data ? data : "-");
    free(data);
    printf("%-4s %-16s %-12s %-8s %-23s %-23s %s\n", "STEP", "NAME",
           "STATUS", "ATTEMPTS", "STARTED", "ENDED", "RESULT");
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "steps"))
    {
        const cJSON *r = cJSON_GetObjectItem(s, "result");
        char *res = r ? (cJSON_IsString(r) ? strdup(r->valuestring)
                                           : cJSON_PrintUnformatted(r))
                      : NULL;
        long att = num(s, "attempts");
        char attempts[24] = "-";
        if (att > 0)
            snprintf(attempts, sizeof attempts, "%ld", att);
        printf("%-4ld %-16s %-12s %-8s %-23s %-23s %s\n", num(s, "index"),
               str(s, "name"), str(s, "status"), attempts,
               when(cJSON_GetObjectItem(s, "startedAt"), t1),
               when(cJSON_GetObjectItem(s, "endedAt"), t2), res ? res : "-");
        free(res);
    }
    printf("\n%-23s %-4s %-20s %-26s %s\n", "HISTORY (UTC)", "STEP", "EVENT",
           "STATE", "DETAIL");
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "history"))
    {
        char step[8] = "-", state[40] = "";
        if (num(s, "step") >= 0)
            snprintf(step, sizeof step, "%ld", num(s, "step"));
        if (strcmp(str(s, "to"), "-") != 0)
            snprintf(state, sizeof state, "%s -> %s", str(s, "from"),
                     str(s, "to"));
        printf("%-23s %-4s %-20s %-26s %s\n",
               when(cJSON_GetObjectItem(s, "at"), t1), step, str(s, "event"),
               state, str(s, "detail"));
    }
    cJSON_Delete(j);
    return 0;
}

/* Opens the database; read-only unless writable. NULL after a message. */
static sqlite3 *open_db(const char *path, int writable)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             writable ? SQLITE_OPEN_READWRITE
                                      : SQLITE_OPEN_READONLY,
                             NULL);
    if (rc != SQLITE_OK) {
        cli_error("cannot open %s: %s", path,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

int cmd_saga(int argc, char **argv)
{
    static const struct option longs[] = {
        {"db", required_argument, NULL, 'd'},
        {"state", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"days", required_argument, NULL, 'D'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *db_path = getenv("EVBUS_SAGA_DB"), *state = NULL;
    long limit = 100, days = -1;
    int json = 0, c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "qvh", longs, NULL)) != -1) {
        switch (c) {
        case 'd': db_path = optarg; break;
        case 's': state = optarg; break;
        case 'n':
            if (cli_parse_long("saga", "--limit", optarg, 1, 1000000,
                               &limit) < 0)
                return CLI_USAGE;
            break;
        case 'D':
            if (cli_parse_long("saga", "--days", optarg, 0, 100000, &days) < 0)
                return CLI_USAGE;
            break;
        case 'j': json = 1; break;
        case 'q': cli_quiet = 1; break;
        case 'v': cli_verbose++; break;
        case 'h': fputs(saga_usage, stdout); return CLI_OK;
        default:
            fprintf(stderr, "Try 'evbus saga --help' for more information.\n");
            return CLI_USAGE;
        }
    }
    int nargs = argc - optind;
    const char *what = nargs > 0 ? argv[optind] : "";
    int list = strcmp(what, "list") == 0, show = strcmp(what, "show") == 0,
        resume = strcmp(what, "resume") == 0, purge = strcmp(what, "purge") == 0;
    if (!list && !show && !resume && !purge)
        return nargs ? cli_usage_error("saga", "unknown subcommand '%s'", what)
                     : cli_usage_error("saga", "expected list, show, resume "
                                               "or purge");
    if (nargs != (list || purge ? 1 : 2))
        return cli_usage_error("saga", list || purge
                                           ? "%s takes no arguments"
                                           : "%s takes one instance id",
                               what);
    if (purge != (days >= 0))
        return cli_usage_error("saga", purge ? "purge needs --days N"
                                             : "--days is for purge only");
    if (!db_path || !*db_path)
        return cli_usage_error("saga", "which database? give --db PATH (or "
                                       "set EVBUS_SAGA_DB)");
    if (state && !list)
        return cli_usage_error("saga", "--state is for list only");
    cli_setup_log();
    sqlite3 *db = open_db(db_path, resume || purge);
    if (!db)
        return CLI_FAIL;
    char *out = NULL, err[512] = "";
    int rc;
    if (purge) {
        rc = evbus_saga_purge(db, (int64_t)time(NULL) * 1000 -
                                      (int64_t)days * 86400000,
                              err, sizeof err);
        if (rc >= 0 && !cli_quiet)
            printf("purged %d instance%s that ended more than %ld day%s ago\n",
                   rc, rc == 1 ? "" : "s", days, days == 1 ? "" : "s");
        rc = rc > 0 ? EVBUS_OK : rc;
    } else if (resume)
        rc = evbus_saga_resume(db, argv[optind + 1], err, sizeof err);
    else if (list)
        rc = evbus_saga_list_json(db, state, (int)limit, &out, err,
                                  sizeof err);
    else
        rc = evbus_saga_show_json(db, argv[optind + 1], &out, err,
                                  sizeof err);
    sqlite3_close(db);
    if (rc == EVBUS_EINVAL && state) {
        free(out);
        return cli_usage_error("saga", "%s", err);
    }
    if (rc != EVBUS_OK) {
        cli_error("%s: %s", db_path, err[0] ? err : evbus_strerror(rc));
        free(out);
        return CLI_FAIL;
    }
    if (purge) {
        /* printed above */
    } else if (resume) {
        if (!cli_quiet)
            printf("resumed %s: its compensation is sent again when its "
                   "orchestrator runs\n", argv[optind + 1]);
    } else if (json) {
        puts(out);
    } else if (list) {
        print_list(out);
    } else {
        print_show(out);
    }
    free(out);
    return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}
