// cmds.h — subcommands of the brewslm CLI, called by the dispatcher in
// brewslm.c. Each takes the arguments after the program name (argv[0] is the
// subcommand itself) and returns the process exit status: 0 success, 1 a
// runtime failure, 2 a usage error. Messages go to stderr, results to stdout.
#ifndef BREWSLM_CLI_CMDS_H
#define BREWSLM_CLI_CMDS_H

int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);

#endif
