/* backprop info: what a checkpoint holds, with checksums of its parameters and optimizer state
 * so two checkpoints can be compared bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The checkpoint's name of the tensor at flat offset `at` (bp_checkpoint_tensor). */
static const char *tensor_name(const bp_model *m, size_t at, bp_param_tensor *t) {
    for (int i = 0; i < bp_checkpoint_n_tensors(m); ++i)
        if (bp_checkpoint_tensor(m, i, t) == BP_OK && t->offset == at) return t->name;
    return "?";
}

static void print_layers(const bp_model *m, cli_json *j) {
    j ? cli_json_begin(j, "layers", '[') : (void)printf("layers:\n");
    for (int l = 0; l < bp_model_n_layers(m); ++l) {
        int in = bp_model_width(m, l), out = bp_model_width(m, l + 1);
        const char *act = cli_choice_name("act", bp_model_activation(m, l));
        double drop = (double)bp_model_dropout(m, l);
        size_t at[2];
        bp_param_tensor wt, bt;
        bp_model_layer_offsets(m, l, &at[0], &at[1]);
        const char *w = tensor_name(m, at[0], &wt), *b = tensor_name(m, at[1], &bt);
        if (!j) {
            printf("  %d: linear %d -> %d (%s [%d, %d], %s [%d]), %s", l, in, out, w, out, in, b,
                   out, act);
            drop > 0.0 ? printf(", dropout %g\n", drop) : putchar('\n');
            continue;
        }
        cli_json_begin(j, NULL, '{');
        cli_json_int(j, "in", in);
        cli_json_int(j, "out", out);
        cli_json_str(j, "weight", w);
        cli_json_str(j, "bias", b);
        cli_json_str(j, "activation", act);
        cli_json_num(j, "dropout", drop);
        cli_json_end(j, '}');
    }
    if (j) cli_json_end(j, ']');
}

/* Every parameter, tensor by tensor in the flat buffer's order, norms included (%.9g: exact for
 * float32). */
static void dump(const bp_model *m, const float *p, cli_json *j) {
    if (j) cli_json_begin(j, "weights", '{');
    bp_param_tensor t;
    for (int i = 0; i < bp_checkpoint_n_tensors(m) && bp_checkpoint_tensor(m, i, &t) == BP_OK;
         ++i) {
        if (j)
            cli_json_begin(j, t.name, '[');
        else if (t.ndim == 2)
            printf("%s [%lld, %lld]\n", t.name, (long long)t.shape[0], (long long)t.shape[1]);
        else
            printf("%s [%lld]\n", t.name, (long long)t.shape[0]);
        for (size_t k = 0; k < (size_t)(t.shape[0] * t.shape[1]); ++k)
            j ? cli_json_num(j, NULL, (double)p[t.offset + k])
              : (void)printf("%.9g\n", (double)p[t.offset + k]);
        if (j) cli_json_end(j, ']');
    }
    if (j) cli_json_end(j, '}');
}

static int print_params(const char *path, const bp_model *m, int dump_all, cli_json *j) {
    size_t n = bp_model_n_params(m);
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) return cli_fail(CMD_INFO, "out of memory");
    if (bp_model_get_params(m, p, n) != BP_OK) {
        free(p);
        return cli_lib_fail(CMD_INFO, path);
    }
    char sum[32];
    snprintf(sum, sizeof sum, "fnv1a64:%016" PRIx64,
             cli_fnv1a(CLI_FNV_BASIS, p, n * sizeof(float)));
    if (j) {
        cli_json_begin(j, "parameters", '{');
        cli_json_int(j, "count", (long long)n);
        cli_json_str(j, "checksum", sum);
        cli_json_end(j, '}');
    } else {
        printf("parameters: %zu, checksum %s\n", n, sum);
    }
    if (dump_all) dump(m, p, j);
    free(p);
    return 0;
}

static void print_optimizer(bp_checkpoint *ck, bp_model *m, cli_json *j) {
    bp_status st;
    bp_optimizer *opt = bp_checkpoint_read_optimizer(ck, m, &st);
    if (!opt) {
        if (j)
            cli_json_null(j, "optimizer");
        else
            printf("optimizer: none loaded (%s)\n", bp_last_error());
        return;
    }
    size_t n = bp_optimizer_state_size(opt);
    float *state = malloc((n ? n : 1) * sizeof(float));
    int64_t steps = 0;
    int ok = state && bp_optimizer_get_state(opt, state, n, &steps) == BP_OK;
    char sum[32];
    snprintf(sum, sizeof sum, "fnv1a64:%016" PRIx64,
             ok ? cli_fnv1a(CLI_FNV_BASIS, state, n * 4) : 0);
    if (j && ok) {
        cli_json_begin(j, "optimizer", '{');
        cli_json_int(j, "steps", steps);
        cli_json_num(j, "next_lr", (double)bp_optimizer_lr(opt));
        cli_json_int(j, "state_floats", (long long)n);
        cli_json_str(j, "checksum", sum);
        cli_json_end(j, '}');
    } else if (j) {
        cli_json_null(j, "optimizer");
    } else if (ok) {
        printf("optimizer: %" PRId64 " steps, next lr %.6g, %zu state floats, checksum %s\n", steps,
               (double)bp_optimizer_lr(opt), n, sum);
    } else {
        printf("optimizer: state unreadable (%s)\n", bp_last_error());
    }
    free(state);
    bp_optimizer_free(opt);
}

/* The class names, index by index. */
static int print_classes(const bp_checkpoint *ck, const bp_model *m, cli_json *j) {
    cli_names names = {NULL, 0};
    int rc = cli_read_class_names(CMD_INFO, ck, bp_model_width(m, bp_model_n_layers(m)), &names);
    if (rc) return rc;
    if (j) {
        cli_json_names(j, "class_names", &names);
    } else if (names.n) {
        printf("classes (index: name, in byte order of the names):\n");
        for (int i = 0; i < names.n; ++i)
            printf("  %d: %s\n", i, names.v[i]);
    }
    cli_names_free(&names);
    return 0;
}

/* The run.* entries the train command writes, then its options as a reusable config file (data
 * paths as seen from here: a checkpoint keeps them relative to its folder). */
static void print_run(const bp_checkpoint *ck, cli_json *j) {
    static const char *const keys[] = {
        "epoch",       "batch_in_epoch", "loss",         "label_smoothing", "scaling",
        "features",    "target_kind",    "classes",      "loader_seed",     "best_epoch",
        "best_metric", "bad_epochs",     "train_seconds"};
    int any = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; ++i) {
        const char *v = bp_checkpoint_meta(ck, keys[i]);
        if (v && !any++) j ? cli_json_begin(j, "run", '{') : (void)printf("run:\n");
        if (v && j) cli_json_text(j, keys[i], v);
        if (v && !j) printf("  %s = %s\n", keys[i], v);
    }
    if (any && j) cli_json_end(j, '}');
    if (!any)
        j ? cli_json_null(j, "run") : (void)printf("run: none (not saved by backprop train)\n");
    any = 0;
    for (int i = 0; i < cli_option_count(); ++i) {
        char *v = cli_stored_option(ck, i);
        if (v && !any++)
            j ? cli_json_begin(j, "options", '{')
              : (void)printf("options (usable as a --config file):\n");
        if (v && j) cli_json_str(j, cli_option_name(i), v);
        if (v && !j && v[0]) printf("  %s = %s\n", cli_option_name(i), v);
        free(v);
    }
    if (any && j) cli_json_end(j, '}');
    if (!any && j) cli_json_null(j, "options");
}

/* What follows the model's description, in either form. */
static int print_parts(bp_checkpoint *ck, bp_model *m, int dump_all, cli_json *j) {
    print_layers(m, j);
    int rc = print_classes(ck, m, j);
    if (rc) return rc;
    print_optimizer(ck, m, j);
    print_run(ck, j);
    return print_params(bp_checkpoint_path(ck), m, dump_all, j);
}

/* The same as one JSON object; nothing is printed when a part fails (its message says why). */
static int info_json(bp_checkpoint *ck, bp_model *m, int verified, int dump_all) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return cli_fail(CMD_INFO, "out of memory");
    cli_json j;
    cli_json_open(&j, f);
    cli_json_str(&j, "checkpoint", bp_checkpoint_path(ck));
    cli_json_bool(&j, "checksums_verified", verified);
    cli_json_begin(&j, "model", '{');
    cli_json_begin(&j, "widths", '[');
    for (int l = 0; l <= bp_model_n_layers(m); ++l)
        cli_json_int(&j, NULL, bp_model_width(m, l));
    cli_json_end(&j, ']');
    cli_json_u64(&j, "dropout_counter", bp_model_rng_counter(m));
    cli_json_u64(&j, "init_seed", bp_model_seed(m));
    cli_json_end(&j, '}');
    char engine[160];
    if (bp_device_matrix_engine(bp_model_device(m), bp_model_precision(m), engine, sizeof engine) ==
        BP_OK)
        cli_json_str(&j, "cpu_matrix_engine", engine);
    int rc = print_parts(ck, m, dump_all, &j);
    cli_json_close(&j);
    fclose(f);
    if (!rc) fwrite(text, 1, size, stdout);
    free(text);
    return rc;
}

int cli_cmd_info(int argc, char **argv) {
    cli_options o;
    int rc = cli_parse(CMD_INFO, argc, argv, &o);
    const char *path = o.positional ? o.positional : o.checkpoint ? o.checkpoint : "";
    if (!rc && !path[0])
        rc = cli_usage_error(CMD_INFO, "no checkpoint: give it as the first argument");
    bp_checkpoint *ck = NULL;
    bp_device *dev = NULL;
    bp_model *m = NULL;
    bp_status st;
    int verified = 0;
    if (!rc && !(ck = cli_checkpoint_open(CMD_INFO, NULL, path, &verified))) rc = CLI_EXIT_FAIL;
    if (!rc && !(dev = bp_device_open("cpu", &st))) rc = cli_lib_fail(CMD_INFO, "");
    if (!rc && !(m = bp_checkpoint_read_model(ck, dev, 1, &st))) rc = cli_lib_fail(CMD_INFO, "");
    if (!rc && o.json) {
        rc = info_json(ck, m, verified, o.dump_weights);
    } else if (!rc) {
        printf("checkpoint: %s\nmodel: ", path);
        cli_describe_model(m, stdout);
        printf(", dropout counter %" PRIu64 ", init seed %" PRIu64 "\n", bp_model_rng_counter(m),
               bp_model_seed(m));
        printf("checksums: %s\n", verified ? "verified (crc32 of every tensor and metadata entry)"
                                           : "none (saved by an older backprop): unverified");
        char engine[160];
        if (bp_device_matrix_engine(dev, bp_model_precision(m), engine, sizeof engine) == BP_OK)
            printf("matrix products on this CPU (%s): %s\n",
                   bp_precision_name(bp_model_precision(m)), engine);
        rc = print_parts(ck, m, o.dump_weights, NULL);
    }
    bp_checkpoint_close(ck);
    bp_model_free(m);
    bp_device_close(dev);
    cli_options_free(&o);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
