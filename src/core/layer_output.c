/* The outputs of a layer after a forward, for a caller to look at (bp_model_layer_output). */
#include <stdlib.h>

#include "core/error.h"
#include "core/model_internal.h"
#include "kernels/bp_math.h"

int64_t bp_model_output_rows(const bp_model *model) {
    return model ? model->batch : 0;
}

/* A bf16 layer's output, downloaded as kept and widened exactly. */
static bp_status download_bf16(const bp_model *m, const bp_layer *L, float *host, size_t n) {
    uint16_t *raw = malloc(n * sizeof *raw + 1);
    if (!raw)
        return bp_error(BP_ERR_OUT_OF_MEMORY,
                        "bp_model_layer_output: no host memory for %zu values", n);
    bp_status st = m->device->ops->download(m->device, raw, L->a, n * sizeof *raw);
    for (size_t i = 0; st == BP_OK && i < n; ++i)
        host[i] = bp_bf16_to_f32(raw[i]);
    free(raw);
    return st;
}

bp_status bp_model_layer_output(const bp_model *model, int layer, float *host, size_t count) {
    const char *fn = "bp_model_layer_output";
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (layer < 0 || layer >= model->n_layers)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: layer %d is out of range [0, %d)", fn, layer,
                        model->n_layers);
    if (!model->batch)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the model holds no outputs (no bp_model_forward or training step "
                        "since it was made, or a prediction or evaluation ran after it)",
                        fn);
    const bp_layer *L = &model->layers[layer];
    size_t n = (size_t)model->batch * (size_t)L->out;
    if (!host) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: host is NULL", fn);
    if (count != n)
        return bp_error(BP_ERR_SHAPE_MISMATCH,
                        "%s: count is %zu, layer %d's output is %d rows of %d (%zu floats)", fn,
                        count, layer, model->batch, L->out, n);
    if (L->type == BP_EL_BF16) return download_bf16(model, L, host, n);
    return model->device->ops->download(model->device, host, L->a, n * sizeof(float));
}
