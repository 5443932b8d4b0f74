/* CSV files: one sample per line, numbers separated by a delimiter, an optional header row.
 *
 * The whole file is read into memory and split in place: each cell becomes a NUL-terminated
 * string inside the buffer. Fields may be quoted ("a, b" with "" for a quote) but may not span
 * lines. Blank lines are skipped, CRLF line ends are accepted; a CR inside a line (a file whose
 * lines end in CR alone) is refused with the conversion to use. Numbers are read with strtod, so
 * they follow the C locale's decimal point unless the program has changed LC_NUMERIC. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

typedef struct csv_ctx {
    const char *fn, *path;
    char delim;
    char delim_text[2]; /* the delimiter as a string, for messages */
    int64_t line;       /* 1-based line of the row being read */
    char **cells;       /* the row's cells */
    int n_cells, cap_cells;
    int cols;         /* columns of the first row */
    int *target_of;   /* per column: its place among the targets, or -1 for a feature */
    int *target_cols; /* the target columns, in the order the targets name them */
    int n_targets;
    bp_csv_target kind;
    bp_dataset *d; /* rows filled so far: d->n */
    /* Class names and BP_CSV_CLASS_AUTO: each row's label cell (inside the text) and line,
     * resolved once every row is read. */
    const char **labels;
    int64_t *label_line;
} csv_ctx;

/* Whether labels are read as text first (names, or auto), resolved after the last row. */
static int labels_deferred(bp_csv_target kind) {
    return kind == BP_CSV_CLASS_NAME || kind == BP_CSV_CLASS_AUTO;
}

/* Whether one target column holds class labels of some form. */
static int one_label_column(bp_csv_target kind) {
    return kind == BP_CSV_CLASS_INDEX || labels_deferred(kind);
}

bp_csv_options bp_csv_options_default(void) {
    bp_csv_options o;
    memset(&o, 0, sizeof o);
    o.delimiter = ',';
    o.header = -1;
    o.targets = NULL;
    o.target_kind = BP_CSV_CLASS_INDEX;
    return o;
}

/* "fn: 'path': line L, column C: message" (column 0: no column). */
static bp_status csv_error(const csv_ctx *c, bp_status st, int col, const char *fmt, ...)
    BP_PRINTF(4, 5);
static bp_status csv_error(const csv_ctx *c, bp_status st, int col, const char *fmt, ...) {
    char msg[768], where[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (col > 0)
        snprintf(where, sizeof where, "line %lld, column %d", (long long)c->line, col);
    else
        snprintf(where, sizeof where, "line %lld", (long long)c->line);
    return bp_error(st, "%s: '%s': %s: %s", c->fn, c->path, where, msg);
}

/* ---- splitting a line into cells --------------------------------------------------------- */

static int is_blank(char ch, char delim) {
    return (ch == ' ' || ch == '\t') && ch != delim;
}

static bp_status push_cell(csv_ctx *c, char *cell) {
    if (c->n_cells == c->cap_cells) {
        int cap = c->cap_cells ? c->cap_cells * 2 : 64;
        char **p = c->cap_cells < INT_MAX / 2 ? realloc(c->cells, (size_t)cap * sizeof *p) : NULL;
        if (!p) return csv_error(c, BP_ERR_OUT_OF_MEMORY, 0, "no memory for %d cells", cap);
        c->cells = p;
        c->cap_cells = cap;
    }
    c->cells[c->n_cells++] = cell;
    return BP_OK;
}

/* A quoted field starting at *s (on the quote): unescapes "" in place and NUL-terminates it.
 * *s ends on what follows the field: the delimiter or the line's end, returned in *term. */
static bp_status split_quoted(csv_ctx *c, char **s, char *term) {
    char *cell = *s, *read = *s + 1, *write = *s;
    for (;;) {
        if (*read == '\0')
            return csv_error(c, BP_ERR_CORRUPT_FILE, c->n_cells + 1,
                             "unterminated quoted field (fields may not span lines)");
        if (*read == '"' && read[1] != '"') break;
        if (*read == '"') read++;
        *write++ = *read++;
    }
    read++; /* the closing quote */
    while (is_blank(*read, c->delim))
        read++;
    if (*read != '\0' && *read != c->delim)
        return csv_error(c, BP_ERR_CORRUPT_FILE, c->n_cells + 1,
                         "unexpected text after a closing quote");
    *term = *read;
    *write = '\0'; /* write < read: the terminator survives */
    *s = read;
    return push_cell(c, cell);
}

/* A plain field from *s: trailing blanks trimmed, NUL-terminated (which may overwrite the
 * delimiter, hence *term). */
static bp_status split_plain(csv_ctx *c, char **s, char *term) {
    char *cell = *s, *end;
    while (**s != '\0' && **s != c->delim)
        (*s)++;
    *term = **s;
    for (end = *s; end > cell && is_blank(end[-1], c->delim); --end)
        ;
    *end = '\0';
    return push_cell(c, cell);
}

/* Splits the NUL-terminated line s into c->cells. */
static bp_status split_line(csv_ctx *c, char *s) {
    c->n_cells = 0;
    for (;;) {
        char term = '\0';
        while (is_blank(*s, c->delim))
            s++;
        bp_status st = *s == '"' ? split_quoted(c, &s, &term) : split_plain(c, &s, &term);
        if (st != BP_OK || term == '\0') return st;
        s++;
    }
}

/* ---- cells as numbers -------------------------------------------------------------------- */

/* The whole cell as a double: 0, or 1 when empty, 2 when not a number. Out-of-range values come
 * back as +-HUGE_VAL (then refused as Inf) or as denormals and zero (kept). */
static int parse_number(const char *s, double *v) {
    char *end;
    if (*s == '\0') return 1;
    *v = strtod(s, &end);
    return *end == '\0' ? 0 : 2;
}

/* ---- the header and the target columns --------------------------------------------------- */

/* Whether the first row looks like a header: a cell that holds text other than a number over
 * a number in the second row `next` (so a column of class names is not a header by itself);
 * with no second row, any such cell. An empty cell does not count, so a data row with a hole
 * is reported rather than skipped. */
static int row_is_header(const csv_ctx *c, const csv_ctx *next) {
    for (int j = 0; j < c->n_cells; ++j) {
        double v;
        if (parse_number(c->cells[j], &v) != 2) continue;
        if (next->n_cells == 0) return 1;
        if (j < next->n_cells && parse_number(next->cells[j], &v) == 0) return 1;
    }
    return 0;
}

/* The cells of the first non-blank line in [p, end) into next (its own copy of the line, in
 * *copy): what header detection compares the first row with. A line that does not split gives
 * no cells (the row is reported when it is read). */
static void peek_next_row(const csv_ctx *c, const char *p, const char *end, csv_ctx *next,
                          char **copy) {
    memset(next, 0, sizeof *next);
    next->fn = c->fn;
    next->path = c->path;
    next->delim = c->delim;
    *copy = NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q == le) {
            p = nl ? nl + 1 : end;
            continue;
        }
        size_t len = (size_t)(le - p);
        if (len && p[len - 1] == '\r') len--;
        *copy = malloc(len + 1);
        if (!*copy || memchr(p, '\0', len)) return;
        memcpy(*copy, p, len);
        (*copy)[len] = '\0';
        if (split_line(next, *copy) != BP_OK) next->n_cells = 0;
        return;
    }
}

/* The column the header names `name`: its index, -1 when none does, or -2 after recording the
 * error when several do (a name that means two columns means neither). */
static int named_column(csv_ctx *c, const char *name, char *const *names) {
    int first = -1;
    for (int j = 0; names && j < c->cols; ++j) {
        if (strcmp(names[j], name) != 0) continue;
        if (first < 0) {
            first = j;
            continue;
        }
        bp_error(BP_ERR_INVALID_ARGUMENT,
                 "%s: '%s': targets names '%s', but the header has that name for columns %d and "
                 "%d: rename one, or give a 0-based column index",
                 c->fn, c->path, name, first, j);
        return -2;
    }
    return first;
}

/* Column of the target token `tok`: a header name first, else a 0-based index (negative
 * counts from the end). -1 after recording the error. */
static int target_column(csv_ctx *c, const char *tok, char *const *names) {
    int named = named_column(c, tok, names);
    if (named != -1) return named < 0 ? -1 : named;
    char *end;
    errno = 0;
    long v = strtol(tok, &end, 10);
    if (*tok == '\0' || *end != '\0' || errno) {
        bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': targets names '%s', %s", c->fn, c->path, tok,
                 names ? "which is neither a column name nor a column index"
                       : "but the file has no header; give a 0-based column index");
        return -1;
    }
    if (v < -(long)c->cols || v >= c->cols) {
        bp_error(BP_ERR_INVALID_ARGUMENT,
                 "%s: '%s': target column %ld is out of range; the file "
                 "has %d column%s (0..%d)",
                 c->fn, c->path, v, c->cols, c->cols == 1 ? "" : "s", c->cols - 1);
        return -1;
    }
    return v < 0 ? (int)(v + c->cols) : (int)v;
}

/* Marks the target columns named by spec (NULL: the last column) in c->target_of. */
static bp_status resolve_targets(csv_ctx *c, const char *spec, char *const *names) {
    if (c->kind == BP_CSV_NO_TARGETS) return BP_OK;
    if (!spec) {
        c->target_of[c->cols - 1] = c->n_targets++;
        return BP_OK;
    }
    int whole = strchr(spec, ',') ? named_column(c, spec, names) : -1; /* a name with a comma */
    if (whole == -2) return BP_ERR_INVALID_ARGUMENT;
    if (whole >= 0) {
        c->target_of[whole] = c->n_targets++;
        return BP_OK;
    }
    size_t len = strlen(spec);
    char *copy = malloc(len + 1), *tok = copy;
    if (!copy) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    memcpy(copy, spec, len + 1);
    bp_status st = BP_OK;
    while (tok && st == BP_OK) {
        char *comma = strchr(tok, ','), *end;
        if (comma) *comma = '\0';
        while (*tok == ' ')
            tok++;
        for (end = tok + strlen(tok); end > tok && end[-1] == ' '; --end)
            ;
        *end = '\0';
        int col = target_column(c, tok, names);
        if (col < 0)
            st = BP_ERR_INVALID_ARGUMENT;
        else if (c->target_of[col] >= 0)
            st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%s': targets names column %d twice", c->fn,
                          c->path, col);
        else
            c->target_of[col] = c->n_targets++;
        tok = comma ? comma + 1 : NULL;
    }
    free(copy);
    return st;
}

/* The first row: the column count, the header (when there is one), the targets. rest and end
 * span the text after the first row. */
static bp_status read_layout(csv_ctx *c, const bp_csv_options *o, const char *rest, const char *end,
                             int *has_header) {
    c->cols = c->n_cells;
    c->target_of = malloc((size_t)c->cols * sizeof *c->target_of);
    if (!c->target_of) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    for (int j = 0; j < c->cols; ++j)
        c->target_of[j] = -1;
    if (o->header < 0) {
        csv_ctx next;
        char *copy;
        peek_next_row(c, rest, end, &next, &copy);
        *has_header = row_is_header(c, &next);
        free(next.cells);
        free(copy);
    } else {
        *has_header = o->header;
    }
    bp_status st = resolve_targets(c, o->targets, *has_header ? c->cells : NULL);
    if (st != BP_OK) return st;
    c->target_cols = malloc((size_t)(c->n_targets ? c->n_targets : 1) * sizeof *c->target_cols);
    if (!c->target_cols) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    for (int j = 0; j < c->cols; ++j)
        if (c->target_of[j] >= 0) c->target_cols[c->target_of[j]] = j;
    if (c->kind == BP_CSV_NO_TARGETS) return BP_OK;
    if (c->cols == 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s': line %lld has one column, with no '%s' in it: no feature is "
                        "left once the target is taken (another delimiter?)",
                        c->fn, c->path, (long long)c->line,
                        c->delim == '\t' ? "\\t" : c->delim_text);
    if (c->n_targets >= c->cols)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s': all %d columns are targets; no feature is left", c->fn, c->path,
                        c->cols);
    if (one_label_column(c->kind) && c->n_targets != 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s': a class label needs one target column, targets names %d", c->fn,
                        c->path, c->n_targets);
    return BP_OK;
}

/* ---- rows -------------------------------------------------------------------------------- */

/* Cell `col` as a finite double. */
static bp_status cell_double(csv_ctx *c, int col, double *v) {
    const char *s = c->cells[col];
    int bad = parse_number(s, v);
    if (bad == 1) return csv_error(c, BP_ERR_CORRUPT_FILE, col + 1, "empty cell");
    if (bad == 2) return csv_error(c, BP_ERR_CORRUPT_FILE, col + 1, "'%.40s' is not a number", s);
    if (!isfinite(*v))
        return csv_error(c, BP_ERR_NON_FINITE, col + 1, "'%.40s' is %s", s,
                         isnan(*v) ? "NaN" : "Inf");
    return BP_OK;
}

/* Cell `col` as a finite float. */
static bp_status cell_float(csv_ctx *c, int col, float *out) {
    double v = 0.0;
    bp_status st = cell_double(c, col, &v);
    if (st == BP_OK && isinf((float)v))
        st = csv_error(c, BP_ERR_NON_FINITE, col + 1, "'%.40s' is beyond float32's range",
                       c->cells[col]);
    if (st == BP_OK) *out = (float)v;
    return st;
}

/* A label that strtod reads as NaN or Inf ("nan", "inf") may well be a name: say how to read
 * the labels as names, by the target kind's name and the command line's flag. */
static bp_status read_class_index(csv_ctx *c, int col, int32_t *label) {
    const char *s = c->cells[col];
    double v = 0.0;
    int bad = parse_number(s, &v);
    if (bad) return cell_double(c, col, &v); /* empty, or not a number: its own message */
    const char *why = bp_io_class_index_problem(v);
    if (why && !isfinite(v))
        return csv_error(c, BP_ERR_NON_FINITE, col + 1,
                         "'%.40s' %s; if the labels are names, read them as names (target kind "
                         "%s; --target-kind names on the backprop command line)",
                         s, why, bp_csv_target_name(BP_CSV_CLASS_NAME));
    if (why) return csv_error(c, BP_ERR_CORRUPT_FILE, col + 1, "'%.40s' %s", s, why);
    *label = (int32_t)v; /* in range: the conversion is defined */
    return BP_OK;
}

/* Exactly one 1 among the target columns, the rest 0; the class is the 1's place. */
static bp_status read_one_hot(csv_ctx *c, const int *cols, int32_t *label) {
    int ones = 0;
    for (int t = 0; t < c->n_targets; ++t) {
        double v = 0.0;
        bp_status st = cell_double(c, cols[t], &v);
        if (st == BP_OK && v != 0.0 && v != 1.0)
            st = csv_error(c, BP_ERR_CORRUPT_FILE, cols[t] + 1,
                           "'%.40s' is not 0 or 1 in a one-hot target", c->cells[cols[t]]);
        if (st == BP_OK && v == 1.0 && ones++)
            st = csv_error(c, BP_ERR_CORRUPT_FILE, cols[t] + 1, "a second 1 in a one-hot target");
        if (st != BP_OK) return st;
        if (v == 1.0) *label = t;
    }
    if (!ones) return csv_error(c, BP_ERR_CORRUPT_FILE, cols[0] + 1, "a one-hot target with no 1");
    return BP_OK;
}

static bp_status read_targets(csv_ctx *c) {
    const int *cols = c->target_cols;
    bp_dataset *d = c->d;
    if (c->kind == BP_CSV_NO_TARGETS) return BP_OK;
    if (labels_deferred(c->kind)) {
        if (!c->cells[cols[0]][0])
            return csv_error(c, BP_ERR_CORRUPT_FILE, cols[0] + 1, "empty cell");
        c->labels[d->n] = c->cells[cols[0]];
        c->label_line[d->n] = c->line;
        return BP_OK;
    }
    if (c->kind == BP_CSV_CLASS_INDEX) return read_class_index(c, cols[0], (int32_t *)d->y + d->n);
    if (c->kind == BP_CSV_ONE_HOT) return read_one_hot(c, cols, (int32_t *)d->y + d->n);
    float *y = (float *)d->y + (size_t)d->n * (size_t)d->width;
    for (int t = 0; t < c->n_targets; ++t) {
        bp_status st = cell_float(c, cols[t], &y[t]);
        if (st != BP_OK) return st;
    }
    return BP_OK;
}

static bp_status read_row(csv_ctx *c) {
    if (c->n_cells != c->cols)
        return csv_error(c, BP_ERR_CORRUPT_FILE, (c->n_cells < c->cols ? c->n_cells : c->cols) + 1,
                         "the row has %d column%s, the first row %d", c->n_cells,
                         c->n_cells == 1 ? "" : "s", c->cols);
    bp_dataset *d = c->d;
    float *x = d->x + (size_t)d->n * (size_t)d->features;
    for (int j = 0, f = 0; j < c->cols; ++j) {
        if (c->target_of[j] >= 0) continue;
        bp_status st = cell_float(c, j, &x[f++]);
        if (st != BP_OK) return st;
    }
    bp_status st = read_targets(c);
    if (st == BP_OK) d->n++;
    return st;
}

/* ---- the file ---------------------------------------------------------------------------- */

static int line_is_blank(const char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0';
}

/* Room for every row left plus the current one when it is data. A data row of k columns takes
 * at least 2k - 1 bytes (k numbers, k - 1 delimiters), so the bound is both the lines left and
 * the bytes left over 2k - 1: memory stays within about twice the file's size however many
 * blank lines it has. */
static bp_status allocate_rows(csv_ctx *c, const char *rest, const char *end, int this_row) {
    int64_t lines = rest < end; /* a last line without '\n' */
    for (const char *p = rest; p < end && (p = memchr(p, '\n', (size_t)(end - p))); ++p)
        lines++;
    int64_t by_size = (int64_t)(end - rest) / (2 * (int64_t)c->cols - 1) + 1;
    int64_t rows = (lines < by_size ? lines : by_size) + this_row;
    if (rows == 0) rows = 1;
    int width = c->kind == BP_CSV_VALUES ? c->n_targets : c->kind == BP_CSV_NO_TARGETS ? 0 : 1;
    bp_target_kind kind = c->kind == BP_CSV_VALUES       ? BP_TARGET_VALUES
                          : c->kind == BP_CSV_NO_TARGETS ? BP_TARGET_NONE
                                                         : BP_TARGET_CLASS;
    bp_status st = BP_OK;
    c->d = bp_dataset_new(c->fn, rows, c->cols - c->n_targets, kind, width, &st);
    if (c->d) c->d->n = 0;
    if (c->d && labels_deferred(c->kind)) {
        c->labels = malloc((size_t)rows * sizeof *c->labels);
        c->label_line = malloc((size_t)rows * sizeof *c->label_line);
        if (!c->labels || !c->label_line)
            st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory for %lld labels", c->fn,
                          (long long)rows);
    }
    return st;
}

/* One non-blank line, NUL-terminated at p: the layout when it is the first, else a row. */
static bp_status read_line(csv_ctx *c, char *p, const char *next, const char *end,
                           const bp_csv_options *o) {
    bp_status st = split_line(c, p);
    if (st != BP_OK || c->d) return st == BP_OK ? read_row(c) : st;
    int has_header = 0;
    st = read_layout(c, o, next, end, &has_header);
    if (st == BP_OK) st = allocate_rows(c, next, end, !has_header);
    return st == BP_OK && !has_header ? read_row(c) : st;
}

static bp_status parse_text(csv_ctx *c, char *text, size_t len, const bp_csv_options *o) {
    char *p = text, *end = text + len;
    bp_status st = BP_OK;
    for (c->line = 1; st == BP_OK && p < end; c->line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        if (memchr(p, '\0', (size_t)(le - p)))
            return csv_error(c, BP_ERR_CORRUPT_FILE, 0, "a NUL byte: not a text file");
        if (le > p && le[-1] == '\r') le--;
        const char *cr = memchr(p, '\r', (size_t)(le - p));
        if (cr)
            return csv_error(c, BP_ERR_CORRUPT_FILE, 0,
                             "a carriage return (CR) at byte %lld of the line: lines that end in "
                             "CR alone (classic Mac OS) are not read; convert them to LF, e.g. "
                             "tr '\\r' '\\n' < '%s' > fixed.csv",
                             (long long)(cr - p) + 1, c->path);
        *le = '\0';
        if (!line_is_blank(p)) st = read_line(c, p, next, end, o);
        p = next;
    }
    if (st == BP_OK && (!c->d || c->d->n == 0))
        st = bp_error(BP_ERR_CORRUPT_FILE, "%s: '%s': line %lld: the file has no data rows", c->fn,
                      c->path, (long long)(c->line > 1 ? c->line - 1 : 1));
    return st;
}

static bp_status check_options(const char *fn, const bp_csv_options *o) {
    if (o->delimiter == '"' || o->delimiter == '\n' || o->delimiter == '\r')
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: the delimiter may not be %s", fn,
                        o->delimiter == '"' ? "a quote" : "a line end");
    if (o->header < -1 || o->header > 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: header is %d, expected -1, 0 or 1", fn,
                        o->header);
    if ((unsigned)o->target_kind > BP_CSV_NO_TARGETS)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: target_kind is %d, not a CSV target kind", fn,
                        (int)o->target_kind);
    if (o->target_kind == BP_CSV_NO_TARGETS && o->targets)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: BP_CSV_NO_TARGETS reads every column as a feature, but targets is "
                        "'%s'",
                        fn, o->targets);
    if (o->n_class_names < 0 || (o->n_class_names > 0 && !o->class_names))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: class_names is %s with n_class_names %d", fn,
                        o->class_names ? "set" : "NULL", o->n_class_names);
    for (int i = 0; i < o->n_class_names; ++i)
        if (!o->class_names[i])
            return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: class_names[%d] is NULL", fn, i);
    return BP_OK;
}

/* ---- class labels read after the last row ---------------------------------------------- */

static int by_text(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct named_class {
    const char *name;
    int32_t index;
} named_class;

static int by_name(const void *a, const void *b) {
    return strcmp(((const named_class *)a)->name, ((const named_class *)b)->name);
}

/* BP_CSV_CLASS_AUTO: indices when every label is a number, names when none is; else the error
 * names a line of each. *names says which. */
static bp_status auto_kind(csv_ctx *c, int *names) {
    int64_t number = -1, text = -1;
    for (int64_t i = 0; i < c->d->n && (number < 0 || text < 0); ++i) {
        double v;
        if (parse_number(c->labels[i], &v) == 0) {
            if (number < 0) number = i;
        } else if (text < 0) {
            text = i;
        }
    }
    *names = number < 0;
    if (number < 0 || text < 0) return BP_OK;
    int64_t later = number > text ? number : text, first = number > text ? text : number;
    c->line = c->label_line[later];
    return csv_error(c, BP_ERR_CORRUPT_FILE, c->target_cols[0] + 1,
                     "the label '%.40s' is a %s, but line %lld has the %s '%.40s': class labels "
                     "are all indices or all names",
                     c->labels[later], later == number ? "number" : "name",
                     (long long)c->label_line[first], later == number ? "name" : "number",
                     c->labels[first]);
}

/* Every label as a class index, with the errors read_class_index gives. */
static bp_status labels_as_indices(csv_ctx *c) {
    int32_t *y = c->d->y;
    for (int64_t i = 0; i < c->d->n; ++i) {
        c->line = c->label_line[i];
        c->cells[c->target_cols[0]] = (char *)c->labels[i];
        bp_status st = read_class_index(c, c->target_cols[0], &y[i]);
        if (st != BP_OK) return st;
    }
    bp_dataset_count_classes(c->d);
    return BP_OK;
}

/* Sorted, distinct copies of the n labels into out; the count. */
static int64_t distinct_names(const char **labels, int64_t n, const char **out) {
    memcpy(out, labels, (size_t)n * sizeof *out);
    qsort(out, (size_t)n, sizeof *out, by_text);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
        if (m == 0 || strcmp(out[i], out[m - 1]) != 0) out[m++] = out[i];
    return m;
}

/* The names table sorted by name: name i has index i. */
static void sort_table(named_class *table, const char *const *names, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        table[i] = (named_class){names[i], (int32_t)i};
    qsort(table, (size_t)n, sizeof *table, by_name);
}

static const named_class *find_name(const named_class *table, int64_t n, const char *name) {
    named_class key = {name, 0};
    return n ? bsearch(&key, table, (size_t)n, sizeof *table, by_name) : NULL;
}

/* The class list: the given names in their order, then the file's other names in byte order;
 * every label mapped to its index through a table sorted by name. */
static bp_status labels_as_names(csv_ctx *c, const bp_csv_options *o) {
    bp_dataset *d = c->d;
    int64_t n = d->n, g = o->n_class_names, k = 0;
    const char **all = malloc((size_t)(n + g) * sizeof *all);
    const char **mine = malloc((size_t)n * sizeof *mine);
    named_class *table = malloc((size_t)(n + g) * sizeof *table);
    bp_status st = BP_OK;
    if (!all || !mine || !table) st = bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    if (st == BP_OK) sort_table(table, o->class_names, g);
    for (int64_t i = 1; st == BP_OK && i < g; ++i)
        if (strcmp(table[i].name, table[i - 1].name) == 0)
            st = bp_error(BP_ERR_INVALID_ARGUMENT, "%s: class_names holds '%.40s' twice", c->fn,
                          table[i].name);
    if (st == BP_OK) {
        for (; k < g; ++k)
            all[k] = o->class_names[k];
        int64_t m = distinct_names(c->labels, n, mine);
        for (int64_t i = 0; i < m; ++i)
            if (!find_name(table, g, mine[i])) all[k++] = mine[i];
        if (k > INT32_MAX)
            st = bp_error(BP_ERR_UNSUPPORTED, "%s: '%s': more than 2^31 classes", c->fn, c->path);
    }
    if (st == BP_OK) st = bp_dataset_set_names(d, c->fn, all, (int)k);
    if (st == BP_OK) sort_table(table, (const char *const *)d->names, k);
    for (int64_t i = 0; st == BP_OK && i < n; ++i) /* every label is in the table */
        ((int32_t *)d->y)[i] = find_name(table, k, c->labels[i])->index;
    free(all);
    free(mine);
    free(table);
    return st;
}

static bp_status resolve_labels(csv_ctx *c, const bp_csv_options *o) {
    int names = 1;
    bp_status st = c->kind == BP_CSV_CLASS_AUTO ? auto_kind(c, &names) : BP_OK;
    if (st != BP_OK) return st;
    return names ? labels_as_names(c, o) : labels_as_indices(c);
}

/* The dataset's final size: the rows read (the allocation counted every line) and the class
 * count. */
static bp_status finish(csv_ctx *c, const bp_csv_options *o) {
    bp_dataset *d = c->d;
    float *x = realloc(d->x, (size_t)d->n * (size_t)d->features * sizeof(float));
    if (x) d->x = x; /* a failed shrink keeps the larger block */
    if (d->width > 0) {
        void *y = realloc(d->y, (size_t)d->n * (size_t)d->width * 4);
        if (y) d->y = y;
    }
    if (labels_deferred(c->kind)) return resolve_labels(c, o);
    if (c->kind == BP_CSV_ONE_HOT)
        d->classes = c->n_targets;
    else
        bp_dataset_count_classes(d);
    return BP_OK;
}

bp_status bp_io_read_text(const char *fn, bp_source src, char **text, size_t *len) {
    bp_reader r = {0};
    bp_status st = bp_reader_open_source(&r, fn, src, 1);
    if (st == BP_OK) st = bp_reader_read_all(&r, text, len);
    bp_reader_close(&r);
    return st;
}

bp_dataset *bp_dataset_load_csv(const char *path, const bp_csv_options *options,
                                bp_status *status) {
    const char *fn = "bp_dataset_load_csv";
    bp_csv_options o = options ? *options : bp_csv_options_default();
    char *text = NULL;
    size_t len = 0;
    bp_source src = {path, path ? path : "(null)"};
    bp_status st = check_options(fn, &o);
    if (st == BP_OK) st = bp_io_read_text(fn, src, &text, &len);
    bp_dataset *d = st == BP_OK ? bp_io_csv_parse(fn, src.name, text, len, &o, &st) : NULL;
    free(text);
    bp_set_status(status, st);
    return d;
}

bp_dataset *bp_io_csv_parse(const char *fn, const char *name, char *text, size_t len,
                            const bp_csv_options *options, bp_status *status) {
    csv_ctx c;
    memset(&c, 0, sizeof c);
    c.fn = fn;
    c.path = name;
    bp_csv_options o = options ? *options : bp_csv_options_default();
    if (o.delimiter == 0) o.delimiter = ',';
    c.delim = o.delimiter;
    c.delim_text[0] = o.delimiter;
    c.kind = o.target_kind;
    bp_status st = check_options(c.fn, &o);
    if (st == BP_OK) st = parse_text(&c, text, len, &o);
    if (st == BP_OK) st = finish(&c, &o);
    free(c.cells);
    free(c.target_of);
    free(c.target_cols);
    free(c.labels);
    free(c.label_line);
    if (st != BP_OK) {
        bp_dataset_free(c.d);
        c.d = NULL;
    }
    bp_set_status(status, st);
    return c.d;
}
