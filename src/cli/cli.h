/* The `backprop` command: declarations shared by its source files.
 *
 * Exit statuses: 0 success, 1 a runtime failure (the library's message is printed), 2 a usage
 * error (an unknown flag, a bad value, data that does not fit the model, an output that would
 * overwrite an input), 128 + the signal when SIGINT, SIGTERM or SIGHUP stopped a run. */
#ifndef BP_CLI_H
#define BP_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backprop/backprop.h"
#include "backprop/file.h"

#define CLI_EXIT_OK     0
#define CLI_EXIT_FAIL   1
#define CLI_EXIT_USAGE  2
#define CLI_EXIT_SIGNAL 128 /* + the signal */

#define CLI_MAX_WIDTHS 64 /* widths in --layers / --hidden */

/* Subcommands, as bits so an option can belong to several. */
enum { CMD_TRAIN = 1, CMD_EVAL = 2, CMD_PREDICT = 4, CMD_INFO = 8, CMD_LRFIND = 16, CMD_ALL = 31 };

typedef struct cli_int_list {
    int n;
    int v[CLI_MAX_WIDTHS];
} cli_int_list;

/* Choices, in the order of the option's choice list. */
enum { LOSS_AUTO, LOSS_CE, LOSS_MSE, LOSS_BCE };
enum { SCALE_AUTO, SCALE_STANDARD, SCALE_MINMAX, SCALE_GLOBAL, SCALE_NONE };
enum { TK_AUTO, TK_CLASS, TK_ONEHOT, TK_VALUES };
enum { MON_AUTO, MON_LOSS, MON_ACC };
enum { OUT_AUTO, OUT_CLASS, OUT_PROBS, OUT_LOGITS };
enum { TK_NAMES = TK_VALUES + 1 };
enum { FMT_AUTO, FMT_CSV, FMT_NPY };
enum { ACC_ON, ACC_OFF };

/* Every option of every subcommand; the table in options.c maps names onto these fields. */
typedef struct cli_options {
    /* model */
    cli_int_list layers, hidden;
    int act, init, precision;
    double dropout;
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
    /* lr-find */
    double start_lr, end_lr;
    int steps;
    /* predict, info */
    int outputs, dump_weights;
    int output_format; /* FMT_* */
    int json;          /* train, eval, info: one JSON object on stdout */
    int train_acc;     /* ACC_* */

    /* Per option (index into the table): given by the user (file or flag), and its text. */
    unsigned char *given;
    char **text;
    const char *positional; /* the one positional argument (a checkpoint) */
} cli_options;

/* ---- options.c ---- */
const char *cli_command_name(int cmd);
/* Parses argv (after the subcommand) into o: defaults, then --config FILE, then flags. On a
 * usage error prints it and returns CLI_EXIT_USAGE; for --help prints help and returns -1. */
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
int cli_option_stored(int index);    /* saved in checkpoints */
int cli_option_frozen(int index);    /* on resume the checkpoint's value wins */
int cli_option_is_data(int index);   /* names or reads the data */
int cli_option_is_format(int index); /* how to read data files (CSV columns, header...) */
int cli_option_is_input(int index);  /* names a file the command reads */
int cli_option_is_output(int index); /* names a file the command writes */
int cli_option_of(int index, int cmd);
const char *cli_choice_name(const char *option, int value);

/* ---- util.c ---- */
double cli_now(void); /* monotonic seconds */
void cli_usage_error(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_fail(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_warn(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "backprop CMD: WHAT: <bp_last_error()>" and returns CLI_EXIT_FAIL. */
int cli_lib_fail(int cmd, const char *what);
char *cli_strdup(const char *s);
int cli_has_ext(const char *path, const char *ext); /* case-insensitive suffix */
/* A number as people write it: integers in full (1048576), others in 6 digits; a rotating
 * static buffer, so one message may hold several. */
const char *cli_num(double v);
/* one or many by n: "1 epoch", "2 epochs". */
const char *cli_plural(long long n, const char *one, const char *many);
/* Comma-separated %.9g floats, malloc'd; and back (returns the count or -1). */
char *cli_format_floats(const float *v, size_t n);
long cli_parse_floats(const char *s, float *out, size_t cap);
void cli_format_duration(double seconds, char *buf, size_t size);
uint64_t cli_fnv1a(uint64_t h, const void *data, size_t n);

/* Where the human output of train, eval and info goes: stdout, or stderr under --json (then
 * stdout holds the JSON object alone). */
extern FILE *cli_human;
#define cli_out() (cli_human ? cli_human : stdout)

/* ---- names.c: class names ---- */
typedef struct cli_names {
    char **v;
    int n;
} cli_names;
void cli_names_free(cli_names *names);
/* Copies of a dataset's class names (none: n 0); 0 or -1 when out of memory. */
int cli_names_from_dataset(cli_names *names, const bp_dataset *ds);
/* The names joined by '\n' (a CSV field never holds a line end), malloc'd; and back (0, or -1
 * out of memory). */
char *cli_names_join(const cli_names *names);
int cli_names_split(cli_names *names, const char *text);
/* "cat, dog, owl" (the first few, then "..."), in a rotating static buffer. */
const char *cli_names_list(const cli_names *names);
/* One CSV field as written: quoted (with "" for a quote) when it holds the delimiter, a quote
 * or blanks at either end, which a reader would change. */
void cli_csv_field(FILE *f, const char *s, char delim);

/* ---- json.c ---- */
size_t cli_utf8_seq(const unsigned char *s, size_t n); /* 0: not a valid sequence */
int cli_utf8_valid(const char *s);
/* s for a message: bytes that are not UTF-8 (or control characters) as \xHH. */
void cli_escape_bytes(const char *s, char *out, size_t size);
typedef struct cli_json {
    FILE *f;
    int depth;
    int count[16]; /* values written at each depth */
} cli_json;
void cli_json_open(cli_json *j, FILE *f); /* "{" */
void cli_json_close(cli_json *j);         /* "}" and a newline */
/* key NULL inside an array. bracket '{' / '[' and '}' / ']'. */
void cli_json_begin(cli_json *j, const char *key, char bracket);
void cli_json_end(cli_json *j, char bracket);
void cli_json_str(cli_json *j, const char *key, const char *v); /* NULL: null */
void cli_json_num(cli_json *j, const char *key, double v);      /* %.17g; NaN, inf: null */
void cli_json_int(cli_json *j, const char *key, long long v);
void cli_json_u64(cli_json *j, const char *key, uint64_t v);
void cli_json_bool(cli_json *j, const char *key, int v);
void cli_json_null(cli_json *j, const char *key);
/* A stored number's text as it is when it is a JSON number (exact), null for nan/inf, else a
 * string. */
void cli_json_text(cli_json *j, const char *key, const char *text);
void cli_json_names(cli_json *j, const char *key, const cli_names *names); /* none: null */

/* ---- signals.c ---- */
/* The signal (SIGINT, SIGTERM, SIGHUP) that asked a training run to stop; 0 while none has. */
extern volatile sig_atomic_t cli_interrupted;
/* Catches (on) or releases the three signals: the first sets cli_interrupted, a second stops
 * the process at once (128 + it), unless held. */
void cli_catch_interrupt(int on);
/* While a file is written (hold 1) a second signal waits; hold 0 then stops the process with
 * it (128 + the signal). */
void cli_hold_signals(int hold);
const char *cli_signal_name(int sig);
int cli_signal_index(int sig); /* 0..2 for the signals caught, else -1 */
int cli_signal_at(int index);

/* ---- paths.c: what the command reads and writes, checked before any work ---- */
/* A flag that names a file given an empty name (--save "" would save nothing): exit 2. */
int cli_check_names(int cmd, const cli_options *o);
/* Every output (--save, --metrics, --plot, --output, and the checkpoint --resume saves back
 * to) is neither an input (data, --config, --resume, the checkpoint: by device and inode,
 * through links; by resolved path when it does not exist yet) nor another output: exit 2
 * naming both flags. Saving back over --resume is the one overlap allowed. Then each output's
 * folder must exist and take a new file of its name with the temporary suffix, and the output
 * must not be a folder or a device: exit 1 (2 for a folder or device). */
int cli_check_outputs(int cmd, const cli_options *o, const char *checkpoint);
/* The write check alone, for one output (flag names it in messages). */
int cli_check_writable(int cmd, const char *flag, const char *path);
/* Verifies a checkpoint's checksums (bp_checkpoint_verify) before it is used; one line
 * saying it is unverified when it has none. 0 or CLI_EXIT_FAIL. */
int cli_verify_checkpoint(int cmd, const char *path, int *verified);

/* ---- data.c ---- */
typedef struct cli_data {
    bp_dataset *train, *val, *test;
    char train_name[512], test_name[512]; /* for messages */
    int features, classes;                /* classes 0 for value targets */
    int top_label;                        /* the largest training label, */
    int64_t top_row;                      /* and its row in the file (0-based) */
    int target_width;
    bp_target_kind kind;
    float *offset, *scale; /* scaling, features floats each */
    int scaling;           /* SCALE_* actually used */
    cli_names names;       /* the class names (the training data's, or the evaluation data's,
                              the model's first); n 0 for class indices */
} cli_data;
/* Whether targets are values (regression, BCE) rather than class indices: --target-kind, else
 * the loss when known. */
int cli_targets_are_values(const cli_options *o, bp_loss_kind loss, int loss_known);
/* Loads the training data (and test data, when given) and splits off the validation set.
 * known: the class names of the run resumed (`whose`, for messages), else NULL. */
int cli_data_load_train(int cmd, const cli_options *o, int values, const cli_names *known,
                        const char *whose, cli_data *d);
/* Loads the data eval/predict run on: --input (a file, or - for standard input), --test*, or
 * --data's test split; CSV labels map onto the known class names. model_inputs is the model's
 * input width: a CSV file of exactly that many columns has no target column, which predict
 * (unlabeled 1) takes as data to predict from (like NPY without --targets) and eval refuses. */
int cli_data_load_eval(int cmd, const cli_options *o, int values, const cli_names *known,
                       int model_inputs, int unlabeled, cli_data *d);
/* Fits (or takes) the scaling and applies it to every loaded set. */
int cli_data_scale(int cmd, cli_data *d, int scaling, const float *offset, const float *scale);
void cli_data_free(cli_data *d);
const char *cli_scale_name(int scaling);
/* Every label of ds (the file `name`) below classes: else exit 2 naming the row and label, and
 * `whose` classes they would need ("the model in m.st"). */
int cli_check_labels(int cmd, const bp_dataset *ds, const char *name, int classes,
                     const char *whose);
/* A model of named classes has one output per name: else exit 2 naming both (who: the layers'
 * source, "--layers"). */
int cli_check_named_outputs(int cmd, const cli_data *d, int outputs, const char *who);
/* The named dataset's file `which` (0 train images, 1 train labels, 2 test images, 3 test
 * labels), .gz first; 0 when found. */
int cli_named_file(const cli_options *o, int which, char *path, size_t size);

/* ---- evaluate.c ---- */
typedef struct cli_eval {
    double loss;   /* mean loss (the run's loss) */
    double metric; /* accuracy for ce/bce, MSE for mse */
    int64_t n;
} cli_eval;
/* bp_evaluate over dataset in batches of the model's max_batch (n 0, NaNs for no rows). */
int cli_evaluate(int cmd, bp_model *m, const bp_dataset *ds, const bp_loss_config *loss,
                 cli_eval *res);
int cli_metric_is_accuracy(bp_loss_kind kind);

/* ---- progress.c ---- */
typedef struct cli_epoch_row {
    int epoch;
    double train_loss, val_loss, val_metric, lr, seconds;
    int has_val;
    double train_acc;     /* the progress bar's train accuracy of the epoch (NaN: none) */
    int64_t train_scored; /* rows it was computed over */
} cli_epoch_row;
typedef struct cli_history {
    cli_epoch_row *rows;
    int n, cap;
} cli_history;
int cli_history_add(cli_history *h, const cli_epoch_row *r);
void cli_history_free(cli_history *h);
/* Rows of an existing metrics CSV up to epoch `upto` (for --resume); missing file: none. */
void cli_history_read_csv(cli_history *h, const char *path, int upto);
int cli_history_write_csv(const cli_history *h, const char *path, int accuracy);

/* What the progress of a whole run needs (kept from epoch to epoch); set by the caller. */
typedef struct cli_progress_run {
    int has_acc;        /* a classification run that scores batches */
    int last_epoch;     /* this invocation ends after that epoch (--stop-after) */
    double start;       /* when training began */
    double val_seconds; /* the last validation pass */
} cli_progress_run;

/* The progress of a run: a bar like tqdm's on a terminal (stderr), plain lines otherwise. */
typedef struct cli_progress {
    int tty, quiet, epoch, epochs;
    int64_t steps, step, samples, done_here; /* done_here: steps since start (not resumed) */
    double loss_sum;
    int64_t loss_n;
    double start, last_draw;
    /* The smoothed rate: exponential moving averages (tqdm's, smoothing 0.3) of the steps, the
     * samples and the seconds between two redraws. */
    double ema_steps, ema_samples, ema_seconds;
    int ema_n;
    int64_t drawn_step, drawn_samples;
    /* Train accuracy of the epoch: rows scored and right (see cli_progress_score). */
    int64_t scored, right;
    cli_progress_run run; /* kept by cli_progress_start */
} cli_progress;
void cli_progress_start(cli_progress *p, int epoch, int epochs, int64_t steps, int64_t first);
void cli_progress_step(cli_progress *p, int rows, float loss);
/* Whether to score the next batch for the train accuracy: always with full, else while scoring
 * has taken under 2% of the epoch's time (the first batch always). */
void cli_progress_score(cli_progress *p, int64_t right, int64_t rows);
void cli_progress_clear(cli_progress *p);
/* The bar for a terminal cols columns wide, at time now: what the redraw writes (no \r), never
 * wider than cols - 1. */
void cli_progress_line(const cli_progress *p, double now, int cols, int unicode, char *out,
                       size_t size);
void cli_table_header(int accuracy);
void cli_table_row(const cli_epoch_row *r, int accuracy);

/* ---- plot.c ---- */
/* Whether gnuplot is on the PATH; when it is not, a warning naming path (NULL: none). */
int cli_gnuplot_ready(int cmd, const char *path);
/* Draws loss and accuracy curves with gnuplot. 0, or CLI_EXIT_FAIL when the plot could not be
 * written (the previous file kept); no gnuplot: a warning and 0. */
int cli_plot_history(int cmd, const cli_history *h, const char *path, int accuracy);
/* Runs a gnuplot script that draws one PNG on its standard output, into path atomically: the
 * file name never reaches gnuplot. gnuplot's exit status and a complete PNG (every chunk's CRC,
 * IEND last) are checked before the rename. 0, or CLI_EXIT_FAIL with a message. */
int cli_gnuplot(int cmd, const char *script, const char *path);
/* Whether the n bytes are a complete PNG; *why says what is wrong when not. */
int cli_png_complete(const unsigned char *p, size_t n, const char **why);

/* ---- runmeta.c ---- */
/* The resumable state of a training run, kept in checkpoints as run.* metadata. */
typedef struct cli_run_state {
    int epoch;              /* epochs finished */
    int64_t batch_in_epoch; /* batches of epoch `epoch` done (0 at an epoch boundary) */
    double epoch_loss_sum;  /* loss sum and count of those batches */
    int64_t epoch_loss_n;
    uint64_t loader_seed;
    int best_epoch, bad_epochs;
    double best_metric;
    double train_seconds;
} cli_run_state;
int cli_checkpoint_save(int cmd, const char *path, const bp_model *m, const bp_optimizer *opt,
                        const cli_options *o, const cli_data *d, const bp_loss_config *loss,
                        const cli_run_state *rs);
/* Reads a run.KEY entry (malloc'd, NULL when absent); *failed set on an I/O error. */
char *cli_meta_get(int cmd, const char *path, const char *key, int *failed);
int cli_read_run_state(int cmd, const char *path, cli_run_state *rs);
/* Reads the scaling and loss stored with a model. */
int cli_read_model_meta(int cmd, const char *path, int features, float **offset, float **scale,
                        int *scaling, bp_loss_config *loss);
/* Applies the run.cfg.* options of a checkpoint under the user's: all of them (STORED_ALL, for
 * --resume), or for eval/predict the data options (STORED_SOURCES: which files) or the format
 * options (STORED_FORMATS: how to read them). */
enum { STORED_ALL = 0, STORED_SOURCES = 1, STORED_FORMATS = 2 };
int cli_apply_stored_options(int cmd, const char *path, cli_options *o, int which);
/* Data paths (--train, --test, --data-dir...) are kept relative to the checkpoint's folder;
 * this is such a stored value as a path from here (malloc'd). */
char *cli_resolve_stored_path(const char *ckpt, const char *value);
int cli_option_is_data_path(int index);
/* The class names stored with a model (run.class_names; none: n 0), which must be as many as
 * its outputs when outputs > 0. 0 or CLI_EXIT_FAIL. */
int cli_read_class_names(int cmd, const char *path, int outputs, cli_names *names);

/* ---- model setup (setup.c) ---- */
int cli_open_device(int cmd, const cli_options *o, bp_device **dev);
/* Resolves layer widths from --layers / --hidden and the data, checking they fit. */
int cli_resolve_widths(int cmd, const cli_options *o, const cli_data *d, cli_int_list *w);
int cli_check_model_fits(int cmd, const bp_model *m, const cli_data *d, const char *model_name);
bp_loss_kind cli_loss_kind(const cli_options *o, const cli_data *d);
bp_model *cli_build_model(int cmd, const cli_options *o, bp_device *dev, const cli_int_list *w);
bp_optim_config cli_optim_config(const cli_options *o, int64_t steps_per_epoch);
void cli_describe_model(const bp_model *m, FILE *f);

/* ---- session.c: what train and lr-find share ---- */
typedef struct cli_session {
    int cmd;
    cli_options o;
    cli_data d;
    bp_device *dev;
    bp_model *m;
    bp_loader *loader;
    bp_loss_config loss;
    int64_t steps_per_epoch;
    cli_run_state rs; /* from --resume, else fresh */
    int resuming;
    bp_comm *comm; /* data-parallel runs (dist.c), else NULL */
} cli_session;
/* Parses the options, loads, splits and scales the data, opens the device, builds (or, with
 * --resume, loads) the model and creates the loader. -1: --help was printed. */
int cli_session_setup(cli_session *s, int cmd, int argc, char **argv);
void cli_session_free(cli_session *s);

/* ---- dist.c: data-parallel runs over MPI ---- */
extern int cli_rank, cli_ranks; /* this process's rank and the job's: 0 and 1 when alone */
/* Joins the MPI job when --distributed is given or the launcher started several ranks: makes
 * the comm, points "cuda" (and "auto" on a GPU machine) at this rank's GPU, and leaves the
 * terminal and the output files to rank 0. *comm stays NULL for a run alone. */
int cli_dist_start(int cmd, cli_options *o, bp_comm **comm);
/* After setup, rc its result on this rank: every rank learns whether all set up; then checks
 * that they run the same options and data, and makes the model and optimizer replicas of rank
 * 0's. 0 or an exit status, the same on every rank. */
int cli_dist_join(cli_session *s, bp_optimizer *opt, int rc);
/* The signal that stopped any rank (0: none): every rank stops at the same step. */
int cli_dist_interrupted(bp_comm *comm);

/* ---- commands ---- */
int cli_cmd_train(int argc, char **argv);
int cli_cmd_eval(int argc, char **argv);
int cli_cmd_predict(int argc, char **argv);
int cli_cmd_info(int argc, char **argv);
int cli_cmd_lrfind(int argc, char **argv);
/* bench.c: parses its own flags (it shares no option with the others). */
int cli_cmd_bench(int argc, char **argv);
void cli_bench_help(FILE *f);

#endif
