/* Checkpoints: a model, its optimizer and the caller's entries as one safetensors file. The
 * format (tensor names, metadata keys) is documented in include/backprop/checkpoint.h. */
#define _POSIX_C_SOURCE 200809L

#include "backprop/checkpoint.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/model_internal.h"
#include "core/names.h"
#include "core/optim_internal.h"
#include "io/checksum.h"
#include "io/safetensors.h"

#define CKPT_FORMAT     "backprop-checkpoint"
#define CKPT_VERSION    1
#define CKPT_MAX_LAYERS 1024      /* bp_model_create's limit */
#define CKPT_MAX_WIDTH  (1 << 24) /* bp_model_create's limit */

/* The model as a checkpoint describes it. */
typedef struct ckpt_model {
    int n_layers;
    int *widths;         /* n_layers + 1 */
    bp_activation *acts; /* n_layers */
    float *dropout;      /* n_layers */
    bp_norm *norms;      /* n_layers */
    int *residual;       /* n_layers */
    float norm_eps;
    float leaky_slope;
    uint64_t seed, rng_counter;
    int max_batch;
    bp_precision precision;
} ckpt_model;

static void ckpt_model_free(ckpt_model *cm) {
    free(cm->widths);
    free(cm->acts);
    free(cm->dropout);
    free(cm->norms);
    free(cm->residual);
}

static bp_status ckpt_model_alloc(ckpt_model *cm, int n_layers, const char *path) {
    cm->n_layers = n_layers;
    cm->widths = calloc((size_t)n_layers + 1, sizeof *cm->widths);
    cm->acts = calloc((size_t)n_layers, sizeof *cm->acts);
    cm->dropout = calloc((size_t)n_layers, sizeof *cm->dropout);
    cm->norms = calloc((size_t)n_layers, sizeof *cm->norms);
    cm->residual = calloc((size_t)n_layers, sizeof *cm->residual);
    if (!cm->widths || !cm->acts || !cm->dropout || !cm->norms || !cm->residual)
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
    return BP_OK;
}

/* "784-512-10", for messages. */
static void describe(const ckpt_model *cm, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i <= cm->n_layers && n + 16 < size; ++i)
        n += (size_t)snprintf(buf + n, size - n, "%s%d", i ? "-" : "", cm->widths[i]);
    if (cm->n_layers >= 0 && n + 16 >= size) snprintf(buf + n, size - n, "...");
}

/* Numbers in the metadata are C-locale text ("0.5", never "0,5", which would also split a
 * list) whatever LC_NUMERIC the application set; uselocale changes this thread only. */
typedef struct c_numeric {
    locale_t c, old;
} c_numeric;

static void c_numeric_enter(c_numeric *g) {
    g->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    g->old = g->c ? uselocale(g->c) : (locale_t)0;
}

static void c_numeric_leave(c_numeric *g) {
    if (!g->c) return;
    uselocale(g->old);
    freelocale(g->c);
}

/* ---- the tensor plan: names, shapes and places in a flat host buffer ---------------------- */

typedef struct plan_item {
    char name[64];
    int ndim;
    uint64_t shape[2];
    size_t offset; /* floats into the flat buffer */
} plan_item;

typedef struct plan {
    plan_item *items;
    size_t n;
    size_t floats; /* the flat buffer's length */
} plan;

/* The state buffers an optimizer keeps, in bp_optimizer_get_state's order. */
static int state_names(const bp_optim_config *c, const char *names[2]) {
    if (c->kind == BP_OPTIM_SGD) {
        names[0] = "momentum_buffer";
        return c->momentum != 0.0 ? 1 : 0;
    }
    names[0] = "exp_avg";
    names[1] = "exp_avg_sq";
    return 2;
}

static void plan_add(plan *p, const char *name, int ndim, uint64_t d0, uint64_t d1, size_t offset) {
    plan_item *it = &p->items[p->n++];
    snprintf(it->name, sizeof it->name, "%s", name);
    it->ndim = ndim;
    it->shape[0] = d0;
    it->shape[1] = d1;
    it->offset = offset;
}

/* One parameter tensor "<pre><module>.<what><dot><suffix>" into the plan at base + *off. */
static void plan_one(plan *p, const char *module, const char *what, const char *suffix, int ndim,
                     uint64_t d0, uint64_t d1, size_t base, size_t *off) {
    char name[64]; /* at most 39 used: "optimizer.1023.body.1.weight.exp_avg_sq" */
    size_t at = *off;
    *off += (size_t)(d0 * (ndim == 2 ? d1 : 1));
    int len = snprintf(name, sizeof name, "%s%s.%s%s%s", suffix ? "optimizer." : "", module, what,
                       suffix ? "." : "", suffix ? suffix : "");
    if (len > 0 && (size_t)len < sizeof name) plan_add(p, name, ndim, d0, d1, base + at);
}

/* Parameters in the flat layout of model.h; with suffix, the state tensors
 * "optimizer.<param>.<suffix>" at base + the parameter's offset. The names are those of the
 * PyTorch module of docs/deep-mlp.md: an nn.Sequential whose layer l is its norm (if any), its
 * Linear, its activation and dropout modules (where they exist), or, for a residual layer, one
 * Residual module holding those in its nn.Sequential "body". */
static void plan_params(plan *p, const ckpt_model *cm, const char *suffix, size_t base) {
    char module[32];
    size_t off = 0;
    int seq = 0; /* the top-level nn.Sequential index of layer l's next module */
    for (int l = 0; l < cm->n_layers; ++l) {
        uint64_t in = (uint64_t)cm->widths[l], out = (uint64_t)cm->widths[l + 1];
        int res = cm->residual[l], k = 0; /* k: the index inside a residual's body */
        if (cm->norms[l] != BP_NORM_NONE) {
            if (res)
                snprintf(module, sizeof module, "%d.body.%d", seq, k++);
            else
                snprintf(module, sizeof module, "%d", seq++);
            plan_one(p, module, "weight", suffix, 1, in, 0, base, &off);
            if (cm->norms[l] == BP_NORM_LAYER)
                plan_one(p, module, "bias", suffix, 1, in, 0, base, &off);
        }
        if (res)
            snprintf(module, sizeof module, "%d.body.%d", seq, k);
        else
            snprintf(module, sizeof module, "%d", seq);
        plan_one(p, module, "weight", suffix, 2, out, in, base, &off);
        plan_one(p, module, "bias", suffix, 1, out, 0, base, &off);
        seq += res ? 1 : 1 + (cm->acts[l] != BP_ACT_IDENTITY) + (cm->dropout[l] > 0.0f);
    }
    p->floats = base + off;
}

/* The model's tensors, or (config not NULL) the optimizer state's. */
static bp_status make_plan(plan *p, const ckpt_model *cm, const bp_optim_config *config,
                           const char *path) {
    const char *names[2] = {NULL, NULL};
    int n_state = config ? state_names(config, names) : 1;
    p->n = 0;
    p->floats = 0;
    p->items = malloc(sizeof *p->items * 4 * (size_t)cm->n_layers * (size_t)n_state + 1);
    if (!p->items) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
    if (!config) plan_params(p, cm, NULL, 0);
    for (int s = 0; config && s < n_state; ++s)
        plan_params(p, cm, names[s], p->floats);
    return BP_OK;
}

static void format_dims(int ndim, const uint64_t *shape, char *buf, size_t size) {
    if (ndim == 1)
        snprintf(buf, size, "[%llu]", (unsigned long long)shape[0]);
    else if (ndim == 2)
        snprintf(buf, size, "[%llu, %llu]", (unsigned long long)shape[0],
                 (unsigned long long)shape[1]);
    else
        snprintf(buf, size, "a rank-%d shape", ndim);
}

/* A tensor is present, F32 and of the planned shape. */
static bp_status check_item(const bp_st_file *f, const plan_item *it, const char *model) {
    const bp_st_tensor *t = bp_st_find(f, it->name);
    char want[64], got[64];
    format_dims(it->ndim, it->shape, want, sizeof want);
    if (!t)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s' is missing (the %s model of the metadata needs it)",
                        f->path, it->name, model);
    if (t->dtype != BP_ST_F32)
        return bp_error(BP_ERR_CORRUPT_FILE, "%s: tensor '%s' is %s, expected F32", f->path,
                        it->name, bp_st_dtype_name(t->dtype));
    int same = t->ndim == it->ndim;
    for (int d = 0; same && d < it->ndim; ++d)
        same = t->shape[d] == it->shape[d];
    if (!same) {
        format_dims(t->ndim, t->shape, got, sizeof got);
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s' has shape %s, the %s model of the metadata needs %s",
                        f->path, it->name, got, model, want);
    }
    return BP_OK;
}

static int by_item_name(const void *a, const void *b) {
    return strcmp(((const plan_item *)a)->name, ((const plan_item *)b)->name);
}

static int in_scope(const char *name, int optimizer_scope) {
    int is_opt = strncmp(name, "optimizer.", 10) == 0, is_run = strncmp(name, "run.", 4) == 0;
    return optimizer_scope ? is_opt : !is_opt && !is_run;
}

/* Every planned tensor is there, and no tensor of the plan's scope (the model's names, or
 * "optimizer.") is left over. Sorts the plan. */
static bp_status check_plan(const bp_st_file *f, plan *p, const ckpt_model *cm,
                            int optimizer_scope) {
    char model[128];
    describe(cm, model, sizeof model);
    for (size_t k = 0; k < p->n; ++k) {
        bp_status st = check_item(f, &p->items[k], model);
        if (st != BP_OK) return st;
    }
    if (p->n) qsort(p->items, p->n, sizeof *p->items, by_item_name);
    for (size_t k = 0; k < f->n_tensors; ++k) {
        const char *name = f->tensors[k].name;
        plan_item key;
        snprintf(key.name, sizeof key.name, "%s", name);
        if (!in_scope(name, optimizer_scope) ||
            (strlen(name) < sizeof key.name &&
             bsearch(&key, p->items, p->n, sizeof key, by_item_name)))
            continue;
        return bp_error(
            BP_ERR_CORRUPT_FILE, "%s: tensor '%s' is not part of the %s %s", f->path, name, model,
            optimizer_scope ? "optimizer state of the metadata" : "model of the metadata");
    }
    return BP_OK;
}

static bp_status read_plan(bp_st_file *f, const plan *p, float *host) {
    for (size_t k = 0; k < p->n; ++k) {
        const plan_item *it = &p->items[k];
        const bp_st_tensor *t = bp_st_find(f, it->name);
        bp_status st = bp_cksum_read(f, t, host + it->offset, (size_t)(t->end - t->begin));
        if (st != BP_OK) return st;
    }
    return BP_OK;
}

/* ---- reading metadata --------------------------------------------------------------------- */

/* Reads metadata values; the first failure sticks, so a run of reads checks once at the end. */
typedef struct mreader {
    const bp_st_file *f;
    bp_status st;
} mreader;

static const char *mr_get(mreader *r, const char *key) {
    if (r->st != BP_OK) return NULL;
    const char *v = bp_st_get_meta(r->f, key);
    if (!v) r->st = bp_error(BP_ERR_CORRUPT_FILE, "%s: metadata '%s' is missing", r->f->path, key);
    return v;
}

static void mr_bad(mreader *r, const char *key, const char *v, const char *want) {
    if (r->st == BP_OK)
        r->st = bp_error(BP_ERR_CORRUPT_FILE, "%s: metadata '%s' is '%.64s', expected %s",
                         r->f->path, key, v, want);
}

/* Token s (all of it) as an integer in [lo, hi]; strtoll alone would take spaces and signs. */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9'))) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!(*s >= '0' && *s <= '9')) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

/* A finite float as %.9g writes it; strtof rounds once, so the value comes back exactly. */
static int parse_float(const char *s, float *out) {
    if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == '.')) return 0;
    char *end;
    float v = strtof(s, &end);
    if (*end || end == s || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* A finite double as ml_add_double writes it (the optimizer's hyper-parameters): exact both
 * ways. */
static int parse_double(const char *s, double *out) {
    if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == '.')) return 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static long long mr_int(mreader *r, const char *key, long long lo, long long hi) {
    const char *v = mr_get(r, key);
    long long out = 0;
    char want[96];
    snprintf(want, sizeof want, "an integer in [%lld, %lld]", lo, hi);
    if (v && !parse_int(v, lo, hi, &out)) mr_bad(r, key, v, want);
    return out;
}

static uint64_t mr_u64(mreader *r, const char *key) {
    const char *v = mr_get(r, key);
    uint64_t out = 0;
    if (v && !parse_u64(v, &out)) mr_bad(r, key, v, "an unsigned 64-bit integer");
    return out;
}

static float mr_float(mreader *r, const char *key) {
    const char *v = mr_get(r, key);
    float out = 0.0f;
    if (v && !parse_float(v, &out)) mr_bad(r, key, v, "a finite number");
    return out;
}

static double mr_double(mreader *r, const char *key) {
    const char *v = mr_get(r, key);
    double out = 0.0;
    if (v && !parse_double(v, &out)) mr_bad(r, key, v, "a finite number");
    return out;
}

/* A plateau's best metric: a finite number, or "inf" / "-inf" before the first metric. */
static double mr_best(mreader *r, const char *key) {
    const char *v = mr_get(r, key);
    double out = 0.0;
    if (v && strcmp(v, "inf") == 0) return INFINITY;
    if (v && strcmp(v, "-inf") == 0) return -INFINITY;
    if (v && !parse_double(v, &out)) mr_bad(r, key, v, "a finite number, inf or -inf");
    return out;
}

/* A name of the enum's table (core/names.h), as its public parse function reads it. */
static int mr_name(mreader *r, const char *key, const bp_name_table *t) {
    const char *v = mr_get(r, key);
    int k = v ? bp_name_find(t, v) : 0;
    if (k < 0) {
        char want[256];
        bp_name_list(t, " or ", want, sizeof want);
        mr_bad(r, key, v, want);
    }
    return k < 0 ? 0 : k;
}

/* Item kinds of a comma-separated list. */
enum { LIST_WIDTH, LIST_ACT, LIST_DROPOUT, LIST_NORM, LIST_FLAG };

static int parse_item(const char *tok, int kind, void *out, size_t k) {
    long long w = 0;
    float p = 0.0f;
    int a;
    switch (kind) {
    case LIST_WIDTH:
        if (!parse_int(tok, 1, CKPT_MAX_WIDTH, &w)) return 0;
        ((int *)out)[k] = (int)w;
        return 1;
    case LIST_ACT:
        if ((a = bp_name_find(&bp_names_activation, tok)) < 0) return 0;
        ((bp_activation *)out)[k] = (bp_activation)a;
        return 1;
    case LIST_NORM:
        if ((a = bp_name_find(&bp_names_norm, tok)) < 0) return 0;
        ((bp_norm *)out)[k] = (bp_norm)a;
        return 1;
    case LIST_FLAG:
        if (!parse_int(tok, 0, 1, &w)) return 0;
        ((int *)out)[k] = (int)w;
        return 1;
    default:
        if (!parse_float(tok, &p) || !(p >= 0.0f && p < 1.0f)) return 0;
        ((float *)out)[k] = p;
        return 1;
    }
}

/* A list of exactly n items of kind into out. */
static void mr_list(mreader *r, const char *key, int kind, void *out, int n) {
    static const char *const wants[] = {"widths in 1..16777216", "activation names",
                                        "probabilities in [0, 1)", "norm names", "flags (0 or 1)"};
    const char *v = mr_get(r, key), *s = v;
    int k = 0;
    while (s && r->st == BP_OK) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char tok[48];
        if (k >= n || len >= sizeof tok) break;
        memcpy(tok, s, len);
        tok[len] = '\0';
        if (!parse_item(tok, kind, out, (size_t)k)) break;
        k++;
        s = comma ? comma + 1 : NULL;
    }
    if (!v || r->st != BP_OK) return;
    char want[128];
    snprintf(want, sizeof want, "%d comma-separated %s (model.n_layers is %d)", n, wants[kind],
             kind == LIST_WIDTH ? n - 1 : n);
    if (s || k != n) mr_bad(r, key, v, want);
}

/* format and version: this is a checkpoint we can read. */
static bp_status check_format(const bp_st_file *f) {
    const char *format = bp_st_get_meta(f, "format");
    if (!format || strcmp(format, CKPT_FORMAT) != 0)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: not a backprop checkpoint (metadata 'format' is %s%s%s, expected "
                        "'" CKPT_FORMAT "')",
                        f->path, format ? "'" : "", format ? format : "missing", format ? "'" : "");
    mreader r = {f, BP_OK};
    long long version = mr_int(&r, "version", 1, 1000000);
    if (r.st == BP_OK && version > CKPT_VERSION)
        return bp_error(BP_ERR_UNSUPPORTED,
                        "%s: format version %lld is newer than this library reads (%d)", f->path,
                        version, CKPT_VERSION);
    return r.st;
}

static bp_status read_model_meta(const bp_st_file *f, ckpt_model *cm) {
    mreader r = {f, BP_OK};
    int n = (int)mr_int(&r, "model.n_layers", 1, CKPT_MAX_LAYERS);
    if (r.st != BP_OK) return r.st;
    bp_status st = ckpt_model_alloc(cm, n, f->path);
    if (st != BP_OK) return st;
    mr_list(&r, "model.widths", LIST_WIDTH, cm->widths, n + 1);
    mr_list(&r, "model.activations", LIST_ACT, cm->acts, n);
    mr_list(&r, "model.dropout", LIST_DROPOUT, cm->dropout, n);
    cm->leaky_slope = mr_float(&r, "model.leaky_slope");
    cm->seed = mr_u64(&r, "model.seed");
    cm->rng_counter = mr_u64(&r, "model.rng_counter");
    cm->max_batch = (int)mr_int(&r, "model.max_batch", 1, CKPT_MAX_WIDTH);
    /* Optional: a checkpoint written before the precision modes is fp32. */
    cm->precision = BP_PRECISION_FP32;
    if (r.st == BP_OK && bp_st_get_meta(f, "model.precision"))
        cm->precision = (bp_precision)mr_name(&r, "model.precision", &bp_names_precision);
    /* Optional: only a model with norms or residuals writes them. */
    if (r.st == BP_OK && bp_st_get_meta(f, "model.norms")) {
        mr_list(&r, "model.norms", LIST_NORM, cm->norms, n);
        cm->norm_eps = mr_float(&r, "model.norm_eps");
    }
    if (r.st == BP_OK && bp_st_get_meta(f, "model.residual"))
        mr_list(&r, "model.residual", LIST_FLAG, cm->residual, n);
    return r.st;
}

/* A plateau's configuration and state: only in files with that schedule (it came later, so
 * no older file lacks them). */
static void read_plateau(mreader *r, bp_schedule *s, bp_plateau_state *p) {
    s->mode = (bp_plateau_mode)mr_name(r, "optimizer.schedule.mode", &bp_names_plateau_mode);
    s->threshold = mr_double(r, "optimizer.schedule.threshold");
    s->threshold_mode = (bp_threshold_mode)mr_name(r, "optimizer.schedule.threshold_mode",
                                                   &bp_names_threshold_mode);
    s->patience = mr_int(r, "optimizer.schedule.patience", 0, INT64_MAX);
    s->cooldown = mr_int(r, "optimizer.schedule.cooldown", 0, INT64_MAX);
    s->eps = mr_double(r, "optimizer.schedule.eps");
    p->best = mr_best(r, "optimizer.plateau.best");
    p->bad_epochs = mr_int(r, "optimizer.plateau.bad_epochs", 0, INT64_MAX);
    p->cooldown_left = mr_int(r, "optimizer.plateau.cooldown_left", 0, INT64_MAX);
}

static void read_schedule(mreader *r, bp_schedule *s, bp_plateau_state *p) {
    s->kind = (bp_schedule_kind)mr_name(r, "optimizer.schedule.kind", &bp_names_schedule_kind);
    s->warmup_steps = mr_int(r, "optimizer.schedule.warmup_steps", 0, INT64_MAX);
    s->step_size = mr_int(r, "optimizer.schedule.step_size", 0, INT64_MAX);
    s->gamma = mr_double(r, "optimizer.schedule.gamma");
    s->total_steps = mr_int(r, "optimizer.schedule.total_steps", 0, INT64_MAX);
    s->min_lr = mr_double(r, "optimizer.schedule.min_lr");
    *p = bp_plateau_start(s);
    if (r->st == BP_OK && s->kind == BP_SCHEDULE_PLATEAU) read_plateau(r, s, p);
}

static bp_status read_optim_meta(const bp_st_file *f, bp_optim_config *c, int64_t *steps,
                                 bp_plateau_state *plateau) {
    mreader r = {f, BP_OK};
    *c = bp_optim_config_default(BP_OPTIM_SGD);
    c->kind = (bp_optim_kind)mr_name(&r, "optimizer.kind", &bp_names_optim_kind);
    c->lr = mr_double(&r, "optimizer.lr");
    c->momentum = mr_double(&r, "optimizer.momentum");
    c->dampening = mr_double(&r, "optimizer.dampening");
    c->nesterov = (int)mr_int(&r, "optimizer.nesterov", 0, 1);
    c->weight_decay = mr_double(&r, "optimizer.weight_decay");
    c->beta1 = mr_double(&r, "optimizer.beta1");
    c->beta2 = mr_double(&r, "optimizer.beta2");
    c->eps = mr_double(&r, "optimizer.eps");
    c->clip_norm = mr_double(&r, "optimizer.clip_norm");
    c->clip_value = mr_double(&r, "optimizer.clip_value");
    c->accum_steps = (int)mr_int(&r, "optimizer.accum_steps", 1, 1 << 30);
    read_schedule(&r, &c->schedule, plateau);
    *steps = mr_int(&r, "optimizer.steps", 0, INT64_MAX);
    if (r.st != BP_OK) return r.st;
    /* The library's own check, with the file named: the metadata is what is wrong. */
    if (bp_check_optim_config("optimizer metadata", c) != BP_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", bp_last_error());
        return bp_error(BP_ERR_CORRUPT_FILE, "%s: %s", f->path, why);
    }
    return BP_OK;
}

/* ---- writing metadata --------------------------------------------------------------------- */

typedef struct mlist {
    bp_st_meta_entry *e; /* keys and values malloc'd */
    size_t n, cap;
    int oom;
} mlist;

static void ml_free(mlist *l) {
    for (size_t k = 0; k < l->n; ++k) {
        free((char *)l->e[k].key);
        free((char *)l->e[k].value);
    }
    free(l->e);
}

static void ml_add_owned(mlist *l, char *key, char *value) {
    if (!l->oom && l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        bp_st_meta_entry *e = realloc(l->e, cap * sizeof *e);
        if (e) {
            l->e = e;
            l->cap = cap;
        }
    }
    if (l->oom || !key || !value || l->n == l->cap) {
        l->oom = 1;
        free(key);
        free(value);
        return;
    }
    l->e[l->n].key = key;
    l->e[l->n++].value = value;
}

static void ml_add(mlist *l, const char *key, const char *fmt, ...) BP_PRINTF(3, 4);
static void ml_add(mlist *l, const char *key, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ml_add_owned(l, strdup(key), strdup(buf));
}

/* The shortest digits that read back as exactly v ("0.001", not 0.0010000000000000000208): the
 * hyper-parameters as a person wrote them, and still exact. */
static void ml_add_double(mlist *l, const char *key, double v) {
    char buf[40];
    for (int digits = 15; digits <= 17; ++digits) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) break;
    }
    ml_add(l, key, "%s", buf);
}

/* A comma-separated list of n items (at most 24 characters each). */
static void ml_add_list(mlist *l, const char *key, const ckpt_model *cm, int kind) {
    int n = kind == LIST_WIDTH ? cm->n_layers + 1 : cm->n_layers;
    size_t size = (size_t)n * 24 + 1, at = 0;
    char *buf = malloc(size);
    for (int k = 0; buf && k < n; ++k) {
        const char *sep = k ? "," : "";
        if (kind == LIST_WIDTH)
            at += (size_t)snprintf(buf + at, size - at, "%s%d", sep, cm->widths[k]);
        else if (kind == LIST_ACT)
            at +=
                (size_t)snprintf(buf + at, size - at, "%s%s", sep, bp_activation_name(cm->acts[k]));
        else if (kind == LIST_NORM)
            at += (size_t)snprintf(buf + at, size - at, "%s%s", sep, bp_norm_name(cm->norms[k]));
        else if (kind == LIST_FLAG)
            at += (size_t)snprintf(buf + at, size - at, "%s%d", sep, cm->residual[k]);
        else
            at += (size_t)snprintf(buf + at, size - at, "%s%.9g", sep, (double)cm->dropout[k]);
    }
    ml_add_owned(l, strdup(key), buf);
}

static void ml_model(mlist *l, const ckpt_model *cm) {
    ml_add(l, "format", "%s", CKPT_FORMAT);
    ml_add(l, "version", "%d", CKPT_VERSION);
    ml_add(l, "model.n_layers", "%d", cm->n_layers);
    ml_add_list(l, "model.widths", cm, LIST_WIDTH);
    ml_add_list(l, "model.activations", cm, LIST_ACT);
    ml_add_list(l, "model.dropout", cm, LIST_DROPOUT);
    ml_add(l, "model.leaky_slope", "%.9g", (double)cm->leaky_slope);
    ml_add(l, "model.seed", "%llu", (unsigned long long)cm->seed);
    ml_add(l, "model.rng_counter", "%llu", (unsigned long long)cm->rng_counter);
    ml_add(l, "model.max_batch", "%d", cm->max_batch);
    ml_add(l, "model.precision", "%s", bp_precision_name(cm->precision));
    /* Only where used, so a plain model's checkpoint is the one it always was. */
    int norms = 0, residual = 0;
    for (int k = 0; k < cm->n_layers; ++k) {
        norms |= cm->norms[k] != BP_NORM_NONE;
        residual |= cm->residual[k];
    }
    if (norms) {
        ml_add_list(l, "model.norms", cm, LIST_NORM);
        ml_add(l, "model.norm_eps", "%.9g", (double)cm->norm_eps);
    }
    if (residual) ml_add_list(l, "model.residual", cm, LIST_FLAG);
}

static void ml_plateau(mlist *l, const bp_schedule *s, const bp_plateau_state *p) {
    ml_add(l, "optimizer.schedule.mode", "%s", bp_plateau_mode_name(s->mode));
    ml_add_double(l, "optimizer.schedule.threshold", s->threshold);
    ml_add(l, "optimizer.schedule.threshold_mode", "%s", bp_threshold_mode_name(s->threshold_mode));
    ml_add(l, "optimizer.schedule.patience", "%lld", (long long)s->patience);
    ml_add(l, "optimizer.schedule.cooldown", "%lld", (long long)s->cooldown);
    ml_add_double(l, "optimizer.schedule.eps", s->eps);
    if (isinf(p->best))
        ml_add(l, "optimizer.plateau.best", "%s", p->best > 0 ? "inf" : "-inf");
    else
        ml_add_double(l, "optimizer.plateau.best", p->best);
    ml_add(l, "optimizer.plateau.bad_epochs", "%lld", (long long)p->bad_epochs);
    ml_add(l, "optimizer.plateau.cooldown_left", "%lld", (long long)p->cooldown_left);
}

static void ml_optim(mlist *l, const bp_optim_config *c, int64_t steps,
                     const bp_plateau_state *plateau) {
    const bp_schedule *s = &c->schedule;
    ml_add(l, "optimizer.kind", "%s", bp_optim_kind_name(c->kind));
    ml_add_double(l, "optimizer.lr", c->lr);
    ml_add_double(l, "optimizer.momentum", c->momentum);
    ml_add_double(l, "optimizer.dampening", c->dampening);
    ml_add(l, "optimizer.nesterov", "%d", c->nesterov ? 1 : 0);
    ml_add_double(l, "optimizer.weight_decay", c->weight_decay);
    ml_add_double(l, "optimizer.beta1", c->beta1);
    ml_add_double(l, "optimizer.beta2", c->beta2);
    ml_add_double(l, "optimizer.eps", c->eps);
    ml_add_double(l, "optimizer.clip_norm", c->clip_norm);
    ml_add_double(l, "optimizer.clip_value", c->clip_value);
    ml_add(l, "optimizer.accum_steps", "%d", c->accum_steps);
    ml_add(l, "optimizer.schedule.kind", "%s", bp_schedule_kind_name(s->kind));
    ml_add(l, "optimizer.schedule.warmup_steps", "%lld", (long long)s->warmup_steps);
    ml_add(l, "optimizer.schedule.step_size", "%lld", (long long)s->step_size);
    ml_add_double(l, "optimizer.schedule.gamma", s->gamma);
    ml_add(l, "optimizer.schedule.total_steps", "%lld", (long long)s->total_steps);
    ml_add_double(l, "optimizer.schedule.min_lr", s->min_lr);
    if (s->kind == BP_SCHEDULE_PLATEAU) ml_plateau(l, s, plateau);
    ml_add(l, "optimizer.steps", "%lld", (long long)steps);
}

static char *prefixed(const char *prefix, const char *s) {
    size_t a = strlen(prefix), b = strlen(s);
    char *out = malloc(a + b + 1);
    if (!out) return NULL;
    memcpy(out, prefix, a);
    memcpy(out + a, s, b + 1);
    return out;
}

static void ml_run(mlist *l, const bp_meta_entry *meta, size_t n_meta) {
    for (size_t k = 0; k < n_meta; ++k)
        ml_add_owned(l, prefixed("run.", meta[k].key), strdup(meta[k].value));
}

/* A checksum of every entry so far and of every tensor (io/checksum.h); added last. */
static void ml_checksums(mlist *l, const bp_st_entry *tensors, size_t n_tensors) {
    char text[BP_CKSUM_TEXT];
    size_t n_meta = l->n;
    for (size_t k = 0; k < n_meta && !l->oom; ++k) {
        bp_cksum_text(bp_cksum_meta(l->e[k].key, l->e[k].value), text);
        ml_add_owned(l, prefixed(BP_CKSUM_META, l->e[k].key), strdup(text));
    }
    for (size_t k = 0; k < n_tensors && !l->oom; ++k) {
        const bp_st_entry *t = &tensors[k];
        uint64_t bytes = 4;
        for (int d = 0; d < t->ndim; ++d)
            bytes *= t->shape[d];
        bp_cksum_text(bp_cksum_bytes(0, t->data, bytes), text);
        ml_add_owned(l, prefixed(BP_CKSUM_TENSOR, t->name), strdup(text));
    }
}

/* ---- saving ------------------------------------------------------------------------------- */

static int by_key_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The caller's keys are distinct (checked here, before the checksum entries join them, so the
 * message names the caller's key). */
static bp_status check_distinct_keys(const char *fn, const char *path, const bp_meta_entry *meta,
                                     size_t n_meta) {
    if (n_meta < 2) return BP_OK;
    const char **keys = malloc(n_meta * sizeof *keys);
    if (!keys) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: %s: no host memory", fn, path);
    for (size_t k = 0; k < n_meta; ++k)
        keys[k] = meta[k].key;
    qsort(keys, n_meta, sizeof *keys, by_key_ptr);
    bp_status st = BP_OK;
    for (size_t k = 1; k < n_meta && st == BP_OK; ++k)
        if (strcmp(keys[k - 1], keys[k]) == 0)
            st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s: metadata key 'run.%s' is given twice",
                          fn, path, keys[k]);
    free(keys);
    return st;
}

static bp_status check_save_args(const char *fn, const char *path, const bp_model *model,
                                 const bp_optimizer *opt, const bp_meta_entry *meta, size_t n_meta,
                                 const bp_meta_array *arrays, size_t n_arrays) {
    if (!path || !*path)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: path is %s", fn, path ? "empty" : "NULL");
    if (!model) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s: model is NULL", fn, path);
    if (opt && opt->model != model)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: %s: the optimizer was created for another model", fn, path);
    if ((n_meta && !meta) || (n_arrays && !arrays))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s: meta or arrays is NULL", fn, path);
    for (size_t k = 0; k < n_meta; ++k)
        if (!meta[k].key || !*meta[k].key || !meta[k].value)
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s: meta[%zu] has a %s", fn, path, k,
                            meta[k].key && *meta[k].key ? "NULL value" : "NULL or empty key");
    for (size_t k = 0; k < n_arrays; ++k)
        if (!arrays[k].name || !*arrays[k].name || (arrays[k].count && !arrays[k].values))
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s: arrays[%zu] has no name or values",
                            fn, path, k);
    return check_distinct_keys(fn, path, meta, n_meta);
}

static bp_status describe_model(const bp_model *m, ckpt_model *cm, const char *path) {
    bp_status st = ckpt_model_alloc(cm, m->n_layers, path);
    if (st != BP_OK) return st;
    for (int i = 0; i <= m->n_layers; ++i)
        cm->widths[i] = m->widths[i];
    for (int l = 0; l < m->n_layers; ++l) {
        cm->acts[l] = m->layers[l].act;
        cm->dropout[l] = m->layers[l].dropout;
        cm->norms[l] = m->layers[l].norm;
        cm->residual[l] = m->layers[l].residual;
    }
    cm->norm_eps = m->norm_eps;
    cm->leaky_slope = m->leaky_slope;
    cm->seed = m->seed;
    cm->rng_counter = bp_model_rng_counter(m);
    cm->max_batch = m->max_batch;
    cm->precision = m->precision;
    return BP_OK;
}

/* Everything a save writes, gathered on the host. */
typedef struct save_job {
    ckpt_model cm;
    plan params, state;
    float *host; /* parameters, then the optimizer state */
    int64_t steps;
    bp_st_entry *entries;
    size_t n_entries;
    mlist meta;
} save_job;

static bp_status gather(save_job *j, const char *path, const bp_model *m, const bp_optimizer *o) {
    bp_status st = describe_model(m, &j->cm, path);
    if (st == BP_OK) st = make_plan(&j->params, &j->cm, NULL, path);
    if (st == BP_OK && o) st = make_plan(&j->state, &j->cm, &o->config, path);
    size_t n_state = o ? o->state_size : 0;
    if (st == BP_OK && !(j->host = malloc((m->n_params + n_state) * sizeof(float) + 1)))
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory for %zu floats", path,
                      m->n_params + n_state);
    if (st == BP_OK) st = bp_model_get_params(m, j->host, m->n_params);
    if (st == BP_OK && o) st = bp_optimizer_get_state(o, j->host + m->n_params, n_state, &j->steps);
    return st;
}

static void add_entry(save_job *j, const char *name, int ndim, uint64_t d0, uint64_t d1,
                      const float *data) {
    bp_st_entry *e = &j->entries[j->n_entries++];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->dtype = BP_ST_F32;
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->data = data;
}

/* The tensor list: parameters, optimizer state (after the parameters in the host buffer),
 * then the caller's arrays, whose names live in names[]. */
static bp_status make_entries(save_job *j, const bp_model *m, const bp_meta_array *arrays,
                              size_t n_arrays, char **names, const char *path) {
    j->entries = malloc((j->params.n + j->state.n + n_arrays + 1) * sizeof *j->entries);
    if (!j->entries) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
    const plan *plans[2] = {&j->params, &j->state};
    for (int p = 0; p < 2; ++p)
        for (size_t k = 0; k < plans[p]->n; ++k) {
            const plan_item *it = &plans[p]->items[k];
            size_t base = p ? m->n_params : 0;
            add_entry(j, it->name, it->ndim, it->shape[0], it->shape[1],
                      j->host + base + it->offset);
        }
    for (size_t k = 0; k < n_arrays; ++k) {
        if (!(names[k] = prefixed("run.", arrays[k].name)))
            return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
        add_entry(j, names[k], 1, arrays[k].count, 0, arrays[k].values);
    }
    return BP_OK;
}

static bp_status save_arrays(const char *fn, const char *path, const bp_model *model,
                             const bp_optimizer *optimizer, const bp_meta_entry *meta,
                             size_t n_meta, const bp_meta_array *arrays, size_t n_arrays) {
    bp_status st = check_save_args(fn, path, model, optimizer, meta, n_meta, arrays, n_arrays);
    if (st != BP_OK) return st;
    save_job j;
    memset(&j, 0, sizeof j);
    char **names = calloc(n_arrays + 1, sizeof *names);
    if (!names) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
    if (st == BP_OK) st = gather(&j, path, model, optimizer);
    if (st == BP_OK) st = make_entries(&j, model, arrays, n_arrays, names, path);
    if (st == BP_OK) {
        ml_model(&j.meta, &j.cm);
        if (optimizer) ml_optim(&j.meta, &optimizer->config, j.steps, &optimizer->plateau);
        ml_run(&j.meta, meta, n_meta);
        ml_checksums(&j.meta, j.entries, j.n_entries);
        if (j.meta.oom) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", path);
    }
    if (st == BP_OK) st = bp_st_save(path, j.entries, j.n_entries, j.meta.e, j.meta.n);
    for (size_t k = 0; names && k < n_arrays; ++k)
        free(names[k]);
    free(names);
    ml_free(&j.meta);
    free(j.entries);
    free(j.host);
    free(j.params.items);
    free(j.state.items);
    ckpt_model_free(&j.cm);
    return st;
}

/* Makes a failure's message start with the public call, as every message does ("which call,
 * which argument"): the file-level errors below (safetensors.c, the reader) know only the path. */
static bp_status named(bp_status st, const char *fn) {
    size_t n = strlen(fn);
    const char *msg = bp_last_error();
    if (st == BP_OK || (strncmp(msg, fn, n) == 0 && msg[n] == ':')) return st;
    char why[900];
    snprintf(why, sizeof why, "%s", msg);
    return bp_error(st, "%s: %s", fn, why);
}

static bp_status save_named(const char *fn, const char *path, const bp_model *model,
                            const bp_optimizer *optimizer, const bp_meta_entry *meta, size_t n_meta,
                            const bp_meta_array *arrays, size_t n_arrays) {
    c_numeric g;
    c_numeric_enter(&g);
    bp_status st = save_arrays(fn, path, model, optimizer, meta, n_meta, arrays, n_arrays);
    c_numeric_leave(&g);
    return named(st, fn);
}

bp_status bp_checkpoint_save_arrays(const char *path, const bp_model *model,
                                    const bp_optimizer *optimizer, const bp_meta_entry *meta,
                                    size_t n_meta, const bp_meta_array *arrays, size_t n_arrays) {
    return save_named("bp_checkpoint_save_arrays", path, model, optimizer, meta, n_meta, arrays,
                      n_arrays);
}

bp_status bp_checkpoint_save(const char *path, const bp_model *model, const bp_optimizer *optimizer,
                             const bp_meta_entry *meta, size_t n_meta) {
    return save_named("bp_checkpoint_save", path, model, optimizer, meta, n_meta, NULL, 0);
}

/* ---- loading: the handle ----------------------------------------------------------------- */

struct bp_checkpoint {
    bp_st_file *f;
    ckpt_model cm;  /* the metadata's model, once read (model_read) */
    int model_read; /* 1: cm is read, -1: reading it failed (the status is model_status) */
    bp_status model_status;
    char model_error[512];
    size_t run_meta, n_run_meta; /* the caller's entries: f->meta[run_meta, + n_run_meta) */
    size_t run_tensors, n_run_tensors;
    bp_plateau_state plateau; /* read with the optimizer's metadata */
};

#define RUN_PREFIX "run."

static bp_status open_checkpoint(const char *fn, const char *path, bp_st_file **f) {
    *f = NULL;
    if (!path) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
    bp_status st = bp_st_open(path, f);
    if (st == BP_OK) st = bp_cksum_check_meta(*f);
    if (st == BP_OK) st = check_format(*f);
    if (st != BP_OK) {
        bp_st_close(*f);
        *f = NULL;
    }
    return st;
}

static int has_run_prefix(const char *s) {
    return strncmp(s, RUN_PREFIX, sizeof RUN_PREFIX - 1) == 0;
}

/* The caller's entries and arrays: both lists are sorted, so each is one run of names. */
static void find_run_ranges(bp_checkpoint *ck) {
    const bp_st_file *f = ck->f;
    for (size_t k = 0; k < f->n_meta; ++k)
        if (has_run_prefix(f->meta[k].key)) {
            if (!ck->n_run_meta) ck->run_meta = k;
            ck->n_run_meta++;
        }
    for (size_t k = 0; k < f->n_tensors; ++k)
        if (has_run_prefix(f->tensors[k].name)) {
            if (!ck->n_run_tensors) ck->run_tensors = k;
            ck->n_run_tensors++;
        }
}

static bp_checkpoint *ck_open(const char *fn, const char *path, bp_status *status) {
    bp_checkpoint *ck = calloc(1, sizeof *ck);
    bp_status st = ck ? open_checkpoint(fn, path, &ck->f)
                      : bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    if (st == BP_OK) find_run_ranges(ck);
    if (st != BP_OK) {
        free(ck);
        ck = NULL;
    }
    bp_set_status(status, named(st, fn));
    return ck;
}

bp_checkpoint *bp_checkpoint_open(const char *path, bp_status *status) {
    return ck_open("bp_checkpoint_open", path, status);
}

void bp_checkpoint_close(bp_checkpoint *checkpoint) {
    if (!checkpoint) return;
    ckpt_model_free(&checkpoint->cm);
    bp_st_close(checkpoint->f);
    free(checkpoint);
}

const char *bp_checkpoint_path(const bp_checkpoint *checkpoint) {
    return checkpoint ? checkpoint->f->path : "";
}

/* The metadata's model, read once: a failure is kept and repeated to every later call. */
static bp_status ck_model(bp_checkpoint *ck) {
    if (ck->model_read > 0) return BP_OK;
    if (ck->model_read < 0) return bp_error(ck->model_status, "%s", ck->model_error);
    c_numeric g;
    c_numeric_enter(&g);
    bp_status st = read_model_meta(ck->f, &ck->cm);
    c_numeric_leave(&g);
    ck->model_read = st == BP_OK ? 1 : -1;
    if (st != BP_OK) {
        ck->model_status = st;
        snprintf(ck->model_error, sizeof ck->model_error, "%s", bp_last_error());
        ckpt_model_free(&ck->cm);
        memset(&ck->cm, 0, sizeof ck->cm);
    }
    return st;
}

static bp_status check_handle(const char *fn, const bp_checkpoint *ck, const void *arg,
                              const char *arg_name) {
    if (!ck) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: checkpoint is NULL", fn);
    if (!arg) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, arg_name);
    return BP_OK;
}

bp_status bp_checkpoint_model_config(bp_checkpoint *checkpoint, bp_mlp_config *config) {
    const char *fn = "bp_checkpoint_model_config";
    bp_status st = check_handle(fn, checkpoint, config, "config");
    if (st == BP_OK) st = ck_model(checkpoint);
    if (st != BP_OK) return named(st, fn);
    const ckpt_model *cm = &checkpoint->cm;
    *config = bp_mlp_config_default(cm->n_layers, cm->widths);
    config->activations = cm->acts;
    config->dropout = cm->dropout;
    config->leaky_slope = cm->leaky_slope;
    config->seed = cm->seed;
    config->max_batch = cm->max_batch;
    config->precision = cm->precision;
    config->norms = cm->norms;
    config->residual = cm->residual;
    if (cm->norm_eps > 0.0f) config->norm_eps = cm->norm_eps;
    return BP_OK;
}

/* Prefixes the last error with the path, keeping its status. */
static bp_status with_path(bp_status st, const char *path) {
    char why[900];
    snprintf(why, sizeof why, "%s", bp_last_error());
    return bp_error(st, "%s: %s", path, why);
}

static bp_model *create_model(const bp_st_file *f, const ckpt_model *cm, bp_device *device,
                              int max_batch, bp_status *st) {
    bp_mlp_config c = bp_mlp_config_default(cm->n_layers, cm->widths);
    c.activations = cm->acts;
    c.dropout = cm->dropout;
    c.leaky_slope = cm->leaky_slope;
    c.seed = cm->seed;
    c.max_batch = max_batch > 0 ? max_batch : cm->max_batch;
    c.precision = cm->precision;
    c.norms = cm->norms;
    c.residual = cm->residual;
    if (cm->norm_eps > 0.0f) c.norm_eps = cm->norm_eps;
    bp_model *m = bp_model_create(device, &c, st);
    if (!m) *st = with_path(*st, f->path);
    return m;
}

/* Reads the planned tensors into a flat host buffer and hands it to set(). */
static bp_status load_params(bp_st_file *f, const plan *p, bp_model *m) {
    float *host = malloc(p->floats * sizeof(float) + 1);
    if (!host) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", f->path);
    bp_status st = p->floats == m->n_params ? BP_OK
                                            : bp_error(BP_ERR_CORRUPT_FILE,
                                                       "%s: internal: %zu floats planned, %zu "
                                                       "parameters",
                                                       f->path, p->floats, m->n_params);
    if (st == BP_OK) st = read_plan(f, p, host);
    if (st == BP_OK && (st = bp_model_set_params(m, host, p->floats)) != BP_OK)
        st = with_path(st, f->path);
    free(host);
    return st;
}

static bp_model *read_model(const char *fn, bp_checkpoint *ck, bp_device *device, int max_batch,
                            bp_status *status) {
    plan p = {NULL, 0, 0};
    bp_model *m = NULL;
    bp_status st = !ck       ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: checkpoint is NULL", fn)
                   : !device ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: device is NULL", fn)
                             : ck_model(ck);
    if (st == BP_OK) st = make_plan(&p, &ck->cm, NULL, ck->f->path);
    if (st == BP_OK) st = check_plan(ck->f, &p, &ck->cm, 0);
    if (st == BP_OK) m = create_model(ck->f, &ck->cm, device, max_batch, &st);
    if (st == BP_OK) st = load_params(ck->f, &p, m);
    if (st == BP_OK) st = bp_model_set_rng_counter(m, ck->cm.rng_counter);
    if (st != BP_OK) {
        bp_model_free(m);
        m = NULL;
    }
    free(p.items);
    bp_set_status(status, named(st, fn));
    return m;
}

bp_model *bp_checkpoint_read_model(bp_checkpoint *checkpoint, bp_device *device, int max_batch,
                                   bp_status *status) {
    return read_model("bp_checkpoint_read_model", checkpoint, device, max_batch, status);
}

/* model has the checkpoint's widths, so the state's layout is the one saved. */
static bp_status check_same_model(const char *fn, const bp_st_file *f, const ckpt_model *cm,
                                  const bp_model *m) {
    int same = m->n_layers == cm->n_layers;
    for (int i = 0; same && i <= cm->n_layers; ++i)
        same = m->widths[i] == cm->widths[i];
    for (int l = 0; same && l < cm->n_layers; ++l)
        same = m->layers[l].norm == cm->norms[l] && m->layers[l].residual == cm->residual[l];
    if (same) return BP_OK;
    char want[128];
    describe(cm, want, sizeof want);
    return bp_error(BP_ERR_SHAPE_MISMATCH,
                    "%s: %s: the checkpoint's model is %s, the model given has %d layers and %zu "
                    "parameters",
                    fn, f->path, want, m->n_layers, m->n_params);
}

static bp_status load_state(bp_st_file *f, const plan *p, bp_optimizer *o, int64_t steps) {
    float *host = malloc(p->floats * sizeof(float) + 1);
    if (!host) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", f->path);
    bp_status st = p->floats == o->state_size ? BP_OK
                                              : bp_error(BP_ERR_CORRUPT_FILE,
                                                         "%s: internal: %zu state floats planned, "
                                                         "%zu allocated",
                                                         f->path, p->floats, o->state_size);
    if (st == BP_OK) st = read_plan(f, p, host);
    if (st == BP_OK && (st = bp_optimizer_set_state(o, host, p->floats, steps)) != BP_OK)
        st = with_path(st, f->path);
    free(host);
    return st;
}

int bp_checkpoint_has_optimizer(const bp_checkpoint *checkpoint) {
    return checkpoint && bp_st_get_meta(checkpoint->f, "optimizer.kind") != NULL;
}

static bp_status has_optimizer(const char *fn, const bp_checkpoint *ck) {
    if (bp_checkpoint_has_optimizer(ck)) return BP_OK;
    return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s holds no optimizer (it was saved without one)",
                    fn, ck->f->path);
}

/* The optimizer's configuration, step count and plateau state from the metadata. */
static bp_status ck_optim(const char *fn, bp_checkpoint *ck, bp_optim_config *c, int64_t *steps) {
    bp_status st = has_optimizer(fn, ck);
    c_numeric g;
    c_numeric_enter(&g);
    if (st == BP_OK) st = read_optim_meta(ck->f, c, steps, &ck->plateau);
    c_numeric_leave(&g);
    return st;
}

bp_status bp_checkpoint_optim_config(bp_checkpoint *checkpoint, bp_optim_config *config,
                                     int64_t *steps) {
    const char *fn = "bp_checkpoint_optim_config";
    bp_status st = check_handle(fn, checkpoint, config, "config");
    int64_t n = 0;
    if (st == BP_OK) st = ck_optim(fn, checkpoint, config, &n);
    if (st == BP_OK && steps) *steps = n;
    return named(st, fn);
}

static bp_optimizer *read_optimizer(const char *fn, bp_checkpoint *ck, bp_model *model,
                                    bp_status *status) {
    plan p = {NULL, 0, 0};
    bp_optim_config c;
    int64_t steps = 0;
    bp_optimizer *o = NULL;
    bp_status st = !ck      ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: checkpoint is NULL", fn)
                   : !model ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn)
                            : ck_model(ck);
    if (st == BP_OK) st = check_same_model(fn, ck->f, &ck->cm, model);
    if (st == BP_OK) st = ck_optim(fn, ck, &c, &steps);
    if (st == BP_OK) st = make_plan(&p, &ck->cm, &c, ck->f->path);
    if (st == BP_OK) st = check_plan(ck->f, &p, &ck->cm, 1);
    if (st == BP_OK && !(o = bp_optimizer_create(model, &c, &st))) st = with_path(st, ck->f->path);
    if (st == BP_OK) st = load_state(ck->f, &p, o, steps);
    if (st == BP_OK) o->plateau = ck->plateau;
    if (st != BP_OK) {
        bp_optimizer_free(o);
        o = NULL;
    }
    free(p.items);
    bp_set_status(status, named(st, fn));
    return o;
}

bp_optimizer *bp_checkpoint_read_optimizer(bp_checkpoint *checkpoint, bp_model *model,
                                           bp_status *status) {
    return read_optimizer("bp_checkpoint_read_optimizer", checkpoint, model, status);
}

/* ---- the caller's entries and arrays ------------------------------------------------------ */

size_t bp_checkpoint_n_meta(const bp_checkpoint *checkpoint) {
    return checkpoint ? checkpoint->n_run_meta : 0;
}

bp_meta_entry bp_checkpoint_meta_at(const bp_checkpoint *checkpoint, size_t index) {
    bp_meta_entry e = {NULL, NULL};
    if (!checkpoint || index >= checkpoint->n_run_meta) return e;
    const bp_st_kv *kv = &checkpoint->f->meta[checkpoint->run_meta + index];
    e.key = kv->key + sizeof RUN_PREFIX - 1;
    e.value = kv->value;
    return e;
}

/* Binary search in the sorted run. entries (keys never repeat). */
static const char *ck_meta(const bp_checkpoint *ck, const char *key) {
    size_t lo = 0, hi = ck->n_run_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        bp_meta_entry e = bp_checkpoint_meta_at(ck, mid);
        int c = strcmp(e.key, key);
        if (c == 0) return e.value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *bp_checkpoint_meta(const bp_checkpoint *checkpoint, const char *key) {
    return checkpoint && key ? ck_meta(checkpoint, key) : NULL;
}

size_t bp_checkpoint_n_arrays(const bp_checkpoint *checkpoint) {
    return checkpoint ? checkpoint->n_run_tensors : 0;
}

const char *bp_checkpoint_array_name(const bp_checkpoint *checkpoint, size_t index) {
    if (!checkpoint || index >= checkpoint->n_run_tensors) return NULL;
    return checkpoint->f->tensors[checkpoint->run_tensors + index].name + sizeof RUN_PREFIX - 1;
}

static bp_status read_array(bp_st_file *f, const bp_st_tensor *t, float **out, size_t *count) {
    if (t->dtype != BP_ST_F32 || t->ndim != 1)
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: tensor '%s' is %s of rank %d, expected a 1-D F32 "
                        "array",
                        f->path, t->name, bp_st_dtype_name(t->dtype), t->ndim);
    size_t bytes = (size_t)(t->end - t->begin);
    float *a = malloc(bytes + 1); /* bounded by the file's size, checked at open */
    if (!a) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", f->path);
    bp_status st = bp_cksum_read(f, t, a, bytes);
    if (st != BP_OK) {
        free(a);
        return st;
    }
    *out = a;
    *count = bytes / sizeof(float);
    return BP_OK;
}

static float *ck_array(const char *fn, bp_checkpoint *ck, const char *name, size_t *count,
                       bp_status *status) {
    char *full = NULL;
    float *out = NULL;
    size_t n = 0;
    bp_status st = !ck      ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: checkpoint is NULL", fn)
                   : !name  ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: name is NULL", fn)
                   : !count ? bp_error(BP_ERR_INVALID_ARGUMENT, "%s: count is NULL", fn)
                            : BP_OK;
    if (st == BP_OK && !(full = prefixed(RUN_PREFIX, name)))
        st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    const bp_st_tensor *t = st == BP_OK ? bp_st_find(ck->f, full) : NULL;
    if (t) st = read_array(ck->f, t, &out, &n);
    if (count) *count = n;
    free(full);
    bp_set_status(status, named(st, fn));
    return out;
}

float *bp_checkpoint_read_array(bp_checkpoint *checkpoint, const char *name, size_t *count,
                                bp_status *status) {
    return ck_array("bp_checkpoint_read_array", checkpoint, name, count, status);
}

static bp_status ck_check(const char *fn, bp_checkpoint *ck, int *verified) {
    if (verified) *verified = 0;
    if (!ck) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: checkpoint is NULL", fn);
    bp_status st = bp_cksum_check_tensors(ck->f);
    if (st == BP_OK && verified) *verified = bp_cksum_present(ck->f);
    return named(st, fn);
}

bp_status bp_checkpoint_check(bp_checkpoint *checkpoint, int *verified) {
    return ck_check("bp_checkpoint_check", checkpoint, verified);
}

/* ---- the calls by path: open, one read, close --------------------------------------------- */

bp_model *bp_checkpoint_load_model(const char *path, bp_device *device, int max_batch,
                                   bp_status *status) {
    const char *fn = "bp_checkpoint_load_model";
    bp_status st = device ? BP_OK : bp_error(BP_ERR_INVALID_ARGUMENT, "%s: device is NULL", fn);
    bp_checkpoint *ck = st == BP_OK ? ck_open(fn, path, &st) : NULL;
    bp_model *m = ck ? read_model(fn, ck, device, max_batch, &st) : NULL;
    bp_checkpoint_close(ck);
    bp_set_status(status, st);
    return m;
}

bp_optimizer *bp_checkpoint_load_optimizer(const char *path, bp_model *model, bp_status *status) {
    const char *fn = "bp_checkpoint_load_optimizer";
    bp_status st = model ? BP_OK : bp_error(BP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    bp_checkpoint *ck = st == BP_OK ? ck_open(fn, path, &st) : NULL;
    bp_optimizer *o = ck ? read_optimizer(fn, ck, model, &st) : NULL;
    bp_checkpoint_close(ck);
    bp_set_status(status, st);
    return o;
}

char *bp_checkpoint_get_meta(const char *path, const char *key, bp_status *status) {
    const char *fn = "bp_checkpoint_get_meta";
    bp_status st = key ? BP_OK : bp_error(BP_ERR_INVALID_ARGUMENT, "%s: key is NULL", fn);
    bp_checkpoint *ck = st == BP_OK ? ck_open(fn, path, &st) : NULL;
    const char *v = ck ? ck_meta(ck, key) : NULL;
    char *out = v ? strdup(v) : NULL;
    if (v && !out) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no host memory", fn);
    bp_checkpoint_close(ck);
    bp_set_status(status, st);
    return out;
}

float *bp_checkpoint_get_array(const char *path, const char *name, size_t *count,
                               bp_status *status) {
    const char *fn = "bp_checkpoint_get_array";
    if (count) *count = 0;
    bp_status st = name && count ? BP_OK
                                 : bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                                            name ? "count" : "name");
    bp_checkpoint *ck = st == BP_OK ? ck_open(fn, path, &st) : NULL;
    float *out = ck ? ck_array(fn, ck, name, count, &st) : NULL;
    bp_checkpoint_close(ck);
    bp_set_status(status, st);
    return out;
}

bp_status bp_checkpoint_verify(const char *path, int *verified) {
    const char *fn = "bp_checkpoint_verify";
    if (verified) *verified = 0;
    bp_status st = BP_OK;
    bp_checkpoint *ck = ck_open(fn, path, &st);
    if (ck) st = ck_check(fn, ck, verified);
    bp_checkpoint_close(ck);
    return st;
}

/* ---- the names of a model's tensors --------------------------------------------------------- */

/* The plan of model's parameters (p->items NULL when it could not be made). */
static bp_status model_plan(const bp_model *model, plan *p, const char *fn) {
    ckpt_model cm;
    memset(&cm, 0, sizeof cm);
    memset(p, 0, sizeof *p);
    bp_status st = describe_model(model, &cm, fn);
    if (st == BP_OK) st = make_plan(p, &cm, NULL, fn);
    ckpt_model_free(&cm);
    return st;
}

int bp_checkpoint_n_tensors(const bp_model *model) {
    plan p;
    int n = model && model_plan(model, &p, "bp_checkpoint_n_tensors") == BP_OK ? (int)p.n : 0;
    if (model) free(p.items);
    return n;
}

bp_status bp_checkpoint_tensor(const bp_model *model, int index, bp_param_tensor *out) {
    const char *fn = "bp_checkpoint_tensor";
    if (!model || !out)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, model ? "out" : "model");
    plan p;
    bp_status st = model_plan(model, &p, fn);
    if (st == BP_OK && (index < 0 || (size_t)index >= p.n))
        st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: index %d is outside the model's %zu tensors",
                      fn, index, p.n);
    if (st == BP_OK) {
        const plan_item *it = &p.items[index];
        snprintf(out->name, sizeof out->name, "%s", it->name);
        out->ndim = it->ndim;
        out->shape[0] = (int64_t)it->shape[0];
        out->shape[1] = it->ndim == 2 ? (int64_t)it->shape[1] : 1;
        out->offset = it->offset;
    }
    free(p.items);
    return st;
}
