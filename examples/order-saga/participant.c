/* The participant side of the order saga (see participant.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "participant.h"

static const part_svc_t *svc;
static sqlite3 *db;
static evbus_saga_participant_t *part;

const char *part_field(const evbus_event_t *cmd, const char *name,
                       cJSON **data)
{
    if (!*data)
        *data = cJSON_ParseWithLength(evbus_event_data(cmd),
                                      evbus_event_data_len(cmd));
    cJSON *v = cJSON_GetObjectItem(*data, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int part_exec(sqlite3 *db_, const char *sql, const char *text)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, NULL) != SQLITE_OK)
        return EVBUS_EIO;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? EVBUS_OK : EVBUS_EIO;
}

static evbus_result_t on_command(const evbus_event_t *ev, void *opaque)
{
    (void)opaque;
    const char *kind = evbus_event_ext(ev, "sagakind");
    char id[9];
    pthread_mutex_lock(&svc_db_lock);
    if (svc->ignore && kind && strcmp(kind, "action") == 0 &&
        svc->ignore(db, ev)) {
        pthread_mutex_unlock(&svc_db_lock);
        svc_timeline("%s %s for %s: left unanswered (this service hangs)",
                     evbus_event_type(ev), svc_short_id(ev, id),
                     evbus_event_ext(ev, "sagaid"));
        return EVBUS_ACK;
    }
    evbus_result_t r = evbus_saga_participant_handle(part, ev, svc->action,
                                                     svc->compensate, NULL);
    pthread_mutex_unlock(&svc_db_lock);
    if (r != EVBUS_ACK)
        svc_timeline("%s %s for %s: %s", evbus_event_type(ev),
                     svc_short_id(ev, id), evbus_event_ext(ev, "sagaid"),
                     r == EVBUS_RETRY ? "will be retried" : "dead-lettered");
    return r;
}

static void route(const char *method, const char *path, const char *body,
                  svc_reply_t *r)
{
    (void)body;
    if (strcmp(method, "GET") != 0 || strcmp(path, svc->list_path) != 0)
        return;
    pthread_mutex_lock(&svc_db_lock);
    cJSON *out = svc->list(db);
    pthread_mutex_unlock(&svc_db_lock);
    svc_reply_cjson(r, 200, out);
}

int part_svc_main(const part_svc_t *s)
{
    svc = s;
    svc_timeline_open(s->service);
    int port = atoi(svc_env_required("PORT"));
    db = svc_open_db(svc_env(s->db_env, s->db_default));
    svc_db_exec(db, s->schema);
    evbus_t *bus = svc_open_bus(s->service);
    svc_signals(bus);
    char err[512];
    /* the relay publishes the replies this participant writes */
    part = evbus_saga_participant_open(db, s->consumer, bus, NULL, err,
                                       sizeof err);
    if (!part) {
        fprintf(stderr, "%s: %s\n", s->service, err);
        return 1;
    }
    const char *topics[] = {s->action_topic, s->comp_topic};
    for (int i = 0; i < 2; i++)
        if (!evbus_subscribe(bus, topics[i], s->consumer, on_command, NULL)) {
            fprintf(stderr, "%s: cannot subscribe to %s (see the log above)\n",
                    s->service, topics[i]);
            return 1;
        }
    svc_ready = 1; /* before the HTTP thread exists: no race on it */
    svc_http_start(port, route);
    svc_timeline("ready: %s and %s as group %s", s->action_topic,
                 s->comp_topic, s->consumer);
    int rc = evbus_run(bus);
    svc_http_stop();
    /* the relay publishes through the bus: stop it first */
    evbus_saga_participant_close(part);
    evbus_close(bus);
    sqlite3_close(db);
    svc_timeline("stopped");
    return rc == EVBUS_OK ? 0 : 1;
}
