/* Options: one table names every flag, its type, bounds, default, help and the subcommands that
 * take it. Defaults, --config files, checkpoints and flags all go through cli_set_option, so a
 * value is checked the same way wherever it comes from. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef enum opt_type { OT_INT, OT_FLOAT, OT_STR, OT_BOOL, OT_CHOICE, OT_LIST } opt_type;

typedef struct opt_spec {
    const char *name;
    opt_type type;
    size_t offset;
    unsigned cmds, flags;
    const char *def; /* default as text ("" for none) */
    const char *metavar;
    const char *group;
    const char *help;
    double lo, hi;       /* numeric bounds */
    const char *choices; /* OT_CHOICE: "a|b|c" */
} opt_spec;

#define OFF(f) offsetof(cli_options, f)
/* The subcommands that take an option. */
#define TRAIN   CMD_TRAIN
#define EVAL    CMD_EVAL
#define PREDICT CMD_PREDICT
#define INFO    CMD_INFO
#define LRFIND  CMD_LRFIND
#define BENCH   CMD_BENCH
/* Hyper-parameters reach the update rounded to float (bp_optim_config): beyond FLT_MAX they
 * would be infinite there. */
#define FMAX FLT_MAX
/* Epoch counts (--epochs, and --warmup, --step-size in epochs): turned into steps as int64. */
#define EPOCHS_MAX 1000000
/* The flag sets options share. */
#define STORED      OF_STORE
#define FROZEN      (OF_STORE | OF_FROZEN)
#define DATA        (OF_STORE | OF_DATA)
#define DATA_IN     (OF_STORE | OF_DATA | OF_IN)
#define DATA_FORMAT (OF_STORE | OF_DATA | OF_FORMAT)

/* An entry leaves out the trailing fields it does not use (bounds, choices): they are zero. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const opt_spec SPECS[] = {
    /* model */
    {"layers", OT_LIST, OFF(layers), TRAIN | LRFIND, FROZEN, "", "W,W,...", "model",
     "all widths, input first, e.g. 784,512,256,10 (default: from --hidden and the data)"},
    {"hidden", OT_LIST, OFF(hidden), TRAIN | LRFIND, FROZEN, "256,128", "W,...", "model",
     "hidden widths; the input and output widths come from the data"},
    {"act", OT_CHOICE, OFF(act), TRAIN | LRFIND, FROZEN, "relu", "NAME", "model",
     "activation of the hidden layers (the output layer has none)",
     .choices = "identity|relu|leaky-relu|sigmoid|tanh|gelu|gelu-tanh|silu"},
    {"dropout", OT_FLOAT, OFF(dropout), TRAIN | LRFIND, FROZEN | OF_HI_OPEN, "0", "P", "model",
     "dropout probability after each hidden layer", .hi = 1},
    {"norm", OT_CHOICE, OFF(norm), TRAIN | LRFIND, FROZEN, "none", "NAME", "model",
     "normalize the input of every layer but the first (docs/deep-mlp.md)",
     .choices = "none|layernorm|rmsnorm"},
    {"norm-eps", OT_FLOAT, OFF(norm_eps), TRAIN | LRFIND, FROZEN | OF_LO_OPEN, "1e-5", "E", "model",
     "epsilon of --norm", .hi = 1},
    {"residual", OT_BOOL, OFF(residual), TRAIN | LRFIND, FROZEN, "no", "", "model",
     "add its input to the output of every layer whose input and output widths match"},
    {"init", OT_CHOICE, OFF(init), TRAIN | LRFIND, FROZEN, "torch", "NAME", "model",
     "weight initialisation", .choices = "torch|he-uniform|he-normal|xavier-uniform|xavier-normal"},
    {"precision", OT_CHOICE, OFF(precision), TRAIN | LRFIND, FROZEN, "fp32", "MODE", "model",
     "arithmetic of the matrix products: fp32, tf32 (TF32 operands) or bf16 (mixed precision, fp32 "
     "master weights); on the CPU the GPU's numbers, not its speed",
     .choices = "fp32|tf32|bf16"},
    /* loss and optimizer */
    {"loss", OT_CHOICE, OFF(loss), TRAIN | LRFIND, FROZEN, "auto", "NAME", "training",
     "ce (softmax cross-entropy), mse or bce (with logits); auto: ce for class labels, else mse",
     .choices = "mse|ce|bce|auto"},
    {"label-smoothing", OT_FLOAT, OFF(label_smoothing), TRAIN | LRFIND, FROZEN, "0.1", "S",
     "training", "label smoothing of cross-entropy (--loss ce only)", .hi = 1},
    {"opt", OT_CHOICE, OFF(opt), TRAIN | LRFIND, FROZEN, "adamw", "NAME", "training", "optimizer",
     .choices = "sgd|adam|adamw"},
    {"lr", OT_FLOAT, OFF(lr), TRAIN, FROZEN | OF_LO_OPEN, "1e-3", "LR", "training",
     "peak learning rate", .hi = FMAX},
    {"wd", OT_FLOAT, OFF(wd), TRAIN | LRFIND, FROZEN, "1e-4", "WD", "training", "weight decay",
     .hi = FMAX},
    {"momentum", OT_FLOAT, OFF(momentum), TRAIN | LRFIND, FROZEN | OF_HI_OPEN, "0.9", "M",
     "training", "SGD momentum", .hi = 1},
    {"nesterov", OT_BOOL, OFF(nesterov), TRAIN | LRFIND, FROZEN, "no", "", "training",
     "Nesterov momentum (SGD)"},
    {"beta1", OT_FLOAT, OFF(beta1), TRAIN | LRFIND, FROZEN | OF_HI_OPEN, "0.9", "B", "training",
     "Adam beta1", .hi = 1},
    {"beta2", OT_FLOAT, OFF(beta2), TRAIN | LRFIND, FROZEN | OF_HI_OPEN, "0.999", "B", "training",
     "Adam beta2", .hi = 1},
    {"eps", OT_FLOAT, OFF(eps), TRAIN | LRFIND, FROZEN | OF_LO_OPEN, "1e-8", "E", "training",
     "Adam epsilon", .hi = FMAX},
    {"schedule", OT_CHOICE, OFF(schedule), TRAIN, FROZEN, "cosine", "NAME", "training",
     "learning-rate schedule after the warm-up", .choices = "constant|step|cosine"},
    {"warmup", OT_FLOAT, OFF(warmup), TRAIN, FROZEN, "0", "EPOCHS", "training",
     "linear warm-up, in epochs (fractions allowed)", .hi = EPOCHS_MAX},
    {"step-size", OT_FLOAT, OFF(step_size), TRAIN, FROZEN | OF_LO_OPEN, "1", "EPOCHS", "training",
     "step schedule: epochs between decays", .hi = EPOCHS_MAX},
    {"gamma", OT_FLOAT, OFF(gamma), TRAIN, FROZEN | OF_LO_OPEN, "0.1", "G", "training",
     "step schedule: decay factor", .hi = 1},
    {"min-lr", OT_FLOAT, OFF(min_lr), TRAIN, FROZEN, "0", "LR", "training",
     "cosine schedule: the floor", .hi = FMAX},
    {"clip", OT_FLOAT, OFF(clip), TRAIN | LRFIND, FROZEN, "0", "NORM", "training",
     "clip gradients to this global L2 norm (0: off)", .hi = FMAX},
    {"clip-value", OT_FLOAT, OFF(clip_value), TRAIN | LRFIND, FROZEN, "0", "V", "training",
     "clip each gradient to [-V, V] (0: off)", .hi = FMAX},
    {"accum", OT_INT, OFF(accum), TRAIN | LRFIND, FROZEN, "1", "K", "training",
     "micro-batches per step (gradient accumulation)", .lo = 1, .hi = 4096},
    {"batch", OT_INT, OFF(batch), TRAIN | EVAL | PREDICT | LRFIND, FROZEN, "128", "N", "run",
     "batch size", .lo = 1, .hi = 1 << 20},
    {"epochs", OT_INT, OFF(epochs), TRAIN, STORED, "12", "N", "training", "epochs in all", .lo = 1,
     .hi = EPOCHS_MAX},
    {"seed", OT_INT, OFF(seed), TRAIN | LRFIND, FROZEN, "1", "N", "training",
     "seed of the weights, dropout, shuffling and the validation split", .hi = 9007199254740991.0},
    {"device", OT_STR, OFF(device), TRAIN | EVAL | PREDICT | LRFIND | BENCH, 0, "auto", "NAME",
     "run", "cpu, cuda, cuda:N or auto (a GPU when present)"},
    /* data */
    {"data", OT_STR, OFF(data), TRAIN | EVAL | PREDICT | LRFIND, DATA, "", "NAME", "data",
     "a named dataset: fashion-mnist (its train and test files)"},
    {"data-dir", OT_STR, OFF(data_dir), TRAIN | EVAL | PREDICT | LRFIND, DATA, "", "DIR", "data",
     "where the named dataset lives (default /usr/share/datasets/NAME)"},
    {"train", OT_STR, OFF(train), TRAIN | LRFIND, DATA_IN, "", "FILE", "data",
     "training data: .csv, or .npy features with --targets"},
    {"targets", OT_STR, OFF(targets), TRAIN | EVAL | PREDICT | LRFIND, DATA_IN, "", "FILE.npy",
     "data", "targets of --train (train) or of --input (eval, predict) .npy"},
    {"test", OT_STR, OFF(test), TRAIN | EVAL | PREDICT, DATA_IN, "", "FILE", "data",
     "test data (.csv, or .npy with --test-targets)"},
    {"test-targets", OT_STR, OFF(test_targets), TRAIN | EVAL | PREDICT, DATA_IN, "", "FILE.npy",
     "data", "targets of --test"},
    {"input", OT_STR, OFF(input), EVAL | PREDICT, OF_IN, "", "FILE", "data",
     "data to evaluate or predict (.csv, .npy, or - for standard input; like --test; predict: a "
     "CSV as wide as the model's input, or an NPY without --targets, has no targets)"},
    {"train-images", OT_STR, OFF(train_images), TRAIN | LRFIND, DATA_IN, "", "FILE", "data",
     "training images, IDX (optionally .gz)"},
    {"train-labels", OT_STR, OFF(train_labels), TRAIN | LRFIND, DATA_IN, "", "FILE", "data",
     "training labels, IDX"},
    {"test-images", OT_STR, OFF(test_images), TRAIN | EVAL | PREDICT, DATA_IN, "", "FILE", "data",
     "test images, IDX"},
    {"test-labels", OT_STR, OFF(test_labels), TRAIN | EVAL | PREDICT, DATA_IN, "", "FILE", "data",
     "test labels, IDX"},
    {"target-column", OT_STR, OFF(target_column), TRAIN | EVAL | PREDICT | LRFIND, DATA_FORMAT, "",
     "COLS", "data", "CSV target column(s): header names or 0-based indices (default: the last)"},
    {"target-kind", OT_CHOICE, OFF(target_kind), TRAIN | EVAL | PREDICT | LRFIND, DATA_FORMAT,
     "auto", "KIND", "data",
     "CSV/NPY targets: class labels (indices, or names when no label is a number), one-hot "
     "columns, values, or names (every label a name, digits too)",
     .choices = "auto|class|onehot|values|names"},
    {"classes", OT_INT, OFF(classes), TRAIN | LRFIND, FROZEN, "0", "N", "data",
     "class labels: train N classes, labels 0..N-1 (0: 1 + the largest label; needed when the "
     "labels are far more than the distinct ones seen)",
     .hi = CLI_MAX_CLASSES},
    {"header", OT_BOOL, OFF(header), TRAIN | EVAL | PREDICT | LRFIND, DATA_FORMAT | OF_AUTO, "auto",
     "", "data", "the CSV files have a header row (--no-header: they do not; default: detect)"},
    {"delimiter", OT_STR, OFF(delimiter), TRAIN | EVAL | PREDICT | LRFIND, DATA_FORMAT, ",", "C",
     "data", "CSV delimiter (one character; 'tab' for a tab)"},
    {"val-split", OT_FLOAT, OFF(val_split), TRAIN | LRFIND, FROZEN | OF_HI_OPEN, "0.1", "F", "data",
     "fraction of the training data held out for validation", .hi = 1},
    {"scale", OT_CHOICE, OFF(scale), TRAIN | LRFIND, FROZEN, "auto", "KIND", "data",
     "feature scaling fitted on the training data (auto: global for images, else standard)",
     .choices = "none|minmax|standard|global|auto"},
    /* run */
    {"config", OT_STR, OFF(config), CMD_ALL, OF_IN, "", "FILE", "run",
     "read 'name = value' lines (the flags' names) first; flags override them"},
    {"checkpoint", OT_STR, OFF(checkpoint), EVAL | PREDICT | INFO, OF_IN, "", "FILE", "run",
     "the checkpoint (or give it as the first argument)"},
    {"save", OT_STR, OFF(save), TRAIN, OF_OUT, "", "FILE", "run",
     "save a checkpoint after every epoch (the best one with --early-stop)"},
    {"resume", OT_STR, OFF(resume), TRAIN, OF_IN, "", "FILE", "run",
     "continue the run saved in FILE (its options are the defaults; saves back to it unless "
     "--save)"},
    {"metrics", OT_STR, OFF(metrics), TRAIN | LRFIND, OF_OUT, "", "FILE.csv", "run",
     "write the per-epoch table (lr-find: the curve) as CSV"},
    {"plot", OT_STR, OFF(plot), TRAIN | LRFIND, OF_OUT, "", "FILE.png", "run",
     "draw the curves with gnuplot"},
    {"early-stop", OT_INT, OFF(early_stop), TRAIN, STORED, "0", "N", "run",
     "stop after N epochs without a better validation metric (0: off)", .hi = 1000000},
    {"monitor", OT_CHOICE, OFF(monitor), TRAIN, STORED, "auto", "WHAT", "run",
     "the validation metric of --early-stop (auto: accuracy for classes, else loss)",
     .choices = "auto|loss|acc"},
    {"grad-check", OT_INT, OFF(grad_check), TRAIN, STORED, "100", "K", "run",
     "every K steps check per-layer gradient norms for vanishing/exploding (0: off)",
     .hi = 1000000000},
    {"stop-after", OT_INT, OFF(stop_after), TRAIN, 0, "0", "N", "run",
     "end this invocation after epoch N as if interrupted (0: run to --epochs)", .hi = 1000000},
    {"quiet", OT_BOOL, OFF(quiet), TRAIN | EVAL | PREDICT | LRFIND, 0, "no", "", "run",
     "no progress bar or periodic lines"},
    {"distributed", OT_BOOL, OFF(distributed), TRAIN, 0, "no", "", "run",
     "train data-parallel over the ranks of an MPI job (mpirun -np N backprop train ...); on by "
     "itself when started as several ranks"},
    {"threads", OT_INT, OFF(threads), TRAIN | EVAL | PREDICT | LRFIND | BENCH, 0, "0", "N", "run",
     "CPU threads for the loops, the matrix engine and the BLAS (0: the default, see README)",
     .hi = 4096},
    {"memory-limit", OT_INT, OFF(memory_limit), TRAIN | EVAL | PREDICT | LRFIND, 0, "0", "BYTES",
     "run", "fail (naming the sizes) when the device would hold more than BYTES (0: no limit)",
     .hi = 9007199254740991.0},
    {"memory-check", OT_BOOL, OFF(memory_check), TRAIN | EVAL | PREDICT | LRFIND, 0, "yes", "",
     "run",
     "refuse at once a model larger than the device's free memory, naming the sizes (no: let the "
     "allocations decide)"},
    {"graphs", OT_BOOL, OFF(graphs), TRAIN | LRFIND | BENCH, 0, "yes", "", "run",
     "CUDA: record a training step as a CUDA graph and replay it (no: queue each op; the same "
     "results)"},
    /* lr-find */
    {"start-lr", OT_FLOAT, OFF(start_lr), LRFIND, OF_LO_OPEN, "1e-7", "LR", "lr-find",
     "first learning rate of the range test", .hi = FMAX},
    {"end-lr", OT_FLOAT, OFF(end_lr), LRFIND, OF_LO_OPEN, "10", "LR", "lr-find",
     "last learning rate of the range test", .hi = FMAX},
    {"steps", OT_INT, OFF(steps), LRFIND, 0, "100", "N", "lr-find", "steps of the range test",
     .lo = 5, .hi = 10000000},
    /* output */
    {"output", OT_STR, OFF(output), PREDICT, OF_OUT, "", "FILE", "output",
     "where predictions go: .csv, .npy, or - for standard output"},
    {"outputs", OT_CHOICE, OFF(outputs), PREDICT, 0, "auto", "WHAT", "output",
     "what to write (auto: CSV class and probabilities, NPY probabilities; values for mse)",
     .choices = "auto|class|probs|logits"},
    {"dump-weights", OT_BOOL, OFF(dump_weights), INFO, 0, "no", "", "output",
     "print every parameter (%.9g, exact for float32)"},
    {"output-format", OT_CHOICE, OFF(output_format), PREDICT, 0, "auto", "FMT", "output",
     "format of --output (auto: from its extension; CSV for -, standard output)",
     .choices = "auto|csv|npy"},
    {"json", OT_BOOL, OFF(json), TRAIN | EVAL | INFO, 0, "no", "", "output",
     "print one JSON object on standard output (train: the summary at the end); the rest goes to "
     "standard error"},
    {"train-acc", OT_CHOICE, OFF(train_acc), TRAIN, 0, "on", "HOW", "run",
     "the progress bar's train accuracy (classes), counted by each step from its own logits",
     .choices = "on|off"},
    /* bench: after the options of the same names, which lookups without a command find */
    {"config", OT_STR, OFF(configs), BENCH, 0, "S,M,L,XL", "LIST", "bench",
     "training configs, comma-separated: S, M, L, XL, tiny (XL runs on a GPU only)"},
    {"only", OT_CHOICE, OFF(only), BENCH, 0, "all", "WHAT", "bench",
     "ops (per-op only), train (training steps only) or all", .choices = "all|ops|train"},
    {"precision", OT_STR, OFF(precisions), BENCH, 0, "", "LIST", "bench",
     "fp32, tf32, bf16, comma-separated: a GEMM column and a training row each (default all three "
     "on a GPU; fp32 on the CPU)"},
    {"quick", OT_BOOL, OFF(quick), BENCH, 0, "no", "", "bench",
     "few repeats and a small sweep (a check that finishes fast)"},
    {"warmup", OT_INT, OFF(warmup_calls), BENCH, 0, "2", "N", "bench",
     "untimed calls before timing; 1 with --quick unless given", .hi = 1000000},
    {"repeats", OT_INT, OFF(repeats), BENCH, 0, "10", "N", "bench",
     "timed samples per row: median, min, max, IQR; 3 with --quick unless given", .lo = 1,
     .hi = 1000000},
    {"json", OT_STR, OFF(json_file), BENCH, OF_OUT, "", "FILE", "bench",
     "also write every row as JSON"},
    {"no-limits", OT_BOOL, OFF(no_limits), BENCH, 0, "no", "", "bench",
     "skip the limit measurements (their 256 MiB buffers stay in the process's resident set and "
     "hide a config's peak memory)"},
};
#pragma GCC diagnostic pop

#undef TRAIN
#undef EVAL
#undef PREDICT
#undef INFO
#undef LRFIND
#undef BENCH
#undef STORED
#undef FROZEN
#undef DATA
#undef DATA_IN
#undef DATA_FORMAT

#define N_SPECS ((int)(sizeof SPECS / sizeof SPECS[0]))

#define N_CMDS 6
static const char *const CMD_NAMES[N_CMDS] = {"train", "eval",    "predict",
                                              "info",  "lr-find", "bench"};

const char *cli_command_name(int cmd) {
    for (int i = 0; i < N_CMDS; ++i)
        if (cmd == 1 << i) return CMD_NAMES[i];
    return "";
}

int cli_option_count(void) {
    return N_SPECS;
}
const char *cli_option_name(int index) {
    return SPECS[index].name;
}
int cli_option_has(int index, unsigned flag) {
    return (SPECS[index].flags & flag) != 0;
}
int cli_option_of(int index, int cmd) {
    return (SPECS[index].cmds & (unsigned)cmd) != 0;
}

/* The option called name (len bytes) of cmd, else the first of that name; -1 when none. */
static int find_spec(int cmd, const char *name, size_t len) {
    int first = -1;
    for (int i = 0; i < N_SPECS; ++i) {
        if (strlen(SPECS[i].name) != len || strncmp(SPECS[i].name, name, len) != 0) continue;
        if (SPECS[i].cmds & (unsigned)cmd) return i;
        if (first < 0) first = i;
    }
    return first;
}

int cli_option_given(const cli_options *o, const char *name) {
    int i = find_spec(o->cmd, name, strlen(name));
    return i >= 0 && o->given && o->given[i];
}

const char *cli_option_text(const cli_options *o, const char *name) {
    int i = find_spec(o->cmd, name, strlen(name));
    return i >= 0 && o->text && o->text[i] ? o->text[i] : "";
}

/* The index of word in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *word) {
    size_t len = strlen(word);
    int index = 0;
    for (const char *p = choices; *p; ++index) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, word, n) == 0) return index;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

const char *cli_choice_name(const char *option, int value) {
    static char bufs[8][64]; /* rotating, so one printf may hold several */
    static int next;
    char *buf = bufs[next++ % 8];
    int i = find_spec(0, option, strlen(option));
    if (i < 0 || !SPECS[i].choices) return "";
    const char *p = SPECS[i].choices;
    for (int k = 0; k < value && p; ++k) {
        p = strchr(p, '|');
        if (p) ++p;
    }
    if (!p) return "";
    size_t n = strcspn(p, "|");
    if (n >= sizeof bufs[0]) n = sizeof bufs[0] - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    while (isspace((unsigned char)*s))
        ++s;
    if (!*s) return 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_int64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    if (!*s) return 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno == ERANGE) return 0;
    *out = (int64_t)v;
    return 1;
}

static int parse_bool(const char *s, int allow_auto, int *out) {
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};
    for (int i = 0; i < 4; ++i) {
        if (strcmp(s, yes[i]) == 0) return *out = 1, 1;
        if (strcmp(s, no[i]) == 0) return *out = 0, 1;
    }
    if (allow_auto && strcmp(s, "auto") == 0) return *out = -1, 1;
    return 0;
}

#define WIDTH_MAX (1L << 24)

/* Widths "W,W,..."; 0 and *bad (the 1-based position of the first bad width, 0 for the list's
 * shape) on failure. */
static int parse_list(const char *s, cli_int_list *out, int *bad) {
    cli_int_list l = {0, {0}};
    const char *p = s;
    *bad = 0;
    if (!*s) return *out = l, 1; /* --hidden "": no hidden layer */
    for (;;) {
        char *end;
        errno = 0;
        if (!isdigit((unsigned char)*p) || l.n == CLI_MAX_WIDTHS) return 0;
        long v = strtol(p, &end, 10);
        if (errno == ERANGE || v < 1 || v > WIDTH_MAX) return *bad = l.n + 1, 0;
        l.v[l.n++] = (int)v;
        if (*end == '\0') break;
        if (*end != ',') return 0;
        p = end + 1;
    }
    *out = l;
    return 1;
}

static int device_name_ok(const char *name) {
    if (!strcmp(name, "cpu") || !strcmp(name, "cuda") || !strcmp(name, "auto")) return 1;
    if (strncmp(name, "cuda:", 5) != 0 || !name[5]) return 0;
    for (const char *p = name + 5; *p; ++p)
        if (!isdigit((unsigned char)*p)) return 0;
    return 1;
}

/* v within the spec's bounds: 0, or a usage error saying them ("must be in [0, 1)"). */
static int check_bounds(int cmd, const opt_spec *s, double v, const char *text, const char *label) {
    int lo_open = (s->flags & OF_LO_OPEN) != 0, hi_open = (s->flags & OF_HI_OPEN) != 0;
    if (!(v < s->lo || (v == s->lo && lo_open)) && !(v > s->hi || (v == s->hi && hi_open)))
        return 0;
    return cli_usage_error(cmd, "%s: '%s' is out of range (must be in %s%s, %s%s)", label, text,
                           lo_open ? "(" : "[", cli_num(s->lo), cli_num(s->hi),
                           hi_open ? ")" : "]");
}

/* Parses text for spec s into its field of o; prints a usage error naming label on failure. */
static int set_value(int cmd, cli_options *o, const opt_spec *s, const char *text,
                     const char *label) {
    void *field = (char *)o + s->offset;
    double d;
    int64_t i64;
    int b;
    switch (s->type) {
    case OT_FLOAT:
        if (!parse_double(text, &d))
            return cli_usage_error(cmd, "%s: '%s' is not a number", label, text);
        if (check_bounds(cmd, s, d, text, label)) return CLI_EXIT_USAGE;
        *(double *)field = d;
        return 0;
    case OT_INT:
        if (!parse_int64(text, &i64))
            return cli_usage_error(cmd, "%s: '%s' is not an integer", label, text);
        if (check_bounds(cmd, s, (double)i64, text, label)) return CLI_EXIT_USAGE;
        if (s->offset == OFF(seed) || s->offset == OFF(memory_limit))
            *(int64_t *)field = i64;
        else
            *(int *)field = (int)i64;
        return 0;
    case OT_BOOL:
        if (!parse_bool(text, (s->flags & OF_AUTO) != 0, &b))
            return cli_usage_error(cmd, "%s: '%s' is not yes or no%s", label, text,
                                   s->flags & OF_AUTO ? " or auto" : "");
        *(int *)field = b;
        return 0;
    case OT_CHOICE:
        if ((b = choice_index(s->choices, text)) < 0)
            return cli_usage_error(cmd, "%s: '%s' is not one of %s", label, text, s->choices);
        *(int *)field = b;
        return 0;
    case OT_LIST:
        if (!parse_list(text, (cli_int_list *)field, &b)) {
            if (b)
                return cli_usage_error(cmd,
                                       "%s: width %d of '%s' is out of range (must be in [1, %ld])",
                                       label, b, text, WIDTH_MAX);
            return cli_usage_error(
                cmd,
                "%s: '%s' is not a list of widths (up to %d comma-separated integers in [1, %ld])",
                label, text, CLI_MAX_WIDTHS, WIDTH_MAX);
        }
        return 0;
    case OT_STR: {
        if (s->offset == OFF(device) && !device_name_ok(text))
            return cli_usage_error(cmd, "%s: '%s' is not cpu, cuda, cuda:N or auto", label, text);
        char *copy = cli_strdup(text);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    }
    return 0;
}

static int set_index(int cmd, cli_options *o, int index, const char *text, const char *label,
                     int given) {
    int rc = set_value(cmd, o, &SPECS[index], text, label);
    if (rc) return rc;
    free(o->text[index]);
    o->text[index] = cli_strdup(text);
    if (given) o->given[index] = 1;
    return 0;
}

int cli_set_option(int cmd, cli_options *o, const char *name, const char *text, const char *source,
                   int given) {
    int i = find_spec(cmd, name, strlen(name));
    if (i < 0) return cli_usage_error(cmd, "%s: unknown option '%s'", source, name);
    char label[512];
    snprintf(label, sizeof label, "%s: %s", source, name);
    return set_index(cmd, o, i, text, label, given);
}

static int set_defaults(int cmd, cli_options *o) {
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->given = calloc(N_SPECS, 1);
    o->text = calloc(N_SPECS, sizeof(char *));
    if (!o->given || !o->text) return CLI_EXIT_FAIL;
    for (int i = 0; i < N_SPECS; ++i)
        if (set_index(0, o, i, SPECS[i].def, SPECS[i].name, 0)) return CLI_EXIT_FAIL;
    return 0;
}

void cli_options_free(cli_options *o) {
    for (int i = 0; i < N_SPECS; ++i) {
        if (SPECS[i].type == OT_STR) free(*(char **)((char *)o + SPECS[i].offset));
        if (o->text) free(o->text[i]);
    }
    free(o->text);
    free(o->given);
    memset(o, 0, sizeof *o);
}

/* ---- --config FILE ---- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        ++s;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* One "key = value" line; options of other subcommands are skipped, so one file can serve
 * train and eval alike. */
static int config_line(int cmd, cli_options *o, char *line, const char *label) {
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    char *s = trim(line);
    if (!*s) return 0;
    char *eq = strchr(s, '=');
    char *key = s, *value = NULL;
    if (eq) *eq = '\0', value = trim(eq + 1);
    key = trim(key);
    if (key[0] == '-' && key[1] == '-') key += 2;
    size_t n = strlen(value ? value : "");
    if (value && n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n - 1] == value[0])
        value[n - 1] = '\0', ++value;
    int i = find_spec(cmd, key, strlen(key));
    if (i < 0) return cli_usage_error(cmd, "%s: unknown option '%s'", label, key);
    if (!(SPECS[i].cmds & cmd)) return 0;
    if (SPECS[i].offset == OFF(config))
        return cli_usage_error(cmd, "%s: a config file cannot name another", label);
    if (!value) {
        if (SPECS[i].type != OT_BOOL)
            return cli_usage_error(cmd, "%s: %s needs '= value'", label, key);
        value = "yes";
    }
    char where[600];
    snprintf(where, sizeof where, "%.500s: %.90s", label, key);
    return set_index(cmd, o, i, value, where, 1);
}

static int read_config(int cmd, cli_options *o, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_usage_error(cmd, "--config: cannot read '%s': %s", path, strerror(errno));
    char line[4096], label[600];
    int rc = 0;
    for (int number = 1; !rc && fgets(line, sizeof line, f); ++number) {
        snprintf(label, sizeof label, "%s:%d", path, number);
        if (!strchr(line, '\n') && !feof(f)) {
            cli_usage_error(cmd, "%s: line longer than %zu characters", label, sizeof line - 2);
            rc = CLI_EXIT_USAGE;
        } else {
            rc = config_line(cmd, o, line, label);
        }
    }
    fclose(f);
    return rc;
}

/* ---- argv ---- */

typedef struct flag_value {
    int index;
    const char *value;
    char label[96];
} flag_value;

static int is_help(const char *a) {
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int unknown_flag(int cmd, const char *arg, size_t len) {
    unsigned cmds = 0; /* of every option of that name */
    for (int i = 0; i < N_SPECS; ++i)
        if (strlen(SPECS[i].name) == len - 2 && strncmp(SPECS[i].name, arg + 2, len - 2) == 0)
            cmds |= SPECS[i].cmds;
    if (cmds) {
        char owners[64] = "";
        for (int c = 0; c < N_CMDS; ++c)
            if (cmds & (1u << c)) {
                if (owners[0]) strcat(owners, ", ");
                strcat(owners, CMD_NAMES[c]);
            }
        return cli_usage_error(cmd, "%.*s: not an option of %s (it belongs to %s)", (int)len, arg,
                               cli_command_name(cmd), owners);
    }
    return cli_usage_error(cmd, "%.*s: unknown option (see backprop %s --help)", (int)len, arg,
                           cli_command_name(cmd));
}

/* One "--name[=value]" (taking the next argument as the value when needed) into *fv. */
static int parse_flag(int cmd, int argc, char **argv, int *k, flag_value *fv) {
    const char *arg = argv[*k];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    int i = find_spec(cmd, arg + 2, len - 2), negated = 0;
    if (i < 0 && len > 5 && strncmp(arg + 2, "no-", 3) == 0) {
        i = find_spec(cmd, arg + 5, len - 5);
        negated = i >= 0 && SPECS[i].type == OT_BOOL;
        if (!negated) i = -1;
    }
    if (i < 0 || !(SPECS[i].cmds & cmd)) return unknown_flag(cmd, arg, len);
    snprintf(fv->label, sizeof fv->label, "--%s", SPECS[i].name);
    fv->index = i;
    if (SPECS[i].type == OT_BOOL) {
        if (negated && eq) return cli_usage_error(cmd, "%.*s takes no value", (int)len, arg);
        fv->value = negated ? "no" : eq ? eq + 1 : "yes";
        return 0;
    }
    if (eq) {
        fv->value = eq + 1;
    } else if (*k + 1 < argc) {
        fv->value = argv[++*k];
    } else {
        return cli_usage_error(cmd, "--%s needs a value (%s)", SPECS[i].name, SPECS[i].metavar);
    }
    return 0;
}

static int takes_positional(int cmd) {
    return cmd == CMD_EVAL || cmd == CMD_PREDICT || cmd == CMD_INFO;
}

int cli_parse(int cmd, int argc, char **argv, cli_options *o) {
    if (set_defaults(cmd, o)) return cli_fail(cmd, "out of memory");
    for (int k = 0; k < argc; ++k)
        if (is_help(argv[k]))
            return cli_print_help(cmd, stdout), -1;
        else if (strcmp(argv[k], "--") == 0)
            break;
    flag_value *fv = calloc((size_t)argc + 1, sizeof *fv);
    if (!fv) return cli_fail(cmd, "out of memory");
    int n = 0, rc = 0, config = -1, only_positional = 0;
    for (int k = 0; k < argc && !rc; ++k) {
        const char *a = argv[k];
        if (!only_positional && strcmp(a, "--") == 0) {
            only_positional = 1;
        } else if (!only_positional && a[0] == '-' && a[1] == '-' && a[2]) {
            rc = parse_flag(cmd, argc, argv, &k, &fv[n]);
            if (!rc && SPECS[fv[n].index].offset == OFF(config)) config = n;
            ++n;
        } else if (!only_positional && a[0] == '-' && a[1]) {
            rc = unknown_flag(cmd, a, strlen(a));
        } else if (takes_positional(cmd) && !o->positional) {
            o->positional = a;
        } else {
            rc = cli_usage_error(cmd, "unexpected argument '%s'", a);
        }
    }
    /* The file first, so the flags override it whatever their order. */
    if (!rc && config >= 0) rc = read_config(cmd, o, fv[config].value);
    for (int k = 0; k < n && !rc; ++k)
        rc = set_index(cmd, o, fv[k].index, fv[k].value, fv[k].label, 1);
    free(fv);
    return rc;
}

/* ---- help ---- */

static const char *const CMD_SUMMARY[] = {
    "Trains an MLP and reports a table row per epoch; optionally saves checkpoints.",
    "Evaluates a checkpoint on test data: loss and accuracy (or MSE).",
    "Runs a checkpoint over data and writes its outputs as CSV or NPY.",
    "Prints a checkpoint's layers, optimizer, run state and parameter checksums.",
    "Learning-rate range test: raises the rate exponentially and suggests one.",
    ("Measures the device limits (sgemm at 2048^3, copy bandwidth), per-op throughput\nand "
     "training-step throughput, each with its FLOPs, bytes and % of the limit."),
};

static const char *const CMD_USAGE[] = {
    "backprop train (--data NAME | --train FILE | --train-images F --train-labels F) [options]",
    "backprop eval CHECKPOINT [--input FILE | --data NAME | --test-images F --test-labels F]",
    "backprop predict CHECKPOINT --input FILE|- --output FILE.csv|FILE.npy|- [options]",
    "backprop info CHECKPOINT [--dump-weights]",
    "backprop lr-find [data and model options] [--start-lr 1e-7 --end-lr 10 --steps 100]",
    "backprop bench [options]",
};

/* Writes text from column col, wrapped before column HELP_WIDTH onto lines indented by
 * HELP_INDENT. */
#define HELP_WIDTH  100
#define HELP_INDENT 29
static void put_wrapped(const char *text, int col, FILE *f) {
    int first = 1;
    for (const char *p = text; *p;) {
        size_t word = strcspn(p, " ");
        if (!first && col + 1 + (int)word > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
        } else if (!first) {
            fputc(' ', f);
            ++col;
        }
        fwrite(p, 1, word, f);
        col += (int)word;
        first = 0;
        p += word;
        while (*p == ' ')
            ++p;
    }
    fputc('\n', f);
}

static void print_option(const opt_spec *s, FILE *f) {
    char head[64], text[512];
    if (s->type == OT_BOOL)
        snprintf(head, sizeof head, "--%s", s->name);
    else
        snprintf(head, sizeof head, "--%s %s", s->name, s->metavar);
    int n = snprintf(text, sizeof text, "%s", s->help);
    if (s->type == OT_CHOICE && n < (int)sizeof text)
        n += snprintf(text + n, sizeof text - (size_t)n, " [%s]", s->choices);
    if (s->def[0] && s->type != OT_BOOL && n < (int)sizeof text)
        snprintf(text + n, sizeof text - (size_t)n, " (default %s)", s->def);
    int col = fprintf(f, "  %-26s ", head);
    put_wrapped(text, col, f);
}

void cli_print_help(int cmd, FILE *f) {
    int c = 0;
    while (c < N_CMDS && cmd != 1 << c)
        ++c;
    if (c == N_CMDS) return;
    fprintf(f, "usage: %s\n\n%s\n", CMD_USAGE[c], CMD_SUMMARY[c]);
    static const char *const groups[] = {"model",   "training", "data", "run",
                                         "lr-find", "output",   "bench"};
    for (int g = 0; g < 7; ++g) {
        int printed = 0;
        for (int i = 0; i < N_SPECS; ++i) {
            if (!(SPECS[i].cmds & cmd) || strcmp(SPECS[i].group, groups[g]) != 0) continue;
            if (!printed++) fprintf(f, "\n%s:\n", groups[g]);
            print_option(&SPECS[i], f);
        }
    }
    fprintf(f, "\n  %-26s this text\n", "--help");
    if (cmd == CMD_TRAIN)
        fprintf(f,
                "\nExit status: 0 done, 1 a runtime failure, 2 a usage error, 128 + the signal "
                "when\nSIGINT (130), SIGTERM (143) or SIGHUP (129) stopped the run (its step saved "
                "with --save).\nExample: backprop train --data fashion-mnist --save fm.st\n");
}
