/* The optimizer handle, for the training step. */
#ifndef BP_CORE_OPTIM_INTERNAL_H
#define BP_CORE_OPTIM_INTERNAL_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A plateau schedule's state (PyTorch's ReduceLROnPlateau: best, num_bad_epochs,
 * cooldown_counter); its reductions land in config.lr. */
typedef struct bp_plateau_state {
    double best;
    int64_t bad_epochs;
    int64_t cooldown_left;
} bp_plateau_state;

struct bp_optimizer {
    bp_model *model;
    bp_device *device; /* the model's: the state is freed through it, the model may be gone */
    bp_optim_config config;
    int64_t steps;
    float *state; /* device memory: SGD momentum, or Adam m then v */
    size_t state_size;
    bp_plateau_state plateau;
};

bp_status bp_check_optim_config(const char *fn, const bp_optim_config *config);

/* The learning rate at optimizer step t (0-based), in double. */
double bp_schedule_lr(const bp_optim_config *config, int64_t t);

/* A plateau schedule's starting state (no metric seen yet) for the configured mode. */
bp_plateau_state bp_plateau_start(const bp_schedule *schedule);

/* Clips by the given global gradient norm and updates; refuses a non-finite norm. */
bp_status bp_optimizer_apply(bp_optimizer *optimizer, double norm);

#ifdef __cplusplus
}
#endif

#endif
