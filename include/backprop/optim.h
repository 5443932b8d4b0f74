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
 *   cosine: min_lr + (lr - min_lr) * (1 + cos(pi * min(u, T)/T)) / 2, T = total_steps - warmup;
 *   plateau: lr, which bp_optimizer_report_metric lowers as PyTorch's ReduceLROnPlateau does.
 * lr is the configuration's (bp_optimizer_set_lr changes it between steps).
 *
 * Lifetime: an optimizer belongs to the model it was created for; the two may be freed in either
 * order, and once the model is gone bp_optimizer_free is the only call the optimizer takes.
 * Threads: an optimizer is used by one thread at a time, with its model. */
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

/* "sgd", "adam", "adamw" (the name and parse pair of device.h). */
BP_API const char *bp_optim_kind_name(bp_optim_kind kind);
BP_API bp_status bp_optim_kind_parse(const char *text, bp_optim_kind *out);

typedef enum bp_schedule_kind {
    BP_SCHEDULE_CONSTANT = 0,
    BP_SCHEDULE_STEP = 1,
    BP_SCHEDULE_COSINE = 2,
    BP_SCHEDULE_PLATEAU = 3 /* lowered by bp_optimizer_report_metric (see it) */
} bp_schedule_kind;

/* "constant", "step", "cosine", "plateau". */
BP_API const char *bp_schedule_kind_name(bp_schedule_kind kind);
BP_API bp_status bp_schedule_kind_parse(const char *text, bp_schedule_kind *out);

/* Plateau: whether the metric reported should fall (a loss) or rise (an accuracy). "min",
 * "max" (PyTorch's mode). */
typedef enum bp_plateau_mode { BP_PLATEAU_MIN = 0, BP_PLATEAU_MAX = 1 } bp_plateau_mode;
BP_API const char *bp_plateau_mode_name(bp_plateau_mode mode);
BP_API bp_status bp_plateau_mode_parse(const char *text, bp_plateau_mode *out);

/* Plateau: how threshold counts an improvement. "rel", "abs" (PyTorch's threshold_mode). */
typedef enum bp_threshold_mode { BP_THRESHOLD_REL = 0, BP_THRESHOLD_ABS = 1 } bp_threshold_mode;
BP_API const char *bp_threshold_mode_name(bp_threshold_mode mode);
BP_API bp_status bp_threshold_mode_parse(const char *text, bp_threshold_mode *out);

/* The doubles are doubles, as PyTorch's hyper-parameters are: write 0.5, not 0.5f (a float
 * literal is another number, see bp_optim_config). */
typedef struct bp_schedule {
    bp_schedule_kind kind;
    int64_t warmup_steps; /* linear warm-up before the schedule; 0: none */
    int64_t step_size;    /* step: steps between decays */
    double gamma;         /* step: decay factor; plateau: PyTorch's factor, in (0, 1) */
    int64_t total_steps;  /* cosine: steps of the whole run, warm-up included */
    double min_lr;        /* cosine, plateau: the floor */
    /* plateau, with PyTorch's names and defaults: */
    bp_plateau_mode mode;             /* BP_PLATEAU_MIN */
    double threshold;                 /* 1e-4: the least change that counts as better */
    bp_threshold_mode threshold_mode; /* BP_THRESHOLD_REL: better is below best * (1 -
                                         threshold) (min) or above best * (1 + threshold) (max);
                                         ABS: below best - threshold, above best + threshold */
    int64_t patience;                 /* 10: metrics without improvement tolerated */
    int64_t cooldown;                 /* 0: metrics ignored after each reduction */
    double eps;                       /* 1e-8: a reduction smaller than this is not made */
} bp_schedule;

/* The hyper-parameters are doubles, as PyTorch's are (Python floats): what the update needs of
 * them (1 - beta2, lr / (1 - beta1^t), 1 - lr * weight_decay, ...) is formed in double and
 * rounded to float once, as torch.optim does, so the moments and momentum buffers equal its own
 * after the same steps. The float trap: write 0.999, not 0.999f. The float literal is
 * 0.99900001287..., another number: as beta2 it moves Adam's state by about 1.3e-5 relative
 * from PyTorch's, and no compiler warns. */
typedef struct bp_optim_config {
    bp_optim_kind kind;
    double lr;           /* double: 1e-3, not 1e-3f */
    double momentum;     /* SGD; double: 0.9, not 0.9f */
    double dampening;    /* SGD */
    int nesterov;        /* SGD, needs momentum > 0 and dampening 0 */
    double weight_decay; /* double: 1e-4, not 1e-4f */
    double beta1, beta2; /* Adam, AdamW; doubles: 0.999, not 0.999f (the float trap above) */
    double eps;          /* Adam, AdamW */
    double clip_norm;    /* > 0: clip by global norm */
    double clip_value;   /* > 0: clip by value */
    int accum_steps;     /* bp_train_step: micro-batches per step, >= 1 */
    bp_schedule schedule;
} bp_optim_config;

/* Defaults for kind: lr 0.01 (SGD) or 0.001 (Adam, AdamW), betas (0.9, 0.999), eps 1e-8,
 * weight decay 0 (0.01 for AdamW, as PyTorch), no clipping, accum_steps 1, constant rate; the
 * schedule's step gamma 0.1 and the plateau fields at PyTorch's defaults (above). */
BP_API bp_optim_config bp_optim_config_default(bp_optim_kind kind);

/* An optimizer for model's parameters; its state (momentum, moments) is allocated here, on the
 * model's device. NULL and *status on failure. */
BP_API bp_optimizer *bp_optimizer_create(bp_model *model, const bp_optim_config *config,
                                         bp_status *status);
BP_API void bp_optimizer_free(bp_optimizer *optimizer);

/* Clips the model's gradients as configured and updates its parameters. Fails with
 * BP_ERR_NON_FINITE, changing nothing, when the gradient norm is NaN or infinite. */
BP_API bp_status bp_optimizer_step(bp_optimizer *optimizer);

/* Optimizer steps taken so far, counting the steps queued by bp_train_step; a refused step
 * found later takes the count back to it (train.h). */
BP_API int64_t bp_optimizer_steps(const bp_optimizer *optimizer);

/* The learning rate the next step will use. */
BP_API float bp_optimizer_lr(const bp_optimizer *optimizer);

/* The configuration the optimizer runs with now: the one it was created with, with the changes
 * below (lr, weight_decay, a plateau's reductions). BP_ERR_INVALID_ARGUMENT for a NULL
 * argument. */
BP_API bp_status bp_optimizer_get_config(const bp_optimizer *optimizer, bp_optim_config *config);

/* Change the learning rate (the configuration's lr, which the schedule scales: with a constant
 * schedule and no warm-up, the rate of the next step; with a plateau schedule, the rate it
 * lowers from then on) or the weight decay, between steps. lr > 0 and weight_decay >= 0, finite,
 * else BP_ERR_INVALID_ARGUMENT and nothing changes. The state (momentum, moments, the step
 * count) is kept; a checkpoint saves the new values. */
BP_API bp_status bp_optimizer_set_lr(bp_optimizer *optimizer, double lr);
BP_API bp_status bp_optimizer_set_weight_decay(bp_optimizer *optimizer, double weight_decay);

/* A plateau schedule's step, PyTorch's ReduceLROnPlateau.step(metric): call it once per epoch
 * with the validation metric (a loss for BP_PLATEAU_MIN). When the metric is better than the
 * best so far (as threshold and threshold_mode say) it becomes the best; otherwise it is one more
 * bad epoch. During a cooldown the bad epochs are not counted. When they pass patience, the
 * rate becomes max(lr * gamma, min_lr) (unless that changes it by no more than eps), the
 * cooldown starts and the count restarts. A NaN metric is never better. *reduced (may be NULL)
 * is 1 when this call lowered the rate. The state is kept in checkpoints.
 * BP_ERR_INVALID_ARGUMENT when the schedule is not BP_SCHEDULE_PLATEAU. */
BP_API bp_status bp_optimizer_report_metric(bp_optimizer *optimizer, double metric, int *reduced);

/* The state buffers (floats: 0 for plain SGD, n_params for SGD with momentum, 2*n_params for
 * Adam and AdamW: m then v), to and from the host, for checkpoints. Both first wait for the
 * steps bp_train_step queued, and report a refused one among them (train.h) without copying. */
BP_API size_t bp_optimizer_state_size(const bp_optimizer *optimizer);
BP_API bp_status bp_optimizer_get_state(const bp_optimizer *optimizer, float *host, size_t count,
                                        int64_t *steps);
BP_API bp_status bp_optimizer_set_state(bp_optimizer *optimizer, const float *host, size_t count,
                                        int64_t steps);

#ifdef __cplusplus
}
#endif

#endif
