/* Setting up a training session (train and lr-find): options, data, scaling, device, model and
 * loader, every check that the data fits the model done before the first step. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int resume_options(cli_session *s) {
    s->resuming = 1;
    s->ck = cli_checkpoint_open(s->cmd, "--resume", s->o.resume, NULL);
    if (!s->ck) return CLI_EXIT_FAIL;
    int rc = cli_read_run_state(s->cmd, s->ck, &s->rs);
    return rc ? rc : cli_apply_stored_options(s->cmd, s->ck, &s->o, STORED_ALL);
}

static int check_loss(cli_session *s) {
    const cli_data *d = &s->d;
    int cmd = s->cmd;
    if (s->loss.kind == BP_LOSS_CROSS_ENTROPY && d->kind != BP_TARGET_CLASS)
        return cli_usage_error(cmd,
                               "--loss ce needs class labels, but %s has %d target values per "
                               "sample (use --loss mse or bce, or --target-kind class)",
                               d->train_name, d->target_width);
    if (s->loss.kind != BP_LOSS_CROSS_ENTROPY && d->kind == BP_TARGET_CLASS)
        return cli_usage_error(
            cmd,
            "--loss %s needs target values, but %s has class labels (use --target-kind values)",
            cli_choice_name("loss", s->o.loss), d->train_name);
    if (s->loss.kind != BP_LOSS_CROSS_ENTROPY && s->o.label_smoothing > 0.0 &&
        cli_option_given(&s->o, "label-smoothing"))
        return cli_usage_error(cmd, "--label-smoothing applies to --loss ce only");
    if (s->cmd == CMD_TRAIN && s->o.early_stop > 0 && !d->val)
        return cli_usage_error(cmd, "--early-stop needs a validation set (--val-split F > 0)");
    return 0;
}

/* The resumed run's width against the data's, before the stored scaling is read by it. */
static int check_resumed_width(cli_session *s) {
    const char *v = bp_checkpoint_meta(s->ck, "features");
    int width = v ? atoi(v) : s->d.features;
    if (width == s->d.features) return 0;
    return cli_usage_error(s->cmd,
                           "--resume: the run in %s was trained on %d %s, but %s has %d: give it "
                           "the data it was trained on",
                           s->o.resume, width, cli_plural(width, "feature", "features"),
                           s->d.train_name, s->d.features);
}

static int setup_scaling(cli_session *s) {
    cli_options *o = &s->o;
    if (s->resuming) {
        int rc = check_resumed_width(s);
        if (rc) return rc;
        float *offset = NULL, *scale = NULL;
        int scaling;
        bp_loss_config stored;
        rc = cli_read_model_meta(s->cmd, s->ck, s->d.features, &offset, &scale, &scaling, &stored);
        if (!rc) rc = cli_data_scale(s->cmd, &s->d, scaling, offset, scale);
        free(offset);
        free(scale);
        return rc;
    }
    int scaling = o->scale;
    if (scaling == SCALE_AUTO) /* images: one mean and deviation keeps pixels comparable */
        scaling = o->data[0] || o->train_images[0] ? SCALE_GLOBAL : SCALE_STANDARD;
    return cli_data_scale(s->cmd, &s->d, scaling, NULL, NULL);
}

static int setup_model(cli_session *s) {
    cli_options *o = &s->o;
    if (s->resuming) {
        bp_status st;
        int max_batch = (o->batch + o->accum - 1) / o->accum;
        s->m = bp_checkpoint_read_model(s->ck, s->dev, max_batch, &st);
        if (!s->m) return cli_lib_fail(s->cmd, "--resume");
        return cli_check_model_fits(s->cmd, s->m, &s->d, o->resume);
    }
    cli_int_list w;
    int rc = cli_resolve_widths(s->cmd, o, &s->d, &w);
    if (rc) return rc;
    s->m = cli_build_model(s->cmd, o, s->dev, &w);
    return s->m ? 0 : CLI_EXIT_FAIL;
}

/* The batch against the data: --accum micro-batches of one row at least (the ranks' pieces in a
 * data-parallel run, which the loader checks), and no larger than the training set when given. */
static int check_batch(cli_session *s) {
    const cli_options *o = &s->o;
    int64_t n = bp_dataset_size(s->d.train);
    if (cli_ranks == 1 && o->accum > o->batch)
        return cli_usage_error(
            s->cmd,
            "--accum %d is larger than --batch %d: each batch is split into --accum micro-batches "
            "of a row or more; use --accum %d or less, or a larger --batch",
            o->accum, o->batch, o->batch);
    if (cli_option_given(o, "batch") && o->batch > n)
        return cli_usage_error(s->cmd,
                               "--batch %d is larger than the %lld training %s%s: use --batch %lld "
                               "or less (--batch %lld: one step per epoch over all of them)",
                               o->batch, (long long)n, cli_plural(n, "sample", "samples"),
                               s->d.val ? " left after --val-split" : "", (long long)n,
                               (long long)n);
    return 0;
}

/* The data; a resumed run's labels map onto the class names it was trained with. */
static int load_data(cli_session *s, int values) {
    if (!s->resuming) return cli_data_load_train(s->cmd, &s->o, values, NULL, NULL, &s->d);
    cli_names known = {NULL, 0};
    char whose[1100];
    snprintf(whose, sizeof whose, "the run in %s", s->o.resume);
    int rc = cli_read_class_names(s->cmd, s->ck, 0, &known);
    if (!rc) rc = cli_data_load_train(s->cmd, &s->o, values, &known, whose, &s->d);
    cli_names_free(&known);
    return rc;
}

int cli_session_setup(cli_session *s, int cmd, int argc, char **argv) {
    memset(s, 0, sizeof *s);
    s->cmd = cmd;
    int rc = cli_parse(cmd, argc, argv, &s->o);
    if (!rc) rc = cli_check_names(cmd, &s->o);
    if (rc) return rc;
    cli_options *o = &s->o;
    s->rs.best_metric = NAN;
    if (cmd == CMD_TRAIN && o->resume[0] && (rc = resume_options(s))) return rc;
    /* Before the device (a rank's GPU) and the output files (rank 0's). */
    if (cmd == CMD_TRAIN && (rc = cli_dist_start(cmd, o, &s->comm))) return rc;
    if ((rc = cli_check_outputs(cmd, o, o->resume[0] ? o->resume : NULL))) return rc;
    if (o->plot[0]) cli_gnuplot_ready(cmd, o->plot);
    if (!s->resuming) s->rs.loader_seed = (uint64_t)o->seed;
    if ((rc = cli_open_device(cmd, o, &s->dev))) return rc; /* fails fast, before loading */
    bp_loss_kind guess = cli_loss_kind(o, NULL);
    int values = cli_targets_are_values(o, guess, o->loss != LOSS_AUTO);
    if ((rc = load_data(s, values))) return rc;
    s->loss.kind = cli_loss_kind(o, &s->d);
    /* the default smoothing is for cross-entropy; other losses have none */
    s->loss.label_smoothing =
        s->loss.kind == BP_LOSS_CROSS_ENTROPY ? (float)o->label_smoothing : 0.0f;
    if ((rc = check_loss(s)) || (rc = check_batch(s)) || (rc = setup_scaling(s))) return rc;
    if ((rc = setup_model(s))) return rc;
    bp_status st;
    /* Every rank walks the same batches; each takes its piece, with a micro-batch per
     * accumulation step at least. */
    s->loader = bp_loader_create_shard(s->d.train, s->dev, o->batch, 1, s->rs.loader_seed, cli_rank,
                                       cli_ranks, o->accum, &st);
    if (!s->loader) return cli_lib_fail(cmd, "creating the loader");
    s->steps_per_epoch = bp_loader_batches(s->loader);
    return 0;
}

void cli_session_free(cli_session *s) {
    bp_checkpoint_close(s->ck);
    bp_loader_free(s->loader);
    bp_model_free(s->m);
    cli_data_free(&s->d);
    bp_device_close(s->dev);
    bp_comm_free(s->comm);
    cli_options_free(&s->o);
    memset(s, 0, sizeof *s);
}
