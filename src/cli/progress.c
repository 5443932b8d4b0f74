/* What a person sees: the progress bar (or periodic lines when stderr is not a terminal), the
 * per-epoch table and the metrics CSV (plot.c draws the curves). */
#define _DEFAULT_SOURCE /* TIOCGWINSZ */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

#define TTY_INTERVAL  0.1  /* seconds between redraws of the bar: ~10 a second */
#define LINE_INTERVAL 10.0 /* seconds between plain lines when stderr is a file or pipe */
#define SMOOTHING     0.3  /* weight of the newest interval in the rate's moving average (tqdm's) */
#define MIN_BAR       6    /* narrower than this, the bar goes and the text stays */

void cli_progress_start(cli_progress *p, int epoch, int epochs, int64_t steps, int64_t first) {
    int quiet = p->quiet;
    cli_progress_run run = p->run;
    memset(p, 0, sizeof *p);
    p->quiet = quiet;
    p->run = run;
    p->tty = isatty(STDERR_FILENO);
    p->epoch = epoch;
    p->epochs = epochs;
    p->steps = steps;
    p->step = first;
    p->drawn_step = first;
    p->start = cli_now();
    p->last_draw = p->start;
    if (p->run.start == 0.0) p->run.start = p->start;
    if (p->run.last_epoch == 0) p->run.last_epoch = epochs;
}

/* ---- what the bar says ---- */

/* Seconds as tqdm writes them: 00:04, 1:02:03; "?" when unknown. */
static void clock_text(double seconds, char *buf, size_t size) {
    if (!(seconds >= 0) || seconds > 3.6e8) {
        snprintf(buf, size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%02ld:%02ld", s / 60, s % 60);
}

/* 812, 41.0k, 412k, 1.23M: three digits and an SI prefix. */
static void rate_text(double rate, char *buf, size_t size) {
    static const char prefix[] = {'\0', 'k', 'M', 'G', 'T'};
    int k = 0;
    while (rate >= 999.5 && k < 4)
        rate /= 1000.0, ++k;
    const char *fmt = rate >= 99.95 || k == 0 ? "%.0f%c" : rate >= 9.995 ? "%.1f%c" : "%.2f%c";
    snprintf(buf, size, fmt, rate, prefix[k]); /* no prefix: the string ends at its NUL */
}

/* The smoothed rates (steps and samples a second); 0 before the first interval. */
static double step_rate(const cli_progress *p) {
    return p->ema_seconds > 0.0 ? p->ema_steps / p->ema_seconds : 0.0;
}

static double sample_rate(const cli_progress *p) {
    return p->ema_seconds > 0.0 ? p->ema_samples / p->ema_seconds : 0.0;
}

/* Seconds left in the epoch and in the run (this invocation): the steps left at the smoothed
 * rate, and a validation pass like the last one after this epoch and each one left. */
static double epoch_left(const cli_progress *p) {
    double r = step_rate(p);
    return p->step >= p->steps ? 0.0 : r > 0.0 ? (double)(p->steps - p->step) / r : -1.0;
}

static double run_left(const cli_progress *p) {
    int after = p->run.last_epoch - p->epoch; /* epochs after this one */
    double here = epoch_left(p), r = step_rate(p);
    if (after < 0) after = 0;
    if (here < 0.0 || (after > 0 && r <= 0.0)) return -1.0;
    return here + (after > 0 ? (double)after * (double)p->steps / r : 0.0) +
           (double)(after + 1) * p->run.val_seconds; /* this epoch's validation is still to come */
}

/* The texts of a redraw: the parts that always show, and the bracketed items in the order
 * they are kept when the terminal is narrow. */
enum { ITEM_TIMES, ITEM_LOSS, ITEM_RUN, ITEM_ACC, ITEM_RATE, N_ITEMS };
static const int SHOWN_ORDER[N_ITEMS] = {ITEM_TIMES, ITEM_RATE, ITEM_LOSS, ITEM_ACC, ITEM_RUN};

typedef struct bar_text {
    char head[48], pct[8], count[48];
    char item[N_ITEMS][64];
} bar_text;

static void bar_texts(const cli_progress *p, double now, bar_text *t) {
    char a[24], b[24];
    memset(t, 0, sizeof *t); /* an item left empty is not shown */
    snprintf(t->head, sizeof t->head, "epoch %d/%d:", p->epoch, p->epochs);
    int pct = p->steps ? (int)(100 * p->step / p->steps) : 0;
    snprintf(t->pct, sizeof t->pct, "%3d%%", pct);
    snprintf(t->count, sizeof t->count, "%lld/%lld", (long long)p->step, (long long)p->steps);
    clock_text(now - p->start, a, sizeof a);
    clock_text(epoch_left(p), b, sizeof b);
    snprintf(t->item[ITEM_TIMES], sizeof t->item[0], "%s<%s", a, b);
    if (sample_rate(p) > 0.0) {
        rate_text(sample_rate(p), a, sizeof a);
        snprintf(t->item[ITEM_RATE], sizeof t->item[0], "%s samples/s", a);
    } else {
        snprintf(t->item[ITEM_RATE], sizeof t->item[0], "? samples/s");
    }
    if (p->loss_n)
        snprintf(t->item[ITEM_LOSS], sizeof t->item[0], "loss=%.4f",
                 p->loss_sum / (double)p->loss_n);
    if (p->run.has_acc && p->scored)
        snprintf(t->item[ITEM_ACC], sizeof t->item[0], "acc=%.1f%%",
                 100.0 * (double)p->right / (double)p->scored);
    clock_text(now - p->run.start, a, sizeof a);
    clock_text(run_left(p), b, sizeof b);
    snprintf(t->item[ITEM_RUN], sizeof t->item[0], "run %s<%s", a, b);
}

/* The line with the first `keep` items (and their bracket) and, when bar > 0, a bar of that
 * many columns; its width in columns, *len its bytes. */
static int compose(const bar_text *t, int keep, int bar, double frac, int unicode, char *out,
                   size_t size, size_t *len) {
    size_t at = 0;
    int cols = 0;
#define PUT(s)                                                                                     \
    do {                                                                                           \
        int n_ = snprintf(out + at, at < size ? size - at : 0, "%s", s);                           \
        at += (size_t)n_;                                                                          \
        cols += n_;                                                                                \
    } while (0)
    PUT(t->head);
    PUT(" ");
    PUT(t->pct);
    if (bar > 0) {
        /* tqdm's bar: whole cells full, one cell a fraction (eighths, or tenths in ASCII) */
        static const char *const EIGHTHS[] = {" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
        double cells = frac * bar;
        int full = (int)cells,
            part = unicode ? (int)((cells - full) * 8) : (int)((cells - full) * 10);
        PUT("|");
        for (int i = 0; i < bar; ++i) {
            char ascii[2] = {i < full ? '#' : i == full && part ? (char)('0' + part) : ' ', '\0'};
            const char *cell = !unicode ? ascii : i < full ? "█" : i == full ? EIGHTHS[part] : " ";
            at += (size_t)snprintf(out + at, at < size ? size - at : 0, "%s", cell);
            cols += 1;
        }
        PUT("|");
    }
    PUT(" ");
    PUT(t->count);
    int any = 0;
    for (int k = 0; k < N_ITEMS; ++k) {
        int item = SHOWN_ORDER[k];
        if (item >= keep || !t->item[item][0]) continue;
        PUT(any++ ? ", " : " [");
        PUT(t->item[item]);
    }
    if (any) PUT("]");
#undef PUT
    *len = at < size ? at : size - 1;
    return cols;
}

/* The bar for a terminal cols columns wide, at time now: what the redraw writes (no \r), never
 * wider than cols - 1. */
static void progress_line(const cli_progress *p, double now, int cols, int unicode, char *out,
                          size_t size) {
    bar_text t;
    bar_texts(p, now, &t);
    int avail = cols - 1; /* the last column would leave the cursor waiting to wrap */
    double frac = p->steps ? (double)p->step / (double)p->steps : 0.0;
    size_t len;
    out[0] = '\0';
    if (avail <= 0) return;
    /* A bar with at least the epoch's times beside it, keeping as many items as leave it room;
     * else no bar, as many items as fit; else the start of the shortest line. */
    for (int keep = N_ITEMS; keep >= 1; --keep) {
        int fixed = compose(&t, keep, 0, frac, unicode, out, size, &len) + 2;
        if (avail - fixed >= MIN_BAR) {
            compose(&t, keep, avail - fixed, frac, unicode, out, size, &len);
            return;
        }
    }
    for (int keep = N_ITEMS; keep >= 0; --keep)
        if (compose(&t, keep, 0, frac, unicode, out, size, &len) <= avail) return;
    compose(&t, 0, 0, frac, unicode, out, size, &len);
    if ((size_t)avail < len) out[avail] = '\0'; /* no bar: one byte a column */
}

/* The terminal's width: the kernel's (asked at every redraw, so a resize is followed), else
 * COLUMNS, else 80. */
static int terminal_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *env = getenv("COLUMNS");
    int c = env ? atoi(env) : 0;
    return c > 0 ? c : 80;
}

/* Whether the terminal takes UTF-8 (the locale's variables say so): the bar's block cells. */
static int utf8_terminal(void) {
    static const char *const vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (int i = 0; i < 3; ++i) {
        const char *v = getenv(vars[i]);
        if (!v || !v[0]) continue;
        return strstr(v, "UTF-8") || strstr(v, "utf-8") || strstr(v, "UTF8") || strstr(v, "utf8");
    }
    return 0;
}

/* tqdm's moving average of the interval since the last redraw. */
static void smooth(cli_progress *p, double now) {
    double dt = now - p->last_draw;
    if (dt <= 0.0 || p->step == p->drawn_step) return;
    double steps = (double)(p->step - p->drawn_step),
           samples = (double)(p->samples - p->drawn_samples);
    if (p->ema_n == 0) {
        p->ema_steps = steps, p->ema_samples = samples, p->ema_seconds = dt;
    } else {
        p->ema_steps = SMOOTHING * steps + (1 - SMOOTHING) * p->ema_steps;
        p->ema_samples = SMOOTHING * samples + (1 - SMOOTHING) * p->ema_samples;
        p->ema_seconds = SMOOTHING * dt + (1 - SMOOTHING) * p->ema_seconds;
    }
    p->ema_n++;
    p->drawn_step = p->step;
    p->drawn_samples = p->samples;
}

static void draw(cli_progress *p, double now) {
    char line[4096];
    smooth(p, now);
    if (p->tty) {
        progress_line(p, now, terminal_columns(), utf8_terminal(), line, sizeof line);
        fprintf(stderr, "\r%s\033[K", line);
    } else { /* a line a log keeps: every item, no bar */
        bar_text t;
        size_t len;
        bar_texts(p, now, &t);
        compose(&t, N_ITEMS, 0, 0.0, 0, line, sizeof line, &len);
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
    p->last_draw = now;
}

void cli_progress_results(cli_progress *p, const bp_step_totals *t, int scored) {
    p->loss_sum += t->loss_sum;
    p->loss_n += t->steps;
    if (scored) {
        p->right += t->correct;
        p->scored += t->rows;
    }
}

void cli_progress_step(cli_progress *p, int rows) {
    p->step++;
    p->done_here++;
    p->samples += rows;
    if (p->quiet) return;
    double now = cli_now();
    double interval = p->tty ? TTY_INTERVAL : LINE_INTERVAL;
    if (now - p->last_draw >= interval || (p->tty && p->step == p->steps)) draw(p, now);
}

void cli_progress_clear(cli_progress *p) {
    if (p->tty && !p->quiet) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* ---- the table ---- */

void cli_table_header(int accuracy) {
    fprintf(cli_out(), "%5s  %10s  %10s  %9s  %10s  %8s\n", "epoch", "train loss", "val loss",
            accuracy ? "val acc" : "val mse", "lr", "time");
    fflush(cli_out());
}

void cli_table_row(const cli_epoch_row *r, int accuracy) {
    char val[32] = "-", metric[32] = "-";
    if (r->has_val) {
        snprintf(val, sizeof val, "%.4f", r->val_loss);
        if (accuracy)
            snprintf(metric, sizeof metric, "%.2f%%", 100.0 * r->val_metric);
        else
            snprintf(metric, sizeof metric, "%.4g", r->val_metric);
    }
    fprintf(cli_out(), "%5d  %10.4f  %10s  %9s  %10.3e  %7.1fs\n", r->epoch, r->train_loss, val,
            metric, r->lr, r->seconds);
    fflush(cli_out());
}

/* ---- history and the metrics CSV ---- */

int cli_history_add(cli_history *h, const cli_epoch_row *r) {
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 32;
        cli_epoch_row *rows = realloc(h->rows, (size_t)cap * sizeof *rows);
        if (!rows) return -1;
        h->rows = rows;
        h->cap = cap;
    }
    h->rows[h->n++] = *r;
    return 0;
}

void cli_history_free(cli_history *h) {
    free(h->rows);
    memset(h, 0, sizeof *h);
}

/* One CSV field as a number; empty: NaN. */
static double field(char **p) {
    char *s = *p, *end;
    double v = strtod(s, &end);
    if (end == s) v = NAN;
    while (*end && *end != ',' && *end != '\n')
        ++end;
    *p = *end == ',' ? end + 1 : end;
    return v;
}

void cli_history_read_csv(cli_history *h, const char *path, int upto) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        cli_epoch_row r;
        memset(&r, 0, sizeof r);
        double e = field(&p);
        if (!(e >= 1) || e > upto) continue; /* the header, or past the resumed epoch */
        r.epoch = (int)e;
        r.train_loss = field(&p);
        r.val_loss = field(&p);
        r.val_metric = field(&p);
        r.lr = field(&p);
        r.seconds = field(&p);
        r.has_val = !isnan(r.val_loss);
        if (cli_history_add(h, &r)) break;
    }
    fclose(f);
}

int cli_history_write_csv(const cli_history *h, const char *path, int accuracy) {
    bp_file *a = bp_file_open(path, NULL);
    if (!a) return -1;
    FILE *f = bp_file_stream(a);
    fprintf(f, "epoch,train_loss,val_loss,%s,lr,seconds\n", accuracy ? "val_accuracy" : "val_mse");
    for (int i = 0; i < h->n; ++i) {
        const cli_epoch_row *r = &h->rows[i];
        fprintf(f, "%d,%.6g,", r->epoch, r->train_loss);
        if (r->has_val)
            fprintf(f, "%.6g,%.6g,", r->val_loss, r->val_metric);
        else
            fputs(",,", f);
        fprintf(f, "%.6g,%.3f\n", r->lr, r->seconds);
    }
    return bp_file_commit(a) == BP_OK ? 0 : -1; /* errno kept */
}
