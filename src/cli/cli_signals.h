/* Signals that stop a training run (signals.c). */
#ifndef BP_CLI_SIGNALS_H
#define BP_CLI_SIGNALS_H

#include <signal.h>

/* ---- signals.c ---- */
/* The signal (SIGINT, SIGTERM, SIGHUP) that asked a training run to stop; 0 while none has. */
extern volatile sig_atomic_t cli_interrupted;
/* Catches (on) or releases the three signals: the first sets cli_interrupted, a second stops
 * the process at once (128 + it), unless held. */
void cli_catch_interrupt(int on);
/* While a file is written (hold 1) a second signal waits; hold 0 then stops the process with
 * it (128 + the signal). */
void cli_hold_signals(int hold);
const char *cli_signal_name(int sig);
int cli_signal_index(int sig); /* 0..2 for the signals caught, else -1 */
int cli_signal_at(int index);

#endif
