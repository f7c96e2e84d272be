/* The evbus subcommands. Each takes its own argv (argv[0] names it) and
 * returns the process exit status (CLI_OK, CLI_FAIL, CLI_USAGE). */
#ifndef EVBUS_CLI_COMMANDS_H
#define EVBUS_CLI_COMMANDS_H

int cmd_publish(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_dlq(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_saga(int argc, char **argv);

#endif
