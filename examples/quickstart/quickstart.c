/*
 * The smallest complete libevbus program: publish three todo events, consume
 * them as the "notify" group, dead-letter one the handler cannot process.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs evbus)
 *   ./a.out [URL]          (default: EVBUS_URL, else memory://quickstart)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evbus/evbus.h>

typedef struct {
    int handled, dead;
} counts_t;

static evbus_result_t notify(const evbus_event_t *ev, void *opaque)
{
    counts_t *c = opaque;
    const char *data = evbus_event_data(ev);
    printf("notify: %s %s %s\n", evbus_event_type(ev), evbus_event_id(ev),
           data ? data : "");
    c->handled++;
    /* A todo without a title cannot ever be processed: dead-letter it. */
    return data && strstr(data, "\"title\":\"\"") ? EVBUS_DROP : EVBUS_ACK;
}

static evbus_result_t dead_letters(const evbus_event_t *ev, void *opaque)
{
    counts_t *c = opaque;
    printf("dlq:    %s reason=\"%s\" attempts=%s\n", evbus_event_id(ev),
           evbus_event_ext(ev, "dlqreason"), evbus_event_ext(ev, "dlqattempts"));
    c->dead++;
    return EVBUS_ACK;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("EVBUS_URL");
    if (!url)
        url = "memory://quickstart";
    char err[512];
    evbus_t *bus = evbus_open(url, err, sizeof err);
    if (!bus) {
        fprintf(stderr, "quickstart: %s\n", err);
        return 1;
    }
    counts_t c = {0, 0};
    char why[512];
    if (!evbus_subscribe_opts(bus, "todos.task.created", "notify", NULL,
                              notify, &c, why, sizeof why) ||
        !evbus_subscribe_opts(bus, "todos.task.created.dlq", "ops", NULL,
                              dead_letters, &c, why, sizeof why)) {
        fprintf(stderr, "quickstart: subscribe: %s\n", why);
        return 1;
    }
    const char *titles[] = {"Buy groceries", "Walk the dog", ""};
    for (int i = 0; i < 3; i++) {
        evbus_event_t *ev = evbus_event_new("todos.task.created", "/todos/api");
        char data[128];
        snprintf(data, sizeof data,
                 "{\"todoId\":\"%d\",\"userId\":\"456\",\"title\":\"%s\"}",
                 i + 1, titles[i]);
        evbus_event_set_data_json(ev, data);
        int rc = evbus_publish(bus, "todos.task.created", ev);
        evbus_event_free(ev);
        if (rc != EVBUS_OK) {
            fprintf(stderr, "quickstart: publish: %s\n", evbus_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 100 && (c.handled < 3 || c.dead < 1); i++)
        evbus_poll(bus, 100);
    evbus_close(bus);
    printf("quickstart on %s: %d handled, %d dead-lettered\n", url, c.handled,
           c.dead);
    return c.handled == 3 && c.dead == 1 ? 0 : 1;
}
