/* Two interleaved spirals: a classic problem no linear model can solve. Trains an MLP on the
 * chosen device and prints the training accuracy per epoch.
 *
 * usage: spirals [device] [epochs]     (device: auto, cpu, cuda, cuda:N; default auto) */
#include <backprop/backprop.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PER_CLASS 500
#define N         (2 * PER_CLASS)
#define BATCH     100

/* Spiral points with a little noise from a fixed xorshift generator. */
static void make_spirals(float *x, int32_t *y) {
    uint32_t s = 12345u;
    for (int i = 0; i < N; ++i) {
        int c = i % 2;
        double t = 0.25 + 3.5 * (double)(i / 2) / PER_CLASS; /* radius and turns grow together */
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        double noise = ((s >> 8) / 16777216.0 - 0.5) * 0.05;
        double a = (t + c) * 3.14159265358979; /* 1.75 turns, classes half a turn apart */
        x[2 * i] = (float)((t + noise) * cos(a) / 3.75);
        x[2 * i + 1] = (float)((t + noise) * sin(a) / 3.75);
        y[i] = c;
    }
}

static double accuracy(bp_model *m, bp_tensor *tx, bp_tensor *out, const int32_t *y) {
    static float logits[N * 2];
    if (bp_model_forward(m, tx, BP_MODE_INFERENCE, out) != BP_OK ||
        bp_tensor_download(out, logits, N * 2) != BP_OK)
        return -1.0;
    int right = 0;
    for (int i = 0; i < N; ++i)
        right += (logits[2 * i + 1] > logits[2 * i]) == (y[i] == 1);
    return (double)right / N;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "auto";
    int epochs = argc > 2 ? atoi(argv[2]) : 400;
    static float x[N * 2];
    static int32_t y[N];
    make_spirals(x, y);

    bp_status st;
    bp_device *dev = bp_device_open(name, &st);
    if (!dev) {
        fprintf(stderr, "spirals: %s\n", bp_last_error());
        return 1;
    }
    int widths[] = {2, 64, 64, 2};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.seed = 7;
    cfg.max_batch = N;
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAM);
    oc.lr = 3e-3;
    bp_model *m = bp_model_create(dev, &cfg, &st);
    bp_optimizer *opt = m ? bp_optimizer_create(m, &oc, &st) : NULL;
    bp_tensor *tx = bp_tensor_create(dev, BP_F32, N, 2, &st);
    bp_tensor *out = bp_tensor_create(dev, BP_F32, N, 2, &st);
    bp_tensor *bx = bp_tensor_create(dev, BP_F32, BATCH, 2, &st);
    bp_tensor *by = bp_tensor_create(dev, BP_I32, BATCH, 1, &st);
    if (!opt || !tx || !out || !bx || !by) {
        fprintf(stderr, "spirals: %s\n", bp_last_error());
        return 1;
    }
    bp_tensor_upload(tx, x, N * 2);
    bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    printf("training 2-64-64-2 on %d spiral points on %s\n", N, bp_device_name(dev));
    double acc = 0.0;
    for (int e = 1; e <= epochs; ++e) {
        float loss = 0.0f, sum = 0.0f;
        for (int b = 0; b < N / BATCH; ++b) {
            /* Points alternate classes, so consecutive slices are balanced batches. */
            bp_tensor_upload(bx, x + 2 * b * BATCH, BATCH * 2);
            bp_tensor_upload(by, y + b * BATCH, BATCH);
            if ((st = bp_train_step(m, opt, &ce, bx, by, &loss)) != BP_OK) {
                fprintf(stderr, "spirals: %s\n", bp_last_error());
                return 1;
            }
            sum += loss;
        }
        if (e % 50 == 0 || e == epochs) {
            acc = accuracy(m, tx, out, y);
            printf("epoch %4d  loss %.4f  train accuracy %.1f%%\n", e, sum / (N / BATCH),
                   100.0 * acc);
        }
    }
    bp_tensor_free(tx);
    bp_tensor_free(out);
    bp_tensor_free(bx);
    bp_tensor_free(by);
    bp_optimizer_free(opt);
    bp_model_free(m);
    bp_device_close(dev);
    return acc >= 0.99 ? 0 : 2;
}
