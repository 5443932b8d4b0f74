/* Threads: one count per CPU device (bp_device_options.threads) for the backend's loops, the
 * matrix engine and the BLAS, and the default count. */
#define _GNU_SOURCE
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_internal.h"

int bp_cpu_gemm_threads(const bp_device *device, double flops) {
    return flops < BP_CPU_GEMM_PAR_FLOPS ? 1 : bp_cpu_threads(device);
}

int bp_cpu_threads_enter(int want) {
#ifdef _OPENMP
    int prev = omp_get_max_threads();
    if (want != prev) omp_set_num_threads(want);
    return prev;
#else
    (void)want;
    return 1;
#endif
}

void bp_cpu_threads_leave(int previous) {
#ifdef _OPENMP
    if (omp_get_max_threads() != previous) omp_set_num_threads(previous);
#else
    (void)previous;
#endif
}

/* Tasks running or ready to run on the whole machine, this thread included: the fourth field
 * of /proc/loadavg ("1/423"); -1 where it cannot be read. */
static int runnable_tasks(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double l1, l5, l15;
    int running = -1, total = 0;
    if (fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total) != 5) running = -1;
    fclose(f);
    return running;
}

/* This process's own threads that are running or ready to run (state R in
 * /proc/self/task/TID/stat), this one included; 1 where they cannot be read. */
static int own_runnable_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return 1;
    int own = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* the thread ended */
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = '\0';
        /* The state follows the name's closing parenthesis (a name may hold one too) */
        const char *close = strrchr(line, ')');
        if (close && close[1] == ' ' && close[2] == 'R') ++own;
    }
    closedir(d);
    return own < 1 ? 1 : own;
}

/* The cores this process may run on that no other task is using right now: the cores of its
 * affinity mask (at most OpenMP's count) less the runnable tasks of other processes, at
 * least 1. A thread team larger than the free cores waits at every barrier for a thread that
 * shares its core with another process: a small model then ran 4-30x slower on 2 threads than
 * on 1 with one of two cores busy. The process's own threads are not others: an OpenMP team
 * spinning after its last parallel loop would otherwise take a core from the next device
 * opened (backprop bench's training rows ran on 1 of 2 cores after its limit measurements).
 * The runnable count moves from moment to moment, so it is read a few times and the smallest
 * taken (the others' steady load). When OMP_NUM_THREADS is set, that is the count: a user
 * (and a test that compares bits across runs) chose it. */
int bp_cpu_default_threads(void) {
#ifdef _OPENMP
    int max = omp_get_max_threads();
    if (getenv("OMP_NUM_THREADS")) return max;
    cpu_set_t set;
    int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : max;
    if (cores > max) cores = max;
    int others = -1;
    for (int i = 0; i < 3; ++i) {
        if (i) nanosleep(&(struct timespec){0, 1000000}, NULL);
        int r = runnable_tasks();
        if (r < 1) return cores < 1 ? 1 : cores;
        int other = r - own_runnable_tasks();
        if (other < 0) other = 0; /* the two files are read at different moments */
        if (others < 0 || other < others) others = other;
    }
    int free_cores = cores - others;
    return free_cores < 1 ? 1 : free_cores;
#else
    return 1;
#endif
}
