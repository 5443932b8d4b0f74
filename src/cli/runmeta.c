/* The run.* metadata the command keeps in checkpoints: the feature scaling, the loss, where the
 * run stands (epoch, batch, loader seed, early-stopping state) and the options it was started
 * with (run.cfg.NAME), so eval/predict apply the same scaling and --resume continues exactly. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define META_FORMAT "backprop-cli 1"

typedef struct meta_list {
    bp_meta_entry *e; /* every key and value malloc'd by add, freed together */
    size_t n, cap;
    int oom;
} meta_list;

static void add(meta_list *l, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(meta_list *l, const char *key, const char *fmt, ...) {
    if (l->oom || l->n == l->cap) {
        l->oom = 1;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *value = malloc((size_t)len + 1);
    if (value) {
        va_start(ap, fmt);
        vsnprintf(value, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    l->e[l->n].key = cli_strdup(key);
    l->e[l->n++].value = value;
    if (!value) l->oom = 1;
}

/* add() of a malloc'd value (NULL: out of memory), which it frees. */
static void add_owned(meta_list *l, const char *key, char *value) {
    if (!value) l->oom = 1;
    if (value) add(l, key, "%s", value);
    free(value);
}

static void add_state(meta_list *l, const cli_data *d, const bp_loss_config *loss,
                      const cli_run_state *rs) {
    add(l, "format", "%s", META_FORMAT);
    add(l, "scaling", "%s", bp_scaling_kind_name((bp_scaling_kind)d->scaling));
    add_owned(l, "scale_offset", cli_format_floats(d->offset, (size_t)d->features));
    add_owned(l, "scale_scale", cli_format_floats(d->scale, (size_t)d->features));
    add(l, "loss", "%s", bp_loss_kind_name(loss->kind));
    add(l, "label_smoothing", "%.9g", (double)loss->label_smoothing);
    add(l, "features", "%d", d->features);
    add(l, "target_kind", "%s", d->kind == BP_TARGET_CLASS ? "class" : "values");
    add(l, "classes", "%d", d->classes);
    add(l, "epoch", "%d", rs->epoch);
    add(l, "batch_in_epoch", "%" PRId64, rs->batch_in_epoch);
    add(l, "epoch_loss_sum", "%.17g", rs->epoch_loss_sum);
    add(l, "epoch_loss_n", "%" PRId64, rs->epoch_loss_n);
    add(l, "loader_seed", "%" PRIu64, rs->loader_seed);
    add(l, "best_epoch", "%d", rs->best_epoch);
    add(l, "best_metric", "%.17g", rs->best_metric);
    add(l, "bad_epochs", "%d", rs->bad_epochs);
    add(l, "train_seconds", "%.3f", rs->train_seconds);
    if (d->names.n) add_owned(l, "class_names", cli_names_join(&d->names));
}

/* ---- data paths, kept relative to the checkpoint's folder ---- */

/* Options whose value is a path the run reads data from. */
static int is_data_path(int i) {
    return (cli_option_has(i, OF_IN) && cli_option_has(i, OF_DATA)) ||
           strcmp(cli_option_name(i), "data-dir") == 0;
}

/* The path of `to` from the folder `from`, both absolute and resolved (realpath). */
static char *relative_path(const char *from, const char *to) {
    size_t i = 0, common = 0;
    while (from[i] && from[i] == to[i])
        if (from[i++] == '/') common = i;
    if ((from[i] == '\0' || from[i] == '/') && (to[i] == '\0' || to[i] == '/')) common = i;
    int ups = 0;
    for (const char *p = from + common; *p; ++p)
        if (*p != '/' && (p == from + common || p[-1] == '/')) ++ups; /* a component starts */
    const char *rest = to + common;
    while (*rest == '/')
        ++rest;
    size_t n = (size_t)ups * 3 + strlen(rest) + 2;
    char *out = malloc(n);
    if (!out) return NULL;
    size_t at = 0;
    for (int k = 0; k < ups; ++k)
        at += (size_t)snprintf(out + at, n - at, "%s", k + 1 < ups || rest[0] ? "../" : "..");
    snprintf(out + at, n - at, "%s", ups || rest[0] ? rest : ".");
    return out;
}

/* A relative data path as the checkpoint at ckpt keeps it: relative to the checkpoint's folder,
 * so that the run's files are found from wherever the command runs (eval, predict, --resume).
 * Absolute paths, and paths that cannot be resolved, are kept as given. */
static char *stored_path(const char *ckpt, const char *value) {
    char dir[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
    if (!value[0] || value[0] == '/') return cli_strdup(value);
    cli_folder_of(ckpt, dir, sizeof dir);
    if (!realpath(dir, from) || !realpath(value, to)) return cli_strdup(value);
    char *rel = relative_path(from, to);
    return rel ? rel : cli_strdup(value);
}

/* A stored data path as a path from here. One longer than PATH_MAX, which no file has, stays as
 * stored: opening it fails with its name. */
static char *resolve_stored_path(const char *ckpt, const char *value) {
    char dir[PATH_MAX], out[2 * PATH_MAX];
    cli_folder_of(ckpt, dir, sizeof dir);
    if (!value[0] || value[0] == '/' || strcmp(dir, ".") == 0) return cli_strdup(value);
    int n = snprintf(out, sizeof out, "%s/%s", dir, value);
    return cli_strdup(n < (int)sizeof out ? out : value);
}

int cli_checkpoint_save(int cmd, const char *path, const bp_model *m, const bp_optimizer *opt,
                        const cli_options *o, const cli_data *d, const bp_loss_config *loss,
                        const cli_run_state *rs) {
    meta_list l;
    memset(&l, 0, sizeof l);
    l.cap = 32 + (size_t)cli_option_count();
    l.e = calloc(l.cap, sizeof *l.e);
    l.oom = !l.e;
    add_state(&l, d, loss, rs);
    char key[96];
    for (int i = 0; i < cli_option_count(); ++i)
        if (cli_option_has(i, OF_STORE)) {
            snprintf(key, sizeof key, "cfg.%s", cli_option_name(i));
            if (is_data_path(i))
                add_owned(&l, key, stored_path(path, o->text[i]));
            else
                add(&l, key, "%s", o->text[i]);
        }
    int rc = 0;
    if (l.oom)
        rc = cli_fail(cmd, "out of memory");
    else if (bp_checkpoint_save(path, m, opt, l.e, l.n) != BP_OK)
        rc = cli_lib_fail(cmd, "saving the checkpoint");
    for (size_t i = 0; i < l.n; ++i) {
        free((char *)l.e[i].key);
        free((char *)l.e[i].value);
    }
    free(l.e);
    return rc;
}

bp_checkpoint *cli_checkpoint_open(int cmd, const char *flag, const char *path, int *verified) {
    if (access(path, R_OK) != 0) {
        if (flag)
            cli_fail(cmd, "%s: cannot read '%s': %s", flag, path, strerror(errno));
        else
            cli_fail(cmd, "cannot read checkpoint '%s': %s", path, strerror(errno));
        return NULL;
    }
    bp_status st;
    int ok = 0;
    bp_checkpoint *ck = bp_checkpoint_open(path, &st);
    if (!ck || bp_checkpoint_check(ck, &ok) != BP_OK) {
        cli_lib_fail(cmd, "");
        bp_checkpoint_close(ck);
        return NULL;
    }
    if (verified) *verified = ok;
    if (!ok)
        cli_warn(cmd, "%s has no checksums (saved by an older backprop): it is used unverified",
                 path);
    return ck;
}

/* A numeric run.KEY into *out (left alone when absent); 0 or CLI_EXIT_FAIL. */
static int meta_number(int cmd, const bp_checkpoint *ck, const char *key, double *out) {
    const char *v = bp_checkpoint_meta(ck, key);
    char *end;
    if (!v) return 0;
    double x = strtod(v, &end);
    if (end != v && !*end) return *out = x, 0;
    return cli_fail(cmd, "%s: run.%s is '%s', not a number", bp_checkpoint_path(ck), key, v);
}

int cli_read_run_state(int cmd, const bp_checkpoint *ck, cli_run_state *rs) {
    static const char *const keys[] = {"epoch",        "batch_in_epoch", "epoch_loss_sum",
                                       "epoch_loss_n", "best_epoch",     "best_metric",
                                       "bad_epochs",   "train_seconds"};
    double v[8] = {0, 0, 0, 0, 0, NAN, 0, 0};
    if (!bp_checkpoint_meta(ck, "format"))
        return cli_fail(cmd,
                        "--resume: '%s' has no run.* entries: it was not saved by backprop train, "
                        "so there is no run to continue",
                        bp_checkpoint_path(ck));
    for (int i = 0; i < 8; ++i)
        if (meta_number(cmd, ck, keys[i], &v[i])) return CLI_EXIT_FAIL;
    /* The seed is a 64-bit integer: read it exactly, not through a double. */
    const char *seed = bp_checkpoint_meta(ck, "loader_seed");
    if (seed) rs->loader_seed = strtoull(seed, NULL, 10);
    rs->epoch = (int)v[0];
    rs->batch_in_epoch = (int64_t)v[1];
    rs->epoch_loss_sum = v[2];
    rs->epoch_loss_n = (int64_t)v[3];
    rs->best_epoch = (int)v[4];
    rs->best_metric = v[5];
    rs->bad_epochs = (int)v[6];
    rs->train_seconds = v[7];
    return 0;
}

int cli_read_model_meta(int cmd, const bp_checkpoint *ck, int features, float **offset,
                        float **scale, int *scaling, bp_loss_config *loss) {
    const char *o = bp_checkpoint_meta(ck, "scale_offset"),
               *s = bp_checkpoint_meta(ck, "scale_scale");
    const char *sname = bp_checkpoint_meta(ck, "scaling"), *lname = bp_checkpoint_meta(ck, "loss");
    double smoothing = 0.0;
    *offset = malloc((size_t)features * sizeof(float));
    *scale = malloc((size_t)features * sizeof(float));
    if (!*offset || !*scale) return cli_fail(cmd, "out of memory");
    if (meta_number(cmd, ck, "label_smoothing", &smoothing)) return CLI_EXIT_FAIL;
    if (!o || !s) { /* a checkpoint from the library alone: no scaling */
        for (int j = 0; j < features; ++j)
            (*offset)[j] = 0.0f, (*scale)[j] = 1.0f;
    } else if (cli_parse_floats(o, *offset, (size_t)features) != features ||
               cli_parse_floats(s, *scale, (size_t)features) != features) {
        return cli_fail(cmd, "%s: run.scale_offset / run.scale_scale are not %d numbers each",
                        bp_checkpoint_path(ck), features);
    }
    bp_scaling_kind sk = BP_SCALE_NONE;
    *scaling = sname && bp_scaling_kind_parse(sname, &sk) == BP_OK ? (int)sk : BP_SCALE_NONE;
    bp_loss_kind kind;
    /* unknown: the caller decides from the data */
    loss->kind = lname && bp_loss_kind_parse(lname, &kind) == BP_OK ? kind : (bp_loss_kind)-1;
    loss->label_smoothing = (float)smoothing;
    return 0;
}

static int wanted(int i, int which) {
    if (which == STORED_ALL) return cli_option_has(i, OF_STORE);
    if (which == STORED_FORMATS) return cli_option_has(i, OF_FORMAT);
    return cli_option_has(i, OF_DATA) && !cli_option_has(i, OF_FORMAT);
}

char *cli_stored_option(const bp_checkpoint *ck, int index) {
    if (!cli_option_has(index, OF_STORE)) return NULL; /* bench's --precision is not train's */
    char key[96];
    snprintf(key, sizeof key, "cfg.%s", cli_option_name(index));
    const char *v = bp_checkpoint_meta(ck, key);
    if (!v) return NULL;
    /* data paths are kept relative to the checkpoint's folder */
    return is_data_path(index) ? resolve_stored_path(bp_checkpoint_path(ck), v) : cli_strdup(v);
}

int cli_apply_stored_options(int cmd, const bp_checkpoint *ck, cli_options *o, int which) {
    const char *path = bp_checkpoint_path(ck);
    char source[1100];
    snprintf(source, sizeof source, "%s: run.cfg", path);
    for (int i = 0; i < cli_option_count(); ++i) {
        char *v = wanted(i, which) ? cli_stored_option(ck, i) : NULL;
        if (!v) continue;
        const char *name = cli_option_name(i);
        int frozen = cli_option_has(i, OF_FROZEN) && which == STORED_ALL;
        if (o->given[i] && frozen && strcmp(o->text[i], v) != 0)
            cli_warn(cmd, "--%s %s is ignored: the run in %s has %s '%s' and continues with it",
                     name, o->text[i], path, name, v);
        int rc = (!o->given[i] || frozen) ? cli_set_option(cmd, o, name, v, source, 0) : 0;
        free(v);
        if (rc) return CLI_EXIT_FAIL;
    }
    return 0;
}

int cli_read_class_names(int cmd, const bp_checkpoint *ck, int outputs, cli_names *names) {
    const char *v = bp_checkpoint_meta(ck, "class_names");
    names->n = 0;
    names->v = NULL;
    if (!v) return 0;
    if (cli_names_split(names, v)) return cli_fail(cmd, "out of memory");
    if (outputs <= 0 || names->n == outputs) return 0;
    cli_fail(cmd, "%s: run.class_names holds %d names, but the model has %d outputs",
             bp_checkpoint_path(ck), names->n, outputs);
    cli_names_free(names);
    return CLI_EXIT_FAIL;
}
