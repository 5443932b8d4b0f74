/* backprop eval and backprop predict: a checkpoint, the scaling and class names stored with it,
 * and data (for predict with or without targets, from a file or standard input). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct inference {
    cli_options o;
    cli_data d;
    bp_device *dev;
    bp_model *m;
    bp_loss_config loss;
    const char *ckpt;
    bp_checkpoint *ck;
    cli_names names; /* the model's class names, or none */
} inference;

/* Whether the user named data files (then the checkpoint's do not apply). */
static int any_source_given(const cli_options *o) {
    for (int i = 0; i < cli_option_count(); ++i)
        if (cli_option_has(i, OF_DATA) && !cli_option_has(i, OF_FORMAT) && o->given[i]) return 1;
    return cli_option_given(o, "input");
}

static int to_stdout(const cli_options *o) {
    return strcmp(o->output, "-") == 0;
}

/* NPY or CSV: --output-format, else the extension; standard output is CSV unless asked. */
static int output_npy(const cli_options *o) {
    if (o->output_format != FMT_AUTO) return o->output_format == FMT_NPY;
    return !to_stdout(o) && cli_has_ext(o->output, ".npy");
}

static int check_output(int cmd, const cli_options *o) {
    if (!o->output[0])
        return cli_usage_error(cmd,
                               "--output FILE.csv, FILE.npy or - (standard output) is required");
    if (to_stdout(o)) {
        if (output_npy(o) && isatty(STDOUT_FILENO))
            return cli_usage_error(cmd,
                                   "--output - --output-format npy: standard output is a terminal, "
                                   "and NPY is binary: redirect it to a file or a pipe");
        return 0;
    }
    int npy = cli_has_ext(o->output, ".npy");
    if (!npy && !cli_has_ext(o->output, ".csv"))
        return cli_usage_error(
            cmd, "--output: '%s' must end in .csv or .npy (or be -, standard output)", o->output);
    if (o->output_format != FMT_AUTO && (o->output_format == FMT_NPY) != npy)
        return cli_usage_error(cmd, "--output-format %s: '%s' ends in .%s",
                               cli_choice_name("output-format", o->output_format), o->output,
                               npy ? "npy" : "csv");
    return 0;
}

/* --outputs asks for what the model's loss gives: classes from cross-entropy, probabilities
 * from cross-entropy (softmax) or BCE (sigmoid each). */
static int check_outputs_kind(int cmd, const cli_options *o, bp_loss_kind loss, const char *ckpt) {
    const char *bad = NULL;
    if (o->outputs == OUT_CLASS && loss != BP_LOSS_CROSS_ENTROPY)
        bad = loss == BP_LOSS_MSE ? "its outputs are values, not classes"
                                  : "its outputs are independent probabilities, not one class";
    else if (o->outputs == OUT_PROBS && loss == BP_LOSS_MSE)
        bad = "its outputs are values, not probabilities";
    if (!bad) return 0;
    return cli_usage_error(
        cmd,
        "--outputs %s: the model in %s was trained with --loss %s: %s (use --outputs %s or logits)",
        cli_choice_name("outputs", o->outputs), ckpt, bp_loss_kind_name(loss), bad,
        loss == BP_LOSS_MSE ? "auto" : "probs");
}

/* The checkpoint, the model on the device, and the data named by flags or, when none, by the
 * checkpoint's own run (its test set); CSV columns, header and the like as in training unless
 * given. */
static int setup(inference *r, int cmd, int argc, char **argv) {
    int rc = cli_parse(cmd, argc, argv, &r->o);
    if (!rc) rc = cli_check_names(cmd, &r->o);
    if (rc) return rc;
    cli_options *o = &r->o;
    if (cmd == CMD_PREDICT && (rc = check_output(cmd, o))) return rc; /* before any loading */
    if (o->json) cli_human = stderr;
    r->ckpt = o->positional ? o->positional : o->checkpoint;
    if (!r->ckpt[0])
        return cli_usage_error(cmd,
                               "no checkpoint: give it as the first argument or with --checkpoint");
    if (!(r->ck = cli_checkpoint_open(cmd, NULL, r->ckpt, NULL))) return CLI_EXIT_FAIL;
    if (!any_source_given(o) && (rc = cli_apply_stored_options(cmd, r->ck, o, STORED_SOURCES)))
        return rc;
    if ((rc = cli_apply_stored_options(cmd, r->ck, o, STORED_FORMATS))) return rc;
    if ((rc = cli_check_outputs(cmd, o, r->ckpt))) return rc;
    if ((rc = cli_open_device(cmd, o, &r->dev))) return rc;
    bp_status st;
    r->m = bp_checkpoint_read_model(r->ck, r->dev, o->batch, &st);
    if (!r->m) return cli_lib_fail(cmd, "");
    float *offset = NULL, *scale = NULL;
    int scaling;
    rc = cli_read_model_meta(cmd, r->ck, bp_model_width(r->m, 0), &offset, &scale, &scaling,
                             &r->loss);
    int known = (int)r->loss.kind >= 0;
    int outputs = bp_model_width(r->m, bp_model_n_layers(r->m));
    if (!rc) rc = cli_read_class_names(cmd, r->ck, outputs, &r->names);
    if (!rc && known && cmd == CMD_PREDICT) rc = check_outputs_kind(cmd, o, r->loss.kind, r->ckpt);
    if (!rc)
        rc = cli_data_load_eval(cmd, o, cli_targets_are_values(o, r->loss.kind, known), &r->names,
                                bp_model_width(r->m, 0), cmd == CMD_PREDICT, &r->d);
    if (!rc && !known) { /* a checkpoint of the library alone: the data says, else values */
        r->loss.kind = r->d.kind == BP_TARGET_CLASS ? BP_LOSS_CROSS_ENTROPY : BP_LOSS_MSE;
        if (cmd == CMD_PREDICT) rc = check_outputs_kind(cmd, o, r->loss.kind, r->ckpt);
    }
    if (!rc && !r->names.n && r->d.names.n)
        rc = cli_usage_error(
            cmd,
            "%s has class names as labels (%s), but the model in %s was trained on class indices",
            r->d.test_name, cli_names_list(&r->d.names), r->ckpt);
    if (!rc) rc = cli_check_model_fits(cmd, r->m, &r->d, r->ckpt);
    if (!rc) rc = cli_data_scale(cmd, &r->d, scaling, offset, scale);
    free(offset);
    free(scale);
    return rc;
}

static void teardown(inference *r) {
    cli_names_free(&r->names);
    bp_checkpoint_close(r->ck);
    bp_model_free(r->m);
    cli_data_free(&r->d);
    bp_device_close(r->dev);
    cli_options_free(&r->o);
}

static void eval_json(const inference *r, const cli_eval *ev, double secs, int accuracy) {
    cli_json j;
    cli_json_open(&j, stdout);
    cli_json_str(&j, "checkpoint", r->ckpt);
    cli_json_str(&j, "data", r->d.test_name);
    cli_json_int(&j, "samples", ev->n);
    cli_json_str(&j, "loss_kind", bp_loss_kind_name(r->loss.kind));
    cli_json_num(&j, "loss", ev->loss);
    cli_json_num(&j, accuracy ? "accuracy" : "mse", ev->metric);
    cli_json_int(&j, "outputs", bp_model_width(r->m, bp_model_n_layers(r->m)));
    cli_json_names(&j, "class_names", &r->names);
    cli_json_num(&j, "seconds", secs);
    cli_json_close(&j);
}

int cli_cmd_eval(int argc, char **argv) {
    inference r;
    memset(&r, 0, sizeof r);
    int rc = setup(&r, CMD_EVAL, argc, argv);
    if (!rc) {
        cli_eval ev;
        double t0 = cli_now();
        rc = cli_evaluate(CMD_EVAL, r.m, r.d.test, &r.loss, &ev);
        double secs = cli_now() - t0;
        int accuracy = cli_metric_is_accuracy(r.loss.kind);
        if (!rc && accuracy)
            fprintf(cli_out(), "%s: %lld %s, loss %.4f, accuracy %.2f%% (%.1f s)\n", r.d.test_name,
                    (long long)ev.n, cli_plural(ev.n, "sample", "samples"), ev.loss,
                    100.0 * ev.metric, secs);
        else if (!rc)
            fprintf(cli_out(), "%s: %lld %s, loss %.4f, MSE %.6g (%.1f s)\n", r.d.test_name,
                    (long long)ev.n, cli_plural(ev.n, "sample", "samples"), ev.loss, ev.metric,
                    secs);
        if (!rc && r.o.json) eval_json(&r, &ev, secs, accuracy);
    }
    teardown(&r);
    return rc < 0 ? CLI_EXIT_OK : rc;
}

/* ---- predict: outputs to CSV or NPY ---- */

typedef struct table {
    int64_t n;
    int k;
    const int32_t *cls;     /* each row's class, or NULL when not written */
    const float *v;         /* [n, k] probabilities or outputs, or NULL when not written */
    const char *prefix;     /* of the CSV's value columns: p, y or logit */
    const cli_names *names; /* class names: the CSV's classes and column names, or none */
} table;

static int write_csv(const table *t, FILE *f) {
    int named = t->names && t->names->n == t->k;
    if (t->cls) fputs("class", f);
    for (int j = 0; t->v && j < t->k; ++j) {
        if (t->cls || j) fputc(',', f);
        if (!named) {
            fprintf(f, "%s%d", t->prefix, j);
            continue;
        }
        size_t len = strlen(t->prefix) + strlen(t->names->v[j]) + 2;
        char *head = malloc(len);
        if (!head) return -1;
        snprintf(head, len, "%s_%s", t->prefix, t->names->v[j]); /* p_cat */
        cli_csv_field(f, head, ',');
        free(head);
    }
    fputc('\n', f);
    for (int64_t i = 0; i < t->n; ++i) {
        if (t->cls && named)
            cli_csv_field(f, t->names->v[t->cls[i]], ',');
        else if (t->cls)
            fprintf(f, "%d", (int)t->cls[i]);
        for (int j = 0; t->v && j < t->k; ++j)
            fprintf(f, "%s%.7g", t->cls || j ? "," : "", (double)t->v[i * t->k + j]);
        fputc('\n', f);
    }
    return 0;
}

/* The outputs as NPY through bp_npy_save (data.h): int32 class indices [n], or float32 [n, k]
 * probabilities or outputs; "-" is standard output, any other path is replaced atomically. */
static int save_npy(int cmd, const char *path, const table *t) {
    int64_t shape[2] = {t->n, t->k};
    bp_status st = t->v ? bp_npy_save(path, BP_F32, 2, shape, t->v)
                        : bp_npy_save(path, BP_I32, 1, shape, t->cls);
    return st == BP_OK ? 0 : cli_lib_fail(cmd, "--output");
}

/* To standard output as it comes (a pipe has nothing to rename). */
static int write_stdout(int cmd, const cli_options *o, const table *t) {
    if (output_npy(o)) return save_npy(cmd, "-", t);
    int bad = write_csv(t, stdout);
    if (bad) return cli_fail(cmd, "out of memory");
    if (fflush(stdout) != 0 || ferror(stdout))
        return cli_fail(cmd, "--output -: writing standard output failed: %s", strerror(errno));
    return 0;
}

static int write_predictions(int cmd, const cli_options *o, const table *t) {
    if (to_stdout(o)) return write_stdout(cmd, o, t);
    if (output_npy(o)) return save_npy(cmd, o->output, t);
    bp_file *a = bp_file_open(o->output, NULL);
    if (!a) return cli_fail(cmd, "--output: cannot write '%s': %s", o->output, strerror(errno));
    if (write_csv(t, bp_file_stream(a))) {
        bp_file_abort(a);
        return cli_fail(cmd, "out of memory");
    }
    if (bp_file_commit(a) != BP_OK)
        return cli_fail(cmd, "--output: writing '%s' failed: %s", o->output, strerror(errno));
    return 0;
}

/* What predict writes, from the model through bp_model_predict (its argmax, softmax and
 * sigmoid): the class (CSV: auto for cross-entropy; NPY: only when asked) and the probabilities
 * (auto: unless the loss is mse) or outputs. */
static int predict(inference *r, table *t, int32_t **cls, float **v) {
    const cli_options *o = &r->o;
    int what = o->outputs;
    bp_loss_kind loss = r->loss.kind;
    int probs = what == OUT_PROBS || (what == OUT_AUTO && loss != BP_LOSS_MSE);
    int with_cls =
        what == OUT_CLASS || (what == OUT_AUTO && !output_npy(o) && loss == BP_LOSS_CROSS_ENTROPY);
    bp_predict_output form = !probs                          ? BP_PREDICT_LOGITS
                             : loss == BP_LOSS_CROSS_ENTROPY ? BP_PREDICT_SOFTMAX
                                                             : BP_PREDICT_SIGMOID;
    const float *x = bp_dataset_features_data(r->d.test);
    size_t n = (size_t)(t->n ? t->n : 1);
    *cls = with_cls ? malloc(n * sizeof **cls) : NULL;
    *v = what != OUT_CLASS ? malloc(n * (size_t)t->k * sizeof **v) : NULL;
    if ((with_cls && !*cls) || (what != OUT_CLASS && !*v))
        return cli_fail(CMD_PREDICT, "out of memory");
    /* max_batch (--batch) rows at a time */
    if ((*cls && bp_model_predict(r->m, x, t->n, BP_PREDICT_CLASS, *cls) != BP_OK) ||
        (*v && bp_model_predict(r->m, x, t->n, form, *v) != BP_OK))
        return cli_lib_fail(CMD_PREDICT, "prediction");
    t->cls = *cls;
    t->v = *v;
    t->prefix = probs ? "p" : loss == BP_LOSS_MSE ? "y" : "logit";
    return 0;
}

int cli_cmd_predict(int argc, char **argv) {
    inference r;
    memset(&r, 0, sizeof r);
    int rc = setup(&r, CMD_PREDICT, argc, argv);
    int32_t *cls = NULL;
    float *v = NULL;
    if (!rc) {
        int64_t n = bp_dataset_size(r.d.test);
        table t = {n, bp_model_width(r.m, bp_model_n_layers(r.m)), NULL, NULL, "", &r.names};
        rc = predict(&r, &t, &cls, &v);
        if (!rc) rc = write_predictions(CMD_PREDICT, &r.o, &t);
        if (!rc)
            fprintf(to_stdout(&r.o) ? stderr : stdout, "wrote %lld predictions to %s%s\n",
                    (long long)n, to_stdout(&r.o) ? "standard output" : r.o.output,
                    r.d.kind == BP_TARGET_NONE ? " (data without targets)" : "");
    }
    free(cls);
    free(v);
    teardown(&r);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
