/* Optimizers: configuration, learning-rate schedules, clipping, and the update through the
 * device's one-pass update entry. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/device_internal.h"
#include "core/error.h"
#include "core/model_internal.h"
#include "core/optim_internal.h"

bp_optim_config bp_optim_config_default(bp_optim_kind kind) {
    bp_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = kind == BP_OPTIM_SGD ? 0.01 : 0.001;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    c.weight_decay = kind == BP_OPTIM_ADAMW ? 0.01 : 0.0;
    c.accum_steps = 1;
    c.schedule.kind = BP_SCHEDULE_CONSTANT;
    c.schedule.gamma = 0.1;
    c.schedule.mode = BP_PLATEAU_MIN;
    c.schedule.threshold = 1e-4;
    c.schedule.threshold_mode = BP_THRESHOLD_REL;
    c.schedule.patience = 10;
    c.schedule.eps = 1e-8;
    return c;
}

#define BP_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) return bp_error(BP_ERR_INVALID_ARGUMENT, __VA_ARGS__);                        \
    } while (0)

/* PyTorch's checks of ReduceLROnPlateau's arguments, and ours of the counts. */
static bp_status check_plateau(const char *fn, const bp_schedule *s) {
    BP_CHECK(s->gamma > 0.0 && s->gamma < 1.0, "%s: plateau gamma (factor) is %g, expected (0, 1)",
             fn, s->gamma);
    BP_CHECK(s->min_lr >= 0.0 && isfinite(s->min_lr), "%s: min_lr is %g, expected >= 0", fn,
             s->min_lr);
    BP_CHECK(s->mode == BP_PLATEAU_MIN || s->mode == BP_PLATEAU_MAX,
             "%s: plateau mode %d is not BP_PLATEAU_MIN or BP_PLATEAU_MAX", fn, (int)s->mode);
    BP_CHECK(s->threshold_mode == BP_THRESHOLD_REL || s->threshold_mode == BP_THRESHOLD_ABS,
             "%s: threshold_mode %d is not BP_THRESHOLD_REL or BP_THRESHOLD_ABS", fn,
             (int)s->threshold_mode);
    BP_CHECK(s->threshold >= 0.0 && isfinite(s->threshold), "%s: threshold is %g, expected >= 0",
             fn, s->threshold);
    BP_CHECK(s->patience >= 0, "%s: patience is %lld, expected >= 0", fn, (long long)s->patience);
    BP_CHECK(s->cooldown >= 0, "%s: cooldown is %lld, expected >= 0", fn, (long long)s->cooldown);
    BP_CHECK(s->eps >= 0.0 && isfinite(s->eps), "%s: plateau eps is %g, expected >= 0", fn, s->eps);
    return BP_OK;
}

static bp_status check_schedule(const char *fn, const bp_schedule *s) {
    BP_CHECK(s->kind >= BP_SCHEDULE_CONSTANT && s->kind <= BP_SCHEDULE_PLATEAU,
             "%s: schedule kind %d is not a schedule", fn, (int)s->kind);
    BP_CHECK(s->warmup_steps >= 0, "%s: warmup_steps is %lld, expected >= 0", fn,
             (long long)s->warmup_steps);
    if (s->kind == BP_SCHEDULE_STEP) {
        BP_CHECK(s->step_size > 0, "%s: step schedule needs step_size > 0, got %lld", fn,
                 (long long)s->step_size);
        BP_CHECK(s->gamma > 0.0 && isfinite(s->gamma), "%s: gamma is %g, expected > 0", fn,
                 s->gamma);
    }
    if (s->kind == BP_SCHEDULE_COSINE) {
        BP_CHECK(s->total_steps > s->warmup_steps,
                 "%s: cosine schedule needs total_steps (%lld) > warmup_steps (%lld)", fn,
                 (long long)s->total_steps, (long long)s->warmup_steps);
        BP_CHECK(s->min_lr >= 0.0 && isfinite(s->min_lr), "%s: min_lr is %g, expected >= 0", fn,
                 s->min_lr);
    }
    return s->kind == BP_SCHEDULE_PLATEAU ? check_plateau(fn, s) : BP_OK;
}

bp_status bp_check_optim_config(const char *fn, const bp_optim_config *c) {
    BP_CHECK(c->kind >= BP_OPTIM_SGD && c->kind <= BP_OPTIM_ADAMW,
             "%s: optimizer kind %d is not an optimizer", fn, (int)c->kind);
    BP_CHECK(c->lr > 0.0 && isfinite(c->lr), "%s: lr is %g, expected > 0", fn, c->lr);
    BP_CHECK(c->weight_decay >= 0.0 && isfinite(c->weight_decay),
             "%s: weight_decay is %g, expected >= 0", fn, c->weight_decay);
    BP_CHECK(c->momentum >= 0.0 && c->momentum < 1.0, "%s: momentum is %g, expected [0, 1)", fn,
             c->momentum);
    BP_CHECK(c->dampening >= 0.0 && c->dampening <= 1.0, "%s: dampening is %g, expected [0, 1]", fn,
             c->dampening);
    BP_CHECK(!c->nesterov || (c->momentum > 0.0 && c->dampening == 0.0),
             "%s: nesterov needs momentum > 0 and dampening 0", fn);
    if (c->kind != BP_OPTIM_SGD) {
        BP_CHECK(c->beta1 >= 0.0 && c->beta1 < 1.0, "%s: beta1 is %g, expected [0, 1)", fn,
                 c->beta1);
        BP_CHECK(c->beta2 >= 0.0 && c->beta2 < 1.0, "%s: beta2 is %g, expected [0, 1)", fn,
                 c->beta2);
        BP_CHECK(c->eps > 0.0 && isfinite(c->eps), "%s: eps is %g, expected > 0", fn, c->eps);
    }
    BP_CHECK(c->clip_norm >= 0.0 && isfinite(c->clip_norm), "%s: clip_norm is %g", fn,
             c->clip_norm);
    BP_CHECK(c->clip_value >= 0.0 && isfinite(c->clip_value), "%s: clip_value is %g", fn,
             c->clip_value);
    BP_CHECK(!(c->clip_norm > 0.0 && c->clip_value > 0.0),
             "%s: clip_norm and clip_value are both set; choose one", fn);
    BP_CHECK(c->accum_steps >= 1, "%s: accum_steps is %d, expected >= 1", fn, c->accum_steps);
    return check_schedule(fn, &c->schedule);
}

static size_t state_floats(const bp_optim_config *c, size_t n_params) {
    if (c->kind == BP_OPTIM_SGD) return c->momentum != 0.0 ? n_params : 0;
    return 2 * n_params;
}

bp_optimizer *bp_optimizer_create(bp_model *model, const bp_optim_config *config,
                                  bp_status *status) {
    const char *fn = "bp_optimizer_create";
    bp_status st = BP_OK;
    if (!model || !config)
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, model ? "config" : "model");
    else
        st = bp_check_optim_config(fn, config);
    bp_optimizer *o = NULL;
    if (st == BP_OK && !(o = calloc(1, sizeof *o)))
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    if (st == BP_OK) {
        o->model = model;
        o->device = model->device;
        o->config = *config;
        o->plateau = bp_plateau_start(&config->schedule);
        o->state_size = state_floats(config, model->n_params);
        bp_mem_part part = {"optimizer state", o->state_size * sizeof(float), 0};
        if (o->state_size) st = bp_dev_check_fits(model->device, fn, &part, 1);
        if (st == BP_OK && o->state_size)
            st = bp_dev_alloc(model->device, o->state_size * sizeof(float), fn, (void **)&o->state);
        if (st == BP_OK && o->state_size)
            st = model->device->ops->fill(model->device, o->state, 0.0f, o->state_size);
    }
    bp_set_status(status, st);
    if (st != BP_OK) {
        bp_optimizer_free(o);
        return NULL;
    }
    return o;
}

void bp_optimizer_free(bp_optimizer *optimizer) {
    if (!optimizer) return;
    bp_steps_free(optimizer);
    bp_step_graph_free(optimizer);
    bp_dev_free(optimizer->device, optimizer->state, optimizer->state_size * sizeof(float));
    free(optimizer);
}

double bp_schedule_lr(const bp_optim_config *c, int64_t t) {
    const bp_schedule *s = &c->schedule;
    double base = c->lr;
    if (t < s->warmup_steps) return base * (double)(t + 1) / (double)s->warmup_steps;
    int64_t u = t - s->warmup_steps;
    switch (s->kind) {
    case BP_SCHEDULE_STEP:
        return base * pow((double)s->gamma, (double)(u / s->step_size));
    case BP_SCHEDULE_COSINE: {
        double span = (double)(s->total_steps - s->warmup_steps);
        double frac =
            (double)(u < s->total_steps - s->warmup_steps ? u : s->total_steps - s->warmup_steps) /
            span;
        double lo = s->min_lr;
        return lo + (base - lo) * (1.0 + cos(3.14159265358979323846 * frac)) / 2.0;
    }
    default:
        return base;
    }
}

float bp_optimizer_lr(const bp_optimizer *optimizer) {
    return optimizer ? (float)bp_schedule_lr(&optimizer->config, optimizer->steps) : 0.0f;
}

int64_t bp_optimizer_steps(const bp_optimizer *optimizer) {
    return optimizer ? optimizer->steps : 0;
}

bp_status bp_optimizer_get_config(const bp_optimizer *optimizer, bp_optim_config *config) {
    if (!optimizer || !config)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_optimizer_get_config: %s is NULL",
                        optimizer ? "config" : "optimizer");
    *config = optimizer->config;
    return BP_OK;
}

bp_status bp_optimizer_set_lr(bp_optimizer *optimizer, double lr) {
    const char *fn = "bp_optimizer_set_lr";
    if (!optimizer) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: optimizer is NULL", fn);
    BP_CHECK(lr > 0.0 && isfinite(lr), "%s: lr is %g, expected > 0", fn, lr);
    optimizer->config.lr = lr;
    return BP_OK;
}

bp_status bp_optimizer_set_weight_decay(bp_optimizer *optimizer, double weight_decay) {
    const char *fn = "bp_optimizer_set_weight_decay";
    if (!optimizer) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: optimizer is NULL", fn);
    BP_CHECK(weight_decay >= 0.0 && isfinite(weight_decay), "%s: weight_decay is %g, expected >= 0",
             fn, weight_decay);
    optimizer->config.weight_decay = weight_decay;
    return BP_OK;
}

/* ---- the plateau schedule: PyTorch's ReduceLROnPlateau, step for step ---- */

bp_plateau_state bp_plateau_start(const bp_schedule *s) {
    bp_plateau_state p = {s->mode == BP_PLATEAU_MAX ? -INFINITY : INFINITY, 0, 0};
    return p;
}

/* ReduceLROnPlateau.is_better. */
static int plateau_better(const bp_schedule *s, double a, double best) {
    double t = s->threshold;
    if (s->mode == BP_PLATEAU_MIN)
        return s->threshold_mode == BP_THRESHOLD_REL ? a < best * (1.0 - t) : a < best - t;
    return s->threshold_mode == BP_THRESHOLD_REL ? a > best * (t + 1.0) : a > best + t;
}

/* ReduceLROnPlateau._reduce_lr: 1 when the rate changed. */
static int plateau_reduce(bp_optim_config *c) {
    double old = c->lr, lowered = old * c->schedule.gamma;
    double next = lowered > c->schedule.min_lr ? lowered : c->schedule.min_lr;
    if (!(old - next > c->schedule.eps)) return 0;
    c->lr = next;
    return 1;
}

bp_status bp_optimizer_report_metric(bp_optimizer *optimizer, double metric, int *reduced) {
    const char *fn = "bp_optimizer_report_metric";
    if (reduced) *reduced = 0;
    if (!optimizer) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: optimizer is NULL", fn);
    const bp_schedule *s = &optimizer->config.schedule;
    if (s->kind != BP_SCHEDULE_PLATEAU)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the schedule is '%s'; only a plateau schedule takes metrics", fn,
                        bp_schedule_kind_name(s->kind));
    bp_plateau_state *p = &optimizer->plateau;
    if (plateau_better(s, metric, p->best)) {
        p->best = metric;
        p->bad_epochs = 0;
    } else {
        p->bad_epochs++;
    }
    if (p->cooldown_left > 0) {
        p->cooldown_left--;
        p->bad_epochs = 0;
    }
    if (p->bad_epochs > s->patience) {
        int changed = plateau_reduce(&optimizer->config);
        if (reduced) *reduced = changed;
        p->cooldown_left = s->cooldown;
        p->bad_epochs = 0;
    }
    return BP_OK;
}

void bp_optimizer_step_scalars(const bp_optimizer *o, bp_step_state *s) {
    const bp_optim_config *c = &o->config;
    double lr = bp_schedule_lr(c, o->steps), t = (double)(o->steps + 1);
    /* As torch.optim: each Python float reaches the kernel rounded to float, and each quantity
     * derived from them is formed in double first. */
    s->first_step = o->steps == 0;
    s->lr = (float)lr;
    s->step_size = (float)(lr / (1.0 - pow(c->beta1, t)));
    s->bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, t));
    s->decay_factor = (float)(1.0 - lr * c->weight_decay);
}

bp_update_args bp_optimizer_update_args(const bp_optimizer *o, float grad_scale) {
    const bp_optim_config *c = &o->config;
    bp_model *m = o->model;
    bp_step_state s;
    bp_optimizer_step_scalars(o, &s);
    bp_update_args a;
    memset(&a, 0, sizeof a);
    a.kind = c->kind;
    a.n = m->n_params;
    a.param = m->params;
    a.param_bf16 = m->params_bf16; /* bf16 mode: the copy is written in the same pass */
    a.grad = m->grads;
    a.m = o->state_size ? o->state : NULL;
    a.v = c->kind != BP_OPTIM_SGD ? o->state + m->n_params : NULL;
    a.grad_scale = grad_scale;
    a.clip_value = (float)c->clip_value;
    a.lr = s.lr;
    a.weight_decay = (float)c->weight_decay;
    a.momentum = (float)c->momentum;
    a.one_minus_dampening = (float)(1.0 - c->dampening);
    a.nesterov = c->nesterov;
    a.first_step = s.first_step;
    a.beta2 = (float)c->beta2;
    a.eps = (float)c->eps;
    a.one_minus_beta1 = (float)(1.0 - c->beta1);
    a.one_minus_beta2 = (float)(1.0 - c->beta2);
    a.step_size = s.step_size;
    a.bc2_sqrt = s.bc2_sqrt;
    a.decay_factor = s.decay_factor;
    return a;
}

bp_status bp_optimizer_apply(bp_optimizer *o, double norm) {
    bp_model *m = o->model;
    if (!isfinite(norm)) {
        char where[160] = "unknown place";
        bp_model_find_nonfinite_grad(m, where, sizeof where);
        return bp_error(BP_ERR_NON_FINITE,
                        "bp_optimizer_step: the gradient is non-finite at step %lld (first at "
                        "%s); parameters and optimizer unchanged",
                        (long long)o->steps, where);
    }
    float scale = 1.0f;
    if (o->config.clip_norm > 0.0) {
        /* PyTorch's clip_grad_norm_: coefficient in fp32, clamped to 1. */
        float coef = (float)o->config.clip_norm / ((float)norm + 1e-6f);
        scale = coef < 1.0f ? coef : 1.0f;
    }
    bp_update_args a = bp_optimizer_update_args(o, scale);
    bp_status st = m->device->ops->update(m->device, &a);
    if (st == BP_OK) o->steps++;
    return st;
}

bp_status bp_optimizer_step(bp_optimizer *optimizer) {
    if (!optimizer)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_optimizer_step: optimizer is NULL");
    float norm = 0.0f;
    bp_status st = bp_model_grad_norm(optimizer->model, &norm);
    if (st != BP_OK) return st;
    return bp_optimizer_apply(optimizer, norm);
}

size_t bp_optimizer_state_size(const bp_optimizer *optimizer) {
    return optimizer ? optimizer->state_size : 0;
}

static bp_status check_state(const char *fn, const bp_optimizer *o, const float *host,
                             size_t count) {
    if (!o) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: optimizer is NULL", fn);
    if (!host && count) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: host pointer is NULL", fn);
    if (count != o->state_size)
        return bp_error(BP_ERR_SHAPE_MISMATCH, "%s: count is %zu, the state holds %zu floats", fn,
                        count, o->state_size);
    return BP_OK;
}

bp_status bp_optimizer_get_state(const bp_optimizer *optimizer, float *host, size_t count,
                                 int64_t *steps) {
    const char *fn = "bp_optimizer_get_state";
    bp_status st = check_state(fn, optimizer, host, count);
    /* The queued steps are settled first (the handle stays what the caller sees: their results
     * are read, and a refusal among them is reported). */
    if (st == BP_OK) st = bp_steps_settle(fn, (bp_optimizer *)optimizer);
    if (st != BP_OK) return st;
    bp_device *d = optimizer->model->device;
    if (count) st = d->ops->download(d, host, optimizer->state, count * sizeof(float));
    if (st == BP_OK && steps) *steps = optimizer->steps;
    return st;
}

bp_status bp_optimizer_set_state(bp_optimizer *optimizer, const float *host, size_t count,
                                 int64_t steps) {
    const char *fn = "bp_optimizer_set_state";
    bp_status st = check_state(fn, optimizer, host, count);
    if (st == BP_OK) st = bp_steps_settle(fn, optimizer);
    if (st != BP_OK) return st;
    if (steps < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: steps is %lld, expected >= 0", fn,
                        (long long)steps);
    for (size_t i = 0; i < count; ++i)
        if (!isfinite(host[i]))
            return bp_error(BP_ERR_NON_FINITE, "%s: state value %zu is %g; state unchanged", fn, i,
                            (double)host[i]);
    bp_device *d = optimizer->model->device;
    if (count) st = d->ops->upload(d, optimizer->state, host, count * sizeof(float));
    if (st == BP_OK) optimizer->steps = steps;
    return st;
}
