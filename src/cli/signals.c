/* Stopping a training run: SIGINT (^C), SIGTERM (timeout, Slurm, systemd, Kubernetes) and
 * SIGHUP (a closed terminal) all finish the current step, save where the run stands and exit
 * with 128 + the signal. A second signal stops at once, except while a file is being written:
 * then it waits until the file is complete. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

volatile sig_atomic_t cli_interrupted = 0;

static const int STOPS[] = {SIGINT, SIGTERM, SIGHUP};
#define N_STOPS ((int)(sizeof STOPS / sizeof STOPS[0]))

/* Set while a file is written; a second signal then waits in `later`. Flags rather than a
 * signal mask, because the handler may run on any thread (the loader's, OpenMP's). */
static volatile sig_atomic_t holding = 0, later = 0;

static void on_stop(int sig) {
    if (cli_interrupted) { /* a second signal: stop now, or once the file is complete */
        if (!holding) _exit(128 + sig);
        later = sig;
        return;
    }
    cli_interrupted = sig;
    /* A terminal that closed (SIGHUP) often takes a `| tee log` with it: messages to a dead pipe
     * must not kill the save. sigaction is async-signal-safe. */
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, NULL);
}

void cli_catch_interrupt(int on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? on_stop : SIG_DFL;
    sa.sa_flags = SA_RESTART; /* a write interrupted by the signal goes on */
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_STOPS; ++i)
        sigaddset(&sa.sa_mask, STOPS[i]); /* one handler at a time */
    for (int i = 0; i < N_STOPS; ++i)
        sigaction(STOPS[i], &sa, NULL);
}

void cli_hold_signals(int hold) {
    holding = hold;
    if (!hold && later) _exit(128 + later);
}

const char *cli_signal_name(int sig) {
    switch (sig) {
    case SIGINT:
        return "SIGINT";
    case SIGTERM:
        return "SIGTERM";
    case SIGHUP:
        return "SIGHUP";
    default:
        return "a signal";
    }
}

int cli_signal_index(int sig) {
    for (int i = 0; i < N_STOPS; ++i)
        if (STOPS[i] == sig) return i;
    return -1;
}

int cli_signal_at(int index) {
    return index >= 0 && index < N_STOPS ? STOPS[index] : 0;
}
