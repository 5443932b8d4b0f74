/* One training step: micro-batches of forward, loss and backward, then the optimizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

#include "core/comm_internal.h"
#include "core/error.h"
#include "core/model_internal.h"
#include "core/optim_internal.h"
#include "core/tensor_internal.h"

static bp_status check_step_args(bp_model *m, bp_optimizer *o, const bp_loss_config *loss,
                                 const bp_tensor *x, const bp_tensor *target, int labels) {
    const char *fn = "bp_train_step";
    if (!m || !o)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, m ? "optimizer" : "model");
    if (o->model != m)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: the optimizer was created for another model",
                        fn);
    int k = o->config.accum_steps;
    bp_status st =
        bp_check_tensor(fn, "x", x, m->device, BP_F32, m->widths[0], (int64_t)m->max_batch * k);
    if (st != BP_OK) return st;
    if (x->rows < k)
        return bp_error(BP_ERR_SHAPE_MISMATCH,
                        "%s: x has %lld rows, fewer than accum_steps %d micro-batches", fn,
                        (long long)x->rows, k);
    return bp_check_loss_args(fn, m, loss, target, x->rows, labels);
}

/* Names the first non-finite value of a host copy of t ("x[3, 17] is nan"); 0 when none. */
static int find_nonfinite(const bp_tensor *t, const char *name, char *buf, size_t size) {
    if (t->dtype != BP_F32) return 0;
    size_t n = (size_t)t->rows * (size_t)t->cols;
    float *host = malloc(n * sizeof(float));
    int found = 0;
    if (host && bp_tensor_download(t, host, n) == BP_OK)
        for (size_t i = 0; i < n && !found; ++i)
            if (!isfinite(host[i])) {
                snprintf(buf, size, "%s[%zu, %zu] is %g", name, i / (size_t)t->cols,
                         i % (size_t)t->cols, (double)host[i]);
                found = 1;
            }
    free(host);
    return found;
}

/* loss is the step's mean loss (over every rank), own this process's part of it. */
static bp_status report_nonfinite(bp_model *m, const bp_optimizer *o, const bp_tensor *x,
                                  const bp_tensor *target, float loss, float own) {
    char where[160];
    if (find_nonfinite(x, "x", where, sizeof where) ||
        find_nonfinite(target, "target", where, sizeof where))
        return bp_error(BP_ERR_NON_FINITE,
                        "bp_train_step: %s at step %lld; parameters and optimizer unchanged", where,
                        (long long)o->steps);
    if (m->comm && !isfinite(loss) && isfinite(own))
        return bp_error(BP_ERR_NON_FINITE,
                        "bp_train_step: another rank's loss is non-finite at step "
                        "%lld (see its message); parameters and optimizer unchanged",
                        (long long)o->steps);
    if (!isfinite(loss))
        return bp_error(BP_ERR_NON_FINITE,
                        "bp_train_step: the loss is %g at step %lld (the outputs of layer %d, "
                        "the last, overflowed; is the learning rate too high?); parameters and "
                        "optimizer unchanged",
                        (double)loss, (long long)o->steps, m->n_layers - 1);
    snprintf(where, sizeof where, "unknown place");
    bp_model_find_nonfinite_grad(m, where, sizeof where);
    return bp_error(BP_ERR_NON_FINITE,
                    "bp_train_step: the gradient of %s is non-finite at step %lld; parameters "
                    "and optimizer unchanged",
                    where, (long long)o->steps);
}

/* Runs micro-batch i of k over the rows of x and target; x's first row is row0 of the step's
 * (global) batch, and call is the step's dropout stream. */
static bp_status micro_batch(bp_model *m, const bp_loss_config *loss, const bp_tensor *x,
                             const bp_tensor *target, int i, int k, float grad_scale, uint64_t call,
                             int64_t row0) {
    int64_t rows = x->rows, lo = rows * i / k, hi = rows * (i + 1) / k;
    const float *xr = (const float *)x->data + lo * x->cols;
    const char *tr = (const char *)target->data + (size_t)(lo * target->cols) * 4;
    bp_status st = bp_model_forward_rows(m, xr, (int)(hi - lo), BP_MODE_TRAINING, call, row0 + lo);
    if (st == BP_OK && bp_model_fused_head(m))
        st = bp_model_loss_head(m, loss, tr, grad_scale, i > 0, lo);
    else if (st == BP_OK)
        st = bp_model_loss_rows(m, loss, tr, grad_scale, i > 0);
    /* The first micro-batch writes the gradients every layer owns (W and b: the whole flat
     * buffer), which stands in for zeroing it first. */
    if (st == BP_OK) st = bp_model_backward_rows(m, NULL, i == 0);
    return st;
}

/* The rows of the step's whole batch and x's first row in it: x itself for one process; over
 * a group, the ranks' batches in rank order, agreed with the others (who learn when this
 * rank's arguments failed, and fail too). */
static bp_status step_rows(bp_model *m, bp_status own, const bp_tensor *x, int64_t *total,
                           int64_t *offset) {
    if (!m || !m->comm) {
        if (own == BP_OK) *total = x->rows, *offset = 0;
        return own;
    }
    return bp_comm_module_of()->step_begin(m->comm, own, own == BP_OK ? x->rows : 0, total, offset);
}

/* Sums of the loss and of the rows classified right over the group's batch (this rank's own
 * alone without a group), in one reduction. */
static bp_status step_sums(bp_model *m, const float s[BP_SCALAR_COUNT], double sums[2]) {
    sums[0] = s[BP_SCALAR_LOSS];
    sums[1] = s[BP_SCALAR_MATCH];
    return m->comm ? bp_comm_sum(m->comm, sums, 2) : BP_OK;
}

/* The step of a model in a data-parallel group, or on a backend without the entries of a
 * step that does not wait: the host reads the scalars back, sums them over the group, and
 * decides. */
static bp_status step_on_host(bp_model *model, bp_optimizer *optimizer, const bp_loss_config *loss,
                              const bp_tensor *x, const bp_tensor *target, float *loss_value) {
    int64_t total = 0, offset = 0;
    if (model) model->step_rows = 0; /* no train accuracy until this step succeeds */
    bp_status st =
        step_rows(model, check_step_args(model, optimizer, loss, x, target, 1), x, &total, &offset);
    if (st != BP_OK) return st;
    const bp_backend_ops *ops = model->device->ops;
    int k = optimizer->config.accum_steps, cols = model->widths[model->n_layers];
    double denom = loss->kind == BP_LOSS_CROSS_ENTROPY ? (double)total : (double)total * cols;
    uint64_t call = model->forward_calls++;
    for (int i = 0; i < k && st == BP_OK; ++i)
        st = micro_batch(model, loss, x, target, i, k, (float)(1.0 / denom), call, offset);
    if (st == BP_OK && model->comm) st = bp_comm_module_of()->sum_grads(model->comm, model);
    if (st == BP_OK)
        st = ops->sum_squares(model->device, model->n_params, model->grads,
                              model->scalars + BP_SCALAR_NORM2);
    float s[BP_SCALAR_COUNT];
    double sums[2] = {0.0, 0.0};
    if (st == BP_OK) st = bp_model_read_scalars(model, s);
    if (st == BP_OK) st = step_sums(model, s, sums);
    if (st != BP_OK) return st;
    float value = (float)(sums[0] / denom);
    double norm = sqrt((double)s[BP_SCALAR_NORM2]);
    if (!isfinite(value) || !isfinite(norm))
        return report_nonfinite(model, optimizer, x, target, value,
                                (float)((double)s[BP_SCALAR_LOSS] / denom));
    if (loss_value) *loss_value = value;
    int ce = loss->kind == BP_LOSS_CROSS_ENTROPY;
    bp_step_result res = {optimizer->steps, value, ce ? (int64_t)llround(sums[1]) : 0, total};
    st = bp_optimizer_apply(optimizer, norm);
    if (st == BP_OK) st = bp_steps_record(optimizer, &res, ce);
    return st;
}

/* The refusal of the step just waited for, described with its own x and target (still the
 * caller's), as a step that waits always has. A bad label leaves the dropout streams too. */
static bp_status report_own(bp_model *m, bp_optimizer *o, const bp_tensor *x,
                            const bp_tensor *target, const bp_step_found *f) {
    if (f->reason != BP_REFUSED_LABEL) return report_nonfinite(m, o, x, target, f->loss, f->loss);
    m->forward_calls--;
    int32_t label = 0;
    m->device->ops->download(m->device, &label, (const int32_t *)target->data + f->bad_row,
                             sizeof label);
    int classes = m->widths[m->n_layers];
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "bp_train_step: target row %lld holds class %d, outside [0, %d) (the model "
                    "has %d outputs)",
                    (long long)f->bad_row, (int)label, classes, classes);
}

/* Waits for the step just queued (and any before it) and gives its loss or its refusal. */
static bp_status wait_for_step(bp_model *m, bp_optimizer *o, const bp_tensor *x,
                               const bp_tensor *target, int64_t step, float *loss_value) {
    bp_status st = bp_steps_drain(o, 1);
    bp_step_found f;
    if (st == BP_OK && bp_steps_take_found(o, &f))
        return f.step == step && f.later == 0 ? report_own(m, o, x, target, &f)
                                              : bp_steps_report("bp_train_step", o, &f);
    if (st == BP_OK) *loss_value = bp_steps_last(o)->loss;
    return st;
}

/* The step's device work, from the label check to the update, all queued: recorded once as a
 * graph when graphs are on. Its per-step scalars are read from the model's state, which the
 * host uploads before it. */
static bp_status enqueue_step(bp_model *m, bp_optimizer *o, const bp_loss_config *loss,
                              const bp_tensor *x, const bp_tensor *target, double denom,
                              uint64_t call) {
    const bp_backend_ops *ops = m->device->ops;
    bp_device *d = m->device;
    int k = o->config.accum_steps, cols = m->widths[m->n_layers];
    bp_status st = BP_OK;
    /* the fused head checks the classes of its rows itself */
    if (loss->kind == BP_LOSS_CROSS_ENTROPY && !bp_model_fused_head(m))
        st = ops->check_labels_into(d, (int)x->rows, target->data, cols, m->state);
    for (int i = 0; i < k && st == BP_OK; ++i)
        st = micro_batch(m, loss, x, target, i, k, (float)(1.0 / denom), call, 0);
    float clip = (float)o->config.clip_norm;
    if (st == BP_OK && ops->norm_decide)
        st = ops->norm_decide(d, m->n_params, m->grads, m->state, clip);
    else if (st == BP_OK)
        st = ops->sum_squares(d, m->n_params, m->grads, m->scalars + BP_SCALAR_NORM2);
    if (st == BP_OK && !ops->norm_decide) st = ops->step_decide(d, m->state, clip);
    if (st != BP_OK) return st;
    bp_update_args a = bp_optimizer_update_args(o, 1.0f);
    a.gate = m->state;
    return ops->update(d, &a);
}

/* What a recorded step depends on besides the device memory it reads: a step with other values
 * is recorded again. The per-step scalars are zero here (they come from the state). */
typedef struct step_key {
    const void *x, *target;
    int64_t rows;
    bp_loss_config loss;
    int accum;
    float clip_norm;
    bp_update_args args;
} step_key;

struct bp_step_graph {
    void *exec;   /* the recorded step (kept for cudaGraphExecUpdate when stale) */
    step_key key; /* of the last step */
    int repeats;  /* steps in a row with key */
    int current;  /* exec was recorded for key */
    int broken;   /* a recording failed: this optimizer runs its steps eagerly from now on */
};

static step_key make_key(const bp_optimizer *o, const bp_loss_config *loss, const bp_tensor *x,
                         const bp_tensor *target) {
    step_key k;
    memset(&k, 0, sizeof k); /* the padding too: keys are compared with memcmp */
    k.x = x->data;
    k.target = target->data;
    k.rows = x->rows;
    k.loss = *loss;
    k.accum = o->config.accum_steps;
    k.clip_norm = (float)o->config.clip_norm;
    k.args = bp_optimizer_update_args(o, 1.0f);
    k.args.first_step = 0;
    k.args.lr = k.args.step_size = k.args.bc2_sqrt = k.args.decay_factor = 0.0f;
    return k;
}

/* Graphs need the device's entries and a step whose kernels take nothing that changes from step
 * to step by value: dropout's stream does, so a model with dropout runs eagerly. */
static int graphs_usable(const bp_model *m, const bp_optimizer *o) {
    const bp_backend_ops *ops = m->device->ops;
    if (!m->device->options.graphs || !ops->graph_begin || (o->graph && o->graph->broken)) return 0;
    for (int l = 0; l < m->n_layers; ++l)
        if (m->layers[l].drop_threshold) return 0;
    return 1;
}

/* Records the step (the second time in a row its key is seen) and replays it; 0 in *ran when it
 * did not (the caller then runs it eagerly). A failed recording turns graphs off for o. */
static bp_status run_graph(bp_model *m, bp_optimizer *o, const bp_loss_config *loss,
                           const bp_tensor *x, const bp_tensor *target, double denom, uint64_t call,
                           int *ran) {
    *ran = 0;
    if (!o->graph && !(o->graph = calloc(1, sizeof *o->graph))) return BP_OK;
    struct bp_step_graph *g = o->graph;
    step_key key = make_key(o, loss, x, target);
    int same = memcmp(&key, &g->key, sizeof key) == 0;
    g->repeats = same ? g->repeats + 1 : 1;
    g->key = key;
    if (!same) g->current = 0; /* exec holds another key's step: never replayed again */
    if (g->repeats < 2) return BP_OK;
    const bp_backend_ops *ops = m->device->ops;
    if (!g->current || !g->exec) {
        bp_status st = ops->graph_begin(m->device);
        if (st != BP_OK) return BP_OK;
        bp_status rec = enqueue_step(m, o, loss, x, target, denom, call);
        st = ops->graph_end(m->device, &g->exec);
        if (rec != BP_OK || st != BP_OK) {
            g->broken = 1;
            return BP_OK;
        }
        g->current = 1;
    }
    *ran = 1;
    return ops->graph_launch(m->device, g->exec);
}

void bp_step_graph_free(bp_optimizer *o) {
    if (!o->graph) return;
    if (o->graph->exec) o->device->ops->graph_free(o->device, o->graph->exec);
    free(o->graph);
    o->graph = NULL;
}

/* The step on the device alone: the labels checked, the refusal and the clip coefficient
 * decided, and the results copied back, all queued; nothing waits unless loss_value asks. */
static bp_status step_queued(bp_model *model, bp_optimizer *o, const bp_loss_config *loss,
                             const bp_tensor *x, const bp_tensor *target, float *loss_value) {
    bp_status st = check_step_args(model, o, loss, x, target, 0);
    if (st == BP_OK) st = bp_steps_drain(o, 0);
    bp_step_found f;
    if (st == BP_OK && bp_steps_take_found(o, &f)) st = bp_steps_report("bp_train_step", o, &f);
    bp_step_state *slot = NULL;
    if (st == BP_OK) st = bp_steps_reserve(o, &slot);
    if (st != BP_OK) return st;
    const bp_backend_ops *ops = model->device->ops;
    int ce = loss->kind == BP_LOSS_CROSS_ENTROPY;
    double denom = ce ? (double)x->rows : (double)x->rows * model->widths[model->n_layers];
    uint64_t call = model->forward_calls++;
    /* the step's scalars go up from its slot, which nothing rewrites before the step has run */
    bp_optimizer_step_scalars(o, slot);
    st = ops->upload_async(model->device, &model->state->first_step, &slot->first_step,
                           sizeof *slot - offsetof(bp_step_state, first_step));
    int ran = 0;
    if (st == BP_OK && graphs_usable(model, o))
        st = run_graph(model, o, loss, x, target, denom, call, &ran);
    if (st == BP_OK && !ran) st = enqueue_step(model, o, loss, x, target, denom, call);
    if (st == BP_OK) st = bp_steps_commit(o, denom, x->rows, ce);
    if (st != BP_OK) return st;
    int64_t step = o->steps++;
    if (!loss_value) return BP_OK;
    return wait_for_step(model, o, x, target, step, loss_value);
}

bp_status bp_train_step(bp_model *model, bp_optimizer *optimizer, const bp_loss_config *loss,
                        const bp_tensor *x, const bp_tensor *target, float *loss_value) {
    if (model && optimizer && optimizer->model == model && !model->comm &&
        bp_steps_supported(model->device))
        return step_queued(model, optimizer, loss, x, target, loss_value);
    return step_on_host(model, optimizer, loss, x, target, loss_value);
}

bp_status bp_train_step_correct(const bp_model *model, int64_t *correct, int64_t *rows) {
    const char *fn = "bp_train_step_correct";
    if (!model || !correct)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, model ? "correct" : "model");
    if (model->step_rows == 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the model's last bp_train_step did not succeed with a "
                        "cross-entropy loss (or none has run)",
                        fn);
    *correct = model->step_correct;
    if (rows) *rows = model->step_rows;
    return BP_OK;
}
