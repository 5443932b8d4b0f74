/* bp_dataset_open: a dataset by its content (gzip, NPY, IDX or CSV), standard input included, the
 * diagnosis of a file that does not read as asked, and the check of its class labels. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

static const char *const fn = "bp_dataset_open";

#define STDIN_NAME "standard input"

bp_open_options bp_open_options_default(void) {
    bp_open_options o;
    memset(&o, 0, sizeof o);
    o.format = BP_FORMAT_AUTO;
    o.target_kind = BP_TARGET_CLASS;
    o.csv = bp_csv_options_default();
    o.csv.target_kind = BP_CSV_CLASS_AUTO;
    return o;
}

/* What one open works with: the options, the report, and standard input copied to a file. */
typedef struct open_ctx {
    bp_open_options o;
    bp_open_report *report;
    FILE *spool;
    char spool_path[64];
    bp_source data, targets;
    int has_targets;
} open_ctx;

/* ---- sources ------------------------------------------------------------------------------ */

/* Standard input, copied once into an unnamed temporary file that the loaders open by its
 * /proc name, as often as they need (a diagnosis reads the data again). */
static bp_status spool_stdin(open_ctx *c) {
    if (!(c->spool = tmpfile()))
        return bp_error(BP_ERR_IO, "%s: cannot make a temporary file for standard input: %s", fn,
                        strerror(errno));
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0)
        if (fwrite(buf, 1, got, c->spool) != got) break;
    if (ferror(stdin) || ferror(c->spool) || fflush(c->spool) != 0)
        return bp_error(BP_ERR_IO, "%s: reading standard input failed: %s", fn, strerror(errno));
    snprintf(c->spool_path, sizeof c->spool_path, "/proc/self/fd/%d", fileno(c->spool));
    return BP_OK;
}

static bp_status source_of(open_ctx *c, const char *path, bp_source *src) {
    src->path = path;
    src->name = path;
    if (strcmp(path, "-") != 0) return BP_OK;
    bp_status st = spool_stdin(c);
    src->path = c->spool_path;
    src->name = STDIN_NAME;
    return st;
}

static bp_status check_options(const char *path, const bp_open_options *o) {
    if (!path) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
    if ((unsigned)o->format > BP_FORMAT_IDX)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: options.format is %d, not a format", fn,
                        (int)o->format);
    if (o->target_kind != BP_TARGET_CLASS && o->target_kind != BP_TARGET_VALUES)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: options.target_kind is %d, expected BP_TARGET_CLASS or "
                        "BP_TARGET_VALUES",
                        fn, (int)o->target_kind);
    if (o->inputs < 0 || o->max_classes < 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: options.%s is %d, expected >= 0", fn,
                        o->inputs < 0 ? "inputs" : "max_classes",
                        o->inputs < 0 ? o->inputs : o->max_classes);
    if (o->targets_path && strcmp(path, "-") == 0 && strcmp(o->targets_path, "-") == 0)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: the data and its targets are both standard input (it can be read "
                        "once)",
                        fn);
    return BP_OK;
}

/* ---- the format, from the first bytes ----------------------------------------------------- */

static int is_idx_magic(const unsigned char *b, size_t n) {
    static const unsigned char types[] = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E};
    if (n < 4 || b[0] || b[1] || !b[3]) return 0;
    return memchr(types, b[2], sizeof types) != NULL;
}

static bp_status sniff(open_ctx *c) {
    bp_reader r;
    unsigned char b[8];
    size_t got = 0;
    bp_status st = bp_reader_open_source(&r, fn, c->data, 1);
    if (st == BP_OK) st = bp_reader_read(&r, b, sizeof b, &got);
    c->report->gzip = r.gz != NULL;
    bp_reader_close(&r);
    if (st != BP_OK) return st;
    bp_data_format f = BP_FORMAT_CSV;
    if (got >= 6 && memcmp(b, "\x93NUMPY", 6) == 0)
        f = BP_FORMAT_NPY;
    else if (is_idx_magic(b, got))
        f = BP_FORMAT_IDX;
    else if (memchr(b, 0, got))
        return bp_error(BP_ERR_CORRUPT_FILE,
                        "%s: '%s': not CSV text, an NPY file (\\x93NUMPY) or an IDX file (00 00 "
                        "08 rank): it starts %02x %02x %02x %02x",
                        fn, c->data.name, b[0], got > 1 ? b[1] : 0, got > 2 ? b[2] : 0,
                        got > 3 ? b[3] : 0);
    c->report->format = f;
    return BP_OK;
}

/* ---- CSV ---------------------------------------------------------------------------------- */

/* The first non-blank line of text: [*begin, *end). 0 when there is none. */
static int first_line(const char *text, const char **begin, const char **end) {
    for (const char *p = text; *p;) {
        const char *e = p + strcspn(p, "\n");
        for (const char *q = p; q < e; ++q)
            if (*q != ' ' && *q != '\t' && *q != '\r') {
                *begin = p;
                *end = e;
                return 1;
            }
        p = *e ? e + 1 : e;
    }
    return 0;
}

/* How often each of the common delimiters appears outside quotes in [p, e). */
static const char kDelims[] = {',', ';', '\t', '|'};

static void count_delims(const char *p, const char *e, char delim, int *mine, int *count) {
    int quoted = 0;
    *mine = 0;
    memset(count, 0, sizeof kDelims * sizeof *count);
    for (; p < e; ++p) {
        if (*p == '"') quoted = !quoted;
        if (quoted) continue;
        *mine += *p == delim;
        for (size_t k = 0; k < sizeof kDelims; ++k)
            count[k] += *p == kDelims[k];
    }
}

static const char *delim_text(char d, char *buf) {
    if (d == '\t') return "a tab";
    snprintf(buf, 8, "'%c'", d);
    return buf;
}

/* The first line's columns; a first line with none of the delimiter but another common one
 * means the delimiter is wrong. */
static bp_status check_first_line(open_ctx *c, const char *text, char delim) {
    const char *p, *e;
    if (!first_line(text, &p, &e)) return BP_OK;
    int mine, count[sizeof kDelims];
    count_delims(p, e, delim, &mine, count);
    c->report->columns = mine + 1;
    size_t best = sizeof kDelims;
    for (size_t k = 0; k < sizeof kDelims; ++k)
        if (kDelims[k] != delim && count[k] > 0 &&
            (best == sizeof kDelims || count[k] > count[best]))
            best = k;
    if (mine > 0 || best == sizeof kDelims) return BP_OK;
    char a[8], b[8];
    c->report->hint = BP_HINT_DELIMITER;
    c->report->delimiter = kDelims[best];
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "%s: '%s': the first line has no %s but %d of %s: the delimiter is %s", fn,
                    c->data.name, delim_text(delim, a), count[best], delim_text(kDelims[best], b),
                    delim_text(kDelims[best], b));
}

/* Class labels that failed: whether the file reads with target kind `kind`. */
static int csv_reads_as(const open_ctx *c, bp_csv_target kind) {
    char *text = NULL;
    size_t len = 0;
    bp_csv_options o = c->o.csv;
    o.target_kind = kind;
    bp_dataset *d = NULL;
    if (bp_io_read_text(fn, c->data, &text, &len) == BP_OK)
        d = bp_io_csv_parse(fn, c->data.name, text, len, &o, NULL);
    free(text);
    bp_dataset_free(d);
    return d != NULL;
}

/* The message of a failure, with what a second reading found; st unchanged. */
static bp_status with_hint(open_ctx *c, bp_status st, bp_data_hint hint) {
    char why[1024];
    snprintf(why, sizeof why, "%s", bp_last_error());
    c->report->hint = hint;
    if (hint == BP_HINT_VALUES)
        return bp_error(st,
                        "%s: the targets are values, not class labels (integers from 0): read "
                        "them as values, for a regression",
                        why);
    return bp_error(st, "%s: the labels mix numbers and names: read every label as a class name",
                    why);
}

static bp_status diagnose_csv(open_ctx *c, bp_status st) {
    bp_csv_target k = c->o.csv.target_kind;
    int classes = k == BP_CSV_CLASS_INDEX || k == BP_CSV_CLASS_NAME || k == BP_CSV_CLASS_AUTO;
    if (st != BP_ERR_CORRUPT_FILE || !classes) return st;
    char why[1024];
    snprintf(why, sizeof why, "%s", bp_last_error());
    bp_data_hint hint = csv_reads_as(c, BP_CSV_VALUES) ? BP_HINT_VALUES
                        : k == BP_CSV_CLASS_AUTO && csv_reads_as(c, BP_CSV_CLASS_NAME)
                            ? BP_HINT_CLASS_NAMES
                            : BP_HINT_NONE;
    bp_error(st, "%s", why); /* the second readings' messages are not the user's */
    return hint == BP_HINT_NONE ? st : with_hint(c, st, hint);
}

/* A CSV exactly as wide as the model's input holds features alone. */
static bp_status no_target_columns(open_ctx *c) {
    if (c->o.inputs <= 0 || c->report->columns != c->o.inputs) return BP_OK;
    if (c->o.csv.targets)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s' has %d columns, the model's %d inputs, so no column is left for "
                        "the targets '%s'",
                        fn, c->data.name, c->report->columns, c->o.inputs, c->o.csv.targets);
    c->o.csv.target_kind = BP_CSV_NO_TARGETS;
    c->report->no_targets = 1;
    return BP_OK;
}

static bp_dataset *open_csv(open_ctx *c, bp_status *status) {
    char *text = NULL;
    size_t len = 0;
    char delim = c->o.csv.delimiter ? c->o.csv.delimiter : ',';
    bp_dataset *d = NULL;
    c->report->targets_ignored = c->has_targets;
    bp_status st = bp_io_read_text(fn, c->data, &text, &len);
    if (st == BP_OK) st = check_first_line(c, text, delim);
    if (st == BP_OK) st = no_target_columns(c);
    if (st == BP_OK) d = bp_io_csv_parse(fn, c->data.name, text, len, &c->o.csv, &st);
    free(text);
    if (!d && st != BP_OK) st = diagnose_csv(c, st);
    *status = st;
    return d;
}

/* ---- NPY and IDX -------------------------------------------------------------------------- */

static bp_dataset *open_npy(open_ctx *c, bp_status *status) {
    bp_target_kind kind = c->has_targets ? c->o.target_kind : BP_TARGET_NONE;
    const bp_source *t = c->has_targets ? &c->targets : NULL;
    c->report->no_targets = !c->has_targets;
    bp_dataset *d = bp_io_load_npy(fn, c->data, t, kind, 1, status);
    if (d || *status != BP_ERR_CORRUPT_FILE || kind != BP_TARGET_CLASS) return d;
    char why[1024];
    snprintf(why, sizeof why, "%s", bp_last_error());
    bp_dataset *v = bp_io_load_npy(fn, c->data, t, BP_TARGET_VALUES, 1, NULL);
    bp_error(*status, "%s", why);
    if (v) *status = with_hint(c, *status, BP_HINT_VALUES);
    bp_dataset_free(v);
    return NULL;
}

static bp_dataset *open_idx(open_ctx *c, bp_status *status) {
    if (!c->has_targets) {
        *status = bp_error(BP_ERR_INVALID_ARGUMENT,
                           "%s: '%s' is an IDX file: give its labels file in "
                           "options.targets_path",
                           fn, c->data.name);
        return NULL;
    }
    return bp_io_load_idx(fn, c->data, c->targets, status);
}

/* ---- class labels ----------------------------------------------------------------------- */

#define MANY_CLASSES 1000 /* more than a class count this large, from few labels, is suspect */

static int by_label(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Distinct values among n labels in [0, top]; -1 when out of memory. */
static int64_t distinct_labels(const int32_t *y, int64_t n, int32_t top) {
    int64_t count = 0;
    if (top < (1 << 24)) { /* a bitmap of 2 MB at most */
        unsigned char *seen = calloc((size_t)top / 8 + 1, 1);
        if (!seen) return -1;
        for (int64_t i = 0; i < n; ++i) {
            unsigned char bit = (unsigned char)(1u << (y[i] & 7));
            count += !(seen[y[i] >> 3] & bit);
            seen[y[i] >> 3] |= bit;
        }
        free(seen);
        return count;
    }
    int32_t *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return -1;
    memcpy(copy, y, (size_t)n * sizeof *copy);
    qsort(copy, (size_t)n, sizeof *copy, by_label);
    for (int64_t i = 0; i < n; ++i)
        count += i == 0 || copy[i] != copy[i - 1];
    free(copy);
    return count;
}

/* "a, b, c" of the first `classes` names of d, "..." past eight, into buf. */
static const char *names_list(const bp_dataset *d, int classes, char *buf, size_t size) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < classes && i <= 8 && i < d->n_names && at < size; ++i)
        at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? ", " : "",
                               i < 8 ? d->names[i] : "...");
    return buf;
}

static bp_status refuse(open_ctx *c, bp_data_hint hint) {
    c->report->hint = hint;
    return BP_ERR_INVALID_ARGUMENT;
}

/* The first row whose label is `classes` or more; -1 when there is none. */
static int64_t first_outside(const bp_dataset *d, int classes) {
    const int32_t *y = d->y;
    for (int64_t i = 0; i < d->n; ++i)
        if (y[i] >= classes) return i;
    return -1;
}

/* That row's label (or name) is not one of k classes: the message, as `who`. */
static bp_status outside(const char *who, const char *name, const bp_dataset *d, int64_t row,
                         int k) {
    int32_t label = ((const int32_t *)d->y)[row];
    char list[256];
    if (d->n_names)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s': row %lld has class '%s', which is not one of the %d %s (%s)",
                        who, name, (long long)row + 1, d->names[label], k,
                        k == 1 ? "class" : "classes", names_list(d, k, list, sizeof list));
    return bp_error(BP_ERR_INVALID_ARGUMENT,
                    "%s: '%s': row %lld has label %d, outside the %d %s (labels 0 to %d)", who,
                    name, (long long)row + 1, (int)label, k, k == 1 ? "class" : "classes", k - 1);
}

bp_status bp_dataset_check_classes(const bp_dataset *dataset, int classes, const char *name) {
    static const char *const who = "bp_dataset_check_classes";
    if (!dataset) return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: dataset is NULL", who);
    if (classes < 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: classes is %d, expected >= 1", who, classes);
    int64_t row = dataset->kind == BP_TARGET_CLASS ? first_outside(dataset, classes) : -1;
    return row < 0 ? BP_OK : outside(who, name ? name : "the dataset", dataset, row, classes);
}

/* Class counts no data of this size supports: a typo in a label, or a column of identifiers. */
static bp_status suspect_count(open_ctx *c, const bp_dataset *d) {
    const bp_open_report *r = c->report;
    if (d->n_names > MANY_CLASSES && 2 * (int64_t)d->n_names > d->n) {
        bp_error(BP_ERR_INVALID_ARGUMENT,
                 "%s: '%s': the target column holds %d distinct names in %lld rows: a column of "
                 "identifiers rather than classes?",
                 fn, c->data.name, d->n_names, (long long)d->n);
        return refuse(c, BP_HINT_IDENTIFIERS);
    }
    int one_hot = r->format == BP_FORMAT_CSV && c->o.csv.target_kind == BP_CSV_ONE_HOT;
    if (d->n_names || one_hot || d->classes <= MANY_CLASSES || d->classes <= 4 * r->distinct_labels)
        return BP_OK;
    bp_error(BP_ERR_INVALID_ARGUMENT,
             "%s: '%s': row %lld has label %d, which makes %d classes, but only %lld distinct %s "
             "appear: a typo in the data?",
             fn, c->data.name, (long long)r->top_label_row, d->classes - 1, d->classes,
             (long long)r->distinct_labels, r->distinct_labels == 1 ? "label" : "labels");
    return refuse(c, BP_HINT_CLASS_COUNT);
}

/* The labels against options.max_classes, or the data's own count checked; the report's
 * counts. */
static bp_status check_labels(open_ctx *c, const bp_dataset *d) {
    if (d->kind != BP_TARGET_CLASS) return BP_OK;
    const int32_t *y = d->y;
    int64_t top = 0;
    for (int64_t i = 1; i < d->n; ++i)
        if (y[i] > y[top]) top = i;
    int64_t distinct = distinct_labels(y, d->n, y[top]);
    if (distinct < 0) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", fn);
    c->report->distinct_labels = distinct;
    c->report->top_label_row = top + 1;
    if (c->o.max_classes == 0) return suspect_count(c, d);
    int64_t row = first_outside(d, c->o.max_classes);
    if (row < 0) return BP_OK;
    outside(fn, c->data.name, d, row, c->o.max_classes);
    return refuse(c, BP_HINT_CLASSES);
}

/* ---- the call ----------------------------------------------------------------------------- */

static bp_dataset *open_data(open_ctx *c, const char *path, bp_status *st) {
    *st = source_of(c, path, &c->data);
    c->has_targets = c->o.targets_path != NULL;
    if (*st == BP_OK && c->has_targets) *st = source_of(c, c->o.targets_path, &c->targets);
    if (*st == BP_OK) *st = sniff(c);
    if (*st != BP_OK) return NULL;
    bp_data_format f = c->o.format != BP_FORMAT_AUTO ? c->o.format : c->report->format;
    c->report->format = f;
    if (f == BP_FORMAT_NPY) return open_npy(c, st);
    if (f == BP_FORMAT_IDX) return open_idx(c, st);
    return open_csv(c, st);
}

bp_dataset *bp_dataset_open(const char *path, const bp_open_options *options,
                            bp_open_report *report, bp_status *status) {
    open_ctx c;
    bp_open_report local;
    memset(&c, 0, sizeof c);
    c.o = options ? *options : bp_open_options_default();
    c.report = report ? report : &local;
    memset(c.report, 0, sizeof *c.report);
    bp_status st = check_options(path, &c.o);
    bp_dataset *d = st == BP_OK ? open_data(&c, path, &st) : NULL;
    if (d && (st = check_labels(&c, d)) != BP_OK) {
        bp_dataset_free(d);
        d = NULL;
    }
    if (c.spool) fclose(c.spool);
    bp_set_status(status, st);
    return d;
}
