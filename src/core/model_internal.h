/* The model handle, for the optimizer and the training step. */
#ifndef BP_CORE_MODEL_INTERNAL_H
#define BP_CORE_MODEL_INTERNAL_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A layer's GEMMs, each with its backend plan (gemm_plan; NULL where the backend has none). */
enum { BP_GEMM_FWD = 0, BP_GEMM_DW = 1, BP_GEMM_DX = 2, BP_GEMM_COUNT = 3 };

typedef struct bp_layer {
    int in, out;
    bp_activation act;
    float dropout;
    uint32_t drop_threshold; /* round(p * 2^24), see bp_dropout_keep */
    float drop_scale;        /* 1 / (1 - p) */
    size_t w_off, b_off;     /* floats into the flat buffers */
    bp_eltype type;          /* of z and a: bf16 for the hidden layers of a bf16 model */
    /* [max_batch, out] of type; a == z when it would be a plain copy. A fused layer with an
     * activation keeps in z the backend's saved state of it (BP_EPI_BIAS_ACT's aux). */
    void *z, *a;
    size_t z_bytes;
    /* The norm of the layer's input (docs/deep-mlp.md): its weight and bias offsets (nb_off
     * SIZE_MAX for RMSNorm); h [max_batch, in] of gemm_type holds the normalized input, the
     * GEMMs' operand; mean and rstd [max_batch] the row statistics backward reads. */
    bp_norm norm;
    size_t nw_off, nb_off;
    void *h;
    float *mean, *rstd;
    int residual;  /* out = the layer's input + dropout(act(z)) (in == out) */
    int fused_fwd; /* the forward GEMM adds the bias and applies act (BP_EPI_BIAS_ACT) */
    int fused_bwd; /* act' and the bias gradient come from the layer above's dX GEMM */
    void *plan[BP_GEMM_COUNT];
} bp_layer;

/* A layer's output needs its own buffer unless it is z itself (identity, no dropout). */
static inline int bp_layer_has_own_output(const bp_layer *L) {
    return L->act != BP_ACT_IDENTITY || L->drop_threshold != 0 || L->residual;
}

/* A layer with a norm or a residual: it runs unfused, and its backward has a step of its own. */
static inline int bp_layer_is_block(const bp_layer *L) {
    return L->norm != BP_NORM_NONE || L->residual;
}

/* Scalars kept on the device (bp_step_state's first floats) so a step reads back at most once. */
enum { BP_SCALAR_LOSS = 0, BP_SCALAR_NORM2 = 1, BP_SCALAR_MATCH = 2, BP_SCALAR_COUNT = 3 };

struct bp_model {
    bp_device *device;
    int n_layers;
    int *widths;
    bp_layer *layers;
    float leaky_slope;
    float norm_eps;
    int has_blocks; /* some layer has a norm or a residual */
    uint64_t seed;
    int max_batch;
    size_t n_params;
    float *params, *grads; /* device memory, n_params each */
    bp_precision precision;
    bp_eltype gemm_type;   /* of every GEMM operand: bf16 in bf16 mode, else fp32 */
    int tf32;              /* the GEMMs round fp32 operands to TF32 */
    uint16_t *params_bf16; /* bf16 mode: bf16 copy of params (same layout); else NULL */
    void *workspace;       /* one block: layer z/a, dout, gradient buffers, row losses, ... */
    size_t workspace_bytes;
    float *dout;    /* loss gradient, [max_batch, widths[n]] */
    float *dbuf[3]; /* fp32 gradients between layers, [max_batch, widest] (bf16: dbuf[0]);
                       a model with a block layer has all three, as wide as its widest width */
    void *dz_lp[2]; /* bf16 mode: the gradients entering the GEMMs, [max_batch, widest] */
    void *x_lp;     /* bf16 mode: the last forward's input rounded to bf16 */
    float *bgrad;   /* [widest]: a fused bias gradient before it is added (accumulating) */
    void *scratch;  /* gemm_ex scratch, scratch_bytes (NULL when none) */
    size_t scratch_bytes;
    float *row_loss;      /* [2 * max_batch]: each row's loss, then (cross-entropy) its class
                             match; loss_head's row_scratch */
    bp_step_state *state; /* device memory: what a training step leaves for the host */
    float *scalars;       /* BP_SCALAR_COUNT: the first floats of state */

    /* What the last forward left for loss and backward. */
    const float *x; /* input of the last training forward (the caller's tensor) */
    int batch;
    int trained_forward; /* the last forward was in training mode */
    int have_loss;
    int head_done; /* the loss was loss_head's: the last layer's dz and bias gradient are made */
    uint64_t forward_calls; /* training forwards (and steps) so far: the dropout streams */
    uint64_t dropout_stream;
    int64_t dropout_row0;
    double loss_denominator;

    /* The last bp_train_step's train accuracy (bp_train_step_correct): rows of its (global)
     * batch classified right, of how many; rows 0 when it was not cross-entropy. */
    int64_t step_correct, step_rows;

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

/* Whether a training step's loss head runs as the backend's loss_head: the backend has it and
 * the last layer's output is its z. */
int bp_model_fused_head(const bp_model *m);

/* The loss of the last training forward through loss_head (bp_model_fused_head must hold),
 * with the last layer's bias gradient and its dz in gemm_type, which the backward that follows
 * (with overwrite = !accumulate) starts from. first_row is the rows' first index in the step's
 * target: the first bad class is reported by its index there. */
bp_status bp_model_loss_head(bp_model *m, const bp_loss_config *loss, const void *target,
                             float grad_scale, int accumulate, int64_t first_row);

/* overwrite: write the parameter gradients (GEMM beta 0) instead of adding into them, so a
 * training step need not zero the whole gradient buffer first: that fill was a full extra pass
 * over 4 bytes per parameter, and the GEMM then also read the zeros back. */
bp_status bp_model_backward_rows(bp_model *m, float *dx, int overwrite);

/* Validates a loss config and a target tensor against the model for call fn; labels: also
 * checks a cross-entropy target's classes on the device (which waits for the answer). */
bp_status bp_check_loss_args(const char *fn, const bp_model *m, const bp_loss_config *loss,
                             const bp_tensor *target, int64_t rows, int labels);

/* Puts the device's bp_step_state back to no step: no refusal, no bad row (queued, no wait). */
bp_status bp_model_clear_state(bp_model *m);

/* Reads the device scalars (waits). */
bp_status bp_model_read_scalars(bp_model *m, float out[BP_SCALAR_COUNT]);

/* Names the first non-finite gradient ("layer 2 weight [3, 7]") into buf; 0 when none. */
int bp_model_find_nonfinite_grad(bp_model *m, char *buf, size_t size);

/* Host-side initial weights (see include/backprop/model.h), in the flat layout. */
void bp_init_params(const bp_model *m, bp_init init, float *host);

/* After the fp32 parameters were written other than by the optimizer's update (creation,
 * bp_model_set_params, a data-parallel replica's copy): the bf16 copy follows them. Inline,
 * so the MPI module calls it without linking the core. */
static inline bp_status bp_model_sync_lowp(bp_model *m) {
    if (!m->params_bf16) return BP_OK;
    return m->device->ops->cast(m->device, m->n_params, m->params, BP_EL_F32, m->params_bf16,
                                BP_EL_BF16);
}

/* ---- precision.c: the GEMMs of the layers, fusion and plans ------------------------------ */

/* Checks the backend can run the config's precision; sets the model's types. */
bp_status bp_model_setup_precision(bp_model *m, bp_precision precision);

/* Decides which layers fuse their bias and activation into the GEMMs (where the backend can),
 * makes every GEMM's plan at max_batch, and sizes each fused layer's z and the GEMM scratch.
 * Runs after the parameter buffers exist and before the workspace is laid out. */
bp_status bp_model_make_plans(bp_model *m);
void bp_model_free_plans(bp_model *m);

/* The three GEMMs of layer l over rows rows. in is the layer's input (gemm_type); dz the
 * gradient at its output (gemm_type); out the GEMM's output; beta 0 overwrites the weight
 * gradient, 1 adds to it. */
bp_gemm_desc bp_gemm_forward(const bp_model *m, int l, int rows, const void *in);
bp_gemm_desc bp_gemm_dw(const bp_model *m, int l, int rows, const void *dz, const void *in,
                        float beta);
bp_gemm_desc bp_gemm_dx(const bp_model *m, int l, int rows, const void *dz, void *out,
                        int overwrite);

/* Runs desc with plan: through gemm when it is a plain fp32 product and there is no plan (so
 * the fp32 CPU path is the one it always was), else through gemm_ex. */
bp_status bp_model_gemm(bp_model *m, const bp_gemm_desc *desc, void *plan);

#ifdef __cplusplus
}
#endif

#endif
