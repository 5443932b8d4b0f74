/* Which files the flags name, loading them through the library, the validation split and the
 * feature scaling. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Named datasets: IDX files under /usr/share/datasets/NAME (Debian's dataset-* packages). */
static const char *const NAMED[] = {"fashion-mnist", "mnist"};
static const char *const IDX_FILES[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

int cli_targets_are_values(const cli_options *o, bp_loss_kind loss, int loss_known) {
    if (o->target_kind == TK_VALUES) return 1;
    if (o->target_kind == TK_CLASS || o->target_kind == TK_ONEHOT) return 0;
    return loss_known && loss != BP_LOSS_CROSS_ENTROPY;
}

static int readable(int cmd, const char *flag, const char *path) {
    if (access(path, R_OK) == 0) return 0;
    return cli_fail(cmd, "%s: cannot read '%s': %s", flag, path, strerror(errno));
}

int cli_named_file(const cli_options *o, int which, char *path, size_t size) {
    const char *dir = o->data_dir[0] ? o->data_dir : NULL;
    char def[256];
    if (!dir) snprintf(def, sizeof def, "/usr/share/datasets/%s", o->data), dir = def;
    snprintf(path, size, "%s/%s.gz", dir, IDX_FILES[which]);
    if (access(path, R_OK) == 0) return 0;
    snprintf(path, size, "%s/%s", dir, IDX_FILES[which]);
    return access(path, R_OK) == 0 ? 0 : -1;
}

/* path of one file of a named dataset, the .gz when present, else the plain one. */
static int named_file(int cmd, const cli_options *o, int which, char *path, size_t size) {
    if (cli_named_file(o, which, path, size) == 0) return 0;
    return cli_fail(cmd, "--data %s: cannot read '%s(.gz)': %s%s", o->data, path, strerror(errno),
                    strcmp(o->data, "fashion-mnist") == 0
                        ? " (install Debian's dataset-fashion-mnist, or give --data-dir)"
                        : "");
}

static int check_named(int cmd, const cli_options *o) {
    for (size_t i = 0; i < sizeof NAMED / sizeof NAMED[0]; ++i)
        if (strcmp(o->data, NAMED[i]) == 0) return 0;
    return cli_usage_error(cmd, "--data: '%s' is not a named dataset (fashion-mnist, mnist)",
                           o->data);
}

/* How a delimiter is given on the command line. */
static const char *delimiter_flag(char c) {
    static char buf[4];
    if (c == '\t') return "tab";
    snprintf(buf, sizeof buf, "'%c'", c);
    return buf;
}

/* What a load asks of the files: value targets or class labels (with the names a model
 * already knows), and for predict whether data without a target column is welcome. */
typedef struct load_ctx {
    int cmd;
    const cli_options *o;
    int values;
    const cli_names *known; /* class names the model has, or none */
    int model_inputs;       /* the model's input width (eval, predict), else 0 */
    int unlabeled;          /* predict: a file of model_inputs columns has no targets */
    int max_classes;        /* bp_open_options.max_classes */
    const char *whose;      /* what fixes max_classes, for messages */
    bp_open_report *report; /* of the last open */
} load_ctx;

static int is_stdin(const char *path) {
    return strcmp(path, "-") == 0;
}

static bp_csv_target label_kind(const load_ctx *lc) {
    if (lc->values) return BP_CSV_VALUES;
    if (lc->o->target_kind == TK_ONEHOT) return BP_CSV_ONE_HOT;
    if (lc->o->target_kind == TK_NAMES || (lc->known && lc->known->n > 0)) return BP_CSV_CLASS_NAME;
    return BP_CSV_CLASS_AUTO;
}

static int csv_delimiter(int cmd, const cli_options *o, char *out) {
    const char *delim = o->delimiter;
    if (strcmp(delim, "tab") == 0 || strcmp(delim, "\\t") == 0) delim = "\t";
    if (strlen(delim) != 1)
        return cli_usage_error(cmd, "--delimiter: '%s' is not one character", o->delimiter);
    *out = delim[0];
    return 0;
}

/* A CSV file exactly as wide as the model's input has no target column: data to predict from,
 * which eval refuses, and where --target-column names nothing. */
static int no_target_column(const load_ctx *lc, const char *flag, const char *path, int cols) {
    const char *noun = cli_plural(cols, "column", "columns");
    if (!lc->unlabeled)
        return cli_usage_error(lc->cmd,
                               "%s: '%s' has %d %s, the model's %d inputs, and no target column: "
                               "%s needs labels (predict reads data without them)",
                               flag, path, cols, noun, lc->model_inputs, cli_command_name(lc->cmd));
    return cli_usage_error(
        lc->cmd,
        "--target-column %s: '%s' has %d %s, the model's %d inputs, so no column is left for a "
        "target (leave --target-column out to predict from it)",
        lc->o->target_column, path, cols, noun, lc->model_inputs);
}

/* A failed open: the library's message, with the flag that fixes what its second reading
 * found. */
static int open_failed(const load_ctx *lc, const bp_open_report *r) {
    const char *why = bp_last_error();
    int cmd = lc->cmd;
    if (r->hint == BP_HINT_CLASSES) return cli_usage_error(cmd, "%s: %s", why, lc->whose);
    if (r->hint == BP_HINT_CLASS_COUNT)
        return cli_usage_error(cmd,
                               "%s (to train that many classes anyway give --classes with that "
                               "count; for values, --loss mse)",
                               why);
    if (r->hint == BP_HINT_IDENTIFIERS)
        return cli_usage_error(cmd, "%s (--target-column names the label column)", why);
    if (r->hint == BP_HINT_VALUES)
        return cli_usage_error(cmd, "%s: give --loss mse (or --target-kind values)", why);
    if (r->hint == BP_HINT_CLASS_NAMES)
        return cli_usage_error(cmd, "%s: give --target-kind names", why);
    if (r->hint == BP_HINT_DELIMITER)
        return cli_usage_error(cmd, "%s: give --delimiter %s", why, delimiter_flag(r->delimiter));
    return cli_lib_fail(cmd, "");
}

/* The options of one open: the format by the file's extension (standard input by its
 * content), the targets as the flags and the model ask. */
static int open_options(const load_ctx *lc, const char *path, const char *targets,
                        bp_open_options *oo) {
    const cli_options *o = lc->o;
    *oo = bp_open_options_default();
    oo->format = is_stdin(path)              ? BP_FORMAT_AUTO
                 : cli_has_ext(path, ".npy") ? BP_FORMAT_NPY
                                             : BP_FORMAT_CSV;
    oo->targets_path = targets[0] ? targets : NULL;
    oo->target_kind = lc->values ? BP_TARGET_VALUES : BP_TARGET_CLASS;
    oo->inputs = lc->model_inputs;
    oo->max_classes = lc->max_classes;
    oo->csv.header = o->header;
    oo->csv.targets = o->target_column[0] ? o->target_column : NULL;
    oo->csv.target_kind = label_kind(lc);
    if (oo->csv.target_kind == BP_CSV_CLASS_NAME && lc->known) {
        oo->csv.class_names = (const char *const *)lc->known->v;
        oo->csv.n_class_names = lc->known->n;
    }
    return csv_delimiter(lc->cmd, o, &oo->csv.delimiter);
}

/* A data file by its extension: .csv, or .npy with a targets .npy. */
static int known_format(const char *path) {
    return cli_has_ext(path, ".csv") || cli_has_ext(path, ".tsv") || cli_has_ext(path, ".txt") ||
           cli_has_ext(path, ".npy");
}

/* A data file by its extension (standard input by its content): .csv, or .npy with a targets
 * .npy (predict: or without, for data to predict from). */
static int load_file(const load_ctx *lc, const char *flag, const char *path, const char *tflag,
                     const char *targets, bp_dataset **out) {
    int cmd = lc->cmd, rc;
    int train = strcmp(flag, "--train") == 0;
    bp_open_options oo;
    if (!is_stdin(path) && !known_format(path))
        return cli_usage_error(cmd,
                               "%s: cannot tell the format of '%s' from its name: use .csv or .npy "
                               "(IDX files go with --%s-images and --%s-labels)",
                               flag, path, train ? "train" : "test", train ? "train" : "test");
    if (!is_stdin(path) && (rc = readable(cmd, flag, path)) != 0) return rc;
    int npy = cli_has_ext(path, ".npy");
    if (npy && targets[0] && (rc = readable(cmd, tflag, targets)) != 0) return rc;
    if ((rc = open_options(lc, path, targets, &oo)) != 0) return rc;
    const bp_open_report *r = lc->report;
    bp_dataset *ds = bp_dataset_open(path, &oo, lc->report, NULL);
    if (r->targets_ignored) cli_warn(cmd, "%s is ignored: %s is CSV", tflag, path);
    int cols = r->format == BP_FORMAT_CSV && lc->model_inputs == r->columns ? r->columns : 0;
    if ((ds && r->no_targets && !lc->unlabeled) || (!ds && cols && oo.csv.targets)) {
        bp_dataset_free(ds);
        const char *shown = is_stdin(path) ? "standard input" : path;
        if (cols) return no_target_column(lc, flag, shown, cols);
        return cli_usage_error(cmd, "%s: '%s' is NPY features; give its targets with %s FILE.npy",
                               flag, shown, tflag);
    }
    *out = ds;
    return ds ? 0 : open_failed(lc, r);
}

/* An IDX pair (images, labels): through bp_dataset_open, which checks the labels. */
static int load_idx(const load_ctx *lc, const char *images, const char *labels, bp_dataset **out) {
    bp_open_options oo = bp_open_options_default();
    oo.format = BP_FORMAT_IDX;
    oo.targets_path = labels;
    oo.max_classes = lc->max_classes;
    *out = bp_dataset_open(images, &oo, lc->report, NULL);
    return *out ? 0 : open_failed(lc, lc->report);
}

static int load_named(const load_ctx *lc, int test, bp_dataset **out) {
    char images[1024], labels[1024];
    int cmd = lc->cmd, rc;
    if ((rc = check_named(cmd, lc->o)) ||
        (rc = named_file(cmd, lc->o, test ? 2 : 0, images, sizeof images)) ||
        (rc = named_file(cmd, lc->o, test ? 3 : 1, labels, sizeof labels)))
        return rc;
    return load_idx(lc, images, labels, out);
}

static int idx_pair(int cmd, const char *images, const char *labels, const char *what) {
    if (!images[0] != !labels[0])
        return cli_usage_error(cmd, "--%s-images and --%s-labels go together", what, what);
    return 0;
}

static int count_sources(const char *a, const char *b, const char *c) {
    return (a[0] != 0) + (b[0] != 0) + (c[0] != 0);
}

/* The training (test 0) or test set from the one source given: the named dataset's files,
 * flag's data file with its targets (tflag), or the IDX pair. None: no set, 0. */
static int load_source(const load_ctx *lc, int test, const char *flag, const char *path,
                       const char *tflag, const char *targets, cli_data *d) {
    const cli_options *o = lc->o;
    int cmd = lc->cmd, rc = 0;
    bp_dataset **ds = test ? &d->test : &d->train;
    char *name = test ? d->test_name : d->train_name;
    const char *images = test ? o->test_images : o->train_images;
    const char *labels = test ? o->test_labels : o->train_labels;
    if (o->data[0]) {
        rc = load_named(lc, test, ds);
        snprintf(name, sizeof d->test_name, "%s (%s)", o->data, test ? "test" : "train");
    } else if (path[0]) {
        rc = load_file(lc, flag, path, tflag, targets, ds);
        snprintf(name, sizeof d->test_name, "%s", is_stdin(path) ? "standard input" : path);
    } else if (images[0]) {
        if ((rc = readable(cmd, test ? "--test-images" : "--train-images", images)) ||
            (rc = readable(cmd, test ? "--test-labels" : "--train-labels", labels)))
            return rc;
        rc = load_idx(lc, images, labels, ds);
        snprintf(name, sizeof d->test_name, "%s", images);
    }
    return rc;
}

/* Describes what was loaded and checks the sets agree with each other. The classes are the
 * training data's (evaluation and test data never widen a model). */
static int summarize(int cmd, cli_data *d) {
    const bp_dataset *first = d->train ? d->train : d->test;
    d->features = bp_dataset_features(first);
    d->kind = bp_dataset_target_kind(first);
    d->target_width = bp_dataset_target_width(first);
    d->classes = d->kind == BP_TARGET_CLASS ? bp_dataset_classes(first) : 0;
    if (d->train && d->test) {
        if (bp_dataset_features(d->test) != d->features)
            return cli_usage_error(
                cmd, "the test data has %d %s, the training data %d", bp_dataset_features(d->test),
                cli_plural(bp_dataset_features(d->test), "feature", "features"), d->features);
        if (bp_dataset_target_kind(d->test) != d->kind ||
            bp_dataset_target_width(d->test) != d->target_width)
            return cli_usage_error(
                cmd, "the test data's targets (%d %s) differ from the training data's (%d %s)",
                bp_dataset_target_width(d->test),
                bp_dataset_target_kind(d->test) == BP_TARGET_CLASS ? "class" : "values",
                d->target_width, d->kind == BP_TARGET_CLASS ? "class" : "values");
        if (d->kind == BP_TARGET_CLASS && !bp_dataset_n_class_names(d->train) &&
            bp_dataset_n_class_names(d->test))
            return cli_usage_error(cmd,
                                   "%s has class names as labels (%s), but the training data %s "
                                   "has class indices: give both the same kind of labels",
                                   d->test_name, cli_names_list(&d->names), d->train_name);
    }
    return 0;
}

static int split(int cmd, const cli_options *o, cli_data *d) {
    int64_t n = bp_dataset_size(d->train);
    int64_t nval = (int64_t)llround((double)n * o->val_split);
    if (o->val_split <= 0.0) return 0;
    if (nval < 1 || nval >= n) {
        cli_warn(cmd, "--val-split %g of %lld %s leaves no %s; training without validation",
                 o->val_split, (long long)n, cli_plural(n, "sample", "samples"),
                 nval < 1 ? "validation set" : "training set");
        return 0;
    }
    bp_dataset *train = NULL, *val = NULL;
    /* Its own seed, so the split does not line up with the loader's epoch-0 shuffle. */
    uint64_t seed = (uint64_t)o->seed ^ 0x9e3779b97f4a7c15ull;
    if (bp_dataset_split(d->train, o->val_split, seed, &train, &val) != BP_OK)
        return cli_lib_fail(cmd, "");
    bp_dataset_free(d->train);
    d->train = train;
    d->val = val;
    return 0;
}

/* ---- labels ---- */

/* A name of a dataset's classes, for messages. */
static const char *name_of(const bp_dataset *ds, int32_t label) {
    const char *s = bp_dataset_class_name(ds, label);
    return s ? s : "?";
}

/* The first `classes` names of ds. */
static const char *first_names(const bp_dataset *ds, int classes) {
    cli_names some = {NULL, 0};
    char *v[9];
    for (int i = 0; i < classes && i < 9; ++i)
        v[some.n++] = (char *)name_of(ds, i);
    some.v = v;
    if (classes > 9) some.n = 9; /* the list ends in "..." past eight */
    return cli_names_list(&some);
}

int cli_check_labels(int cmd, const bp_dataset *ds, const char *name, int classes,
                     const char *whose) {
    if (!ds || bp_dataset_check_classes(ds, classes, name) == BP_OK) return 0;
    return cli_usage_error(cmd, "%s: those of %s; data to evaluate cannot add classes",
                           bp_last_error(), whose);
}

int cli_check_named_outputs(int cmd, const cli_data *d, int outputs, const char *who) {
    if (d->names.n == outputs) return 0;
    return cli_usage_error(cmd,
                           "%s: the output layer has %d %s, but %s has %d class %s (%s): a model "
                           "of named classes has one output per name",
                           who, outputs, cli_plural(outputs, "unit", "units"), d->train_name,
                           d->names.n, cli_plural(d->names.n, "name", "names"),
                           cli_names_list(&d->names));
}

/* The first row of ds (0-based) whose label is `label`. */
static int64_t row_of(const bp_dataset *ds, int32_t label) {
    const int32_t *y = bp_dataset_targets_data(ds);
    for (int64_t i = 0; i < bp_dataset_size(ds); ++i)
        if (y[i] == label) return i;
    return 0;
}

/* Training labels that are names (bp_dataset_open checked their count and that a resumed run
 * knows them): no --classes; not for a run trained on indices; names a checkpoint can keep
 * (UTF-8). */
static int check_named_classes(int cmd, const cli_options *o, cli_data *d, const cli_names *known,
                               const char *whose) {
    const bp_dataset *t = d->train;
    int n = bp_dataset_n_class_names(t);
    if (o->classes > 0)
        return cli_usage_error(
            cmd, "--classes applies to class indices; %s has class names (%d: %s), one class each",
            d->train_name, n, first_names(t, n));
    if (whose && (!known || known->n == 0))
        return cli_usage_error(
            cmd, "%s has class names as labels (%s), but %s was trained on class indices",
            d->train_name, first_names(t, n), whose);
    for (int k = 0; k < n; ++k)
        if (!cli_utf8_valid(name_of(t, k))) {
            char shown[160];
            cli_escape_bytes(name_of(t, k), shown, sizeof shown);
            return cli_usage_error(
                cmd,
                "%s: row %lld: the class name '%s' is not UTF-8, which checkpoints keep names in "
                "(convert the file, e.g. iconv -f latin1 -t utf-8)",
                d->train_name, (long long)row_of(t, k) + 1, shown);
        }
    d->classes = n;
    return 0;
}

/* The training labels before the split (rows in file order; bp_dataset_open checked them
 * against --classes and for a typo): --classes needs labels, one class is a warning. */
static int check_classes(int cmd, const cli_options *o, cli_data *d, const cli_names *known,
                         const char *whose, const bp_open_report *r) {
    if (d->kind != BP_TARGET_CLASS) {
        if (o->classes <= 0) return 0;
        return cli_usage_error(cmd, "--classes applies to class labels; %s has target values",
                               d->train_name);
    }
    int named = bp_dataset_n_class_names(d->train) > 0;
    if (named && check_named_classes(cmd, o, d, known, whose)) return CLI_EXIT_USAGE;
    d->top_row = r->top_label_row - 1;
    d->top_label = ((const int32_t *)bp_dataset_targets_data(d->train))[d->top_row];
    if (o->classes > 0) d->classes = o->classes;
    char label[160];
    snprintf(label, sizeof label, named ? "'%s'" : "%s",
             named ? name_of(d->train, d->top_label) : cli_num(d->top_label));
    if (r->distinct_labels == 1)
        cli_warn(cmd,
                 "%s: every training label is %s: with one class there is nothing to learn "
                 "(another --target-column?)",
                 d->train_name, label);
    return 0;
}

/* d->names from the data: the training set's (which the test set was read with) or the
 * evaluation data's. */
static int take_names(int cmd, cli_data *d, const bp_dataset *ds) {
    if (cli_names_from_dataset(&d->names, ds) == 0) return 0;
    return cli_fail(cmd, "out of memory");
}

int cli_data_load_train(int cmd, const cli_options *o, int values, const cli_names *known,
                        const char *whose, cli_data *d) {
    memset(d, 0, sizeof *d);
    bp_open_report report;
    char whose_classes[1200];
    int max = o->classes > 0 ? o->classes : known && known->n ? known->n : 0;
    if (o->classes > 0)
        snprintf(whose_classes, sizeof whose_classes, "given by --classes %d", o->classes);
    else
        snprintf(whose_classes, sizeof whose_classes,
                 "the classes of %s (data cannot add classes to a run)", whose ? whose : "?");
    load_ctx lc = {cmd, o, values, known, 0, 0, max, whose_classes, &report};
    int rc = idx_pair(cmd, o->train_images, o->train_labels, "train");
    int n = count_sources(o->data, o->train, o->train_images);
    if (!rc && n != 1)
        return cli_usage_error(
            cmd, "%s: give one of --data NAME, --train FILE, or --train-images and --train-labels",
            n ? "more than one training set" : "no training data");
    if (!rc) rc = load_source(&lc, 0, "--train", o->train, "--targets", o->targets, d);
    if (!rc) rc = take_names(cmd, d, d->train);
    /* Test data (none is fine), its labels mapped onto the training set's classes. */
    bp_open_report train_report = report;
    load_ctx test = lc;
    test.known = d->names.n ? &d->names : known;
    test.max_classes = CLI_MAX_CLASSES; /* checked against the model (cli_check_labels) */
    test.whose = "the most classes a model may have";
    if (!rc) rc = idx_pair(cmd, o->test_images, o->test_labels, "test");
    if (!rc && count_sources(o->data, o->test, o->test_images) > 1)
        return cli_usage_error(cmd, "more than one test set: give one of --data NAME, --test FILE, "
                                    "or --test-images and --test-labels");
    if (!rc) rc = load_source(&test, 1, "--test", o->test, "--test-targets", o->test_targets, d);
    if (!rc) rc = summarize(cmd, d);
    if (!rc) rc = check_classes(cmd, o, d, known, whose, &train_report);
    if (!rc) rc = split(cmd, o, d);
    return rc;
}

int cli_data_load_eval(int cmd, const cli_options *o, int values, const cli_names *known,
                       int model_inputs, int unlabeled, cli_data *d) {
    memset(d, 0, sizeof *d);
    bp_open_report report;
    load_ctx lc = {cmd,          o,         values,          known,
                   model_inputs, unlabeled, CLI_MAX_CLASSES, "the most classes a model may have",
                   &report};
    int rc = idx_pair(cmd, o->test_images, o->test_labels, "test");
    if (rc) return rc;
    int n = count_sources(o->input, o->test, o->test_images) + (o->data[0] != 0);
    if (n != 1)
        return cli_usage_error(cmd,
                               "%s: give one of --input FILE, --data NAME (its test set), --test "
                               "FILE, or --test-images and --test-labels",
                               n ? "more than one data set" : "no data");
    int in = o->input[0] != 0;
    rc = load_source(&lc, 1, in ? "--input" : "--test", in ? o->input : o->test,
                     in ? "--targets" : "--test-targets", in ? o->targets : o->test_targets, d);
    if (!rc && !d->test) rc = CLI_EXIT_FAIL;
    if (!rc) rc = take_names(cmd, d, d->test);
    if (!rc) rc = summarize(cmd, d);
    return rc;
}

int cli_data_scale(int cmd, cli_data *d, int scaling, const float *offset, const float *scale) {
    size_t n = (size_t)d->features;
    d->offset = malloc(n * sizeof(float));
    d->scale = malloc(n * sizeof(float));
    if (!d->offset || !d->scale) return cli_fail(cmd, "out of memory");
    d->scaling = scaling;
    if (offset) {
        memcpy(d->offset, offset, n * sizeof(float));
        memcpy(d->scale, scale, n * sizeof(float));
    } else if (bp_dataset_fit_scaling(d->train, (bp_scaling_kind)scaling, d->offset, d->scale) !=
               BP_OK) {
        return cli_lib_fail(cmd, "");
    }
    bp_dataset *sets[3] = {d->train, d->val, d->test};
    for (int i = 0; i < 3; ++i)
        if (sets[i] && bp_dataset_apply_scaling(sets[i], d->offset, d->scale) != BP_OK)
            return cli_lib_fail(cmd, "");
    return 0;
}

void cli_data_free(cli_data *d) {
    bp_dataset_free(d->train);
    bp_dataset_free(d->val);
    bp_dataset_free(d->test);
    free(d->offset);
    free(d->scale);
    cli_names_free(&d->names);
    memset(d, 0, sizeof *d);
}
