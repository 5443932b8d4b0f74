/* Class names (names.c). */
#ifndef BP_CLI_NAMES_H
#define BP_CLI_NAMES_H

#include <stdio.h>
#include "backprop/backprop.h"

/* ---- names.c: class names ---- */
typedef struct cli_names {
    char **v;
    int n;
} cli_names;
void cli_names_free(cli_names *names);
/* Copies of a dataset's class names (none: n 0); 0 or -1 when out of memory. */
int cli_names_from_dataset(cli_names *names, const bp_dataset *ds);
/* The names joined by '\n' (a CSV field never holds a line end), malloc'd; and back (0, or -1
 * out of memory). */
char *cli_names_join(const cli_names *names);
int cli_names_split(cli_names *names, const char *text);
/* "cat, dog, owl" (the first few, then "..."), in a rotating static buffer. */
const char *cli_names_list(const cli_names *names);
/* One CSV field as written: quoted (with "" for a quote) when it holds the delimiter, a quote
 * or blanks at either end, which a reader would change. */
void cli_csv_field(FILE *f, const char *s, char delim);

#endif
