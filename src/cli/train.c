/* backprop train: the epoch loop, validation, the table, early stopping, the gradient-norm
 * monitor, checkpoints and resuming. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define VANISHING     1e-7
#define EXPLODING     1e3
#define MAX_GRAD_WARN 3 /* per layer and kind, so a sick run does not drown the table */

typedef struct trainer {
    cli_session s;
    bp_optimizer *opt;
    const char *save; /* --save, else the --resume file, else NULL */
    int accuracy;     /* the metric is an accuracy (else MSE) */
    int monitor_acc;  /* early stopping watches the metric (else the loss) */
    cli_history hist;
    cli_progress prog;
    float *best;
    double *norms; /* per layer, --grad-check's */
    int *warned;   /* [layer][2] warnings given */
    float last_lr;
    double wall_start;
    int agreed_failure; /* every rank failed at the same step: each can end cleanly */
    int saved_now; /* --save holds the run as it stands: saved at an epoch's end, no step since */
    int stopped_early;
} trainer;

/* ---- the gradient-norm monitor ---- */

static void grad_warn(trainer *t, int l, int kind, double norm, int epoch, int64_t step) {
    bp_model *m = t->s.m;
    int *count = &t->warned[2 * l + kind];
    if (++*count > MAX_GRAD_WARN) return;
    cli_progress_clear(&t->prog);
    cli_warn(CMD_TRAIN, "epoch %d, step %lld: layer %d (%d -> %d) gradient norm %.3g is %s: %s%s",
             epoch, (long long)step, l, bp_model_width(m, l), bp_model_width(m, l + 1), norm,
             kind ? "above 1e3" : "below 1e-7",
             kind ? "exploding gradients (try --clip 1 or a lower --lr)"
                  : "vanishing gradients (dead units, saturated activations or too deep?)",
             *count == MAX_GRAD_WARN ? "; further warnings for this layer suppressed" : "");
}

/* Every layer's norm at the run's first check when --grad-check was given: how the gradient's
 * size changes with depth at the start (docs/deep-mlp.md). */
static void print_norms(trainer *t, int64_t global, const double *norms) {
    bp_model *m = t->s.m;
    cli_progress_clear(&t->prog);
    fprintf(cli_out(), "gradient norms at step %lld, layer 0 to %d:", (long long)global,
            bp_model_n_layers(m) - 1);
    for (int l = 0; l < bp_model_n_layers(m); ++l)
        fprintf(cli_out(), " %.2g", norms[l]);
    fputc('\n', cli_out());
}

/* Per-layer norms (bp_model_layer_grad_norms): only every --grad-check steps, since they cost a
 * device read of the whole gradient buffer. */
static int check_grads(trainer *t, int epoch, int64_t step, int64_t global) {
    bp_model *m = t->s.m;
    double *norms = t->norms;
    if (bp_model_layer_grad_norms(m, norms, bp_model_n_layers(m)) != BP_OK)
        return cli_lib_fail(CMD_TRAIN, "reading gradients");
    if (global == t->s.o.grad_check && cli_rank == 0 && cli_option_given(&t->s.o, "grad-check"))
        print_norms(t, global, norms);
    for (int l = 0; l < bp_model_n_layers(m); ++l) {
        if (norms[l] < VANISHING) grad_warn(t, l, 0, norms[l], epoch, step);
        if (norms[l] > EXPLODING) grad_warn(t, l, 1, norms[l], epoch, step);
    }
    return 0;
}

/* ---- the train accuracy ---- */

/* Whether the bar shows the train accuracy: classes, --train-acc on, and someone to show it to
 * (the bar of rank 0, or --json). Each step counts it from its own logits
 * (bp_train_step_correct), so it costs nothing. */
static int scores(const trainer *t) {
    const cli_options *o = &t->s.o;
    return t->s.loss.kind == BP_LOSS_CROSS_ENTROPY && o->train_acc != ACC_OFF && cli_rank == 0 &&
           (!o->quiet || o->json);
}

/* The losses and counts of the steps the device has finished (wait: of every step queued),
 * into the bar; a step refused since is reported here. The loop never waits for a step. */
static bp_status collect(trainer *t, int wait) {
    bp_step_totals done;
    bp_status st = bp_train_results(t->opt, wait, &done);
    cli_progress_results(&t->prog, &done, t->prog.run.has_acc);
    return st;
}

/* ---- one epoch ---- */

static int save(trainer *t, const cli_run_state *rs) {
    return cli_checkpoint_save(CMD_TRAIN, t->save, t->s.m, t->opt, &t->s.o, &t->s.d, &t->s.loss,
                               rs);
}

static int step_failed(trainer *t, bp_status st, int epoch, int64_t b) {
    cli_progress_clear(&t->prog);
    /* The step's own checks fail on every rank at once; anything else (a device error) may have
     * struck this rank alone. */
    t->agreed_failure = st == BP_ERR_NON_FINITE || st == BP_ERR_REMOTE ||
                        st == BP_ERR_INVALID_ARGUMENT || st == BP_ERR_SHAPE_MISMATCH;
    return cli_fail(CMD_TRAIN, "epoch %d, step %lld/%lld: %s%s", epoch + 1, (long long)b + 1,
                    (long long)t->s.steps_per_epoch, bp_last_error(),
                    st == BP_ERR_NON_FINITE ? " (stopped; try a lower --lr or --clip 1)" : "");
}

/* Saves where the run stands mid-epoch after SIGINT, SIGTERM or SIGHUP (sig), unless --save
 * holds the best epoch; 128 + sig. Further signals wait: the save is not cut short. */
static int interrupted(trainer *t, int sig, int epoch, int64_t b) {
    cli_hold_signals(1); /* for good: the command ends here */
    cli_progress_clear(&t->prog);
    cli_run_state rs = t->s.rs;
    rs.epoch = epoch;
    rs.batch_in_epoch = b;
    rs.epoch_loss_sum = t->prog.loss_sum;
    rs.epoch_loss_n = t->prog.loss_n;
    if (cli_rank > 0) return CLI_EXIT_SIGNAL + sig; /* rank 0 saves and says so */
    if (t->save && t->s.o.early_stop == 0 && (t->saved_now || save(t, &rs) == 0))
        fprintf(stderr,
                "interrupted by %s at epoch %d, step %lld: saved %s (continue with --resume %s)\n",
                cli_signal_name(sig), epoch + 1, (long long)b, t->save, t->save);
    else if (t->save && t->s.o.early_stop > 0)
        fprintf(stderr,
                "interrupted by %s at epoch %d, step %lld: %s keeps the best epoch so far (%d)\n",
                cli_signal_name(sig), epoch + 1, (long long)b, t->save, t->s.rs.best_epoch);
    else
        fprintf(stderr, "interrupted by %s at epoch %d, step %lld\n", cli_signal_name(sig),
                epoch + 1, (long long)b);
    return CLI_EXIT_SIGNAL + sig;
}

/* Rows of batch b over all ranks (the loader hands this rank its piece). */
static int64_t global_rows(const cli_session *s, int64_t b) {
    int64_t n = bp_dataset_size(s->d.train), left = n - b * s->o.batch;
    return left < s->o.batch ? left : s->o.batch;
}

static int run_epoch(trainer *t, int epoch, int64_t first, double *seconds) {
    cli_session *s = &t->s;
    if (bp_loader_start_epoch(s->loader, epoch, first) != BP_OK)
        return cli_lib_fail(CMD_TRAIN, "starting the epoch");
    cli_progress_start(&t->prog, epoch + 1, s->o.epochs, s->steps_per_epoch, first);
    if (first > 0) { /* resumed mid-epoch: the loss of the batches already done */
        t->prog.loss_sum = s->rs.epoch_loss_sum;
        t->prog.loss_n = s->rs.epoch_loss_n;
    }
    double t0 = cli_now();
    for (int64_t b = first;; ++b) {
        int sig = s->comm ? cli_dist_interrupted(s->comm) : cli_interrupted;
        if (sig) {
            bp_status st = collect(t, 1); /* the steps queued so far, in what is saved */
            if (st != BP_OK) return step_failed(t, st, epoch, b);
            s->rs.train_seconds += cli_now() - t0;
            return interrupted(t, sig, epoch, b);
        }
        const bp_tensor *x, *y;
        if (bp_loader_next(s->loader, &x, &y) != BP_OK)
            return cli_lib_fail(CMD_TRAIN, "loading a batch");
        if (!x) break;
        t->last_lr = bp_optimizer_lr(t->opt);
        t->saved_now = 0;
        bp_status st = bp_train_step(s->m, t->opt, &s->loss, x, y, NULL);
        if (st == BP_OK) st = collect(t, 0);
        if (st != BP_OK) return step_failed(t, st, epoch, b);
        cli_progress_step(&t->prog, (int)global_rows(s, b));
        int64_t global = bp_optimizer_steps(t->opt);
        if (s->o.grad_check > 0 && global % s->o.grad_check == 0 &&
            check_grads(t, epoch + 1, b + 1, global))
            return CLI_EXIT_FAIL;
    }
    bp_status st = collect(t, 1);
    if (st != BP_OK) return step_failed(t, st, epoch, s->steps_per_epoch - 1);
    *seconds = cli_now() - t0;
    cli_progress_clear(&t->prog);
    return 0;
}

/* ---- after each epoch ---- */

/* The watched value, larger is better. */
static double watched(const trainer *t, const cli_epoch_row *r) {
    if (t->monitor_acc) return t->accuracy ? r->val_metric : -r->val_metric;
    return -r->val_loss;
}

/* Early stopping and checkpoints; *stop set when patience runs out. `more`: epochs follow. */
static int end_of_epoch(trainer *t, const cli_epoch_row *r, int more, int *stop) {
    cli_run_state *rs = &t->s.rs;
    cli_options *o = &t->s.o;
    rs->epoch = r->epoch;
    rs->batch_in_epoch = 0;
    rs->epoch_loss_sum = 0.0;
    rs->epoch_loss_n = 0;
    int improved = 0;
    if (r->has_val) {
        double v = watched(t, r);
        improved = isnan(rs->best_metric) || v > rs->best_metric;
        if (improved)
            rs->best_metric = v, rs->best_epoch = r->epoch, rs->bad_epochs = 0;
        else
            ++rs->bad_epochs;
    }
    if (o->early_stop > 0 && improved &&
        bp_model_get_params(t->s.m, t->best, bp_model_n_params(t->s.m)) != BP_OK)
        return cli_lib_fail(CMD_TRAIN, "keeping the best parameters");
    cli_hold_signals(1); /* a second signal waits until the files are complete */
    int rc = 0, saving = t->save && (o->early_stop == 0 || improved);
    if (saving && save(t, rs)) rc = CLI_EXIT_FAIL;
    t->saved_now = saving && !rc && o->early_stop == 0;
    if (!rc && o->metrics[0] && cli_history_write_csv(&t->hist, o->metrics, t->accuracy)) {
        cli_fail(CMD_TRAIN, "--metrics: cannot write '%s': %s", o->metrics, strerror(errno));
        rc = CLI_EXIT_FAIL;
    }
    /* A first signal that came during the save is answered at the next step, as any other, with
     * this save as the one it names: a second one meanwhile must not cut that short. */
    cli_hold_signals(!rc && more && cli_interrupted);
    *stop = o->early_stop > 0 && rs->bad_epochs >= o->early_stop;
    return rc;
}

static int validate(trainer *t, cli_epoch_row *r) {
    if (!t->s.d.val) return 0;
    cli_eval ev = {NAN, NAN, 0};
    int rc = cli_evaluate(CMD_TRAIN, t->s.m, t->s.d.val, &t->s.loss, &ev);
    r->has_val = rc == 0;
    r->val_loss = ev.loss;
    r->val_metric = ev.metric;
    return rc;
}

static int epochs(trainer *t) {
    cli_session *s = &t->s;
    int last = s->o.epochs;
    if (s->o.stop_after > 0 && s->o.stop_after < last) last = s->o.stop_after;
    cli_table_header(t->accuracy);
    for (int e = s->rs.epoch; e < last; ++e) {
        int64_t first = e == s->rs.epoch ? s->rs.batch_in_epoch : 0;
        cli_epoch_row r;
        memset(&r, 0, sizeof r);
        r.epoch = e + 1;
        double secs = 0.0;
        int rc = run_epoch(t, e, first, &secs);
        if (rc) return rc;
        s->rs.train_seconds += secs;
        r.train_loss = t->prog.loss_n ? t->prog.loss_sum / (double)t->prog.loss_n : NAN;
        r.train_acc = t->prog.scored ? (double)t->prog.right / (double)t->prog.scored : NAN;
        r.train_scored = t->prog.scored;
        r.lr = t->last_lr;
        double t0 = cli_now();
        if ((rc = validate(t, &r))) return rc;
        t->prog.run.val_seconds = cli_now() - t0;
        r.seconds = secs + (cli_now() - t0);
        cli_table_row(&r, t->accuracy);
        if (cli_history_add(&t->hist, &r)) return cli_fail(CMD_TRAIN, "out of memory"), 1;
        int stop = 0;
        if ((rc = end_of_epoch(t, &r, e + 1 < last, &stop))) return rc;
        if (stop) {
            t->stopped_early = 1;
            fprintf(cli_out(),
                    "early stop: no better validation %s for %d %s; the best was epoch %d\n",
                    t->monitor_acc ? (t->accuracy ? "accuracy" : "MSE") : "loss", s->o.early_stop,
                    cli_plural(s->o.early_stop, "epoch", "epochs"), s->rs.best_epoch);
            break;
        }
    }
    return 0;
}

/* ---- setup and the end ---- */

static int make_optimizer(trainer *t) {
    cli_session *s = &t->s;
    bp_status st;
    if (s->resuming) {
        t->opt = bp_checkpoint_read_optimizer(s->ck, s->m, &st);
        return t->opt ? 0 : cli_lib_fail(CMD_TRAIN, "--resume");
    }
    bp_optim_config c = cli_optim_config(&s->o, s->steps_per_epoch);
    if (c.schedule.kind == BP_SCHEDULE_COSINE && c.schedule.warmup_steps >= c.schedule.total_steps)
        return cli_usage_error(CMD_TRAIN, "--warmup: %s %s is not shorter than the run (%d %s)",
                               cli_num(s->o.warmup), s->o.warmup == 1 ? "epoch" : "epochs",
                               s->o.epochs, cli_plural(s->o.epochs, "epoch", "epochs"));
    t->opt = bp_optimizer_create(s->m, &c, &st);
    return t->opt ? 0 : cli_lib_fail(CMD_TRAIN, "creating the optimizer");
}

static void describe(const trainer *t) {
    const cli_session *s = &t->s;
    const cli_options *o = &s->o;
    fprintf(cli_out(), "model: ");
    cli_describe_model(s->m, cli_out());
    fprintf(cli_out(), " on %s\n", bp_device_name(s->dev));
    int64_t n_test = s->d.test ? bp_dataset_size(s->d.test) : 0;
    fprintf(cli_out(), "data: %s, %lld train / %lld val / %lld test %s, %d %s, ", s->d.train_name,
            (long long)bp_dataset_size(s->d.train),
            (long long)(s->d.val ? bp_dataset_size(s->d.val) : 0), (long long)n_test,
            cli_plural(n_test, "sample", "samples"), s->d.features,
            cli_plural(s->d.features, "feature", "features"));
    int classes = s->d.kind == BP_TARGET_CLASS, n = classes ? s->d.classes : s->d.target_width;
    fprintf(cli_out(), "%d %s, scaling %s\n", n,
            classes ? cli_plural(n, "class", "classes") : cli_plural(n, "target", "targets"),
            bp_scaling_kind_name((bp_scaling_kind)s->d.scaling));
    fprintf(cli_out(),
            "training: %s, lr %g, wd %g, %s schedule, batch %d, %d %s of %lld %s, loss %s",
            cli_choice_name("opt", o->opt), o->lr, o->wd, cli_choice_name("schedule", o->schedule),
            o->batch, o->epochs, cli_plural(o->epochs, "epoch", "epochs"),
            (long long)s->steps_per_epoch, cli_plural(s->steps_per_epoch, "step", "steps"),
            bp_loss_kind_name(s->loss.kind));
    if (s->loss.label_smoothing > 0.0f)
        fprintf(cli_out(), " (label smoothing %g)", (double)s->loss.label_smoothing);
    fputc('\n', cli_out());
    if (s->resuming)
        fprintf(cli_out(), "resuming %s at epoch %d, step %lld\n", o->resume, s->rs.epoch + 1,
                (long long)s->rs.batch_in_epoch);
    fflush(cli_out());
}

static void history_json(const trainer *t, cli_json *j) {
    const char *metric = t->accuracy ? "val_accuracy" : "val_mse";
    cli_json_begin(j, "history", '[');
    for (int i = 0; i < t->hist.n; ++i) {
        const cli_epoch_row *r = &t->hist.rows[i];
        cli_json_begin(j, NULL, '{');
        cli_json_int(j, "epoch", r->epoch);
        cli_json_num(j, "train_loss", r->train_loss);
        cli_json_num(j, "val_loss", r->has_val ? r->val_loss : NAN);
        cli_json_num(j, metric, r->has_val ? r->val_metric : NAN);
        cli_json_num(j, "lr", r->lr);
        cli_json_num(j, "seconds", r->seconds);
        if (t->accuracy && t->s.loss.kind == BP_LOSS_CROSS_ENTROPY) {
            cli_json_num(j, "train_accuracy", r->train_scored ? r->train_acc : NAN);
            cli_json_int(j, "train_accuracy_rows", r->train_scored);
        }
        cli_json_end(j, '}');
    }
    cli_json_end(j, ']');
}

/* --json: the run's summary as one object on stdout (the table went to stderr). */
static void summary_json(const trainer *t, const cli_eval *test) {
    const cli_session *s = &t->s;
    cli_json j;
    cli_json_open(&j, stdout);
    cli_json_int(&j, "epochs", s->rs.epoch);
    cli_json_int(&j, "epochs_asked", s->o.epochs);
    cli_json_bool(&j, "early_stopped", t->stopped_early);
    cli_json_num(&j, "train_seconds", s->rs.train_seconds);
    cli_json_num(&j, "seconds", cli_now() - t->wall_start);
    cli_json_begin(&j, "model", '{');
    cli_json_begin(&j, "widths", '[');
    for (int l = 0; l <= bp_model_n_layers(s->m); ++l)
        cli_json_int(&j, NULL, bp_model_width(s->m, l));
    cli_json_end(&j, ']');
    cli_json_int(&j, "parameters", (long long)bp_model_n_params(s->m));
    cli_json_str(&j, "device", bp_device_name(s->dev));
    cli_json_end(&j, '}');
    cli_json_str(&j, "loss_kind", bp_loss_kind_name(s->loss.kind));
    if (s->d.kind == BP_TARGET_CLASS)
        cli_json_int(&j, "classes", s->d.classes);
    else
        cli_json_null(&j, "classes");
    cli_json_names(&j, "class_names", &s->d.names);
    cli_json_begin(&j, "samples", '{');
    cli_json_int(&j, "train", bp_dataset_size(s->d.train));
    cli_json_int(&j, "val", s->d.val ? bp_dataset_size(s->d.val) : 0);
    cli_json_int(&j, "test", s->d.test ? bp_dataset_size(s->d.test) : 0);
    cli_json_end(&j, '}');
    history_json(t, &j);
    if (s->rs.best_epoch > 0)
        cli_json_int(&j, "best_epoch", s->rs.best_epoch);
    else
        cli_json_null(&j, "best_epoch");
    if (test) {
        cli_json_begin(&j, "test", '{');
        cli_json_num(&j, "loss", test->loss);
        cli_json_num(&j, t->accuracy ? "accuracy" : "mse", test->metric);
        cli_json_int(&j, "samples", test->n);
        cli_json_end(&j, '}');
    } else {
        cli_json_null(&j, "test");
    }
    cli_json_str(&j, "checkpoint", t->save);
    cli_json_close(&j);
}

static int finish(trainer *t) {
    cli_session *s = &t->s;
    if (s->o.early_stop > 0 && s->rs.best_epoch > 0 && s->rs.best_epoch != s->rs.epoch) {
        if (bp_model_set_params(s->m, t->best, bp_model_n_params(s->m)) != BP_OK)
            return cli_lib_fail(CMD_TRAIN, "restoring the best parameters");
        fprintf(cli_out(), "restored the best epoch (%d)%s%s\n", s->rs.best_epoch,
                t->save ? "; its checkpoint is " : "", t->save ? t->save : "");
    }
    char test[128] = "";
    cli_eval ev = {NAN, NAN, 0};
    if (s->d.test) {
        if (cli_evaluate(CMD_TRAIN, s->m, s->d.test, &s->loss, &ev)) return CLI_EXIT_FAIL;
        if (t->accuracy)
            snprintf(test, sizeof test, "; test loss %.4f, accuracy %.2f%% (%lld %s)", ev.loss,
                     100.0 * ev.metric, (long long)ev.n, cli_plural(ev.n, "sample", "samples"));
        else
            snprintf(test, sizeof test, "; test loss %.4f, MSE %.4g (%lld %s)", ev.loss, ev.metric,
                     (long long)ev.n, cli_plural(ev.n, "sample", "samples"));
    }
    fprintf(cli_out(), "done: %d %s, %.1f s of training (%.1f s in all)%s\n", s->rs.epoch,
            cli_plural(s->rs.epoch, "epoch", "epochs"), s->rs.train_seconds,
            cli_now() - t->wall_start, test);
    if (t->save) fprintf(cli_out(), "checkpoint: %s\n", t->save);
    fflush(cli_out());
    if (s->o.json && cli_rank == 0) summary_json(t, s->d.test ? &ev : NULL);
    /* Last, so a plot that cannot be written (exit 1) costs nothing else. */
    return s->o.plot[0] ? cli_plot_history(CMD_TRAIN, &t->hist, s->o.plot, t->accuracy) : 0;
}

static int prepare(trainer *t) {
    cli_session *s = &t->s;
    cli_options *o = &s->o;
    t->save = o->save[0] ? o->save : s->resuming ? o->resume : NULL;
    if (cli_rank > 0) t->save = NULL; /* one writer */
    t->accuracy = cli_metric_is_accuracy(s->loss.kind);
    t->monitor_acc = o->monitor == MON_AUTO ? t->accuracy : o->monitor == MON_ACC;
    size_t n = bp_model_n_params(s->m);
    t->best = o->early_stop > 0 ? malloc(n * sizeof(float)) : NULL;
    t->warned = calloc(2 * (size_t)bp_model_n_layers(s->m), sizeof(int));
    t->norms = malloc((size_t)bp_model_n_layers(s->m) * sizeof(double));
    if (!t->warned || !t->norms || (o->early_stop > 0 && !t->best))
        return cli_fail(CMD_TRAIN, "out of memory");
    if (s->resuming && s->rs.best_epoch > 0 && t->best &&
        bp_model_get_params(s->m, t->best, n) != BP_OK) /* the checkpoint is the best so far */
        return cli_lib_fail(CMD_TRAIN, "");
    if (s->resuming && o->metrics[0]) cli_history_read_csv(&t->hist, o->metrics, s->rs.epoch);
    t->prog.quiet = o->quiet;
    t->prog.run.last_epoch =
        o->stop_after > 0 && o->stop_after < o->epochs ? o->stop_after : o->epochs;
    t->prog.run.has_acc = scores(t);
    return make_optimizer(t);
}

int cli_cmd_train(int argc, char **argv) {
    trainer t;
    memset(&t, 0, sizeof t);
    t.wall_start = cli_now();
    int rc = cli_session_setup(&t.s, CMD_TRAIN, argc, argv);
    if (!rc && t.s.o.json) cli_human = stderr; /* stdout holds the JSON summary alone */
    if (!rc) rc = prepare(&t);
    if (t.s.comm) {
        rc = cli_dist_join(&t.s, t.opt, rc);
        t.agreed_failure = rc != 0;
    }
    if (!rc) {
        describe(&t);
        if (t.s.rs.epoch >= t.s.o.epochs)
            fprintf(cli_out(), "nothing to train: the run has finished %d of %d %s\n", t.s.rs.epoch,
                    t.s.o.epochs, cli_plural(t.s.o.epochs, "epoch", "epochs"));
        cli_catch_interrupt(1);
        t.prog.run.start = cli_now();
        rc = epochs(&t);
        /* Once stopped by a signal the handler stays: more signals wait for the exit. */
        if (rc < CLI_EXIT_SIGNAL) cli_catch_interrupt(0);
    }
    if (!rc) rc = finish(&t);
    /* A rank that fails alone must not leave the others waiting in the next sum: end the job. */
    if (rc > 0 && rc < CLI_EXIT_SIGNAL && t.s.comm && !t.agreed_failure)
        bp_comm_abort(t.s.comm, rc);
    bp_optimizer_free(t.opt);
    cli_history_free(&t.hist);
    free(t.best);
    free(t.warned);
    free(t.norms);
    cli_session_free(&t.s);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
