/* A complete trainer on the public API: load a dataset (CSV, NPY or IDX, by its content), split
 * off a validation set, scale the features, train with early stopping on the validation loss
 * (and a plateau schedule on it), keep the best epoch in a checkpoint, then evaluate that model
 * on the test data.
 *
 * usage: train_mlp TRAIN TEST CHECKPOINT [device]     (class labels: indices or names) */
#include <backprop/backprop.h>
#include <stdio.h>
#include <stdlib.h>

#define EPOCHS   60
#define PATIENCE 6 /* epochs without a better validation loss before stopping */
#define BATCH    32

static int fail(const char *what) {
    fprintf(stderr, "train_mlp: %s: %s\n", what, bp_last_error());
    return 1;
}

/* The file's dataset; with `like`, its scaling applied and its class names kept in their order
 * (so a label means the class it meant in training). */
static bp_dataset *load(const char *path, const bp_dataset *like, const float *off,
                        const float *sc) {
    bp_open_options o = bp_open_options_default();
    const char *names[256];
    int n = like ? bp_dataset_n_class_names(like) : 0;
    for (int i = 0; i < n && i < 256; ++i)
        names[i] = bp_dataset_class_name(like, i);
    o.csv.class_names = names;
    o.csv.n_class_names = n < 256 ? n : 256;
    bp_dataset *d = bp_dataset_open(path, &o, NULL, NULL);
    if (d && off && bp_dataset_apply_scaling(d, off, sc) != BP_OK) {
        bp_dataset_free(d);
        return NULL;
    }
    return d;
}

/* One epoch over the loader; the mean training loss. */
static int train_epoch(bp_model *m, bp_optimizer *o, bp_loader *l, int epoch, double *mean) {
    const bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    const bp_tensor *x, *y;
    double sum = 0.0;
    int steps = 0;
    if (bp_loader_start_epoch(l, epoch, 0) != BP_OK) return fail("bp_loader_start_epoch");
    for (;;) {
        if (bp_loader_next(l, &x, &y) != BP_OK) return fail("bp_loader_next");
        if (!x) break;
        float loss;
        if (bp_train_step(m, o, &ce, x, y, &loss) != BP_OK) return fail("bp_train_step");
        sum += loss, ++steps;
    }
    *mean = sum / steps;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: train_mlp TRAIN TEST CHECKPOINT [device]\n");
        return 2;
    }
    bp_device *dev = bp_device_open(argc > 4 ? argv[4] : "auto", NULL);
    bp_dataset *all = dev ? load(argv[1], NULL, NULL, NULL) : NULL, *train = NULL, *val = NULL;
    if (!all) return fail("loading the training data");
    if (bp_dataset_split(all, 0.2, 7, &train, &val) != BP_OK) return fail("bp_dataset_split");
    int in = bp_dataset_features(train), classes = bp_dataset_classes(all);
    float *offset = malloc(in * sizeof *offset), *scale = malloc(in * sizeof *scale);
    if (!offset || !scale || bp_dataset_fit_scaling(train, BP_SCALE_STANDARD, offset, scale) ||
        bp_dataset_apply_scaling(train, offset, scale) ||
        bp_dataset_apply_scaling(val, offset, scale))
        return fail("scaling");

    int widths[] = {in, 64, 64, classes};
    bp_mlp_config mc = bp_mlp_config_default(3, widths);
    mc.seed = 1;
    mc.max_batch = BATCH;
    bp_model *model = bp_model_create(dev, &mc, NULL);
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.lr = 3e-3; /* doubles, as PyTorch's: 3e-3, not 3e-3f */
    oc.weight_decay = 1e-4;
    oc.schedule.kind = BP_SCHEDULE_PLATEAU;
    oc.schedule.gamma = 0.5;
    oc.schedule.patience = 2;
    bp_optimizer *opt = model ? bp_optimizer_create(model, &oc, NULL) : NULL;
    bp_loader *loader = opt ? bp_loader_create(train, dev, BATCH, 1, 42, NULL) : NULL;
    if (!loader) return fail("setting up");

    const bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    double best = 1e300;
    int best_epoch = -1;
    for (int epoch = 0; epoch < EPOCHS && epoch - best_epoch <= PATIENCE; ++epoch) {
        double train_loss;
        bp_eval_result v;
        if (train_epoch(model, opt, loader, epoch, &train_loss)) return 1;
        if (bp_evaluate(model, val, &ce, 0, &v, NULL) != BP_OK) return fail("bp_evaluate");
        if (bp_optimizer_report_metric(opt, v.loss, NULL) != BP_OK) return fail("plateau");
        printf("epoch %2d  train loss %.4f  val loss %.4f  val acc %.3f  lr %.2g\n", epoch,
               train_loss, v.loss, v.accuracy, (double)bp_optimizer_lr(opt));
        if (v.loss >= best) continue;
        best = v.loss, best_epoch = epoch;
        const bp_meta_array arrays[] = {{"offset", offset, (size_t)in},
                                        {"scale", scale, (size_t)in}};
        if (bp_checkpoint_save_arrays(argv[3], model, opt, NULL, 0, arrays, 2) != BP_OK)
            return fail("saving the best epoch");
    }
    bp_loader_free(loader);
    bp_model_free(model); /* a model and its optimizer free in either order */
    bp_optimizer_free(opt);

    /* The best epoch back from its checkpoint, with the scaling it was trained with. */
    bp_checkpoint *ck = bp_checkpoint_open(argv[3], NULL);
    size_t n = 0;
    float *off = ck ? bp_checkpoint_read_array(ck, "offset", &n, NULL) : NULL;
    float *sc = off ? bp_checkpoint_read_array(ck, "scale", &n, NULL) : NULL;
    bp_model *best_model = sc ? bp_checkpoint_read_model(ck, dev, 0, NULL) : NULL;
    bp_dataset *test = best_model ? load(argv[2], all, off, sc) : NULL;
    bp_eval_result t;
    if (!test || bp_evaluate(best_model, test, &ce, 0, &t, NULL) != BP_OK)
        return fail("evaluating the best epoch");
    printf("best epoch %d: test loss %.4f, test accuracy %.4f (%lld of %lld)\n", best_epoch, t.loss,
           t.accuracy, (long long)t.correct, (long long)t.rows);

    bp_dataset_free(test);
    bp_model_free(best_model);
    free(off), free(sc), free(offset), free(scale);
    bp_checkpoint_close(ck);
    bp_dataset_free(all), bp_dataset_free(train), bp_dataset_free(val);
    bp_device_close(dev);
    return 0;
}
