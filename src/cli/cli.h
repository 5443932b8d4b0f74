/* The `backprop` command: declarations shared by its source files.
 *
 * Exit statuses: 0 success, 1 a runtime failure (the library's message is printed), 2 a usage
 * error (an unknown flag, a bad value, data that does not fit the model, an output that would
 * overwrite an input), 128 + the signal when SIGINT, SIGTERM or SIGHUP stopped a run. */
#ifndef BP_CLI_H
#define BP_CLI_H

#include "backprop/backprop.h"
#include "backprop/file.h"
#include "cli_data.h"
#include "cli_json.h"
#include "cli_names.h"
#include "cli_options.h"
#include "cli_output.h"
#include "cli_session.h"
#include "cli_signals.h"
#include "cli_util.h"

/* ---- commands ---- */
int cli_cmd_train(int argc, char **argv);
int cli_cmd_eval(int argc, char **argv);
int cli_cmd_predict(int argc, char **argv);
int cli_cmd_info(int argc, char **argv);
int cli_cmd_lrfind(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);

#endif
