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
} csv_ctx;

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

/* Whether the first row looks like a header: a cell that holds text other than a number (an
 * empty cell does not count, so a data row with a hole is reported rather than skipped). */
static int row_is_header(const csv_ctx *c) {
    for (int j = 0; j < c->n_cells; ++j) {
        double v;
        if (parse_number(c->cells[j], &v) == 2) return 1;
    }
    return 0;
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

/* The first row: the column count, the header (when there is one), the targets. */
static bp_status read_layout(csv_ctx *c, const bp_csv_options *o, int *has_header) {
    c->cols = c->n_cells;
    c->target_of = malloc((size_t)c->cols * sizeof *c->target_of);
    if (!c->target_of) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    for (int j = 0; j < c->cols; ++j)
        c->target_of[j] = -1;
    *has_header = o->header < 0 ? row_is_header(c) : o->header;
    bp_status st = resolve_targets(c, o->targets, *has_header ? c->cells : NULL);
    if (st != BP_OK) return st;
    c->target_cols = malloc((size_t)c->n_targets * sizeof *c->target_cols);
    if (!c->target_cols) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", c->fn);
    for (int j = 0; j < c->cols; ++j)
        if (c->target_of[j] >= 0) c->target_cols[c->target_of[j]] = j;
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
    if (c->kind == BP_CSV_CLASS_INDEX && c->n_targets != 1)
        return bp_error(BP_ERR_INVALID_ARGUMENT,
                        "%s: '%s': a class index needs one target column, targets names %d", c->fn,
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

static bp_status read_class_index(csv_ctx *c, int col, int32_t *label) {
    double v = 0.0;
    bp_status st = cell_double(c, col, &v);
    if (st == BP_OK && (v < 0.0 || v > INT32_MAX || v != floor(v)))
        st = csv_error(c, BP_ERR_CORRUPT_FILE, col + 1,
                       "'%.40s' is not a class index (an integer >= 0)", c->cells[col]);
    if (st == BP_OK) *label = (int32_t)v; /* in range: the conversion is defined */
    return st;
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
    int width = c->kind == BP_CSV_VALUES ? c->n_targets : 1;
    bp_target_kind kind = c->kind == BP_CSV_VALUES ? BP_TARGET_VALUES : BP_TARGET_CLASS;
    bp_status st = BP_OK;
    c->d = bp_dataset_new(c->fn, rows, c->cols - c->n_targets, kind, width, &st);
    if (c->d) c->d->n = 0;
    return st;
}

/* One non-blank line, NUL-terminated at p: the layout when it is the first, else a row. */
static bp_status read_line(csv_ctx *c, char *p, const char *next, const char *end,
                           const bp_csv_options *o) {
    bp_status st = split_line(c, p);
    if (st != BP_OK || c->d) return st == BP_OK ? read_row(c) : st;
    int has_header = 0;
    st = read_layout(c, o, &has_header);
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
    if ((unsigned)o->target_kind > BP_CSV_VALUES)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: target_kind is %d, not a CSV target kind", fn,
                        (int)o->target_kind);
    return BP_OK;
}

/* The dataset's final size: the rows read (the allocation counted every line) and the class
 * count. */
static void finish(csv_ctx *c) {
    bp_dataset *d = c->d;
    float *x = realloc(d->x, (size_t)d->n * (size_t)d->features * sizeof(float));
    void *y = realloc(d->y, (size_t)d->n * (size_t)d->width * 4);
    if (x) d->x = x; /* a failed shrink keeps the larger block */
    if (y) d->y = y;
    if (c->kind == BP_CSV_ONE_HOT)
        d->classes = c->n_targets;
    else
        bp_dataset_count_classes(d);
}

bp_dataset *bp_dataset_load_csv(const char *path, const bp_csv_options *options,
                                bp_status *status) {
    csv_ctx c;
    memset(&c, 0, sizeof c);
    c.fn = "bp_dataset_load_csv";
    c.path = path ? path : "(null)";
    bp_csv_options o = options ? *options : bp_csv_options_default();
    if (o.delimiter == 0) o.delimiter = ',';
    c.delim = o.delimiter;
    c.delim_text[0] = o.delimiter;
    c.kind = o.target_kind;
    bp_reader r = {0};
    char *text = NULL;
    size_t len = 0;
    bp_status st = check_options(c.fn, &o);
    if (st == BP_OK) st = bp_reader_open(&r, c.fn, path, 1);
    if (st == BP_OK) st = bp_reader_read_all(&r, &text, &len);
    bp_reader_close(&r);
    if (st == BP_OK) st = parse_text(&c, text, len, &o);
    if (st == BP_OK) finish(&c);
    free(text);
    free(c.cells);
    free(c.target_of);
    free(c.target_cols);
    if (st != BP_OK) {
        bp_dataset_free(c.d);
        c.d = NULL;
    }
    bp_set_status(status, st);
    return c.d;
}
