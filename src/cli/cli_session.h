/* A training run: its checkpoints and their run.* metadata (runmeta.c), the model setup
 * (setup.c), the session train and lr-find share (session.c) and data-parallel runs (dist.c). */
#ifndef BP_CLI_SESSION_H
#define BP_CLI_SESSION_H

#include <stdint.h>
#include <stdio.h>
#include "backprop/backprop.h"
#include "cli_data.h"
#include "cli_names.h"
#include "cli_options.h"

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
/* Opens the checkpoint at path once for the command: readable (flag names it in the message,
 * NULL: "checkpoint"), parsed, every tensor checked against its checksum (a notice when it has
 * none; *verified, which may be NULL, says which). NULL after a message. */
bp_checkpoint *cli_checkpoint_open(int cmd, const char *flag, const char *path, int *verified);
int cli_read_run_state(int cmd, const bp_checkpoint *ck, cli_run_state *rs);
/* Reads the scaling and loss stored with a model (a loss kind of -1 when none is). */
int cli_read_model_meta(int cmd, const bp_checkpoint *ck, int features, float **offset,
                        float **scale, int *scaling, bp_loss_config *loss);
/* Applies the run.cfg.* options of a checkpoint under the user's: all of them (STORED_ALL, for
 * --resume), or for eval/predict the data options (STORED_SOURCES: which files) or the format
 * options (STORED_FORMATS: how to read them). */
enum { STORED_ALL = 0, STORED_SOURCES = 1, STORED_FORMATS = 2 };
int cli_apply_stored_options(int cmd, const bp_checkpoint *ck, cli_options *o, int which);
/* The run.cfg value of option `index` (malloc'd; NULL when absent or not OF_STORE). Data paths
 * (--train, --test,
 * --data-dir...) are kept relative to the checkpoint's folder: this is such a path from here. */
char *cli_stored_option(const bp_checkpoint *ck, int index);
/* The class names stored with a model (run.class_names; none: n 0), which must be as many as
 * its outputs when outputs > 0. 0 or CLI_EXIT_FAIL. */
int cli_read_class_names(int cmd, const bp_checkpoint *ck, int outputs, cli_names *names);

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
    cli_run_state rs;  /* from --resume, else fresh */
    bp_checkpoint *ck; /* --resume's, else NULL */
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

#endif
