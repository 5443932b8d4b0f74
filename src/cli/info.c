/* backprop info: what a checkpoint holds, with checksums of its parameters and optimizer state
 * so two checkpoints can be compared bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define FNV_OFFSET 1469598103934665603ull

/* Index of layer l's Linear in the equivalent nn.Sequential (activation and dropout modules
 * take indices too), as the checkpoint names its tensors. */
static int sequential_index(const bp_model *m, int l) {
    int index = 0;
    for (int k = 0; k < l; ++k)
        index +=
            1 + (bp_model_activation(m, k) != BP_ACT_IDENTITY) + (bp_model_dropout(m, k) > 0.0f);
    return index;
}

static const char *act_name(bp_activation a) {
    static const char *const names[] = {"identity", "relu", "leaky-relu", "sigmoid",
                                        "tanh",     "gelu", "gelu-tanh",  "silu"};
    return (int)a >= 0 && a < BP_ACT_COUNT_ ? names[a] : "?";
}

static void print_layers(const bp_model *m) {
    printf("layers:\n");
    for (int l = 0; l < bp_model_n_layers(m); ++l) {
        int in = bp_model_width(m, l), out = bp_model_width(m, l + 1), q = sequential_index(m, l);
        printf("  %d: linear %d -> %d (%d.weight [%d, %d], %d.bias [%d]), %s", l, in, out, q, out,
               in, q, out, act_name(bp_model_activation(m, l)));
        if (bp_model_dropout(m, l) > 0.0f) printf(", dropout %g", (double)bp_model_dropout(m, l));
        putchar('\n');
    }
}

static void dump(const bp_model *m, const float *p) {
    for (int l = 0; l < bp_model_n_layers(m); ++l) {
        size_t w, b;
        bp_model_layer_offsets(m, l, &w, &b);
        size_t out = (size_t)bp_model_width(m, l + 1), in = (size_t)bp_model_width(m, l);
        int q = sequential_index(m, l);
        printf("%d.weight [%zu, %zu]\n", q, out, in);
        for (size_t i = 0; i < out * in; ++i)
            printf("%.9g\n", (double)p[w + i]);
        printf("%d.bias [%zu]\n", q, out);
        for (size_t i = 0; i < out; ++i)
            printf("%.9g\n", (double)p[b + i]);
    }
}

static int print_params(const char *path, const bp_model *m, int dump_all) {
    size_t n = bp_model_n_params(m);
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) return cli_fail(CMD_INFO, "out of memory"), CLI_EXIT_FAIL;
    if (bp_model_get_params(m, p, n) != BP_OK) {
        free(p);
        return cli_lib_fail(CMD_INFO, path);
    }
    printf("parameters: %zu, checksum fnv1a64:%016" PRIx64 "\n", n,
           cli_fnv1a(FNV_OFFSET, p, n * sizeof(float)));
    if (dump_all) dump(m, p);
    free(p);
    return 0;
}

static void print_optimizer(const char *path, bp_model *m) {
    bp_status st;
    bp_optimizer *opt = bp_checkpoint_load_optimizer(path, m, &st);
    if (!opt) {
        printf("optimizer: none loaded (%s)\n", bp_last_error());
        return;
    }
    size_t n = bp_optimizer_state_size(opt);
    float *state = malloc((n ? n : 1) * sizeof(float));
    int64_t steps = 0;
    if (state && bp_optimizer_get_state(opt, state, n, &steps) == BP_OK)
        printf("optimizer: %" PRId64 " steps, next lr %.6g, %zu state floats, checksum "
               "fnv1a64:%016" PRIx64 "\n",
               steps, (double)bp_optimizer_lr(opt), n, cli_fnv1a(FNV_OFFSET, state, n * 4));
    else
        printf("optimizer: state unreadable (%s)\n", bp_last_error());
    free(state);
    bp_optimizer_free(opt);
}

/* The run.* entries the train command writes, then its options as a reusable config file. */
static void print_run(const char *path) {
    static const char *const keys[] = {
        "epoch",       "batch_in_epoch", "loss",         "label_smoothing", "scaling",
        "features",    "target_kind",    "classes",      "loader_seed",     "best_epoch",
        "best_metric", "bad_epochs",     "train_seconds"};
    int failed = 0, any = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !failed; ++i) {
        char *v = cli_meta_get(CMD_INFO, path, keys[i], &failed);
        if (v && !any++) printf("run:\n");
        if (v) printf("  %s = %s\n", keys[i], v);
        free(v);
    }
    if (!any) printf("run: none (not saved by backprop train)\n");
    char key[96];
    any = 0;
    for (int i = 0; i < cli_option_count() && !failed; ++i) {
        snprintf(key, sizeof key, "cfg.%s", cli_option_name(i));
        char *v = cli_meta_get(CMD_INFO, path, key, &failed);
        if (v && !any++) printf("options (usable as a --config file):\n");
        if (v && v[0]) printf("  %s = %s\n", cli_option_name(i), v);
        free(v);
    }
}

int cli_cmd_info(int argc, char **argv) {
    cli_options o;
    int rc = cli_parse(CMD_INFO, argc, argv, &o);
    const char *path = o.positional ? o.positional : o.checkpoint ? o.checkpoint : "";
    if (!rc && !path[0]) {
        cli_usage_error(CMD_INFO, "no checkpoint: give it as the first argument");
        rc = CLI_EXIT_USAGE;
    }
    if (!rc && access(path, R_OK) != 0) {
        cli_fail(CMD_INFO, "cannot read checkpoint '%s': %s", path, strerror(errno));
        rc = CLI_EXIT_FAIL;
    }
    bp_device *dev = NULL;
    bp_model *m = NULL;
    bp_status st;
    int verified = 0;
    if (!rc) rc = cli_verify_checkpoint(CMD_INFO, path, &verified);
    if (!rc && !(dev = bp_device_open("cpu", &st))) rc = cli_lib_fail(CMD_INFO, "");
    if (!rc && !(m = bp_checkpoint_load_model(path, dev, 1, &st))) rc = cli_lib_fail(CMD_INFO, "");
    if (!rc) {
        printf("checkpoint: %s\nmodel: ", path);
        cli_describe_model(m, stdout);
        printf(", dropout counter %" PRIu64 ", init seed %" PRIu64 "\n", bp_model_rng_counter(m),
               bp_model_seed(m));
        printf("checksums: %s\n", verified ? "verified (crc32 of every tensor and metadata entry)"
                                           : "none (saved by an older backprop): unverified");
        print_layers(m);
        print_optimizer(path, m);
        print_run(path);
        rc = print_params(path, m, o.dump_weights);
    }
    bp_model_free(m);
    bp_device_close(dev);
    cli_options_free(&o);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
