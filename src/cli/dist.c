/* Data-parallel training runs: `mpirun -np N backprop train ... --distributed`. Every rank loads
 * the data and builds the model; rank 0's weights win; each rank trains on its piece of every
 * global batch (--batch is the global batch); rank 0 alone prints and writes files. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Ranks the launcher started, from its environment (OpenMPI, MPICH/Hydra and Slurm's PMI,
 * MVAPICH); 1 when none says. */
static int launcher_ranks(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; ++i) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return 1;
}

/* One GPU per rank: "cuda" (or "auto" where there is a GPU) becomes the rank's own on its host. */
static int pick_device(int cmd, cli_options *o, const bp_comm *comm) {
    int gpu = strcmp(o->device, "cuda") == 0 ||
              (strcmp(o->device, "auto") == 0 && bp_device_available("cuda"));
    if (!gpu) return 0;
    char name[32];
    snprintf(name, sizeof name, "cuda:%d", bp_comm_local_rank(comm));
    return cli_set_option(cmd, o, "device", name, "the rank's GPU", 0);
}

/* Rank 0 prints and writes; the others keep stderr (their messages say which rank they are). */
static void quiet_other_ranks(cli_options *o) {
    if (cli_rank == 0) return;
    o->quiet = 1;
    o->save[0] = o->metrics[0] = o->plot[0] = '\0';
    if (!freopen("/dev/null", "w", stdout)) fclose(stdout);
}

int cli_dist_start(int cmd, cli_options *o, bp_comm **comm) {
    *comm = NULL;
    int launched = launcher_ranks();
    if (!o->distributed && launched <= 1) return 0;
    if (!bp_distributed_available()) {
        if (o->distributed)
            return cli_usage_error(
                cmd, "--distributed: this backprop was built without MPI (build it with "
                     "-DBP_MPI=ON and OpenMPI: apt-get install libopenmpi-dev openmpi-bin)");
        return cli_usage_error(
            cmd,
            "started as %d MPI ranks, but this backprop was built without MPI: every rank would "
            "train alone and write the same files (build it with -DBP_MPI=ON)",
            launched);
    }
    bp_status st;
    *comm = bp_comm_create(&st);
    if (!*comm) return cli_lib_fail(cmd, "--distributed");
    cli_rank = bp_comm_rank(*comm);
    cli_ranks = bp_comm_size(*comm);
    quiet_other_ranks(o);
    return pick_device(cmd, o, *comm);
}

/* "60000 x 784 -> 10 classes, val 0, test 10000, data 1f3a..." for the ranks to compare. */
static void describe_data(const cli_data *d, char *buf, size_t size) {
    const bp_dataset *t = d->train;
    int64_t n = bp_dataset_size(t);
    size_t xs = (size_t)n * (size_t)d->features * sizeof(float);
    size_t ys = (size_t)n * (size_t)bp_dataset_target_width(t) * 4;
    uint64_t h = cli_fnv1a(CLI_FNV_BASIS, bp_dataset_features_data(t), xs);
    h = cli_fnv1a(h, bp_dataset_targets_data(t), ys);
    for (int i = 0; i < d->names.n; ++i) /* the classes' names, NUL-terminated each */
        h = cli_fnv1a(h, d->names.v[i], strlen(d->names.v[i]) + 1);
    snprintf(buf, size, "%lld x %d -> %d %s, %lld for validation, %lld for test, checksum %016llx",
             (long long)n, d->features, d->kind == BP_TARGET_CLASS ? d->classes : d->target_width,
             d->kind == BP_TARGET_CLASS ? "classes" : "values",
             (long long)(d->val ? bp_dataset_size(d->val) : 0),
             (long long)(d->test ? bp_dataset_size(d->test) : 0), (unsigned long long)h);
}

/* Every option a checkpoint keeps (what the run is), except those that name files, which may
 * differ from host to host, and --stop-after (where every rank must stop): one check each, so
 * a mismatch names the flag. */
static int check_options(cli_session *s) {
    const cli_options *o = &s->o;
    char what[64];
    for (int i = 0; i < cli_option_count(); ++i) {
        const char *name = cli_option_name(i), *text = o->text[i];
        int ends_the_run = strcmp(name, "stop-after") == 0;
        if (!ends_the_run && (!cli_option_has(i, OF_STORE) || cli_option_has(i, OF_DATA))) continue;
        snprintf(what, sizeof what, "--%s", name);
        if (bp_comm_check_same(s->comm, text ? text : "", what) != BP_OK)
            return cli_lib_fail(s->cmd, "");
    }
    return 0;
}

int cli_dist_join(cli_session *s, bp_optimizer *opt, int rc) {
    /* A rank that failed has said why; the others say which rank it was. */
    if (bp_comm_agree(s->comm, rc == 0, "setting up the run") != BP_OK)
        return rc ? rc : cli_lib_fail(s->cmd, "");
    char data[256];
    describe_data(&s->d, data, sizeof data);
    if ((rc = check_options(s))) return rc;
    if (bp_comm_check_same(s->comm, data, "the training data") != BP_OK)
        return cli_lib_fail(s->cmd, "");
    if (bp_comm_attach(s->comm, s->m, opt) != BP_OK) return cli_lib_fail(s->cmd, "");
    if (cli_rank == 0)
        fprintf(cli_out(), "distributed: %d ranks, %lld %s per rank and step (global batch %d)\n",
                cli_ranks, (long long)(s->o.batch / cli_ranks),
                cli_plural(s->o.batch / cli_ranks, "sample", "samples"), s->o.batch);
    return 0;
}

int cli_dist_interrupted(bp_comm *comm) {
    /* How many ranks each signal reached; a rank it did not reach takes the most common. */
    double count[3] = {0.0, 0.0, 0.0};
    int mine = cli_signal_index(cli_interrupted);
    if (mine >= 0) count[mine] = 1.0;
    if (comm && bp_comm_sum(comm, count, 3) != BP_OK) return mine >= 0 ? cli_interrupted : SIGTERM;
    if (mine >= 0) return cli_interrupted;
    int best = -1;
    for (int k = 0; k < 3; ++k)
        if (count[k] > 0.0 && (best < 0 || count[k] > count[best])) best = k;
    return best < 0 ? 0 : cli_signal_at(best);
}
