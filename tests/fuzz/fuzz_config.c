/* libFuzzer: the CLI's --config file parser, through cli_parse exactly as `backprop train
 * --config FILE` (or eval/predict/info/lr-find, by the first byte) reaches it. */
#include <stdlib.h>

#include "cli/cli.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const int cmds[] = {CMD_TRAIN, CMD_EVAL, CMD_PREDICT, CMD_INFO, CMD_LRFIND};
    int cmd = cmds[data[0] % 5];
    char *argv[] = {"--config", (char *)fuzz_write("config.ini", data + 1, size - 1), NULL};
    cli_options o;
    int rc = cli_parse(cmd, 2, argv, &o);
    if (rc != 0 && rc != CLI_EXIT_USAGE && rc != -1) abort(); /* usage error or success only */
    cli_options_free(&o);
    return 0;
}
