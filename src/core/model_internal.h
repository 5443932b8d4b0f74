/* The model handle, for the optimizer and the training step. */
#ifndef BP_CORE_MODEL_INTERNAL_H
#define BP_CORE_MODEL_INTERNAL_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_layer {
    int in, out;
    bp_activation act;
    float dropout;
    uint32_t drop_threshold; /* round(p * 2^24), see bp_dropout_keep */
    float drop_scale;        /* 1 / (1 - p) */
    size_t w_off, b_off;     /* floats into the flat buffers */
    float *z, *a;            /* [max_batch, out]; a == z when it would be a plain copy */
} bp_layer;

/* A layer's output needs its own buffer unless it is z itself (identity, no dropout). */
static inline int bp_layer_has_own_output(const bp_layer *L) {
    return L->act != BP_ACT_IDENTITY || L->drop_threshold != 0;
}

/* Scalars kept on the device so a step reads back at most once. */
enum { BP_SCALAR_LOSS = 0, BP_SCALAR_NORM2 = 1, BP_SCALAR_COUNT = 2 };

struct bp_model {
    bp_device *device;
    int n_layers;
    int *widths;
    bp_layer *layers;
    float leaky_slope;
    uint64_t seed;
    int max_batch;
    size_t n_params;
    float *params, *grads; /* device memory, n_params each */
    void *workspace;       /* one block: layer z/a, dout, two gradient buffers, row losses */
    size_t workspace_bytes;
    float *dout;     /* loss gradient, [max_batch, widths[n]] */
    float *dbuf[2];  /* gradients between layers */
    float *row_loss; /* [max_batch] */
    float *scalars;  /* BP_SCALAR_COUNT */

    /* What the last forward left for loss and backward. */
    const float *x; /* input of the last training forward (the caller's tensor) */
    int batch;
    int trained_forward; /* the last forward was in training mode */
    int have_loss;
    uint64_t forward_calls; /* training forwards (and steps) so far: the dropout streams */
    uint64_t dropout_stream;
    int64_t dropout_row0;
    double loss_denominator;

    struct bp_comm *comm; /* data-parallel group (bp_comm_attach); NULL: this process alone */
};

/* Forward on raw device rows (rows <= max_batch, checked by the caller). Training mode draws
 * layer l's dropout mask from stream (call, l) at the indices of rows row0 .. row0+rows-1 of a
 * larger batch: a training step passes one call for all its micro-batches and each one's first
 * row in the step's (global) batch, so every way of cutting the batch draws the same masks. */
bp_status bp_model_forward_rows(bp_model *m, const float *x, int rows, bp_mode mode, uint64_t call,
                                int64_t row0);

/* Loss of the last forward against target rows, gradient scaled by grad_scale / denominator.
 * accumulate: add the row-loss sum into the device scalar instead of replacing it. */
bp_status bp_model_loss_rows(bp_model *m, const bp_loss_config *loss, const void *target,
                             float grad_scale, int accumulate);

/* overwrite: write the parameter gradients (GEMM beta 0) instead of adding into them, so a
 * training step need not zero the whole gradient buffer first: that fill was a full extra pass
 * over 4 bytes per parameter, and the GEMM then also read the zeros back. */
bp_status bp_model_backward_rows(bp_model *m, float *dx, int overwrite);

/* Validates a loss config and a target tensor against the model for call fn. */
bp_status bp_check_loss_args(const char *fn, const bp_model *m, const bp_loss_config *loss,
                             const bp_tensor *target, int64_t rows);

/* Reads the device scalars (waits). */
bp_status bp_model_read_scalars(bp_model *m, float out[BP_SCALAR_COUNT]);

/* Names the first non-finite gradient ("layer 2 weight [3, 7]") into buf; 0 when none. */
int bp_model_find_nonfinite_grad(bp_model *m, char *buf, size_t size);

/* Host-side initial weights (see include/backprop/model.h), in the flat layout. */
void bp_init_params(const bp_model *m, bp_init init, float *host);

#ifdef __cplusplus
}
#endif

#endif
