/* From options and data to a device, a model and an optimizer configuration; the checks that
 * the model fits the data run here, before any training. */
#include <math.h>

#include "cli.h"

int cli_open_device(int cmd, const cli_options *o, bp_device **dev) {
    bp_status st;
    bp_device_options opts = bp_device_options_default();
    opts.threads = o->threads;
    opts.check_memory = o->memory_check;
    opts.graphs = o->graphs;
    *dev = bp_device_open_ex(o->device, &opts, &st);
    if (!*dev) return cli_lib_fail(cmd, "--device");
    /* Before anything is allocated on it, so the limit covers the model, the optimizer state,
     * the workspace and the batches alike. */
    if (o->memory_limit > 0 && bp_device_set_memory_limit(*dev, (size_t)o->memory_limit) != BP_OK) {
        cli_lib_fail(cmd, "--memory-limit");
        bp_device_close(*dev);
        *dev = NULL;
        return CLI_EXIT_FAIL;
    }
    return 0;
}

/* The output width the data needs: its classes, or its values per sample. */
static int data_outputs(const cli_data *d) {
    return d->kind == BP_TARGET_CLASS ? d->classes : d->target_width;
}

/* in and out are the model's widths; who names them in messages ("--layers", "the model in
 * X"). */
static int check_fit(int cmd, int in, int out, const cli_data *d, const char *who) {
    if (in != d->features)
        return cli_usage_error(cmd, "%s: the input width %d does not match the %d %s of %s", who,
                               in, d->features, cli_plural(d->features, "feature", "features"),
                               d->train ? d->train_name : d->test_name);
    if (d->train && d->names.n && cli_check_named_outputs(cmd, d, out, who)) return CLI_EXIT_USAGE;
    if (d->train && d->kind == BP_TARGET_CLASS && d->classes > out)
        return cli_usage_error(cmd,
                               "%s: the data has %d classes (labels up to %d, row %lld of %s) but "
                               "the output layer has %d %s",
                               who, d->classes, d->classes - 1, (long long)d->top_row + 1,
                               d->train_name, out, cli_plural(out, "unit", "units"));
    /* Test and evaluation data are measured against the model, never widen it. */
    if (d->kind == BP_TARGET_CLASS && d->test &&
        cli_check_labels(cmd, d->test, d->test_name, out, d->train ? "the model" : who))
        return CLI_EXIT_USAGE;
    if (d->kind == BP_TARGET_VALUES && d->target_width != out)
        return cli_usage_error(
            cmd, "%s: the output width %d does not match the %d target %s per sample", who, out,
            d->target_width, cli_plural(d->target_width, "value", "values"));
    return 0;
}

int cli_resolve_widths(int cmd, const cli_options *o, const cli_data *d, cli_int_list *w) {
    if (cli_option_given(o, "layers") || o->layers.n > 0) {
        if (o->layers.n < 2)
            return cli_usage_error(
                cmd, "--layers: needs at least an input and an output width, got %d", o->layers.n);
        *w = o->layers;
        return check_fit(cmd, w->v[0], w->v[w->n - 1], d, "--layers");
    }
    if (o->hidden.n + 2 > CLI_MAX_WIDTHS)
        return cli_usage_error(cmd, "--hidden: at most %d widths", CLI_MAX_WIDTHS - 2);
    int out = data_outputs(d);
    if (out < 1)
        return cli_usage_error(cmd, "%s: no classes or target values to learn",
                               d->train ? d->train_name : d->test_name);
    w->n = 0;
    w->v[w->n++] = d->features;
    for (int i = 0; i < o->hidden.n; ++i)
        w->v[w->n++] = o->hidden.v[i];
    w->v[w->n++] = out;
    return check_fit(cmd, w->v[0], out, d, "the model");
}

int cli_check_model_fits(int cmd, const bp_model *m, const cli_data *d, const char *model_name) {
    char who[1100];
    snprintf(who, sizeof who, "the model in %s", model_name);
    return check_fit(cmd, bp_model_width(m, 0), bp_model_width(m, bp_model_n_layers(m)), d, who);
}

bp_loss_kind cli_loss_kind(const cli_options *o, const cli_data *d) {
    if (o->loss != LOSS_AUTO) return (bp_loss_kind)o->loss;
    return d && d->kind == BP_TARGET_VALUES ? BP_LOSS_MSE : BP_LOSS_CROSS_ENTROPY;
}

bp_model *cli_build_model(int cmd, const cli_options *o, bp_device *dev, const cli_int_list *w) {
    int n = w->n - 1;
    bp_activation acts[CLI_MAX_WIDTHS];
    float drop[CLI_MAX_WIDTHS];
    bp_norm norms[CLI_MAX_WIDTHS];
    int residual[CLI_MAX_WIDTHS];
    for (int l = 0; l < n; ++l) {
        int hidden = l < n - 1;
        acts[l] = hidden ? (bp_activation)o->act : BP_ACT_IDENTITY;
        drop[l] = hidden ? (float)o->dropout : 0.0f;
        /* The data are scaled already (--scale); a norm of a raw row would mix its features. */
        norms[l] = l > 0 ? (bp_norm)o->norm : BP_NORM_NONE;
        residual[l] = o->residual && w->v[l] == w->v[l + 1];
    }
    bp_mlp_config c = bp_mlp_config_default(n, w->v);
    c.activations = acts;
    c.dropout = drop;
    c.norms = norms;
    c.residual = residual;
    c.norm_eps = (float)o->norm_eps;
    c.init = (bp_init)o->init;
    c.precision = (bp_precision)o->precision;
    c.seed = (uint64_t)o->seed;
    c.max_batch = (o->batch + o->accum - 1) / o->accum; /* one micro-batch at a time */
    bp_status st;
    bp_model *m = bp_model_create(dev, &c, &st);
    if (!m) cli_lib_fail(cmd, "building the model");
    return m;
}

/* Saturating: the flags are bounded (options.c), but a double past INT64_MAX must never reach
 * llround (undefined; on x86 it gives INT64_MIN). */
static int64_t epochs_to_steps(double epochs, int64_t per_epoch) {
    double steps = epochs * (double)per_epoch;
    if (!(steps < 9.2e18)) return INT64_MAX;
    return steps <= 0 ? 0 : (int64_t)llround(steps);
}

bp_optim_config cli_optim_config(const cli_options *o, int64_t steps_per_epoch) {
    bp_optim_config c = bp_optim_config_default((bp_optim_kind)o->opt);
    c.lr = o->lr;
    c.weight_decay = o->wd;
    if (o->opt == BP_OPTIM_SGD) {
        c.momentum = o->momentum;
        c.nesterov = o->nesterov;
        c.dampening = 0.0;
    }
    c.beta1 = o->beta1;
    c.beta2 = o->beta2;
    c.eps = o->eps;
    c.clip_norm = o->clip;
    c.clip_value = o->clip_value;
    c.accum_steps = o->accum;
    c.schedule.kind = (bp_schedule_kind)o->schedule;
    c.schedule.warmup_steps = epochs_to_steps(o->warmup, steps_per_epoch);
    int64_t step = epochs_to_steps(o->step_size, steps_per_epoch);
    c.schedule.step_size = step < 1 ? 1 : step;
    c.schedule.gamma = o->gamma;
    c.schedule.total_steps = (int64_t)o->epochs * steps_per_epoch;
    c.schedule.min_lr = o->min_lr;
    return c;
}

void cli_describe_model(const bp_model *m, FILE *f) {
    int n = bp_model_n_layers(m);
    for (int l = 0; l <= n; ++l)
        fprintf(f, "%s%d", l ? "-" : "", bp_model_width(m, l));
    fprintf(f, " %s", n > 1 ? cli_choice_name("act", bp_model_activation(m, 0)) : "linear");
    if (n > 1 && bp_model_dropout(m, 0) > 0.0f)
        fprintf(f, ", dropout %g", (double)bp_model_dropout(m, 0));
    int normed = 0, residual = 0;
    for (int l = 0; l < n; ++l) {
        normed += bp_model_norm(m, l) != BP_NORM_NONE;
        residual += bp_model_residual(m, l) == 1;
    }
    if (normed)
        fprintf(f, ", %s on %d layer%s' inputs", bp_norm_name(bp_model_norm(m, n - 1)), normed,
                normed == 1 ? "" : "s");
    if (residual) fprintf(f, ", %d residual layer%s", residual, residual == 1 ? "" : "s");
    fprintf(f, ", %zu parameters, precision %s", bp_model_n_params(m),
            bp_precision_name(bp_model_precision(m)));
}
