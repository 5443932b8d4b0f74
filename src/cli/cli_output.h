/* What a training run reports: progress, the per-epoch table, the history CSV and plots. */
#ifndef BP_CLI_OUTPUT_H
#define BP_CLI_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backprop/train.h"

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
    /* Train accuracy of the epoch: rows scored and right (cli_progress_results). */
    int64_t scored, right;
    cli_progress_run run; /* kept by cli_progress_start */
} cli_progress;
void cli_progress_start(cli_progress *p, int epoch, int epochs, int64_t steps, int64_t first);
/* A step queued, of rows rows; its loss arrives with cli_progress_results. */
void cli_progress_step(cli_progress *p, int rows);
/* The losses (and, scored, the train accuracy) of the steps the device has finished. */
void cli_progress_results(cli_progress *p, const bp_step_totals *t, int scored);
void cli_progress_clear(cli_progress *p);
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
 * IEND last) are checked before the rename. 0 (and a line saying so on stderr), or
 * CLI_EXIT_FAIL with a message. */
int cli_gnuplot(int cmd, const char *script, const char *path);

#endif
