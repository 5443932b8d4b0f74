/* The options of the `backprop` subcommands and their parser (options.c). */
#ifndef BP_CLI_OPTIONS_H
#define BP_CLI_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

#define CLI_MAX_WIDTHS 64 /* widths in --layers / --hidden */

/* Subcommands, as bits so an option can belong to several. CMD_ALL: those that read --config
 * files (bench's --config names its training configs). */
enum {
    CMD_TRAIN = 1,
    CMD_EVAL = 2,
    CMD_PREDICT = 4,
    CMD_INFO = 8,
    CMD_LRFIND = 16,
    CMD_BENCH = 32,
    CMD_ALL = 31
};

typedef struct cli_int_list {
    int n;
    int v[CLI_MAX_WIDTHS];
} cli_int_list;

/* Choices, in the order of the option's choice list. A list that names a library enum
 * (--act, --init, --norm, --precision, --opt, --schedule, --scale, --loss) follows its order, so
 * a choice's index is the enum's value (bp_scaling_kind for --scale, bp_loss_kind for --loss;
 * auto last). */
enum { LOSS_MSE, LOSS_CE, LOSS_BCE, LOSS_AUTO };
enum { SCALE_NONE, SCALE_MINMAX, SCALE_STANDARD, SCALE_GLOBAL, SCALE_AUTO };
enum { TK_AUTO, TK_CLASS, TK_ONEHOT, TK_VALUES };
enum { MON_AUTO, MON_LOSS, MON_ACC };
enum { OUT_AUTO, OUT_CLASS, OUT_PROBS, OUT_LOGITS };
enum { TK_NAMES = TK_VALUES + 1 };
enum { FMT_AUTO, FMT_CSV, FMT_NPY };
enum { ACC_ON, ACC_OFF };
enum { ONLY_ALL, ONLY_OPS, ONLY_TRAIN }; /* bench --only */

/* Every option of every subcommand; the table in options.c maps names onto these fields. */
typedef struct cli_options {
    /* model */
    cli_int_list layers, hidden;
    int act, init, precision, norm, residual;
    double dropout, norm_eps;
    /* loss and optimizer */
    int loss;
    double label_smoothing;
    int opt;
    double lr, wd, momentum, beta1, beta2, eps;
    int nesterov;
    int schedule;
    double warmup, step_size, gamma, min_lr, clip, clip_value;
    int accum, batch, epochs;
    int64_t seed;
    char *device;
    /* data */
    char *data, *data_dir, *train, *test, *targets, *test_targets;
    char *train_images, *train_labels, *test_images, *test_labels;
    char *target_column, *delimiter;
    int target_kind, header, classes;
    double val_split;
    int scale;
    /* run */
    char *config, *save, *resume, *metrics, *plot, *checkpoint, *output, *input;
    int early_stop, monitor, grad_check, stop_after, quiet, distributed;
    int64_t memory_limit; /* bytes the device may hold; 0: no limit */
    int threads;          /* CPU threads (bp_device_options.threads); 0: the default */
    int memory_check;     /* bp_device_options.check_memory */
    int graphs;           /* bp_device_options.graphs */
    /* lr-find */
    double start_lr, end_lr;
    int steps;
    /* predict, info */
    int outputs, dump_weights;
    int output_format; /* FMT_* */
    int json;          /* train, eval, info: one JSON object on stdout */
    int train_acc;     /* ACC_* */
    /* bench */
    char *configs, *precisions, *json_file;
    int only, quick, warmup_calls, repeats, no_limits;

    int cmd; /* the subcommand parsed for: names are looked up among its options first */

    /* Per option (index into the table): given by the user (file or flag), and its text. */
    unsigned char *given;
    char **text;
    const char *positional; /* the one positional argument (a checkpoint) */
} cli_options;

/* ---- options.c ---- */
const char *cli_command_name(int cmd);
/* Parses argv (after the subcommand) into o (bench: no --config file): defaults, then --config
 * FILE, then flags. On a usage error prints it and returns CLI_EXIT_USAGE; for --help prints help
 * and returns -1. */
int cli_parse(int cmd, int argc, char **argv, cli_options *o);
void cli_options_free(cli_options *o);
void cli_print_help(int cmd, FILE *f);
/* Sets option name from text (source names where it came from, for messages); 0 or
 * CLI_EXIT_USAGE. given marks it as the user's choice. */
int cli_set_option(int cmd, cli_options *o, const char *name, const char *text, const char *source,
                   int given);
int cli_option_given(const cli_options *o, const char *name);
const char *cli_option_text(const cli_options *o, const char *name);
/* Options written into checkpoints (run.cfg.NAME) and read back on --resume. */
int cli_option_count(void);
const char *cli_option_name(int index);
/* Flags of an option. */
enum {
    OF_STORE = 1,  /* written into checkpoints as run.cfg.NAME */
    OF_FROZEN = 2, /* on --resume the checkpoint's value wins */
    OF_DATA = 4,   /* names the data; eval/predict take them from the checkpoint when none given */
    OF_AUTO = 8,   /* a bool that may also be "auto" (-1) */
    OF_LO_OPEN = 16,
    OF_HI_OPEN = 32,
    OF_FORMAT = 64, /* how to read data files, not which: eval/predict always take them */
    OF_IN = 128,    /* names a file the command reads */
    OF_OUT = 256    /* names a file the command writes */
};
int cli_option_has(int index, unsigned flag);
int cli_option_of(int index, int cmd);
const char *cli_choice_name(const char *option, int value);

#endif
