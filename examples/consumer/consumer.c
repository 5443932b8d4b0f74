/* A program of a user's own, built against an installed backprop (CMakeLists.txt beside this,
 * or pkg-config): it trains a small classifier on the CPU and checks what it learnt, which needs
 * no CUDA, NCCL or MPI library on the machine. With --cuda it also opens "cuda" and reports how
 * that went: the CUDA backend module must be found and loaded (a machine without a GPU then
 * says "no CUDA device"), so a moved prefix still finds its modules.
 *
 * Exit status: 0 when training reached its target (and, with --cuda, the module loaded). */
#include <backprop/backprop.h>
#include <stdio.h>
#include <string.h>

#define ROWS 64

static int fail(const char *what) {
    fprintf(stderr, "consumer: %s failed: %s\n", what, bp_last_error());
    return 1;
}

/* Opens "cuda": success, or a failure that comes from the device, not from a missing module. */
static int check_cuda(void) {
    bp_status st;
    bp_device *d = bp_device_open("cuda", &st);
    if (d) {
        printf("consumer: cuda opened as %s\n", bp_device_name(d));
        bp_device_close(d);
        return 0;
    }
    const char *why = bp_last_error();
    printf("consumer: cuda: %s\n", why);
    return strstr(why, "module") ? 1 : 0;
}

/* Two classes split by the sign of x0 + x1. */
static int train(void) {
    bp_device *dev = bp_device_open("cpu", NULL);
    if (!dev) return fail("bp_device_open(cpu)");
    int widths[] = {2, 16, 2};
    bp_mlp_config cfg = bp_mlp_config_default(2, widths);
    cfg.seed = 7;
    cfg.max_batch = ROWS;
    bp_model *model = bp_model_create(dev, &cfg, NULL);
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 0.05;
    bp_optimizer *opt = model ? bp_optimizer_create(model, &oc, NULL) : NULL;
    float x[ROWS * 2];
    int32_t y[ROWS];
    for (int i = 0; i < ROWS; ++i) {
        x[2 * i] = (float)((i * 37) % ROWS) / ROWS - 0.5f;
        x[2 * i + 1] = (float)((i * 11) % ROWS) / ROWS - 0.5f;
        y[i] = x[2 * i] + x[2 * i + 1] > 0.0f;
    }
    bp_tensor *tx = bp_tensor_create(dev, BP_F32, ROWS, 2, NULL);
    bp_tensor *ty = bp_tensor_create(dev, BP_I32, ROWS, 1, NULL);
    int rc = 1;
    if (!opt || !tx || !ty || bp_tensor_upload(tx, x, ROWS * 2) != BP_OK ||
        bp_tensor_upload(ty, y, ROWS) != BP_OK) {
        rc = fail("setup");
    } else {
        bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
        float first = 0.0f, loss = 0.0f;
        rc = 0;
        for (int step = 0; step < 200 && rc == 0; ++step) {
            if (bp_train_step(model, opt, &ce, tx, ty, &loss) != BP_OK) rc = fail("bp_train_step");
            if (step == 0) first = loss;
        }
        printf("consumer: cross-entropy %.4f -> %.4f after 200 steps\n", first, loss);
        if (rc == 0 && !(loss < 0.2f * first)) {
            fprintf(stderr, "consumer: the loss did not fall to a fifth\n");
            rc = 1;
        }
    }
    bp_tensor_free(tx);
    bp_tensor_free(ty);
    bp_optimizer_free(opt);
    bp_model_free(model);
    bp_device_close(dev);
    return rc;
}

int main(int argc, char **argv) {
    printf("consumer: %s (headers %s)\n", bp_build_info(), BP_VERSION_STRING);
    if (strcmp(bp_version(), BP_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library %s, headers %s\n", bp_version(), BP_VERSION_STRING);
        return 1;
    }
    int rc = train();
    if (rc == 0 && argc > 1 && strcmp(argv[1], "--cuda") == 0) rc = check_cuda();
    return rc;
}
