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

#include "cli.h"

#define META_FORMAT "backprop-cli 1"

typedef struct meta_list {
    bp_meta_entry *e;
    char **owned; /* every key and value, freed together */
    size_t n, cap, n_owned;
    int oom;
} meta_list;

static char *own(meta_list *l, char *s) {
    if (!s) {
        l->oom = 1;
        return NULL;
    }
    l->owned[l->n_owned++] = s;
    return s;
}

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
    l->e[l->n].key = own(l, cli_strdup(key));
    l->e[l->n].value = own(l, value);
    l->n++;
}

static void add_owned(meta_list *l, const char *key, char *value) {
    if (l->oom || l->n == l->cap || !value) {
        free(value);
        l->oom = 1;
        return;
    }
    l->e[l->n].key = own(l, cli_strdup(key));
    l->e[l->n].value = own(l, value);
    l->n++;
}

static const char *loss_name(bp_loss_kind k) {
    return k == BP_LOSS_CROSS_ENTROPY ? "ce" : k == BP_LOSS_MSE ? "mse" : "bce";
}

static void add_state(meta_list *l, const cli_data *d, const bp_loss_config *loss,
                      const cli_run_state *rs) {
    add(l, "format", "%s", META_FORMAT);
    add(l, "scaling", "%s", cli_scale_name(d->scaling));
    add_owned(l, "scale_offset", cli_format_floats(d->offset, (size_t)d->features));
    add_owned(l, "scale_scale", cli_format_floats(d->scale, (size_t)d->features));
    add(l, "loss", "%s", loss_name(loss->kind));
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
    return (cli_option_is_input(i) && cli_option_is_data(i)) ||
           strcmp(cli_option_name(i), "data-dir") == 0;
}

static void folder_of(const char *path, char *buf, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, size, ".");
    else
        snprintf(buf, size, "%.*s", slash == path ? 1 : (int)(slash - path), path);
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
    folder_of(ckpt, dir, sizeof dir);
    if (!realpath(dir, from) || !realpath(value, to)) return cli_strdup(value);
    char *rel = relative_path(from, to);
    return rel ? rel : cli_strdup(value);
}

char *cli_resolve_stored_path(const char *ckpt, const char *value) {
    char dir[PATH_MAX];
    folder_of(ckpt, dir, sizeof dir);
    if (!value[0] || value[0] == '/' || strcmp(dir, ".") == 0) return cli_strdup(value);
    size_t n = strlen(dir) + strlen(value) + 2;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s/%s", dir, value);
    return out;
}

int cli_option_is_data_path(int index) {
    return is_data_path(index);
}

int cli_checkpoint_save(int cmd, const char *path, const bp_model *m, const bp_optimizer *opt,
                        const cli_options *o, const cli_data *d, const bp_loss_config *loss,
                        const cli_run_state *rs) {
    meta_list l;
    memset(&l, 0, sizeof l);
    l.cap = 32 + (size_t)cli_option_count();
    l.e = calloc(l.cap, sizeof *l.e);
    l.owned = calloc(2 * l.cap, sizeof *l.owned);
    l.oom = !l.e || !l.owned;
    add_state(&l, d, loss, rs);
    char key[96];
    for (int i = 0; i < cli_option_count(); ++i)
        if (cli_option_stored(i)) {
            snprintf(key, sizeof key, "cfg.%s", cli_option_name(i));
            if (is_data_path(i))
                add_owned(&l, key, stored_path(path, o->text[i]));
            else
                add(&l, key, "%s", o->text[i]);
        }
    int rc = 0;
    if (l.oom)
        rc = (cli_fail(cmd, "out of memory"), CLI_EXIT_FAIL);
    else if (bp_checkpoint_save(path, m, opt, l.e, l.n) != BP_OK)
        rc = cli_lib_fail(cmd, "saving the checkpoint");
    for (size_t i = 0; l.owned && i < l.n_owned; ++i)
        free(l.owned[i]);
    free(l.owned);
    free(l.e);
    return rc;
}

char *cli_meta_get(int cmd, const char *path, const char *key, int *failed) {
    bp_status st = BP_OK;
    char *v = bp_checkpoint_get_meta(path, key, &st);
    if (!v && st != BP_OK) {
        if (!*failed) cli_lib_fail(cmd, "");
        *failed = 1;
    }
    return v;
}

/* A numeric run.KEY into *out (left alone when absent). */
static void meta_number(int cmd, const char *path, const char *key, double *out, int *failed) {
    char *v = cli_meta_get(cmd, path, key, failed);
    if (v) {
        char *end;
        double x = strtod(v, &end);
        if (end != v && !*end)
            *out = x;
        else if (!*failed)
            cli_fail(cmd, "%s: run.%s is '%s', not a number", path, key, v), *failed = 1;
    }
    free(v);
}

int cli_read_run_state(int cmd, const char *path, cli_run_state *rs) {
    int failed = 0;
    char *format = cli_meta_get(cmd, path, "format", &failed);
    if (!failed && !format) {
        cli_fail(cmd,
                 "--resume: '%s' has no run.* entries: it was not saved by backprop train, "
                 "so there is no run to continue",
                 path);
        failed = 1;
    }
    free(format);
    double epoch = 0, batch = 0, sum = 0, n = 0, best_epoch = 0, best = NAN, bad = 0, secs = 0;
    meta_number(cmd, path, "epoch", &epoch, &failed);
    meta_number(cmd, path, "batch_in_epoch", &batch, &failed);
    meta_number(cmd, path, "epoch_loss_sum", &sum, &failed);
    meta_number(cmd, path, "epoch_loss_n", &n, &failed);
    meta_number(cmd, path, "best_epoch", &best_epoch, &failed);
    meta_number(cmd, path, "best_metric", &best, &failed);
    meta_number(cmd, path, "bad_epochs", &bad, &failed);
    meta_number(cmd, path, "train_seconds", &secs, &failed);
    /* The seed is a 64-bit integer: read it exactly, not through a double. */
    char *s = cli_meta_get(cmd, path, "loader_seed", &failed);
    if (s) rs->loader_seed = strtoull(s, NULL, 10);
    free(s);
    if (failed) return CLI_EXIT_FAIL;
    rs->epoch = (int)epoch;
    rs->batch_in_epoch = (int64_t)batch;
    rs->epoch_loss_sum = sum;
    rs->epoch_loss_n = (int64_t)n;
    rs->best_epoch = (int)best_epoch;
    rs->best_metric = best;
    rs->bad_epochs = (int)bad;
    rs->train_seconds = secs;
    return 0;
}

static int read_scaling(int cmd, const char *path, int features, float **offset, float **scale,
                        int *failed) {
    char *o = cli_meta_get(cmd, path, "scale_offset", failed);
    char *s = cli_meta_get(cmd, path, "scale_scale", failed);
    *offset = malloc((size_t)features * sizeof(float));
    *scale = malloc((size_t)features * sizeof(float));
    int rc = 0;
    if (!*offset || !*scale) {
        rc = (cli_fail(cmd, "out of memory"), CLI_EXIT_FAIL);
    } else if (!o || !s) {
        /* A checkpoint from the library alone: no scaling. */
        for (int j = 0; j < features; ++j)
            (*offset)[j] = 0.0f, (*scale)[j] = 1.0f;
    } else if (cli_parse_floats(o, *offset, (size_t)features) != features ||
               cli_parse_floats(s, *scale, (size_t)features) != features) {
        cli_fail(cmd, "%s: run.scale_offset / run.scale_scale are not %d numbers each", path,
                 features);
        rc = CLI_EXIT_FAIL;
    }
    free(o);
    free(s);
    return rc;
}

int cli_read_model_meta(int cmd, const char *path, int features, float **offset, float **scale,
                        int *scaling, bp_loss_config *loss) {
    int failed = 0;
    *offset = *scale = NULL;
    char *sname = cli_meta_get(cmd, path, "scaling", &failed);
    char *lname = cli_meta_get(cmd, path, "loss", &failed);
    double smoothing = 0.0;
    meta_number(cmd, path, "label_smoothing", &smoothing, &failed);
    int rc = failed ? CLI_EXIT_FAIL : read_scaling(cmd, path, features, offset, scale, &failed);
    *scaling = SCALE_NONE;
    for (int k = SCALE_STANDARD; sname && k <= SCALE_NONE; ++k)
        if (strcmp(sname, cli_scale_name(k)) == 0) *scaling = k;
    loss->kind = (bp_loss_kind)-1; /* unknown: the caller decides from the data */
    if (lname && strcmp(lname, "ce") == 0) loss->kind = BP_LOSS_CROSS_ENTROPY;
    if (lname && strcmp(lname, "mse") == 0) loss->kind = BP_LOSS_MSE;
    if (lname && strcmp(lname, "bce") == 0) loss->kind = BP_LOSS_BCE_LOGITS;
    loss->label_smoothing = (float)smoothing;
    free(sname);
    free(lname);
    if (failed && !rc) rc = CLI_EXIT_FAIL;
    return rc;
}

static int wanted(int i, int which) {
    if (which == STORED_ALL) return cli_option_stored(i);
    if (which == STORED_FORMATS) return cli_option_is_format(i);
    return cli_option_is_data(i) && !cli_option_is_format(i);
}

int cli_apply_stored_options(int cmd, const char *path, cli_options *o, int which) {
    int failed = 0;
    char key[96], source[1100];
    snprintf(source, sizeof source, "%s: run.cfg", path);
    for (int i = 0; i < cli_option_count() && !failed; ++i) {
        if (!wanted(i, which)) continue;
        const char *name = cli_option_name(i);
        snprintf(key, sizeof key, "cfg.%s", name);
        char *v = cli_meta_get(cmd, path, key, &failed);
        if (!v) continue;
        if (is_data_path(i)) { /* kept relative to the checkpoint's folder */
            char *resolved = cli_resolve_stored_path(path, v);
            free(v);
            if (!resolved) return cli_fail(cmd, "out of memory"), CLI_EXIT_FAIL;
            v = resolved;
        }
        int frozen = cli_option_frozen(i) && which == STORED_ALL;
        if (o->given[i] && frozen && strcmp(o->text[i], v) != 0)
            cli_warn(cmd, "--%s %s is ignored: the run in %s has %s '%s' and continues with it",
                     name, o->text[i], path, name, v);
        if ((!o->given[i] || frozen) && cli_set_option(cmd, o, name, v, source, 0)) failed = 1;
        free(v);
    }
    return failed ? CLI_EXIT_FAIL : 0;
}

int cli_read_class_names(int cmd, const char *path, int outputs, cli_names *names) {
    int failed = 0;
    char *v = cli_meta_get(cmd, path, "class_names", &failed);
    names->n = 0;
    names->v = NULL;
    if (failed) return CLI_EXIT_FAIL;
    if (!v) return 0;
    int rc = cli_names_split(names, v) ? (cli_fail(cmd, "out of memory"), CLI_EXIT_FAIL) : 0;
    free(v);
    if (!rc && outputs > 0 && names->n != outputs) {
        cli_fail(cmd, "%s: run.class_names holds %d names, but the model has %d outputs", path,
                 names->n, outputs);
        rc = CLI_EXIT_FAIL;
    }
    if (rc) cli_names_free(names);
    return rc;
}
