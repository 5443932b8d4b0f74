/* Multi-layer perceptrons.
 *
 * A model is a stack of n_layers linear layers. Layer l maps widths[l] features to widths[l+1],
 * then applies activations[l], then (in training mode) dropout with probability dropout[l].
 * Weights are [out, in] like PyTorch's nn.Linear. A layer may first normalize its input
 * (norms[l]) and may add its input to its output (residual[l]): the pre-norm block
 * y = x + dropout(act(linear(norm(x)))) of docs/deep-mlp.md. All parameters live in one flat
 * buffer in PyTorch state_dict order: per layer its norm's weight (and bias) if any, then W, b;
 * gradients live in a second buffer of the same layout.
 *
 * Lifetime: a model lives on its device and is freed before it. A model and its optimizer may
 * be freed in either order; once the model is freed, bp_optimizer_free is the only call its
 * optimizer takes. Tensors passed in are borrowed for the call (a training forward's x until the
 * backward that follows it).
 * Threads: a model (with its optimizer and device) is used by one thread at a time; models on
 * different threads do not interact. */
#ifndef BACKPROP_MODEL_H
#define BACKPROP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "loss.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_model bp_model;

typedef enum bp_activation {
    BP_ACT_IDENTITY = 0,
    BP_ACT_RELU = 1,
    BP_ACT_LEAKY_RELU = 2, /* slope from bp_mlp_config.leaky_slope */
    BP_ACT_SIGMOID = 3,
    BP_ACT_TANH = 4,
    BP_ACT_GELU = 5,      /* x * Phi(x), the erf form */
    BP_ACT_GELU_TANH = 6, /* the tanh approximation, PyTorch's approximate="tanh" */
    BP_ACT_SILU = 7,
    BP_ACT_COUNT_ = 8
} bp_activation;

/* "identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu": the names in
 * checkpoints (the name and parse pair of device.h). */
BP_API const char *bp_activation_name(bp_activation activation);
BP_API bp_status bp_activation_parse(const char *text, bp_activation *out);

typedef enum bp_init {
    BP_INIT_TORCH_DEFAULT = 0,  /* nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)) */
    BP_INIT_HE_UNIFORM = 1,     /* W ~ U(-sqrt(6/in), sqrt(6/in)), b = 0 */
    BP_INIT_HE_NORMAL = 2,      /* W ~ N(0, 2/in), b = 0 */
    BP_INIT_XAVIER_UNIFORM = 3, /* W ~ U(-sqrt(6/(in+out)), +), b = 0 */
    BP_INIT_XAVIER_NORMAL = 4,  /* W ~ N(0, 2/(in+out)), b = 0 */
    BP_INIT_COUNT_ = 5
} bp_init;

/* "torch_default", "he_uniform", "he_normal", "xavier_uniform", "xavier_normal". */
BP_API const char *bp_init_name(bp_init init);
BP_API bp_status bp_init_parse(const char *text, bp_init *out);

/* The normalization of a layer's input, over its features, as PyTorch defines them:
 * LayerNorm y = (x - mean) / sqrt(var + eps) * weight + bias (var biased), RMSNorm
 * y = x / sqrt(mean(x^2) + eps) * weight. weight starts at 1, bias at 0. */
typedef enum bp_norm {
    BP_NORM_NONE = 0,
    BP_NORM_LAYER = 1, /* nn.LayerNorm(in, eps) */
    BP_NORM_RMS = 2,   /* nn.RMSNorm(in, eps) */
    BP_NORM_COUNT_ = 3
} bp_norm;

/* "none", "layernorm", "rmsnorm". */
BP_API const char *bp_norm_name(bp_norm norm);
BP_API bp_status bp_norm_parse(const char *text, bp_norm *out);

typedef enum bp_mode { BP_MODE_INFERENCE = 0, BP_MODE_TRAINING = 1 } bp_mode;

/* "inference", "training". */
BP_API const char *bp_mode_name(bp_mode mode);
BP_API bp_status bp_mode_parse(const char *text, bp_mode *out);

/* The arithmetic of a model's matrix products and what its activations are kept in; where each
 * rounding happens is in docs/precision.md. Every mode keeps fp32 master weights, fp32
 * gradients, fp32 optimizer state and fp32 checkpoints. On the CPU the reduced modes round at
 * the points the GPU rounds, to give the GPU's numbers (not its speed). */
typedef enum bp_precision {
    BP_PRECISION_FP32 = 0, /* everything in fp32 */
    BP_PRECISION_TF32 = 1, /* matrix-product operands rounded to TF32 (10 mantissa bits),
                              fp32 accumulation; the rest fp32 */
    BP_PRECISION_BF16 = 2, /* mixed precision: bf16 matrix-product operands (a bf16 copy of the
                              weights) and bf16 saved activations, fp32 accumulation; bias,
                              activation, loss, norm and update arithmetic in fp32 */
    BP_PRECISION_COUNT_ = 3
} bp_precision;

/* "fp32", "tf32", "bf16" ("" for a value outside the enum), as checkpoints write them. */
BP_API const char *bp_precision_name(bp_precision precision);
BP_API bp_status bp_precision_parse(const char *text, bp_precision *out);

/* What multiplies a model's matrices in `precision` on `device`, as text for people (the engine,
 * its implementation and instruction set, e.g. "oneDNN 2.6.3 matmul, brg:avx512_core_amx (bf16
 * products, fp32 accumulation)"), written NUL-terminated into buf[size]. */
BP_API bp_status bp_device_matrix_engine(bp_device *device, bp_precision precision, char *buf,
                                         size_t size);

typedef struct bp_mlp_config {
    int n_layers;                     /* linear layers, >= 1 */
    const int *widths;                /* n_layers + 1 widths, each >= 1 */
    const bp_activation *activations; /* n_layers entries; NULL: ReLU between, identity last */
    const float *dropout;             /* n_layers probabilities in [0, 1); NULL: none */
    float leaky_slope;                /* negative slope of BP_ACT_LEAKY_RELU */
    bp_init init;
    uint64_t seed;          /* initial weights and dropout masks */
    int max_batch;          /* largest batch a call may pass; the workspace is sized for it once */
    bp_precision precision; /* BP_PRECISION_FP32 in a zeroed or default config */
    const bp_norm *norms;   /* n_layers entries: the norm of each layer's input; NULL: none */
    const int *residual;    /* n_layers flags: add the layer's input to its output (needs
                               widths[l] == widths[l + 1]); NULL: none */
    float norm_eps;         /* > 0 when any layer has a norm; 1e-5 in a default config */
} bp_mlp_config;

/* Defaults: activations NULL, no dropout, leaky_slope 0.01, torch-default init, seed 0,
 * max_batch 256, fp32, no norms, no residuals, norm_eps 1e-5. widths must outlive the call to
 * bp_model_create only. */
BP_API bp_mlp_config bp_mlp_config_default(int n_layers, const int *widths);

/* Builds a model on device with initial weights from config.seed (the same on every device). The
 * config's arrays are copied. NULL and *status on failure. */
BP_API bp_model *bp_model_create(bp_device *device, const bp_mlp_config *config, bp_status *status);
BP_API void bp_model_free(bp_model *model);

BP_API bp_device *bp_model_device(const bp_model *model);
BP_API int bp_model_n_layers(const bp_model *model);
BP_API int bp_model_width(const bp_model *model, int index); /* index 0..n_layers */
BP_API int bp_model_max_batch(const bp_model *model);
BP_API size_t bp_model_n_params(const bp_model *model);

/* The configuration a model was built with (for checkpoints and summaries). */
BP_API bp_activation bp_model_activation(const bp_model *model, int layer);
BP_API float bp_model_dropout(const bp_model *model, int layer);
BP_API float bp_model_leaky_slope(const bp_model *model);
BP_API uint64_t bp_model_seed(const bp_model *model);
BP_API bp_precision bp_model_precision(const bp_model *model); /* NULL: BP_PRECISION_FP32 */
BP_API bp_norm bp_model_norm(const bp_model *model, int layer);
BP_API int bp_model_residual(const bp_model *model, int layer);
BP_API float bp_model_norm_eps(const bp_model *model);

/* Offsets (in floats) of layer's norm weight and bias [widths[layer]] in the flat buffers:
 * BP_ERR_INVALID_ARGUMENT when the layer has no norm; *bias_offset is SIZE_MAX for RMSNorm. */
BP_API bp_status bp_model_norm_offsets(const bp_model *model, int layer, size_t *weight_offset,
                                       size_t *bias_offset);

/* Training forwards run so far: the counter that picks each dropout mask. A checkpoint keeps
 * it so a resumed run draws the masks an uninterrupted run would. */
BP_API uint64_t bp_model_rng_counter(const bp_model *model);
BP_API bp_status bp_model_set_rng_counter(bp_model *model, uint64_t counter);

/* Offsets (in floats) of layer's weight [out, in] and bias [out] in the flat buffers. */
BP_API bp_status bp_model_layer_offsets(const bp_model *model, int layer, size_t *weight_offset,
                                        size_t *bias_offset);

/* Flat parameter and gradient buffers to and from host memory; count must be n_params. Setting
 * the parameters also rounds them into a bf16 model's copy of the weights. */
BP_API bp_status bp_model_get_params(const bp_model *model, float *host, size_t count);
BP_API bp_status bp_model_set_params(bp_model *model, const float *host, size_t count);
BP_API bp_status bp_model_get_grads(const bp_model *model, float *host, size_t count);

/* Runs the model on x ([batch, widths[0]], batch <= max_batch). Training mode applies dropout
 * and keeps what backward needs: x itself is read again by backward, so it must stay alive and
 * unchanged until then. out, when not NULL, receives the output [batch, widths[n]]. */
BP_API bp_status bp_model_forward(bp_model *model, const bp_tensor *x, bp_mode mode,
                                  bp_tensor *out);

/* Loss of the last forward against target and its gradient with respect to the output (kept
 * for backward). *value, when value is not NULL, receives the mean loss (this waits for the
 * device); NULL keeps the device running ahead. */
BP_API bp_status bp_model_loss(bp_model *model, const bp_loss_config *loss, const bp_tensor *target,
                               float *value);

/* Backpropagates the loss gradient of the last training forward, adding parameter gradients
 * into the gradient buffer. dx, when not NULL, receives the gradient with respect to the
 * input ([batch, widths[0]]). */
BP_API bp_status bp_model_backward(bp_model *model, bp_tensor *dx);

BP_API bp_status bp_model_zero_grad(bp_model *model);

/* The rows of the last forward whose outputs the model holds: the batch of the last
 * bp_model_forward, or of the last micro-batch of a bp_train_step; 0 when none (no forward yet,
 * or bp_model_predict or bp_evaluate ran since: they use the same buffers). */
BP_API int64_t bp_model_output_rows(const bp_model *model);

/* The output of linear layer `layer` (0..n_layers-1) in that forward, after its activation (and
 * in training mode its dropout), with its input added for a residual layer: bp_model_output_rows x
 * widths[layer + 1] floats into host, count being that product. Waits for the device. The last
 * layer's is the model's output; a backward leaves them as they were. In bf16 mode a hidden layer's
 * output is kept in bf16 and comes back as those values, widened exactly. BP_ERR_INVALID_ARGUMENT
 * when the model holds no outputs or layer is out of range, BP_ERR_SHAPE_MISMATCH for another
 * count. */
BP_API bp_status bp_model_layer_output(const bp_model *model, int layer, float *host, size_t count);

/* What bp_model_predict writes for each row. */
typedef enum bp_predict_output {
    BP_PREDICT_LOGITS = 0,  /* the model's outputs as they are: [rows, outputs] floats */
    BP_PREDICT_SOFTMAX = 1, /* softmax of each row (a cross-entropy model's class probabilities) */
    BP_PREDICT_SIGMOID = 2, /* sigmoid of each output (a BCE-with-logits model's probabilities) */
    BP_PREDICT_CLASS = 3,   /* the index of each row's largest output: [rows] int32_t (a NaN
                               counts as largest, as in torch.argmax; ties: the first) */
    BP_PREDICT_COUNT_ = 4
} bp_predict_output;

/* "logits", "softmax", "sigmoid", "class". */
BP_API const char *bp_predict_output_name(bp_predict_output output);
BP_API bp_status bp_predict_output_parse(const char *text, bp_predict_output *out);

/* Inference from host memory to host memory: x holds rows rows of widths[0] floats (any number
 * of rows: they go through the model max_batch at a time), out receives what `output` names
 * (floats, or int32_t for BP_PREDICT_CLASS). Softmax and sigmoid are taken on the host in
 * double and rounded once. No dropout. The model's parameters are not changed, but a training
 * forward before this call must be run again before bp_model_loss. rows 0 does nothing. It
 * allocates one input block on the device for the call (it is not a training step). */
BP_API bp_status bp_model_predict(bp_model *model, const float *x, int64_t rows,
                                  bp_predict_output output, void *out);

/* The global L2 norm of all gradients. Waits for the device. */
BP_API bp_status bp_model_grad_norm(bp_model *model, float *norm);

/* The L2 norm of each layer's Linear gradients (its weight and bias; a norm's scale and shift
 * are not counted), in double, into norms[0..count), count being n_layers: how the gradient's
 * size changes with depth (vanishing or exploding gradients). Copies the gradients to the host
 * and waits for the device. */
BP_API bp_status bp_model_layer_grad_norms(const bp_model *model, double *norms, int count);

#ifdef __cplusplus
}
#endif

#endif
