/* The results of training steps that do not wait (docs/design.md, "A step that does not wait").
 *
 * A step queues a copy of the model's bp_step_state into a slot of the optimizer's ring of host
 * memory, and a mark after it; the host reads a slot once the device has passed its mark, and at
 * the latest when a caller asks for a number (a step's loss, bp_train_results, the optimizer's
 * state). A refused step leaves the device's refusal set, so the steps queued behind it skip
 * their updates too; the host, reading it, takes the optimizer back to that step, clears the
 * refusal and keeps the finding for the next call that reports. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/model_internal.h"
#include "core/optim_internal.h"

#define BP_STEP_SLOTS 8

typedef struct step_slot {
    bp_step_state *host; /* host_alloc'd: where the device copies the state */
    void *mark;
    int64_t step; /* the optimizer step it was */
    double denom; /* the loss's divisor: rows, or rows x outputs */
    int64_t rows; /* of the (global) batch */
    int ce;       /* cross-entropy: the match count means something */
    uint64_t gen; /* the ring's generation when queued */
} step_slot;

typedef struct bp_step_ring {
    step_slot slot[BP_STEP_SLOTS];
    int head, count; /* the oldest pending slot and how many are pending */
    uint64_t gen;    /* bumped when a refusal is cleared: older slots are void */
    bp_step_found found;
    bp_step_totals totals; /* since bp_train_results last took them */
    bp_step_result last;   /* the newest step read, kept past a take */
    int have_last;
} bp_step_ring;

void bp_steps_free(bp_optimizer *o) {
    bp_step_ring *r = o->ring;
    if (!r) return;
    const bp_backend_ops *ops = o->device->ops;
    for (int i = 0; i < BP_STEP_SLOTS; ++i) {
        step_slot *s = &r->slot[i];
        int done = 0;
        /* the device may still be copying into it */
        if (s->mark && s->host) ops->mark_done(o->device, s->mark, 1, &done);
        if (s->host) ops->host_free(o->device, s->host);
        if (s->mark) ops->mark_free(o->device, s->mark);
    }
    free(r);
    o->ring = NULL;
}

int bp_steps_supported(const bp_device *d) {
    const bp_backend_ops *ops = d->ops;
    return ops->check_labels_into && ops->step_decide && ops->host_alloc && ops->host_free &&
           ops->download_async && ops->mark_create && ops->mark_free && ops->mark_record &&
           ops->mark_done;
}

static bp_status ring_create(bp_optimizer *o) {
    bp_step_ring *r = calloc(1, sizeof *r);
    if (!r) return bp_error(BP_ERR_OUT_OF_MEMORY, "bp_train_step: no host memory");
    o->ring = r;
    const bp_backend_ops *ops = o->device->ops;
    bp_status st = BP_OK;
    /* a backend that cannot queue a step only keeps the totals of the steps that waited */
    for (int i = 0; i < BP_STEP_SLOTS && st == BP_OK && bp_steps_supported(o->device); ++i) {
        st = ops->host_alloc(o->device, sizeof(bp_step_state), (void **)&r->slot[i].host);
        if (st == BP_OK) st = ops->mark_create(o->device, &r->slot[i].mark);
    }
    if (st != BP_OK) bp_steps_free(o);
    return st;
}

static void add_result(bp_optimizer *o, const bp_step_result *res, int ce) {
    bp_step_ring *r = o->ring;
    r->totals.steps++;
    r->totals.loss_sum += (double)res->loss;
    r->totals.correct += res->correct;
    r->totals.rows += ce ? res->rows : 0;
    r->totals.last = *res;
    r->last = *res;
    r->have_last = 1;
    if (o->model) {
        o->model->step_correct = res->correct;
        o->model->step_rows = ce ? res->rows : 0;
    }
}

/* What slot s says, added to the totals, or the refusal it reports. */
static bp_status consume(bp_optimizer *o, const step_slot *s) {
    bp_step_ring *r = o->ring;
    const bp_step_state *h = s->host;
    if (s->gen != r->gen) return BP_OK; /* queued behind a refusal already handled */
    if (h->refused) {
        r->found.reason = h->refused;
        r->found.step = s->step;
        r->found.loss = (float)((double)h->loss / s->denom);
        r->found.norm2 = h->norm2;
        r->found.bad_row = h->bad_row;
        r->found.later = r->count;
        o->steps = s->step;
        r->gen++;
        return bp_model_clear_state(o->model);
    }
    bp_step_result res = {s->step, (float)((double)h->loss / s->denom), 0, s->rows};
    if (s->ce) res.correct = (int64_t)llround((double)h->match);
    add_result(o, &res, s->ce);
    return BP_OK;
}

bp_status bp_steps_record(bp_optimizer *o, const bp_step_result *res, int ce) {
    bp_status st = o->ring ? BP_OK : ring_create(o);
    if (st == BP_OK) add_result(o, res, ce);
    return st;
}

bp_status bp_steps_drain(bp_optimizer *o, int wait) {
    bp_step_ring *r = o->ring;
    if (!r) return BP_OK;
    const bp_backend_ops *ops = o->device->ops;
    int done = 0;
    /* one wait, for the newest: the device has then passed every older mark too */
    if (wait && r->count > 0) {
        bp_status st = ops->mark_done(
            o->device, r->slot[(r->head + r->count - 1) % BP_STEP_SLOTS].mark, 1, &done);
        if (st != BP_OK) return st;
    }
    while (r->count > 0) {
        step_slot *s = &r->slot[r->head];
        bp_status st = ops->mark_done(o->device, s->mark, 0, &done);
        if (st != BP_OK) return st;
        if (!done) return BP_OK;
        r->head = (r->head + 1) % BP_STEP_SLOTS;
        r->count--;
        st = consume(o, s);
        if (st != BP_OK) return st;
    }
    return BP_OK;
}

bp_status bp_steps_reserve(bp_optimizer *o, bp_step_state **host) {
    *host = NULL;
    bp_status st = o->ring ? BP_OK : ring_create(o);
    if (st == BP_OK && o->ring->count == BP_STEP_SLOTS) st = bp_steps_drain(o, 0);
    /* the device is BP_STEP_SLOTS steps behind: wait for the oldest */
    while (st == BP_OK && o->ring->count == BP_STEP_SLOTS) {
        bp_step_ring *r = o->ring;
        int done = 0;
        st = o->device->ops->mark_done(o->device, r->slot[r->head].mark, 1, &done);
        if (st == BP_OK) st = bp_steps_drain(o, 0);
    }
    if (st == BP_OK) *host = o->ring->slot[(o->ring->head + o->ring->count) % BP_STEP_SLOTS].host;
    return st;
}

bp_status bp_steps_commit(bp_optimizer *o, double denom, int64_t rows, int ce) {
    bp_step_ring *r = o->ring;
    step_slot *s = &r->slot[(r->head + r->count) % BP_STEP_SLOTS];
    const bp_backend_ops *ops = o->device->ops;
    /* the results only: the step's scalars, in the slot's tail, went up from there */
    bp_status st = ops->download_async(o->device, s->host, o->model->state,
                                       offsetof(bp_step_state, first_step));
    if (st == BP_OK) st = ops->mark_record(o->device, s->mark);
    if (st != BP_OK) return st;
    s->step = o->steps;
    s->denom = denom;
    s->rows = rows;
    s->ce = ce;
    s->gen = r->gen;
    r->count++;
    return BP_OK;
}

int bp_steps_take_found(bp_optimizer *o, bp_step_found *found) {
    bp_step_ring *r = o->ring;
    if (!r || !r->found.reason) return 0;
    *found = r->found;
    memset(&r->found, 0, sizeof r->found);
    return 1;
}

bp_status bp_steps_report(const char *fn, const bp_optimizer *o, const bp_step_found *f) {
    char later[160] = "", where[160] = "";
    bp_model *m = o->model;
    if (f->later > 0)
        snprintf(later, sizeof later,
                 "; the %d step%s queued after it did nothing either (the optimizer is back at "
                 "step %lld)",
                 f->later, f->later == 1 ? "" : "s", (long long)f->step);
    if (f->reason == BP_REFUSED_LABEL) {
        int classes = m ? m->widths[m->n_layers] : 0;
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: bp_train_step's step %lld was refused: target row %lld holds a class "
                        "outside [0, %d) (the model has %d outputs); parameters and optimizer "
                        "unchanged%s",
                        fn, (long long)f->step, (long long)f->bad_row, classes, classes, later);
    }
    if (f->reason == BP_REFUSED_LOSS)
        return bp_error(BP_ERR_NON_FINITE,
                        "%s: bp_train_step's step %lld was refused: the loss is %g (a non-finite "
                        "input or target, or the outputs of layer %d, the last, overflowed: is the "
                        "learning rate too high?); parameters and optimizer unchanged%s",
                        fn, (long long)f->step, (double)f->loss, m ? m->n_layers - 1 : 0, later);
    /* With no step behind it, the model's gradients are still the refused step's. */
    if (m && f->later == 0 && bp_model_find_nonfinite_grad(m, where, sizeof where))
        return bp_error(BP_ERR_NON_FINITE,
                        "%s: bp_train_step's step %lld was refused: the gradient of %s is "
                        "non-finite; parameters and optimizer unchanged",
                        fn, (long long)f->step, where);
    return bp_error(BP_ERR_NON_FINITE,
                    "%s: bp_train_step's step %lld was refused: the gradient is non-finite (its "
                    "squared norm is %g); parameters and optimizer unchanged%s",
                    fn, (long long)f->step, (double)f->norm2, later);
}

bp_status bp_steps_settle(const char *fn, bp_optimizer *o) {
    bp_status st = bp_steps_drain(o, 1);
    bp_step_found f;
    if (st == BP_OK && bp_steps_take_found(o, &f)) st = bp_steps_report(fn, o, &f);
    return st;
}

const bp_step_result *bp_steps_last(const bp_optimizer *o) {
    return o->ring && o->ring->have_last ? &o->ring->last : NULL;
}

bp_status bp_train_results(bp_optimizer *optimizer, int wait, bp_step_totals *totals) {
    const char *fn = "bp_train_results";
    if (!optimizer || !totals)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        optimizer ? "totals" : "optimizer");
    if (wait != 0 && wait != 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: wait is %d, expected 0 or 1", fn, wait);
    memset(totals, 0, sizeof *totals);
    bp_status st = bp_steps_drain(optimizer, wait);
    bp_step_ring *r = optimizer->ring;
    if (r) {
        *totals = r->totals;
        memset(&r->totals, 0, sizeof r->totals);
    }
    bp_step_found f;
    if (st == BP_OK && bp_steps_take_found(optimizer, &f)) st = bp_steps_report(fn, optimizer, &f);
    return st;
}
