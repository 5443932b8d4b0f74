/* bp_scaling: throughput of data-parallel training over MPI ranks.
 *
 *   mpirun -np N bp_scaling [--config S|M|L[,...]] [--steps K] [--warmup W] [--repeats R]
 *                           [--json FILE]
 *
 * Every rank builds the same model (same seed), attaches it with bp_comm_attach and calls
 * bp_train_step with its shard (bp_comm_shard) of a GLOBAL batch, so samples/s counts global
 * rows and runs on different rank counts do the same work per step. The inputs and labels are
 * random and made up front: no data loading is timed.
 *
 * A sample is K steps after an MPI_Barrier; its time is the slowest rank's (the step is done
 * when every replica is). The all-reduce share is the gradient sum's time over the sample
 * (bp_comm_stats' delta, the max over ranks) over the sample's time. It includes the time a
 * rank waits in MPI_Allreduce for the others to arrive, so the min over ranks is given too (the
 * last rank to arrive hardly waits): that one is closer to the cost of moving the bytes. Rank 0
 * prints one line per config and, with --json, appends one JSON object per line to FILE. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <errno.h>
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <backprop/backprop.h>

#define MAX_LAYERS 4
#define N_BATCHES  4 /* distinct global batches, cycled through by the steps */
#define N_CONFIGS  3

typedef struct scale_config {
    const char *name;
    int n_layers;
    int widths[MAX_LAYERS + 1];
    int batch; /* global rows per step */
    bp_optim_kind optim;
} scale_config;

static const scale_config CONFIGS[N_CONFIGS] = {
    {"S", 2, {784, 128, 10}, 128, BP_OPTIM_SGD},
    {"M", 3, {784, 1024, 1024, 10}, 256, BP_OPTIM_ADAM},
    {"L", 4, {2048, 2048, 2048, 2048, 10}, 512, BP_OPTIM_ADAM},
};

typedef struct options {
    const char *configs, *json;
    int steps, warmup, repeats;
} options;

/* Who this process is, for messages and for the rank-0-only output. */
typedef struct group {
    bp_comm *comm;
    int rank, size;
} group;

/* One rank's replica and its shard of each global batch. */
typedef struct replica {
    bp_device *dev;
    bp_model *model;
    bp_optimizer *opt;
    bp_tensor *x[N_BATCHES], *y[N_BATCHES];
    int64_t rows; /* this rank's rows of each global batch */
} replica;

/* What one config measured; times in seconds per step, over the repeats. */
typedef struct result {
    double step_median, step_min, step_max;
    double share_max, share_min; /* median over samples of all-reduce / step time, the max and
                                  * the min over ranks */
    double allreduce_median;     /* the max over ranks of all-reduce seconds per step */
    double bytes_per_step;       /* the gradient buffer, as bp_comm_stats counts it */
    int omp_threads, cpus;       /* rank 0's OpenMP threads and allowed CPUs */
} result;

/* ---- messages ---- */

/* "bp_scaling (rank R of N): WHAT: <the library's detail>"; returns 1. Every rank that fails
 * says so: after a collective call the others name the rank that refused. */
static int lib_fail(const group *g, const char *what) {
    fflush(stdout);
    const char *detail = bp_last_error();
    fprintf(stderr, "bp_scaling (rank %d of %d): %s: %s\n", g->rank, g->size, what,
            detail[0] ? detail : "failed");
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: mpirun -np N bp_scaling [--config S|M|L[,...]] [--steps K] [--warmup W]\n"
               "                                [--repeats R] [--json FILE]\n"
               "  --config   configs to run, comma-separated (default S,M,L):\n"
               "             S 784-128-10 batch 128 SGD momentum 0.9; M 784-1024-1024-10 batch "
               "256 Adam;\n"
               "             L 2048-2048-2048-2048-10 batch 512 Adam (batch = global rows)\n"
               "  --steps    training steps per timed sample (default 10)\n"
               "  --warmup   untimed steps before the samples (default 3)\n"
               "  --repeats  timed samples; the median and min/max are reported (default 5)\n"
               "  --json     append one JSON object per config (one per line) to FILE\n");
}

/* ---- options ---- */

/* Every rank parses the same argv and reaches the same verdict; err is NULL on every rank but
 * 0, so the message comes once. */
static void say(FILE *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(FILE *err, const char *fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(err, fmt, ap);
    va_end(ap);
}

static int parse_count(FILE *err, const char *flag, const char *text, int min, int *out) {
    char *end = NULL;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || errno || end == text || *end || v < min || v > 1000000) {
        say(err, "bp_scaling: %s wants an integer in [%d, 1000000], not '%s'\n", flag, min,
            text ? text : "(nothing)");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* 0: run; 1: --help was printed; -1: a usage error (printed). */
static int parse_options(int argc, char **argv, FILE *err, options *o) {
    *o = (options){"S,M,L", NULL, 10, 3, 5};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (err) usage(stdout);
            return 1;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL; /* every other option takes a value */
        int rc = 0;
        if (strcmp(a, "--config") == 0 && v)
            o->configs = v;
        else if (strcmp(a, "--json") == 0 && v)
            o->json = v;
        else if (strcmp(a, "--steps") == 0)
            rc = parse_count(err, a, v, 1, &o->steps);
        else if (strcmp(a, "--warmup") == 0)
            rc = parse_count(err, a, v, 0, &o->warmup);
        else if (strcmp(a, "--repeats") == 0)
            rc = parse_count(err, a, v, 1, &o->repeats);
        else {
            say(err, "bp_scaling: unknown option '%s', or it lacks its value\n", a);
            rc = -1;
        }
        if (rc) {
            if (err) usage(err);
            return -1;
        }
    }
    return 0;
}

/* The configs a comma-separated list names, in its order. */
static int pick_configs(FILE *err, const char *list, int picked[N_CONFIGS], int *n_picked) {
    *n_picked = 0;
    for (const char *p = list; *p; p += p[0] == ',') {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int i = 0; i < N_CONFIGS; ++i)
            if (len == strlen(CONFIGS[i].name) && strncmp(p, CONFIGS[i].name, len) == 0) found = i;
        if (found < 0 || *n_picked == N_CONFIGS) {
            say(err, "bp_scaling: --config: '%.*s' is not one of S, M, L (at most 3 names)\n",
                (int)len, p);
            return -1;
        }
        picked[(*n_picked)++] = found;
        p += len;
    }
    if (*n_picked > 0) return 0;
    say(err, "bp_scaling: --config: the list is empty\n");
    return -1;
}

/* ---- the replica and its data ---- */

static uint32_t xorshift32(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Global batch b (inputs in [-1, 1), labels spread over the classes) from a seed of b alone, so
 * the ranks' shards together are the batch one process would train on; only this rank's rows
 * are uploaded. */
static int make_shard(const group *g, const scale_config *c, replica *r, int b, int64_t first) {
    int in = c->widths[0], classes = c->widths[c->n_layers];
    float *x = malloc((size_t)c->batch * (size_t)in * sizeof *x);
    int32_t *y = malloc((size_t)c->batch * sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        fprintf(stderr, "bp_scaling (rank %d of %d): out of host memory for a %d x %d batch\n",
                g->rank, g->size, c->batch, in);
        return 1;
    }
    uint32_t s = 2463534242u ^ ((uint32_t)b + 1u) * 2654435761u;
    for (size_t i = 0; i < (size_t)c->batch * (size_t)in; ++i)
        x[i] = (float)((double)xorshift32(&s) / 2147483648.0 - 1.0);
    for (int i = 0; i < c->batch; ++i)
        y[i] = (int32_t)(xorshift32(&s) % (uint32_t)classes);
    bp_status st = BP_OK;
    r->x[b] = bp_tensor_create(r->dev, BP_F32, r->rows, in, &st);
    if (r->x[b]) r->y[b] = bp_tensor_create(r->dev, BP_I32, r->rows, 1, &st);
    if (r->y[b]) st = bp_tensor_upload(r->x[b], x + first * in, (size_t)(r->rows * in));
    if (st == BP_OK) st = bp_tensor_upload(r->y[b], y + first, (size_t)r->rows);
    free(x);
    free(y);
    return st == BP_OK ? 0 : lib_fail(g, "making the batch tensors");
}

/* The same model on every rank (seed 42); the workspace holds the largest shard. */
static int build_replica(const group *g, const scale_config *c, replica *r) {
    bp_status st = BP_OK;
    r->dev = bp_device_open("cpu", &st);
    if (!r->dev) return lib_fail(g, "bp_device_open(\"cpu\")");
    bp_mlp_config mc = bp_mlp_config_default(c->n_layers, c->widths);
    mc.seed = 42;
    mc.max_batch = (c->batch + g->size - 1) / g->size;
    r->model = bp_model_create(r->dev, &mc, &st);
    if (!r->model) return lib_fail(g, "bp_model_create");
    bp_optim_config oc = bp_optim_config_default(c->optim);
    if (c->optim == BP_OPTIM_SGD) oc.momentum = 0.9f;
    r->opt = bp_optimizer_create(r->model, &oc, &st);
    if (!r->opt) return lib_fail(g, "bp_optimizer_create");
    int64_t first = 0;
    bp_comm_shard(g->comm, c->batch, &first, &r->rows);
    if (r->rows < 1) {
        fprintf(stderr,
                "bp_scaling (rank %d of %d): config %s's global batch of %d rows leaves this "
                "rank none: run at most %d ranks\n",
                g->rank, g->size, c->name, c->batch, c->batch);
        return 1;
    }
    for (int b = 0; b < N_BATCHES; ++b)
        if (make_shard(g, c, r, b, first)) return 1;
    return 0;
}

static void free_replica(replica *r) {
    for (int b = 0; b < N_BATCHES; ++b) {
        bp_tensor_free(r->x[b]);
        bp_tensor_free(r->y[b]);
    }
    bp_optimizer_free(r->opt);
    bp_model_free(r->model);
    bp_device_close(r->dev);
}

/* ---- timing ---- */

/* steps training steps, cycling through the batches from *next. Collective: when one rank
 * fails, all do, at the same step. */
static bp_status run_steps(replica *r, int steps, int *next) {
    const bp_loss_config loss = {BP_LOSS_CROSS_ENTROPY, 0.0f};
    bp_status st = BP_OK;
    for (int i = 0; i < steps && st == BP_OK; ++i) {
        st = bp_train_step(r->model, r->opt, &loss, r->x[*next], r->y[*next], NULL);
        *next = (*next + 1) % N_BATCHES;
    }
    return st == BP_OK ? bp_device_synchronize(r->dev) : st;
}

/* One sample of steps steps from a common start: out[0] the slowest rank's seconds; out[1] and
 * out[2] the max and the min over ranks of the all-reduce seconds. 0, or 1 on every rank when
 * any rank failed. */
static int time_sample(const group *g, replica *r, int steps, int *next, double out[3]) {
    MPI_Barrier(MPI_COMM_WORLD);
    double ar0 = 0, ar1 = 0;
    bp_comm_stats(g->comm, &ar0, NULL);
    double t0 = MPI_Wtime();
    bp_status st = run_steps(r, steps, next);
    double t1 = MPI_Wtime();
    bp_comm_stats(g->comm, &ar1, NULL);
    if (st != BP_OK) lib_fail(g, "bp_train_step");
    /* One MAX reduction for all of it: the min rides as its negation, and a failure as 1 (a rank
     * whose device sync failed alone must not leave the others waiting). */
    double mine[4] = {t1 - t0, ar1 - ar0, -(ar1 - ar0), st != BP_OK}, all[4];
    MPI_Allreduce(mine, all, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (all[3] > 0) {
        if (st == BP_OK)
            fprintf(stderr,
                    "bp_scaling (rank %d of %d): another rank's step failed (see its "
                    "message)\n",
                    g->rank, g->size);
        return 1;
    }
    out[0] = all[0];
    out[1] = all[1];
    out[2] = -all[2];
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t in place; the median of n values. */
static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* Per-sample values (seconds per sample) into per-step medians and shares. samples holds
 * repeats rows of {step time, all-reduce max over ranks, min over ranks}; scratch repeats
 * doubles. */
static void summarize(const double *samples, int repeats, int steps, double *scratch, result *res) {
    for (int i = 0; i < repeats; ++i)
        scratch[i] = samples[3 * i] / steps;
    res->step_median = median(scratch, repeats);
    res->step_min = scratch[0];
    res->step_max = scratch[repeats - 1];
    for (int i = 0; i < repeats; ++i)
        scratch[i] = samples[3 * i + 1] / steps;
    res->allreduce_median = median(scratch, repeats);
    for (int i = 0; i < repeats; ++i)
        scratch[i] = samples[3 * i + 1] / samples[3 * i];
    res->share_max = median(scratch, repeats);
    for (int i = 0; i < repeats; ++i)
        scratch[i] = samples[3 * i + 2] / samples[3 * i];
    res->share_min = median(scratch, repeats);
}

/* Warm-up, then the samples. Collective; 0, or 1 on every rank. */
static int time_config(const group *g, const options *o, replica *r, result *res) {
    double *samples = malloc((size_t)o->repeats * 4 * sizeof *samples);
    bp_status st = bp_comm_agree(g->comm, samples != NULL, "allocating the sample table");
    if (st != BP_OK) {
        free(samples);
        return lib_fail(g, "bp_comm_agree");
    }
    /* A failed step fails on every rank, but a failed device sync is this rank's alone: agree
     * before the samples' barrier, so no rank waits there for one that has stopped. */
    int next = 0, rc = 0;
    int failed = run_steps(r, o->warmup, &next) != BP_OK;
    if (failed) lib_fail(g, "bp_train_step (warm-up)");
    if (bp_comm_agree(g->comm, !failed, "the warm-up steps") != BP_OK)
        rc = failed ? 1 : lib_fail(g, "bp_comm_agree");
    double bytes0 = 0, bytes1 = 0;
    bp_comm_stats(g->comm, NULL, &bytes0);
    for (int i = 0; i < o->repeats && rc == 0; ++i)
        rc = time_sample(g, r, o->steps, &next, samples + 3 * i);
    bp_comm_stats(g->comm, NULL, &bytes1);
    if (rc == 0) {
        summarize(samples, o->repeats, o->steps, samples + 3 * o->repeats, res);
        res->bytes_per_step = (bytes1 - bytes0) / ((double)o->repeats * o->steps);
    }
    free(samples);
    return rc;
}

/* ---- output (rank 0) ---- */

static void widths_text(const scale_config *c, char *buf, size_t size) {
    size_t n = 0;
    for (int l = 0; l <= c->n_layers && n < size; ++l)
        n += (size_t)snprintf(buf + n, size - n, "%s%d", l ? "-" : "", c->widths[l]);
}

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v ? v : fallback;
}

static double gb_per_s(const result *res) {
    return res->allreduce_median > 0 ? res->bytes_per_step / res->allreduce_median / 1e9 : 0.0;
}

static void print_result(const group *g, const scale_config *c, const result *res) {
    char widths[64];
    widths_text(c, widths, sizeof widths);
    printf("%s %s batch %d %s: %d rank%s x %d thread%s (%d cpu%s/rank): %.1f samples/s, step "
           "%.2f ms (min %.2f, max %.2f), all-reduce %.1f%% of step ",
           c->name, widths, c->batch, c->optim == BP_OPTIM_SGD ? "sgd" : "adam", g->size,
           g->size == 1 ? "" : "s", res->omp_threads, res->omp_threads == 1 ? "" : "s", res->cpus,
           res->cpus == 1 ? "" : "s", c->batch / res->step_median, 1e3 * res->step_median,
           1e3 * res->step_min, 1e3 * res->step_max, 100 * res->share_max);
    /* On one rank MPI_Allreduce moves nothing: a rate would only measure the call's overhead. */
    if (g->size == 1)
        printf("(1 rank: nothing moves; %.1f MB/step)\n", res->bytes_per_step / 1e6);
    else
        printf("(min over ranks %.1f%%), %.2f GB/s (%.1f MB/step)\n", 100 * res->share_min,
               gb_per_s(res), res->bytes_per_step / 1e6);
    fflush(stdout);
}

/* One object per line, so that runs can append to one file. */
static void write_json(FILE *f, const group *g, const options *o, const scale_config *c,
                       const result *res, size_t n_params) {
    char widths[64], date[32];
    widths_text(c, widths, sizeof widths);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f,
            "{\"date\": \"%s\", \"config\": \"%s\", \"widths\": \"%s\", \"batch\": %d, "
            "\"optimizer\": \"%s\", \"n_params\": %zu, \"ranks\": %d, \"omp_threads\": %d, "
            "\"cpus_per_rank\": %d, \"omp_num_threads_env\": \"%s\", "
            "\"openblas_num_threads_env\": \"%s\", \"steps\": %d, \"warmup\": %d, "
            "\"repeats\": %d, \"samples_per_s\": %.6e, \"step_s\": {\"median\": %.6e, \"min\": "
            "%.6e, \"max\": %.6e}, \"allreduce_s_per_step\": %.6e, \"allreduce_share\": %.6e, "
            "\"allreduce_share_min_rank\": %.6e, \"allreduce_gb_per_s\": %.6e, "
            "\"bytes_per_step\": %.6e}\n",
            date, c->name, widths, c->batch, c->optim == BP_OPTIM_SGD ? "sgd" : "adam", n_params,
            g->size, res->omp_threads, res->cpus, env_or("OMP_NUM_THREADS", "unset"),
            env_or("OPENBLAS_NUM_THREADS", "unset"), o->steps, o->warmup, o->repeats,
            c->batch / res->step_median, res->step_median, res->step_min, res->step_max,
            res->allreduce_median, res->share_max, res->share_min, gb_per_s(res),
            res->bytes_per_step);
    fflush(f);
}

/* ---- main ---- */

static int allowed_cpus(void) {
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
}

/* Builds, attaches and times one config; rank 0 reports it. 0, or 1 on every rank. */
static int run_config(const group *g, const options *o, const scale_config *c, FILE *json) {
    replica r = {0};
    int failed = build_replica(g, c, &r);
    bp_status st = bp_comm_agree(g->comm, !failed, "building the model, optimizer and batches");
    int rc = st == BP_OK ? 0 : failed ? 1 : lib_fail(g, "bp_comm_agree");
    if (rc == 0 && bp_comm_attach(g->comm, r.model, r.opt) != BP_OK)
        rc = lib_fail(g, "bp_comm_attach");
    result res = {0};
    if (rc == 0) rc = time_config(g, o, &r, &res);
    if (rc == 0 && g->rank == 0) {
        res.omp_threads = omp_get_max_threads();
        res.cpus = allowed_cpus();
        if (res.cpus > 0 && res.omp_threads > res.cpus)
            fprintf(stderr,
                    "bp_scaling: warning: rank 0 runs %d OpenMP threads on %d allowed CPU(s); "
                    "mpirun binds each rank to one core when -np <= 2 (pass --bind-to none)\n",
                    res.omp_threads, res.cpus);
        print_result(g, c, &res);
        if (json) write_json(json, g, o, c, &res, bp_model_n_params(r.model));
    }
    free_replica(&r);
    return rc;
}

/* Rank 0 opens FILE to append; every rank learns whether it could. */
static int open_json(const group *g, const char *path, FILE **json) {
    *json = NULL;
    int ok = 1;
    if (path && g->rank == 0) {
        *json = fopen(path, "a");
        if (!*json) fprintf(stderr, "bp_scaling: --json %s: %s\n", path, strerror(errno)), ok = 0;
    }
    if (bp_comm_agree(g->comm, ok, "opening the --json file") == BP_OK) return 0;
    return ok ? lib_fail(g, "bp_comm_agree") : 1;
}

int main(int argc, char **argv) {
    bp_status st = BP_OK;
    bp_comm *comm = bp_comm_create(&st);
    if (!comm) {
        fprintf(stderr, "bp_scaling: bp_comm_create: %s\n", bp_last_error());
        return 1;
    }
    group g = {comm, bp_comm_rank(comm), bp_comm_size(comm)};
    FILE *err = g.rank == 0 ? stderr : NULL;
    options o;
    int picked[N_CONFIGS], n_picked = 0;
    int parsed = parse_options(argc, argv, err, &o);
    if (parsed == 0 && pick_configs(err, o.configs, picked, &n_picked)) parsed = -1;
    if (parsed != 0) {
        bp_comm_free(comm);
        return parsed > 0 ? 0 : 2; /* --help, or a usage error */
    }
    FILE *json = NULL;
    int rc = open_json(&g, o.json, &json);
    if (rc == 0 && g.rank == 0)
        printf("bp_scaling: %d rank%s, OMP_NUM_THREADS=%s OPENBLAS_NUM_THREADS=%s; %d steps per "
               "sample, %d warm-up steps, %d samples (median, min/max)\n",
               g.size, g.size == 1 ? "" : "s", env_or("OMP_NUM_THREADS", "unset"),
               env_or("OPENBLAS_NUM_THREADS", "unset"), o.steps, o.warmup, o.repeats);
    for (int i = 0; i < n_picked && rc == 0; ++i)
        rc = run_config(&g, &o, &CONFIGS[picked[i]], json);
    if (json && (ferror(json) | fclose(json))) {
        fprintf(stderr, "bp_scaling: --json %s: writing failed\n", o.json);
        if (rc == 0) rc = 1;
    }
    bp_comm_free(comm);
    return rc;
}
