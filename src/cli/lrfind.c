/* backprop lr-find: the learning-rate range test. The rate grows exponentially from --start-lr
 * to --end-lr over --steps steps (a step schedule with step size 1 and gamma the per-step
 * ratio); the test stops when the smoothed loss explodes, and suggests the rate where the
 * smoothed loss falls fastest (or, failing a clear descent, a tenth of the minimum-loss rate). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define SMOOTH  0.95 /* exponential moving average of the loss, debiased */
#define EXPLODE 4.0  /* stop when the smoothed loss exceeds this times its minimum */

typedef struct curve {
    double *lr, *loss, *smooth;
    int n;
} curve;

static bp_optimizer *range_optimizer(cli_session *s, int steps) {
    bp_optim_config c = cli_optim_config(&s->o, s->steps_per_epoch);
    c.lr = s->o.start_lr;
    c.schedule.kind = BP_SCHEDULE_STEP;
    c.schedule.warmup_steps = 0;
    c.schedule.step_size = 1;
    c.schedule.gamma = pow(s->o.end_lr / s->o.start_lr, 1.0 / (steps - 1));
    bp_status st;
    bp_optimizer *opt = bp_optimizer_create(s->m, &c, &st);
    if (!opt) cli_lib_fail(CMD_LRFIND, "creating the optimizer");
    return opt;
}

/* The next batch, starting another epoch when one runs out. */
static int next_batch(cli_session *s, int64_t *epoch, const bp_tensor **x, const bp_tensor **y) {
    for (int tries = 0; tries < 2; ++tries) {
        if (bp_loader_next(s->loader, x, y) != BP_OK) return cli_lib_fail(CMD_LRFIND, "");
        if (*x) return 0;
        if (bp_loader_start_epoch(s->loader, ++*epoch, 0) != BP_OK)
            return cli_lib_fail(CMD_LRFIND, "");
    }
    return cli_fail(CMD_LRFIND, "the training set is empty");
}

static int run_range(cli_session *s, bp_optimizer *opt, curve *c) {
    int64_t epoch = 0;
    if (bp_loader_start_epoch(s->loader, 0, 0) != BP_OK) return cli_lib_fail(CMD_LRFIND, "");
    cli_progress prog = {.quiet = s->o.quiet};
    cli_progress_start(&prog, 1, 1, s->o.steps, 0);
    double avg = 0.0, best = INFINITY;
    for (int i = 0; i < s->o.steps; ++i) {
        const bp_tensor *x, *y;
        int rc = next_batch(s, &epoch, &x, &y);
        if (rc) return rc;
        double lr = bp_optimizer_lr(opt);
        float loss = 0.0f;
        bp_status st = bp_train_step(s->m, opt, &s->loss, x, y, &loss);
        if (st == BP_ERR_NON_FINITE) {
            cli_progress_clear(&prog);
            printf("stopped at lr %.3g: the loss is no longer finite\n", lr);
            break;
        }
        if (st != BP_OK) return cli_progress_clear(&prog), cli_lib_fail(CMD_LRFIND, "");
        avg = SMOOTH * avg + (1.0 - SMOOTH) * loss;
        double smooth = avg / (1.0 - pow(SMOOTH, i + 1));
        c->lr[c->n] = lr, c->loss[c->n] = loss, c->smooth[c->n] = smooth, c->n++;
        bp_step_totals done; /* the step just waited for */
        if (bp_train_results(opt, 0, &done) != BP_OK)
            return cli_progress_clear(&prog), cli_lib_fail(CMD_LRFIND, "");
        cli_progress_step(&prog, (int)bp_tensor_rows(x));
        cli_progress_results(&prog, &done, 0);
        if (smooth < best) best = smooth;
        if (i > 5 && smooth > EXPLODE * best) {
            cli_progress_clear(&prog);
            printf("stopped at lr %.3g: the smoothed loss %.4g is over %g x its minimum %.4g\n", lr,
                   smooth, EXPLODE, best);
            break;
        }
    }
    cli_progress_clear(&prog);
    return 0;
}

/* The EMA the stop rule uses lags the loss by ~1/(1-SMOOTH) steps, which would push the
 * suggestion to too high a rate; the curve and the suggestion use a centred moving average. */
static void centre_smooth(curve *c) {
    int w = c->n / 25 > 2 ? c->n / 25 : 2;
    for (int i = 0; i < c->n; ++i) {
        int lo = i - w < 0 ? 0 : i - w, hi = i + w >= c->n ? c->n - 1 : i + w;
        double sum = 0.0;
        for (int k = lo; k <= hi; ++k)
            sum += c->loss[k];
        c->smooth[i] = sum / (hi - lo + 1);
    }
}

/* Steepest descent of the smoothed loss against log(lr), before its minimum, skipping the
 * first points where the average is still settling. *min_at: the minimum's index. */
static int suggest(const curve *c, int *min_at) {
    int lo = c->n / 10, best = -1;
    *min_at = 0;
    for (int i = 1; i < c->n; ++i)
        if (c->smooth[i] < c->smooth[*min_at]) *min_at = i;
    double steepest = 0.0;
    for (int i = lo > 1 ? lo : 1; i < *min_at; ++i) {
        double slope = (c->smooth[i + 1] - c->smooth[i - 1]) / log(c->lr[i + 1] / c->lr[i - 1]);
        if (slope < steepest) steepest = slope, best = i;
    }
    return best;
}

static void print_curve(const curve *c) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < c->n; ++i)
        lo = fmin(lo, c->smooth[i]), hi = fmax(hi, c->smooth[i]);
    int every = c->n > 40 ? (c->n + 39) / 40 : 1;
    printf("%10s  %10s  %10s\n", "lr", "loss", "smoothed");
    for (int i = 0; i < c->n; ++i) {
        if (i % every && i != c->n - 1) continue;
        int bar = hi > lo ? (int)(40.0 * (c->smooth[i] - lo) / (hi - lo) + 0.5) : 0;
        printf("%10.3e  %10.4f  %10.4f  %.*s|\n", c->lr[i], c->loss[i], c->smooth[i], bar,
               "........................................");
    }
}

static int write_outputs(const cli_session *s, const curve *c, double suggestion) {
    if (s->o.metrics[0]) {
        bp_file *a = bp_file_open(s->o.metrics, NULL);
        int bad = !a;
        if (a) {
            FILE *f = bp_file_stream(a);
            fprintf(f, "step,lr,loss,smoothed\n");
            for (int i = 0; i < c->n; ++i)
                fprintf(f, "%d,%.6g,%.6g,%.6g\n", i, c->lr[i], c->loss[i], c->smooth[i]);
            bad = bp_file_commit(a) != BP_OK;
        }
        if (bad)
            return cli_fail(CMD_LRFIND, "--metrics: cannot write '%s': %s", s->o.metrics,
                            strerror(errno));
    }
    if (!s->o.plot[0] || c->n < 2 || !cli_gnuplot_ready(CMD_LRFIND, NULL)) return 0;
    char *g = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&g, &size);
    if (!f) return cli_fail(CMD_LRFIND, "out of memory");
    fprintf(f, "$d << EOD\n");
    for (int i = 0; i < c->n; ++i)
        fprintf(f, "%.6g %.6g %.6g\n", c->lr[i], c->loss[i], c->smooth[i]);
    fprintf(f,
            "EOD\nset logscale x\nset format x '%%.0e'\nset grid\nset xlabel 'learning rate'\n"
            "set ylabel 'loss'\nset title 'learning-rate range test'\nset yrange [*:%.6g]\n",
            1.3 * c->smooth[0]); /* the explosion would flatten the rest */
    if (suggestion > 0)
        fprintf(f, "set arrow from %.6g, graph 0 to %.6g, graph 1 nohead dt 2\n", suggestion,
                suggestion);
    fprintf(f, "plot $d using 1:2 with lines lc rgb '#bbbbbb' title 'loss', $d using 1:3 with "
               "lines lw 2 title 'smoothed'\n");
    fclose(f);
    int rc = cli_gnuplot(CMD_LRFIND, g, s->o.plot);
    free(g);
    return rc;
}

int cli_cmd_lrfind(int argc, char **argv) {
    cli_session s;
    int rc = cli_session_setup(&s, CMD_LRFIND, argc, argv);
    bp_optimizer *opt = NULL;
    curve c = {0};
    if (!rc && !(s.o.end_lr > s.o.start_lr))
        rc = cli_usage_error(CMD_LRFIND, "--end-lr %g must be above --start-lr %g", s.o.end_lr,
                             s.o.start_lr);
    if (!rc && !(opt = range_optimizer(&s, s.o.steps))) rc = CLI_EXIT_FAIL;
    if (!rc) {
        size_t n = (size_t)s.o.steps;
        c.lr = malloc(n * sizeof(double));
        c.loss = malloc(n * sizeof(double));
        c.smooth = malloc(n * sizeof(double));
        if (!c.lr || !c.loss || !c.smooth) rc = (cli_fail(CMD_LRFIND, "out of memory"), 1);
    }
    if (!rc) {
        printf("lr-find: ");
        cli_describe_model(s.m, stdout);
        printf(" on %s; lr %g -> %g over %d steps of batch %d\n", bp_device_name(s.dev),
               s.o.start_lr, s.o.end_lr, s.o.steps, s.o.batch);
        fflush(stdout);
        rc = run_range(&s, opt, &c);
    }
    if (!rc) {
        centre_smooth(&c);
        print_curve(&c);
        int min_at = 0, steep = c.n > 2 ? suggest(&c, &min_at) : -1;
        double suggestion = steep >= 0 ? c.lr[steep] : c.n ? c.lr[min_at] / 10 : 0;
        if (steep >= 0)
            printf("suggested lr: %.3g (steepest descent of the smoothed loss); minimum loss at lr "
                   "%.3g, / 10 = %.3g\n",
                   suggestion, c.lr[min_at], c.lr[min_at] / 10);
        else if (c.n)
            printf("suggested lr: %.3g (the minimum-loss lr %.3g / 10; no clear descent)\n",
                   suggestion, c.lr[min_at]);
        rc = write_outputs(&s, &c, suggestion);
    }
    free(c.lr);
    free(c.loss);
    free(c.smooth);
    bp_optimizer_free(opt);
    cli_session_free(&s);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
