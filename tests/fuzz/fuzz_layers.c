/* libFuzzer: the CLI's --layers / --hidden width-list parser, through cli_parse exactly as the
 * flags reach it (the first byte picks the flag). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *text = malloc(size); /* NUL-terminated copy of the rest: argv strings are C strings */
    if (!text) abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *argv[] = {data[0] & 1 ? "--hidden" : "--layers", text, NULL};
    cli_options o;
    int rc = cli_parse(CMD_TRAIN, 2, argv, &o);
    /* -1: the value was "-h" or "--help", which cli_parse answers with the help, as the CLI
     * does for any argument that asks for it. */
    if (rc != 0 && rc != CLI_EXIT_USAGE && rc != -1) abort();
    /* An accepted list holds only positive widths, within the table. */
    const cli_int_list *l = data[0] & 1 ? &o.hidden : &o.layers;
    if (rc == 0 && (l->n < 0 || l->n > CLI_MAX_WIDTHS)) abort();
    for (int i = 0; rc == 0 && i < l->n; ++i)
        if (l->v[i] <= 0) abort();
    cli_options_free(&o);
    free(text);
    return 0;
}
