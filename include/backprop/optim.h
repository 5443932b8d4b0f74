/* Optimizers with PyTorch's update equations, learning-rate schedules and gradient clipping.
 *
 *   SGD:   g = grad + wd*p; buf = g on the first step, else momentum*buf + (1-dampening)*g;
 *          g = nesterov ? g + momentum*buf : buf (when momentum != 0); p -= lr*g.
 *   Adam:  g = grad + wd*p; m = lerp(m, g, 1-beta1); v = beta2*v + (1-beta2)*g*g;
 *          p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps).
 *   AdamW: p *= 1 - lr*wd, then Adam without the wd*p term.
 *
 * Clipping happens before the update, on the gradients of the step: by global L2 norm
 * (g *= min(1, clip_norm/(norm + 1e-6)), like torch.nn.utils.clip_grad_norm_) or by value
 * (g = clamp(g, -clip_value, clip_value)); at most one of the two.
 *
 * The learning rate at step t (0-based, counting optimizer steps):
 *   t < warmup_steps: lr * (t+1) / warmup_steps; after it, with u = t - warmup_steps:
 *   constant: lr;  step: lr * gamma^floor(u/step_size);
 *   cosine: min_lr + (lr - min_lr) * (1 + cos(pi * min(u, T)/T)) / 2, T = total_steps - warmup. */
#ifndef BACKPROP_OPTIM_H
#define BACKPROP_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_optimizer bp_optimizer;

typedef enum bp_optim_kind {
    BP_OPTIM_SGD = 0,
    BP_OPTIM_ADAM = 1,
    BP_OPTIM_ADAMW = 2
} bp_optim_kind;

typedef enum bp_schedule_kind {
    BP_SCHEDULE_CONSTANT = 0,
    BP_SCHEDULE_STEP = 1,
    BP_SCHEDULE_COSINE = 2
} bp_schedule_kind;

typedef struct bp_schedule {
    bp_schedule_kind kind;
    int64_t warmup_steps; /* linear warm-up before the schedule; 0: none */
    int64_t step_size;    /* step: steps between decays */
    double gamma;         /* step: decay factor */
    int64_t total_steps;  /* cosine: steps of the whole run, warm-up included */
    double min_lr;        /* cosine: the floor */
} bp_schedule;

/* The hyper-parameters are doubles, as PyTorch's are (Python floats): what the update needs of
 * them (1 - beta2, lr / (1 - beta1^t), 1 - lr * weight_decay, ...) is formed in double and
 * rounded to float once, as torch.optim does, so the moments and momentum buffers equal its own
 * after the same steps. Write 0.999, not 0.999f: a float literal is another number. */
typedef struct bp_optim_config {
    bp_optim_kind kind;
    double lr;
    double momentum;  /* SGD */
    double dampening; /* SGD */
    int nesterov;     /* SGD, needs momentum > 0 and dampening 0 */
    double weight_decay;
    double beta1, beta2, eps; /* Adam, AdamW */
    double clip_norm;         /* > 0: clip by global norm */
    double clip_value;        /* > 0: clip by value */
    int accum_steps;          /* bp_train_step: micro-batches per step, >= 1 */
    bp_schedule schedule;
} bp_optim_config;

/* Defaults for kind: lr 0.01 (SGD) or 0.001 (Adam, AdamW), betas (0.9, 0.999), eps 1e-8,
 * weight decay 0 (0.01 for AdamW, as PyTorch), no clipping, accum_steps 1, constant rate. */
BP_API bp_optim_config bp_optim_config_default(bp_optim_kind kind);

/* An optimizer for model's parameters; its state (momentum, moments) is allocated here, on the
 * model's device. NULL and *status on failure. */
BP_API bp_optimizer *bp_optimizer_create(bp_model *model, const bp_optim_config *config,
                                         bp_status *status);
BP_API void bp_optimizer_free(bp_optimizer *optimizer);

/* Clips the model's gradients as configured and updates its parameters. Fails with
 * BP_ERR_NON_FINITE, changing nothing, when the gradient norm is NaN or infinite. */
BP_API bp_status bp_optimizer_step(bp_optimizer *optimizer);

/* Optimizer steps taken so far. */
BP_API int64_t bp_optimizer_steps(const bp_optimizer *optimizer);

/* The learning rate the next step will use. */
BP_API float bp_optimizer_lr(const bp_optimizer *optimizer);

/* The state buffers (floats: 0 for plain SGD, n_params for SGD with momentum, 2*n_params for
 * Adam and AdamW: m then v), to and from the host, for checkpoints. */
BP_API size_t bp_optimizer_state_size(const bp_optimizer *optimizer);
BP_API bp_status bp_optimizer_get_state(const bp_optimizer *optimizer, float *host, size_t count,
                                        int64_t *steps);
BP_API bp_status bp_optimizer_set_state(bp_optimizer *optimizer, const float *host, size_t count,
                                        int64_t steps);

#ifdef __cplusplus
}
#endif

#endif
