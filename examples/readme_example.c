/* The README's five-minute example: learn y = sin(x0) + x1^2 / 2 with a small MLP. */
#include <backprop/backprop.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define N 256

static int fail(const char *what) {
    fprintf(stderr, "%s failed: %s\n", what, bp_last_error());
    return 1;
}

int main(void) {
    bp_device *dev = bp_device_open("auto", NULL); /* CUDA when a GPU is present */
    if (!dev) return fail("bp_device_open");

    int widths[] = {2, 32, 32, 1};
    bp_activation acts[] = {BP_ACT_TANH, BP_ACT_TANH, BP_ACT_IDENTITY};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.activations = acts;
    cfg.seed = 42;
    cfg.max_batch = N;
    bp_model *model = bp_model_create(dev, &cfg, NULL);

    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 1e-2;
    bp_optimizer *opt = model ? bp_optimizer_create(model, &oc, NULL) : NULL;

    float x[N * 2], y[N];
    for (int i = 0; i < N; ++i) {
        x[2 * i] = 4.0f * i / N - 2.0f;
        x[2 * i + 1] = 2.0f * ((i * 37) % N) / N - 1.0f;
        y[i] = sinf(x[2 * i]) + 0.5f * x[2 * i + 1] * x[2 * i + 1];
    }
    bp_tensor *tx = bp_tensor_create(dev, BP_F32, N, 2, NULL);
    bp_tensor *ty = bp_tensor_create(dev, BP_F32, N, 1, NULL);
    if (!opt || !tx || !ty) return fail("setup");
    bp_tensor_upload(tx, x, N * 2);
    bp_tensor_upload(ty, y, N);

    bp_loss_config mse = {BP_LOSS_MSE, 0.0f};
    float first = 0.0f, loss = 0.0f;
    for (int step = 0; step < 500; ++step) {
        if (bp_train_step(model, opt, &mse, tx, ty, &loss) != BP_OK) return fail("bp_train_step");
        if (step == 0) first = loss;
    }
    printf("%s: MSE %.5f -> %.5f after 500 steps\n", bp_device_name(dev), first, loss);

    bp_tensor_free(tx);
    bp_tensor_free(ty);
    bp_optimizer_free(opt);
    bp_model_free(model);
    bp_device_close(dev);
    return loss < 0.01f * first ? 0 : 1;
}
