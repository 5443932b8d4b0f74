/* The optimizer step: one pass over the flat parameter buffer.
 *
 * Each loop works on a firstprivate copy of the arguments: a thread's own copy cannot alias the
 * parameters it writes, so the compiler keeps the fields in registers and vectorises, where
 * through the caller's pointer it would reload every field after every store. */
#include "core/error.h"
#include "cpu/cpu_internal.h"
#include "kernels/bp_math.h"

/* Plain SGD has no momentum buffer; bp_sgd_elem then never touches buf, but &m[i] on a NULL m
 * would already be undefined, so a dummy stands in. */
static void sgd_plain(int nt, const bp_update_args *args) {
    bp_update_args u = *args;
#pragma omp parallel for schedule(static) firstprivate(u) num_threads(nt) if (u.n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < u.n; ++i) {
        float unused = 0.0f;
        float g = bp_grad_prepare(u.grad[i], u.grad_scale, u.clip_value);
        u.param[i] = bp_sgd_elem(u.param[i], g, &unused, u.lr, u.weight_decay, 0.0f,
                                 u.one_minus_dampening, u.nesterov, u.first_step);
    }
}

/* bp_sgd_elem's parts without its momentum branch (momentum is not 0 here), whose conditional
 * store kept the loop from vectorising: the same arithmetic, a quarter of the instructions. */
static void sgd_momentum(int nt, const bp_update_args *args) {
    bp_update_args u = *args;
#pragma omp parallel for schedule(static) firstprivate(u) num_threads(nt) if (u.n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < u.n; ++i) {
        float p = u.param[i];
        float g =
            bp_sgd_decay(bp_grad_prepare(u.grad[i], u.grad_scale, u.clip_value), p, u.weight_decay);
        float b = bp_sgd_buffer(u.m[i], g, u.momentum, u.one_minus_dampening, u.first_step);
        u.m[i] = b;
        u.param[i] = p - u.lr * bp_sgd_direction(g, b, u.momentum, u.nesterov);
    }
}

/* Adam's loop over [lo, hi) with every argument in a local: gcc vectorises it only when the
 * pointers and scalars are plain locals, not fields of the omp copy (its loads of them could
 * alias the stores through param, m and v). bf16 may be NULL. */
static void adam_span(const bp_update_args *a, size_t lo, size_t hi, uint16_t *restrict bf16) {
    float *restrict param = a->param, *restrict m = a->m, *restrict v = a->v;
    const float *restrict grad = a->grad;
    const float scale = a->grad_scale, clip = a->clip_value, wd = a->weight_decay;
    const float decay = a->decay_factor, omb1 = a->one_minus_beta1, b2 = a->beta2;
    const float omb2 = a->one_minus_beta2, eps = a->eps, step = a->step_size, bc2 = a->bc2_sqrt;
    const int decoupled = a->kind == BP_OPTIM_ADAMW;
#pragma omp simd
    for (size_t i = lo; i < hi; ++i)
        param[i] = bp_adam_elem(param[i], bp_grad_prepare(grad[i], scale, clip), &m[i], &v[i], wd,
                                decoupled, decay, omb1, b2, omb2, eps, step, bc2);
    /* The bf16 copy from the chunk just written (still in cache): a loop of its own, since gcc
     * does not vectorise the update with a 2-byte store in it. */
    if (bf16)
#pragma omp simd
        for (size_t i = lo; i < hi; ++i)
            bf16[i] = bp_f32_to_bf16(param[i]);
}

/* Elements per task of the Adam pass. */
#define ADAM_CHUNK ((size_t)1 << 14)

static void adam_any(int nt, const bp_update_args *args, uint16_t *bf16) {
    size_t n = args->n, chunks = (n + ADAM_CHUNK - 1) / ADAM_CHUNK;
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= BP_CPU_PAR_MIN)
    for (size_t c = 0; c < chunks; ++c) {
        size_t lo = c * ADAM_CHUNK, hi = lo + ADAM_CHUNK < n ? lo + ADAM_CHUNK : n;
        adam_span(args, lo, hi, bf16);
    }
}

static void adam(int nt, const bp_update_args *args) {
    adam_any(nt, args, NULL);
}

/* The same three loops for a bf16 model, each also writing the bf16 copy of the parameter it
 * updated (one pass over memory; kept apart so the fp32 loops stay as they vectorise). */
static void sgd_plain_bf16(int nt, const bp_update_args *args) {
    bp_update_args u = *args;
#pragma omp parallel for schedule(static) firstprivate(u) num_threads(nt) if (u.n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < u.n; ++i) {
        float unused = 0.0f;
        float g = bp_grad_prepare(u.grad[i], u.grad_scale, u.clip_value);
        float p = bp_sgd_elem(u.param[i], g, &unused, u.lr, u.weight_decay, 0.0f,
                              u.one_minus_dampening, u.nesterov, u.first_step);
        u.param[i] = p;
        u.param_bf16[i] = bp_f32_to_bf16(p);
    }
}

static void sgd_momentum_bf16(int nt, const bp_update_args *args) {
    bp_update_args u = *args;
#pragma omp parallel for schedule(static) firstprivate(u) num_threads(nt) if (u.n >= BP_CPU_PAR_MIN)
    for (size_t i = 0; i < u.n; ++i) {
        float p = u.param[i];
        float g =
            bp_sgd_decay(bp_grad_prepare(u.grad[i], u.grad_scale, u.clip_value), p, u.weight_decay);
        float b = bp_sgd_buffer(u.m[i], g, u.momentum, u.one_minus_dampening, u.first_step);
        u.m[i] = b;
        p = p - u.lr * bp_sgd_direction(g, b, u.momentum, u.nesterov);
        u.param[i] = p;
        u.param_bf16[i] = bp_f32_to_bf16(p);
    }
}

static void adam_bf16(int nt, const bp_update_args *args) {
    adam_any(nt, args, args->param_bf16);
}

/* The state buffers are checked because a missing one would be a crash, not a wrong number. */
bp_status bp_cpu_step_decide(bp_device *device, bp_step_state *state, float clip_norm) {
    (void)device;
    if (!state->refused)
        state->refused = bp_step_refusal(state->bad_row, state->loss, state->norm2);
    state->scale = bp_clip_scale(state->norm2, clip_norm);
    return BP_OK;
}

bp_status bp_cpu_update(bp_device *device, const bp_update_args *args) {
    int nt = bp_cpu_threads(device);
    bp_update_args gated;
    if (args->gate) { /* step_decide's verdict, read here once (the device is this thread) */
        if (args->gate->refused) return BP_OK;
        const bp_step_state *g = args->gate;
        gated = *args;
        gated.grad_scale = g->scale;
        gated.first_step = g->first_step;
        gated.lr = g->lr;
        gated.step_size = g->step_size;
        gated.bc2_sqrt = g->bc2_sqrt;
        gated.decay_factor = g->decay_factor;
        args = &gated;
    }
    switch (args->kind) {
    case BP_OPTIM_SGD:
        if (args->momentum == 0.0f) {
            (args->param_bf16 ? sgd_plain_bf16 : sgd_plain)(nt, args);
            return BP_OK;
        }
        if (!args->m)
            return bp_error(BP_ERR_INVALID_ARGUMENT,
                            "cpu update: SGD with momentum %g needs a momentum buffer, m is NULL",
                            (double)args->momentum);
        (args->param_bf16 ? sgd_momentum_bf16 : sgd_momentum)(nt, args);
        return BP_OK;
    case BP_OPTIM_ADAM:
    case BP_OPTIM_ADAMW:
        if (!args->m || !args->v)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu update: Adam needs m and v, %s is NULL",
                            args->m ? "v" : "m");
        (args->param_bf16 ? adam_bf16 : adam)(nt, args);
        return BP_OK;
    }
    return bp_error(BP_ERR_INVALID_ARGUMENT, "cpu update: unknown optimizer kind %d",
                    (int)args->kind);
}
