/* backprop: the command-line trainer. Dispatches to a subcommand. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int id;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"train", CMD_TRAIN, cli_cmd_train, "train an MLP (progress, table, checkpoints, resume)"},
    {"eval", CMD_EVAL, cli_cmd_eval, "loss and accuracy of a checkpoint on test data"},
    {"predict", CMD_PREDICT, cli_cmd_predict, "write a checkpoint's outputs as CSV or NPY"},
    {"info", CMD_INFO, cli_cmd_info, "layers, optimizer, run state and checksums of a checkpoint"},
    {"lr-find", CMD_LRFIND, cli_cmd_lrfind, "learning-rate range test with a suggested rate"},
    {"bench", CMD_BENCH, cli_cmd_bench,
     "per-op and training-step throughput with % of the device limit"},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: backprop COMMAND [options]\n\n"
               "Trains multi-layer perceptrons by backpropagation on the CPU or an NVIDIA GPU.\n\n"
               "commands:\n");
    for (int i = 0; i < N_COMMANDS; ++i)
        fprintf(f, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nbackprop COMMAND --help lists a command's options.\n"
               "Start with: backprop train --data fashion-mnist\n");
}

static const command *find(const char *name) {
    for (int i = 0; i < N_COMMANDS; ++i)
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0) {
        printf("backprop %d.%d.%d\n", BP_VERSION_MAJOR, BP_VERSION_MINOR, BP_VERSION_PATCH);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        const command *c = argc > 2 ? find(argv[2]) : NULL;
        if (c)
            cli_print_help(c->id, stdout);
        else
            usage(stdout);
        return argc > 2 && !c ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    const command *c = find(name);
    if (!c) return cli_usage_error(0, "'%s' is not a command (see backprop --help)", name);
    return c->run(argc - 2, argv + 2);
}
