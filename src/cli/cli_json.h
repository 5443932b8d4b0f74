/* JSON output and UTF-8 checks (json.c). */
#ifndef BP_CLI_JSON_H
#define BP_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "cli_names.h"

/* ---- json.c ---- */
int cli_utf8_valid(const char *s);
/* s for a message: bytes that are not UTF-8 (or control characters) as \xHH. */
void cli_escape_bytes(const char *s, char *out, size_t size);
typedef struct cli_json {
    FILE *f;
    int depth;
    int count[16]; /* values written at each depth */
} cli_json;
void cli_json_open(cli_json *j, FILE *f); /* "{" */
void cli_json_close(cli_json *j);         /* "}" and a newline */
/* key NULL inside an array. bracket '{' / '[' and '}' / ']'. */
void cli_json_begin(cli_json *j, const char *key, char bracket);
void cli_json_end(cli_json *j, char bracket);
void cli_json_str(cli_json *j, const char *key, const char *v); /* NULL: null */
void cli_json_num(cli_json *j, const char *key, double v);      /* %.17g; NaN, inf: null */
void cli_json_int(cli_json *j, const char *key, long long v);
void cli_json_u64(cli_json *j, const char *key, uint64_t v);
void cli_json_bool(cli_json *j, const char *key, int v);
void cli_json_null(cli_json *j, const char *key);
/* A stored number's text as it is when it is a JSON number (exact), null for nan/inf, else a
 * string. */
void cli_json_text(cli_json *j, const char *key, const char *text);
void cli_json_names(cli_json *j, const char *key, const cli_names *names); /* none: null */

#endif
