/* What a person sees: the progress bar (or periodic lines when stderr is not a terminal), the
 * per-epoch table and the metrics CSV (plot.c draws the curves). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define TTY_INTERVAL  0.1  /* seconds between redraws of the bar: ~10 a second */
#define LINE_INTERVAL 10.0 /* seconds between plain lines when stderr is a file or pipe */
#define BAR_WIDTH     24

void cli_progress_start(cli_progress *p, int epoch, int epochs, int64_t steps, int64_t first) {
    int quiet = p->quiet;
    memset(p, 0, sizeof *p);
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->epoch = epoch;
    p->epochs = epochs;
    p->steps = steps;
    p->step = first;
    p->start = cli_now();
    p->last_draw = p->start;
}

static void draw(cli_progress *p, double now) {
    double elapsed = now - p->start;
    int64_t done = p->step, left = p->steps - p->step;
    double rate = elapsed > 0 ? (double)p->samples / elapsed : 0.0;
    double per_step = p->done_here ? elapsed / (double)p->done_here : 0.0;
    char eta[32];
    cli_format_duration(per_step * (double)left, eta, sizeof eta);
    double loss = p->loss_n ? p->loss_sum / (double)p->loss_n : NAN;
    if (p->tty) {
        char bar[BAR_WIDTH + 1];
        int fill = p->steps ? (int)(BAR_WIDTH * done / p->steps) : 0;
        for (int i = 0; i < BAR_WIDTH; ++i)
            bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        fprintf(stderr, "\repoch %d/%d [%s] %lld/%lld  loss %.4f  %.0f samples/s  ETA %s\033[K",
                p->epoch, p->epochs, bar, (long long)done, (long long)p->steps, loss, rate, eta);
    } else {
        fprintf(stderr, "epoch %d/%d  step %lld/%lld  loss %.4f  %.0f samples/s  ETA %s\n",
                p->epoch, p->epochs, (long long)done, (long long)p->steps, loss, rate, eta);
    }
    fflush(stderr);
    p->last_draw = now;
}

void cli_progress_step(cli_progress *p, int rows, float loss) {
    p->step++;
    p->done_here++;
    p->samples += rows;
    p->loss_sum += loss;
    p->loss_n++;
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
    printf("%5s  %10s  %10s  %9s  %10s  %8s\n", "epoch", "train loss", "val loss",
           accuracy ? "val acc" : "val mse", "lr", "time");
    fflush(stdout);
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
    printf("%5d  %10.4f  %10s  %9s  %10.3e  %7.1fs\n", r->epoch, r->train_loss, val, metric, r->lr,
           r->seconds);
    fflush(stdout);
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
    cli_atomic_file a;
    if (cli_atomic_open(&a, path)) return -1;
    fprintf(a.f, "epoch,train_loss,val_loss,%s,lr,seconds\n",
            accuracy ? "val_accuracy" : "val_mse");
    for (int i = 0; i < h->n; ++i) {
        const cli_epoch_row *r = &h->rows[i];
        fprintf(a.f, "%d,%.6g,", r->epoch, r->train_loss);
        if (r->has_val)
            fprintf(a.f, "%.6g,%.6g,", r->val_loss, r->val_metric);
        else
            fputs(",,", a.f);
        fprintf(a.f, "%.6g,%.3f\n", r->lr, r->seconds);
    }
    return cli_atomic_commit(&a);
}
