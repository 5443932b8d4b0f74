/* The data a command runs on (data.c), the checks of its outputs (paths.c) and evaluation
 * (evaluate.c). */
#ifndef BP_CLI_DATA_H
#define BP_CLI_DATA_H

#include <stdint.h>
#include "backprop/backprop.h"
#include "cli_names.h"
#include "cli_options.h"

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
/* The folder part of path ("." for a bare name), in buf. */
void cli_folder_of(const char *path, char *buf, size_t size);

/* ---- data.c ---- */
#define CLI_MAX_CLASSES (1 << 24) /* the most classes a model may have (--classes' bound) */
typedef struct cli_data {
    bp_dataset *train, *val, *test;
    char train_name[512], test_name[512]; /* for messages */
    int features, classes;                /* classes 0 for value targets */
    int top_label;                        /* the largest training label, */
    int64_t top_row;                      /* and its row in the file (0-based) */
    int target_width;
    bp_target_kind kind;
    float *offset, *scale; /* scaling, features floats each */
    int scaling;           /* the bp_scaling_kind used (never SCALE_AUTO) */
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

#endif
