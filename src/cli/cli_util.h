/* Exit statuses, messages and small helpers of the `backprop` command. */
#ifndef BP_CLI_UTIL_H
#define BP_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_EXIT_OK     0
#define CLI_EXIT_FAIL   1
#define CLI_EXIT_USAGE  2
#define CLI_EXIT_SIGNAL 128 /* + the signal */

/* ---- util.c ---- */
double cli_now(void); /* monotonic seconds */
/* "backprop CMD: <message>" on stderr; they return CLI_EXIT_USAGE and CLI_EXIT_FAIL. */
int cli_usage_error(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_warn(int cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "backprop CMD: WHAT: <bp_last_error()>" and returns CLI_EXIT_FAIL. */
int cli_lib_fail(int cmd, const char *what);
char *cli_strdup(const char *s);
int cli_has_ext(const char *path, const char *ext); /* case-insensitive suffix */
/* A number as people write it: integers in full (1048576), others in 6 digits; a rotating
 * static buffer, so one message may hold several. */
const char *cli_num(double v);
/* one or many by n: "1 epoch", "2 epochs". */
const char *cli_plural(long long n, const char *one, const char *many);
/* Comma-separated %.9g floats, malloc'd; and back (returns the count or -1). */
char *cli_format_floats(const float *v, size_t n);
long cli_parse_floats(const char *s, float *out, size_t cap);
/* FNV-1a 64 of n bytes, continuing from h (CLI_FNV_BASIS to start). */
#define CLI_FNV_BASIS 0xcbf29ce484222325ull
uint64_t cli_fnv1a(uint64_t h, const void *data, size_t n);

/* Where the human output of train, eval and info goes: stdout, or stderr under --json (then
 * stdout holds the JSON object alone). */
extern FILE *cli_human;
FILE *cli_out(void); /* cli_human, else stdout */

#endif
