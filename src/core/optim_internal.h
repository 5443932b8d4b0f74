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
    struct bp_step_ring *ring;   /* step.c: the results of queued steps; NULL before the first */
    struct bp_step_graph *graph; /* train.c: the captured step (CUDA graphs); NULL when none */
};

/* ---- step.c: the results of training steps that do not wait ----------------------------- */

/* A refused step the host has read and not yet reported. */
typedef struct bp_step_found {
    int32_t reason; /* BP_REFUSED_*; 0: none */
    int64_t step;
    float loss; /* its mean loss */
    float norm2;
    int64_t bad_row;
    int later; /* steps queued behind it, which did nothing */
} bp_step_found;

/* 1 when device d has the entries of a step that does not wait (core/backend.h). */
int bp_steps_supported(const bp_device *d);
/* The host memory of the slot the next step uses (waiting only when every slot is pending):
 * the step's scalars go up from it, its state comes back into it. */
bp_status bp_steps_reserve(bp_optimizer *o, bp_step_state **host);
/* After the step's ops: queues the copy of the model's state into that slot and its mark, for
 * optimizer step o->steps. */
bp_status bp_steps_commit(bp_optimizer *o, double denom, int64_t rows, int ce);
/* Reads the slots the device has passed, oldest first (wait: every pending one); a refusal
 * found takes o->steps back to it and is kept for bp_steps_take_found. */
bp_status bp_steps_drain(bp_optimizer *o, int wait);
int bp_steps_take_found(bp_optimizer *o, bp_step_found *found);
/* The error for a refusal found later, as call fn reports it. */
bp_status bp_steps_report(const char *fn, const bp_optimizer *o, const bp_step_found *found);
/* Waits for every queued step and reports a refusal among them (BP_OK when none). */
bp_status bp_steps_settle(const char *fn, bp_optimizer *o);
/* Adds the result of a step that waited (a data-parallel one) to what bp_train_results reads. */
bp_status bp_steps_record(bp_optimizer *o, const bp_step_result *res, int ce);
/* The newest step read; NULL when none. */
const bp_step_result *bp_steps_last(const bp_optimizer *o);
void bp_steps_free(bp_optimizer *o);
/* train.c: frees the optimizer's recorded step. */
void bp_step_graph_free(bp_optimizer *o);

bp_status bp_check_optim_config(const char *fn, const bp_optim_config *config);

/* The learning rate at optimizer step t (0-based), in double. */
double bp_schedule_lr(const bp_optim_config *config, int64_t t);

/* A plateau schedule's starting state (no metric seen yet) for the configured mode. */
bp_plateau_state bp_plateau_start(const bp_schedule *schedule);

/* The update's arguments for optimizer step o->steps, with grad_scale. */
bp_update_args bp_optimizer_update_args(const bp_optimizer *o, float grad_scale);
/* Its step's own scalars into s's fields first_step, lr, step_size, bc2_sqrt, decay_factor. */
void bp_optimizer_step_scalars(const bp_optimizer *o, bp_step_state *s);

/* Clips by the given global gradient norm and updates; refuses a non-finite norm. */
bp_status bp_optimizer_apply(bp_optimizer *optimizer, double norm);

#ifdef __cplusplus
}
#endif

#endif
