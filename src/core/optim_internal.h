/* The optimizer handle, for the training step. */
#ifndef BP_CORE_OPTIM_INTERNAL_H
#define BP_CORE_OPTIM_INTERNAL_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

struct bp_optimizer {
    bp_model *model;
    bp_optim_config config;
    int64_t steps;
    float *state; /* device memory: SGD momentum, or Adam m then v */
    size_t state_size;
};

bp_status bp_check_optim_config(const char *fn, const bp_optim_config *config);

/* The learning rate at optimizer step t (0-based), in double. */
double bp_schedule_lr(const bp_optim_config *config, int64_t t);

/* Clips by the given global gradient norm and updates; refuses a non-finite norm. */
bp_status bp_optimizer_apply(bp_optimizer *optimizer, double norm);

#ifdef __cplusplus
}
#endif

#endif
